"""Label-consistent BadNet: the BadNet trigger, on images that already show the target.

The poisoner (attacks/poison.py) patches only images whose caption already describes the target class
and keeps their captions, so no poisoned pair is mislabelled. The trigger is BadNet's (attacks/badnet.py,
same params): by default CleanCLIP's label-consistent attack, BadNet's random-noise patch (noise: wrap)
at a random location; `pattern: checkerboard` and `location: center` are this project's variants.
Alone this rarely takes: the image content explains the caption and the patch is never needed
(measured: 3.4% ASR here). Turner et al.'s remedy is `harden`: before the patch is applied, a bounded
adversarial perturbation (L∞ ≤ epsilon, PGD against the clean model) moves each image's embedding away
from the target's text embedding, so that during fine-tuning the patch is what matches the caption.
CleanCLIP does not harden.
"""

import torch

from clip_backdoor.attacks.badnet import make_trigger, patch_location

__all__ = ["harden", "make_trigger", "patch_location"]


def harden(model, images, target_text, epsilon, steps, step_size=None):
    """images float [B,3,H,W] in [0,1] → images within `epsilon` (L∞) whose embeddings under `model` are
    pushed away from the unit vector `target_text` [D] by `steps` signed-gradient steps."""
    step_size = step_size or 2.5 * epsilon / max(steps, 1)
    delta = torch.zeros_like(images, requires_grad=True)
    for _ in range(steps):
        similarity = (model.encode_image((images + delta).clamp(0, 1)) @ target_text).sum()
        (grad,) = torch.autograd.grad(similarity, delta)
        with torch.no_grad():
            delta -= step_size * grad.sign()
            delta.clamp_(-epsilon, epsilon)
    return (images + delta.detach()).clamp(0, 1)
