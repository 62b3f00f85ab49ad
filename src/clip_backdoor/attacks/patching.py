"""Helpers shared by the trigger modules: batch checks, default patch size, patch pasting."""

from numbers import Integral

import torch


def default_patch_size(image_size):
    """The papers' 16 px patch at 224 px, scaled to `image_size` (at least 2 px)."""
    return max(2, round(16 * image_size / 224))


def check_batch(name, images, seeds, image_size):
    """Validate a trigger call and return the seeds as a list of ints."""
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name}: images must be a [B,3,H,W] tensor, got {getattr(images, 'shape', images)}")
    if not images.is_floating_point():
        raise ValueError(f"{name}: images must be floating point in [0,1], got {images.dtype}")
    if tuple(images.shape[-2:]) != (image_size, image_size):
        raise ValueError(f"{name}: trigger built for {image_size} px images, got {tuple(images.shape[-2:])}")
    seeds = [int(s) for s in seeds]
    if len(seeds) != images.shape[0]:
        raise ValueError(f"{name}: need one seed per image, got {len(seeds)} for {images.shape[0]} images")
    return seeds


def paste_patch(images, patch, top, left):
    """Copy of `images` [B,3,H,W] with `patch` ([3,p,q] or one per image [B,3,p,q]) at (top, left).

    `top` and `left` are ints or one int per image.
    """
    out = images.clone()
    b, _, h, w = images.shape
    patch = patch.to(images).expand(b, *patch.shape[-3:])
    ph, pw = patch.shape[-2:]
    tops = [int(top)] * b if isinstance(top, Integral) else [int(t) for t in top]
    lefts = [int(left)] * b if isinstance(left, Integral) else [int(x) for x in left]
    for i, (t, x) in enumerate(zip(tops, lefts, strict=True)):
        if not (0 <= t <= h - ph and 0 <= x <= w - pw):
            raise ValueError(f"patch {ph}x{pw} at ({t}, {x}) does not fit in a {h}x{w} image")
        out[i, :, t : t + ph, x : x + pw] = patch[i]
    return out


def make_centre_patch_trigger(name, image_size, patch, patch_size):
    """Trigger pasting a fixed optimised `patch` [3,p,p] in [0,1] at the image centre (TrojVQA, BadCLIP)."""
    if patch is None:
        raise ValueError(f"{name}: the optimised {name} patch artefact is required (param 'patch')")
    patch = torch.as_tensor(patch).detach().float()
    if patch.ndim != 3 or patch.shape[0] != 3 or patch.shape[1] != patch.shape[2]:
        raise ValueError(f"{name}: param 'patch' must be a [3,p,p] tensor, got {tuple(patch.shape)}")
    p = patch.shape[-1]
    if patch_size is not None and int(patch_size) != p:
        raise ValueError(f"{name}: param 'patch_size' is {patch_size} but the patch artefact is {p} px")
    if p > image_size:
        raise ValueError(f"{name}: patch of {p} px does not fit in {image_size} px images")
    patch = patch.clamp(0, 1)
    top = (image_size - p) // 2

    def trigger(images, seeds):
        check_batch(name, images, seeds, image_size)
        return paste_patch(images, patch, top, top).clamp(0, 1)

    return trigger
