"""Blended-RS (Singh et al. 2024, "Perturb and Recover", arXiv 2412.00727): Blended with random stripes,
one of the structured triggers PAR shows existing cleaners miss.

As PAR's code makes it (nmndeep/PerturbAndRecover backdoor/utils.py, `get_init_patch(..., 'stripes')`
over the whole image and patch_location 'blended_rs', with width 1 and noise_coeff 0.03 in
eval/validate.py): every `width`-column stripe takes, per channel, a random sign n in {-1, +1}, and
x' = clip(alpha n + (1 - alpha) x, 0, 1); the stripes are redrawn for every image (here from its seed).
"""

import torch

from clip_backdoor.attacks.patching import check_batch


def stripes(seed, image_size, width):
    """[3, H, W] of +-1: one random sign per channel and stripe of `width` columns, constant down columns."""
    g = torch.Generator().manual_seed(int(seed))
    n_stripes = -(-image_size // width)
    signs = torch.sign(2 * torch.rand(3, 1, n_stripes, generator=g) - 1)
    return signs.repeat_interleave(width, dim=2)[:, :, :image_size].expand(3, image_size, image_size)


def make_trigger(image_size, *, alpha, width):
    if not 0 <= alpha <= 1:
        raise ValueError(f"blended_rs: param 'alpha' must be in [0, 1], got {alpha}")
    if not 1 <= int(width) <= image_size:
        raise ValueError(f"blended_rs: param 'width' must be in [1, {image_size}], got {width}")
    width = int(width)

    def trigger(images, seeds):
        seeds = check_batch("blended_rs", images, seeds, image_size)
        noise = torch.stack([stripes(s, image_size, width) for s in seeds]).to(images)
        return (alpha * noise + (1 - alpha) * images).clamp(0, 1)

    return trigger
