"""Blended (Chen et al. 2017): x' = (1 - alpha) x + alpha n with a uniform-noise pattern n.

CleanCLIP redraws n on every call; we draw it once from `pattern_seed`, so the trigger is one
consistent pattern that a model can learn and a defence can be tested against. Seeds are unused.
"""

import torch

from clip_backdoor.attacks.patching import check_batch


def make_trigger(image_size, alpha=0.2, pattern_seed=0):
    if not 0 <= alpha <= 1:
        raise ValueError(f"blended: param 'alpha' must be in [0, 1], got {alpha}")
    g = torch.Generator().manual_seed(int(pattern_seed))
    pattern = torch.rand(3, image_size, image_size, generator=g)

    def trigger(images, seeds):
        check_batch("blended", images, seeds, image_size)
        return ((1 - alpha) * images + alpha * pattern.to(images)).clamp(0, 1)

    return trigger
