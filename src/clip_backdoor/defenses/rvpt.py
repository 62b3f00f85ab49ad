"""RVPT: repulsive visual prompt tuning (Zhang et al., NeurIPS 2025); VPT is the same with alpha 0.

Deep visual prompts (`tokens` per block) on the last L−`depth` blocks of the frozen backdoored image
encoder are trained on the clean shots with CE of the model's zero-shot head (text features computed once,
the model's logit scale) plus alpha·FR, FR the mean over prompted layers of cos(prompted CLS, frozen
unprompted CLS) on the same image, minimised (−1 is full repulsion). `alpha_proj` adds the same
repulsion on the projected image feature; `alpha_warmup` ramps both weights linearly over that many
epochs; `flip` flips half of each batch horizontally (the frozen features are then recomputed per batch,
otherwise once for all shots). SGD with momentum 0.9 and weight decay 5e-4 (CoOp/Dassl's defaults; the
paper states neither), per-step cosine schedule without warm-up.
"""

import torch
import torch.nn.functional as F
from tqdm import tqdm

from clip_backdoor.models.visual_prompts import PromptedVisual, count_prompt_parameters
from clip_backdoor.training import cosine_lr


def repulsion(cls, frozen_cls):
    """FR: mean over layers and images of cos(prompted CLS, frozen CLS); lists of [B,W] per layer."""
    return torch.stack(
        [F.cosine_similarity(c, f, dim=-1).mean() for c, f in zip(cls, frozen_cls, strict=True)]
    ).mean()


@torch.no_grad()
def frozen_pass(prompted, model, images, chunk=256):
    """Tokens after the unprompted blocks [B,N,W], and the frozen encoder's per-layer CLS [L−D,B,W] and
    image feature [B,E] on them (in chunks)."""
    out = []
    for x in images.split(chunk):
        base = prompted.split(model.normalize(x))
        tokens, cls = prompted.run_blocks(base, start=prompted.depth, prompts=False)
        out.append((base, torch.stack(cls), prompted.project(tokens)))
    base, cls, feat = zip(*out, strict=True)
    return torch.cat(base), torch.cat(cls, dim=1), torch.cat(feat)


def rvpt_loss(prompted, base, frozen_cls, frozen_feat, labels, head, scale, alpha, alpha_proj):
    """CE of the zero-shot head on the prompted features + alpha·FR (CLS) + alpha_proj·FR (projected)."""
    tokens, cls = prompted.run_blocks(base, start=prompted.depth)
    feat = prompted.project(tokens)
    loss = F.cross_entropy(scale * F.normalize(feat, dim=-1) @ head.t(), labels)
    if alpha:
        loss = loss + alpha * repulsion(cls, frozen_cls)
    if alpha_proj:
        loss = loss + alpha_proj * F.cosine_similarity(feat, frozen_feat, dim=-1).mean()
    return loss


def fit(ctx, params):
    model, gen = ctx.model, torch.Generator().manual_seed(int(ctx.seed))
    model.eval()
    prompted = PromptedVisual(model.clip.visual, params["depth"], params["tokens"], params["init_std"], gen)
    if not prompted.layers or not params["tokens"]:
        raise ValueError("defenses rvpt: depth and tokens leave no prompt to train")
    head, scale = ctx.head(""), model.logit_scale.detach()
    images, labels = ctx.shot_tensors
    opt = torch.optim.SGD(
        prompted.parameters(),
        lr=params["lr"],
        momentum=params["momentum"],
        weight_decay=params["weight_decay"],
    )
    base, frozen_cls, frozen_feat = frozen_pass(prompted, model, images)
    n, bs, epochs = len(labels), params["batch_size"], params["epochs"]
    steps = -(-n // bs)
    curve, step = [], 0
    for epoch in tqdm(range(epochs), desc="rvpt", unit="epoch", mininterval=5, leave=False):
        ramp = min(1.0, (epoch + 1) / params["alpha_warmup"]) if params["alpha_warmup"] else 1.0
        total = 0.0
        for idx in torch.randperm(n, generator=gen).to(labels.device).split(bs):
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, epochs * steps, params["lr"], 0)
            x_base, x_cls, x_feat = base[idx], frozen_cls[:, idx], frozen_feat[idx]
            if params["flip"]:
                x_base, x_cls, x_feat = flipped(prompted, model, images[idx], gen)
            weights = (ramp * params["alpha"], ramp * params["alpha_proj"])
            loss = rvpt_loss(prompted, x_base, x_cls, x_feat, labels[idx], head, scale, *weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            step += 1
        curve.append(total / n)
    return state_of(prompted), {
        "curve": curve,
        "trainable_params": count_prompt_parameters(prompted),
        **final_similarity(prompted, base, frozen_cls, frozen_feat),
    }


def flipped(prompted, model, images, gen):
    """A batch with each image flipped horizontally with probability 1/2, and its frozen features."""
    flip = torch.rand(len(images), generator=gen).to(images.device) < 0.5
    return frozen_pass(prompted, model, torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images))


@torch.no_grad()
def final_similarity(prompted, base, frozen_cls, frozen_feat, chunk=256):
    """Per prompted layer (1-based block index), the mean cos(prompted CLS, frozen CLS) over the shots after
    training, and the same for the projected image feature."""
    cos, cos_proj = [], []
    for x, f_cls, f_feat in zip(
        base.split(chunk), frozen_cls.split(chunk, dim=1), frozen_feat.split(chunk), strict=True
    ):
        tokens, cls = prompted.run_blocks(x, start=prompted.depth)
        cos.append(torch.stack([F.cosine_similarity(c, f, dim=-1) for c, f in zip(cls, f_cls, strict=True)]))
        cos_proj.append(F.cosine_similarity(prompted.project(tokens), f_feat, dim=-1))
    return {
        "fr_layers": [i + 1 for i in prompted.layers],
        "fr_cos": torch.cat(cos, dim=1).mean(1).tolist(),
        "fr_cos_proj": torch.cat(cos_proj).mean().item(),
    }


@torch.no_grad()
def perturbation_resistivity(model, state, clean, triggered, prompts=True, chunk=256):
    """PR per block (the paper's Fig. 1): mean over images of cos(CLS of x, CLS of x + δ) after each block of
    the image tower, with `state`'s prompts, or of the undefended encoder with prompts=False. Images in
    [0,1]; for the report only (the defense never sees the trigger)."""
    model.eval()
    prompted = prompted_from_state(model.clip.visual, state)
    sims = []
    for x, y in zip(clean.split(chunk), triggered.split(chunk), strict=True):
        a = prompted.cls_per_block(model.normalize(x), prompts)
        b = prompted.cls_per_block(model.normalize(y), prompts)
        sims.append(F.cosine_similarity(a, b, dim=-1))
    return torch.cat(sims, dim=1).mean(1).tolist()


def state_of(prompted):
    return {"prompts": prompted.prompts.detach().cpu(), "depth": prompted.depth, "tokens": prompted.tokens}


def prompted_from_state(visual, state):
    prompted = PromptedVisual(visual, int(state["depth"]), int(state["tokens"]), 0.0)
    prompted.prompts.data.copy_(state["prompts"])
    return prompted.requires_grad_(False)


def load_prompted(ctx, state):
    return prompted_from_state(ctx.model.clip.visual, state)


def classifier(ctx, state, text_prefix):
    """images in [0,1] → logits of the prompted image encoder against the model's zero-shot head."""
    prompted, head, model = load_prompted(ctx, state), ctx.head(text_prefix), ctx.model
    model.eval()

    def logits(images):
        feat, _ = prompted(model.normalize(images))
        return model.logit_scale * F.normalize(feat, dim=-1) @ head.t()

    return logits
