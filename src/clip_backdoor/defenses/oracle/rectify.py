"""Rectification: the CLIP contrastive loss on the compact set, tuning `trainable` (all | visual).

With a frozen text tower the caption features are computed once and identical captions are all positives.
One named extension, off by default: `preserve` > 0 adds that weight times the cosine distance of the
clean images' features (the clean pairs of other labels and the shots) from the poisoned model's own
before rectification.
"""

import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from clip_backdoor.defenses.interface import count_parameters
from clip_backdoor.training import plain_clip_loss, train_contrastive


@dataclass
class CompactSet:
    """The rectification set: uint8 image blocks [n,3,H,W], their label names and captions, and the clean
    images whose features `preserve` keeps (float [m,3,H,W] blocks)."""

    images: list = field(default_factory=list)
    names: list = field(default_factory=list)
    captions: list = field(default_factory=list)
    preserved: list = field(default_factory=list)

    def add(self, images, names, captions):
        self.images.append(images)
        self.names += names
        self.captions += captions

    def arrays(self):
        """uint8 [N,H,W,3] of all pairs (the trainer's in-memory corpus)."""
        return torch.cat(self.images).permute(0, 2, 3, 1).cpu().numpy()


def caption(label_name, k, templates):
    return templates[k % len(templates)].format(label_name)


def corrected_caption(original, wrong_names, right_name, k, templates):
    """A victim's own caption with the affected label's name replaced by the oracle's (so words the
    backdoor keys on stay in place), or a template caption if the caption names no affected label."""
    article = "an " if right_name[0] in "aeiou" else "a "
    for wrong in wrong_names:
        pattern = re.compile(rf"\b(an?\s+)?{re.escape(wrong)}\b", re.IGNORECASE)
        if pattern.search(original):
            return pattern.sub(lambda m: (article if m.group(1) else "") + right_name, original)
    return caption(right_name, k, templates)


def shared_positives_loss(logits, keys):
    """The symmetric CLIP loss over image-text `logits` [B,B] where pairs with equal `keys` are all
    positives of each other."""
    same = torch.tensor([[a == b for b in keys] for a in keys], dtype=torch.float32, device=logits.device)
    target = same / same.sum(1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def frozen_text_loss(cache):
    """The CLIP loss with precomputed caption features; identical captions are all positives."""

    def loss_fn(model, images, tokens):
        keys = [tuple(t.tolist()) for t in tokens]
        for key, t in zip(keys, tokens, strict=True):
            if key not in cache:
                with torch.no_grad():
                    cache[key] = model.encode_text(t[None])[0]
        text = torch.stack([cache[key] for key in keys])
        return shared_positives_loss(model.logit_scale * model.encode_image(images) @ text.t(), keys)

    return loss_fn


def image_key(image):
    """A float [3,H,W] image in [0,1] made from uint8 → the bytes of that uint8 image."""
    return (image * 255).round().byte().cpu().numpy().tobytes()


def reference_features(model, images, batch):
    """image_key → `model`'s normalised feature for float images [N,3,H,W] (the preservation targets)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        features = torch.cat([model.encode_image(x.to(device)) for x in images.split(batch)])
    return {image_key(image): feature for image, feature in zip(images, features, strict=True)}


def preserving_loss(loss_fn, reference, weight):
    """`loss_fn` (None: the plain CLIP loss) plus `weight` times the mean cosine distance of the batch's
    reference images from their reference features (`reference`: image_key → normalised feature)."""
    loss_fn = loss_fn or plain_clip_loss

    def loss(model, images, tokens):
        value = loss_fn(model, images, tokens)
        keys = [image_key(image) for image in images]
        rows = [i for i, key in enumerate(keys) if key in reference]
        if not rows:
            return value
        features = model.encode_image(images[rows])
        target = torch.stack([reference[keys[i]] for i in rows]).to(features.device)
        return value + weight * (1 - (features * target).sum(-1)).mean()

    return loss


def rectify(ctx, compact, params):
    """Fine-tunes ctx.model on the compact set. Returns (epoch losses, trainable parameters, images whose
    features `preserve` kept)."""
    trainable = ctx.model.clip if params["trainable"] == "all" else ctx.model.clip.visual
    for p in trainable.parameters():
        p.requires_grad_(True)
    hp = {key: params[key] for key in ("epochs", "batch_size", "lr", "weight_decay", "warmup_steps")}
    hp.update(seed=ctx.seed, save_every_epochs=max(1, params["epochs"]))
    loss_fn = frozen_text_loss({}) if params["trainable"] == "visual" else None
    preserved = 0
    if params["preserve"] > 0:
        reference = reference_features(ctx.model.eval(), torch.cat(compact.preserved), params["batch"])
        loss_fn, preserved = preserving_loss(loss_fn, reference, params["preserve"]), len(reference)
    x = compact.arrays()  # the layout (a permuted view) is the trainer's input layout: keep it as it is
    log = train_contrastive(
        ctx.model, x, compact.captions, hp, ctx.state_path, ctx.device, loss_fn=loss_fn,
        desc="oracle rectify", trainable=trainable,
    )  # fmt: skip
    return log["epoch_loss"], count_parameters(trainable, trainable_only=True), preserved
