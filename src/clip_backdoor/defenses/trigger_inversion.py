"""CBPT stage 1: invert a dummy trigger against a frozen (backdoored) image encoder by contrastive learning.

The paper's exact loss is not public; this is the reconstruction of DESIGN §5. The trigger is a mask
m = sigmoid(a) ∈ [0,1]^{1×H×W} and a pattern p = sigmoid(b) ∈ [0,1]^{3×H×W}; x' = (1−m)·x + m·p. Loss per
batch, with z' the normalised features of triggered images and z those of the clean images:

    L = −mean_i log( Σ_{j: y_j≠y_i} e^{z'_i·z'_j/τ} / (Σ_{j: y_j≠y_i} e^{z'_i·z'_j/τ} + Σ_k e^{z'_i·z_k/τ}) )
        + mask_weight · mean(m)

Triggered images of different classes are positives of each other (a backdoor maps them to one point);
the clean images of the batch, the anchor's own clean version included, are its negatives. mean(m) is the
L1 of the mask divided by H·W. Weights, temperature, steps and learning rate are the caller's params.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm


def apply_trigger(images, mask, pattern):
    return (1 - mask) * images + mask * pattern


class DummyTrigger(nn.Module):
    """Mask and pattern through sigmoids of free logits; the mask starts uniform at `mask_init`."""

    def __init__(self, image_size, mask_init, generator=None):
        super().__init__()
        logit = math.log(mask_init / (1 - mask_init))
        self.mask_logit = nn.Parameter(torch.full((1, image_size, image_size), logit))
        self.pattern_logit = nn.Parameter(torch.randn(3, image_size, image_size, generator=generator))

    def mask(self):
        return torch.sigmoid(self.mask_logit)

    def pattern(self):
        return torch.sigmoid(self.pattern_logit)

    def forward(self, images):
        return apply_trigger(images, self.mask(), self.pattern())


def inversion_loss(z_trig, z_clean, labels, tau):
    """The contrastive term above on normalised features [B,D] (mean over anchors with a positive)."""
    pos_mask = labels.view(-1, 1) != labels.view(1, -1)
    pos = (z_trig @ z_trig.t() / tau).masked_fill(~pos_mask, float("-inf"))
    neg = z_trig @ z_clean.t() / tau
    log_pos = pos.logsumexp(1)
    log_all = torch.cat([pos, neg], 1).logsumexp(1)
    has_pos = pos_mask.any(1)
    return (log_all - log_pos)[has_pos].mean()


def invert_trigger(model, images, labels, params, generator):
    """Fit a DummyTrigger on `images` [N,3,H,W] in [0,1] with labels [N] against the frozen `model`.

    params: inv_steps, inv_batch, inv_lr, inv_tau, inv_mask_weight, inv_mask_init.
    Returns (trigger, curve) — curve holds the mean loss per block of `len(images) // inv_batch` steps.
    """
    trigger = DummyTrigger(images.shape[-1], params["inv_mask_init"], generator).to(images.device)
    opt = torch.optim.Adam(trigger.parameters(), lr=params["inv_lr"], betas=(0.5, 0.9))
    with torch.no_grad():
        clean = F.normalize(model.encode_image(images), dim=-1)
    n, bs = len(images), min(params["inv_batch"], len(images))
    per_epoch = max(1, n // bs)
    curve, running = [], []
    for step in tqdm(range(params["inv_steps"]), desc="cbpt invert", unit="step", mininterval=5, leave=False):
        idx = torch.randperm(n, generator=generator)[:bs].to(images.device)
        z = F.normalize(model.encode_image(trigger(images[idx])), dim=-1)
        loss = inversion_loss(z, clean[idx], labels[idx], params["inv_tau"])
        loss = loss + params["inv_mask_weight"] * trigger.mask().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running.append(loss.item())
        if len(running) == per_epoch or step == params["inv_steps"] - 1:
            curve.append(sum(running) / len(running))
            running = []
    return trigger.requires_grad_(False), curve


@torch.no_grad()
def trigger_effect_cosine(model, state, trigger_fn, images, batch_size=500):
    """Mean over images of cos(f(x ⊕ inverted) − f(x), f(real_trigger(x)) − f(x)) in `model`'s (normalised)
    image-feature space. `state` is a CBPT state (its "report" mask and pattern); `trigger_fn(images, seeds)`
    is the real trigger (seeds 0..N−1). For the report only: the defense never sees the real trigger."""
    model.eval()
    mask = state["report"]["inverted_mask"].to(images.device)
    pattern = state["report"]["inverted_pattern"].to(images.device)
    sims = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        seeds = torch.arange(start, start + len(x))
        clean = F.normalize(model.encode_image(x), dim=-1)
        inv = F.normalize(model.encode_image(apply_trigger(x, mask, pattern)), dim=-1)
        real = F.normalize(model.encode_image(trigger_fn(x, seeds)), dim=-1)
        sims.append(F.cosine_similarity(inv - clean, real - clean, dim=-1))
    return torch.cat(sims).mean().item()
