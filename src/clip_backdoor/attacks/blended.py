"""Blended (Chen et al. 2017): x' = (1 - alpha) x + alpha n with a uniform-noise pattern n.

pattern:
  per_image  CleanCLIP's `backdoor/utils.py:apply_trigger`: a fresh torch.rand(3,H,W) for every image,
             at poisoning and at test; drawn here from the image's seed, so a seed gives one pattern.
             The default (the papers' trigger).
  fixed      this project's earlier variant: one pattern drawn from `pattern_seed`, the same on every
             image (seeds unused).
"""

import torch

from clip_backdoor.attacks.patching import check_batch

PATTERNS = ("per_image", "fixed")


def per_image_pattern(seed, image_size):
    """The [3,H,W] uniform-noise pattern of the image with this seed (pattern: per_image)."""
    return torch.rand(3, image_size, image_size, generator=torch.Generator().manual_seed(int(seed)))


def make_trigger(image_size, *, alpha, pattern, pattern_seed):
    if not 0 <= alpha <= 1:
        raise ValueError(f"blended: param 'alpha' must be in [0, 1], got {alpha}")
    if pattern not in PATTERNS:
        raise ValueError(f"blended: param 'pattern' must be one of {PATTERNS}, got {pattern!r}")
    fixed = per_image_pattern(pattern_seed, image_size)

    def trigger(images, seeds):
        seeds = check_batch("blended", images, seeds, image_size)
        if pattern == "fixed":
            noise = fixed.to(images)
        else:
            noise = torch.stack([per_image_pattern(s, image_size) for s in seeds]).to(images)
        return ((1 - alpha) * images + alpha * noise).clamp(0, 1)

    return trigger
