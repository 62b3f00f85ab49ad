"""CleanCLIP (Bansal et al., ICCV'23): fine-tune the whole backdoored CLIP on a disjoint clean pool with the
multimodal contrastive loss plus in-modal self-supervised contrastive losses — each image against an augmented
view of itself, each caption against an augmented caption — which weakens the trigger–target alignment.

Loss (as nishadsinghi/CleanCLIP src/train.py `get_loss`): multimodal_weight · CLIP loss(image, caption)
+ inmodal_weight · (in-modal(image, image view) + in-modal(caption, caption view)) / 2, the views contrasted
with the originals. Here the in-modal term is the symmetric InfoNCE (CleanCLIP takes one direction).
Views: images — random resized crop, horizontal flip and colour jitter (torchvision.transforms.v2, drawn per
image and step); captions — EDA without its synonym operations (random swap and random deletion of words),
applied to the token ids between the start and end tokens, drawn per step (CleanCLIP draws one per caption).
The clean pool is the `clean_pool` split (embedded) or the disjoint CC3M clean pool (papers' data).
`finetune` is this module's training with the in-modal weight at zero (plain clean fine-tuning).
"""

import math

import torch
from torchvision.transforms import v2

from clip_backdoor.data import corpus as corpora
from clip_backdoor.data.embedded import load_split
from clip_backdoor.defenses.interface import (
    count_parameters,
    load_model_state,
    model_state,
    zero_shot_classifier,
)
from clip_backdoor.training import clip_loss, train_contrastive


def clean_pool(ctx, pool_size=0):
    """(images, captions) for train_contrastive: uint8 arrays and captions (embedded), or a PairDataset
    and None (papers' CC3M)."""
    data_dir = ctx.paths["data"]
    if corpora.is_paper(data_dir):
        images, captions = corpora.cc3m_pairs(data_dir, "clean_pool")
        if pool_size:
            images, captions = images[:pool_size], captions[:pool_size]
        return corpora.PairDataset(images, captions, ctx.model.image_size), None
    split = load_split(data_dir, "clean_pool")
    images, captions = split["images"], split["captions"]
    if pool_size:
        images, captions = images[:pool_size], captions[:pool_size]
    return images, captions


def fit_on_clean_pool(ctx, params, desc, loss_fn=None, augment=None):
    """Full contrastive fine-tuning of ctx.model on the clean pool; returns (state, log)."""
    images, captions = clean_pool(ctx, params["pool_size"])
    for p in ctx.model.clip.parameters():
        p.requires_grad_(True)
    hp = {**params, "seed": ctx.seed}
    log = train_contrastive(
        ctx.model, images, captions, hp, ctx.state_path, ctx.device, loss_fn=loss_fn, desc=desc,
        augment=augment, num_workers=params.get("loader_workers", 0),
    )  # fmt: skip
    trainable = count_parameters(ctx.model.clip, trainable_only=True)
    for p in ctx.model.clip.parameters():
        p.requires_grad_(False)
    ctx.model.eval()
    ctx.__dict__.pop("_heads", None)
    log = {"trainable_params": trainable, "curve": log["epoch_loss"], "steps": log["steps"],
           "train_seconds": round(log["seconds"], 2), "pool_pairs": len(images)}  # fmt: skip
    return model_state(ctx.model), log


def image_transform(size, crop_scale, jitter):
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(crop_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
        ]
    )


def image_views(images, transform, seed):
    """One augmented view per image (float [B,3,H,W] in [0,1]); its random draws are fixed by `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([transform(image) for image in images]).clamp_(0, 1)


def text_views(tokens, seed, swap, drop):
    """EDA random swap then random deletion of the tokens between start and end token, per caption
    (at least one token is kept); padding stays zero."""
    gen = torch.Generator().manual_seed(seed)
    rows = tokens.cpu()
    out = torch.zeros_like(rows)
    for i, row in enumerate(rows):
        end = int(row.argmax())  # the end-of-text token has the largest id
        words = row[1:end].clone()
        n = len(words)
        if n > 1:
            for _ in range(max(1, math.floor(swap * n)) if swap > 0 else 0):
                a, b = torch.randint(n, (2,), generator=gen).tolist()
                words[[a, b]] = words[[b, a]]
            keep = torch.rand(n, generator=gen) >= drop
            if not keep.any():
                keep[torch.randint(n, (1,), generator=gen)] = True
            words = words[keep]
        view = torch.cat([row[:1], words, row[end : end + 1]])
        out[i, : len(view)] = view
    return out.to(tokens.device)


def inmodal_loss(features, view_features, logit_scale):
    """Contrastive loss between each sample and its own view, against the batch's other samples."""
    return clip_loss(features, view_features, logit_scale)


class CleanClipLoss:
    """loss_fn and augment hooks for train_contrastive. `augment` keeps the step's seed (train_contrastive
    passes one per step) so that a resumed run draws the same views; `__call__` computes the loss."""

    def __init__(self, params, image_size):
        self.params = params
        self.transform = image_transform(image_size, params["crop_scale"], params["jitter"])
        self.seed = 0

    def augment(self, images, seed):
        self.seed = int(seed)
        return images

    def __call__(self, model, images, tokens):
        p, scale = self.params, model.logit_scale
        image_features, text_features = model.encode_image(images), model.encode_text(tokens)
        loss = p["multimodal_weight"] * clip_loss(image_features, text_features, scale)
        if p["inmodal_weight"]:
            image_view = model.encode_image(image_views(images, self.transform, self.seed))
            text_view = model.encode_text(text_views(tokens, self.seed, p["text_swap"], p["text_drop"]))
            inmodal = inmodal_loss(image_features, image_view, scale)
            inmodal = inmodal + inmodal_loss(text_features, text_view, scale)
            loss = loss + p["inmodal_weight"] * inmodal / 2
        return loss


def fit(ctx, params):
    loss = CleanClipLoss(params, ctx.model.image_size)
    return fit_on_clean_pool(ctx, params, "cleanclip", loss_fn=loss, augment=loss.augment)


def classifier(ctx, state, text_prefix):
    load_model_state(ctx, state)
    return zero_shot_classifier(ctx, text_prefix)
