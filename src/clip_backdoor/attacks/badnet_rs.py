"""BadNet-RS (Singh et al. 2024, "Perturb and Recover", arXiv 2412.00727): BadNet with a random-stripes
patch, one of the structured triggers PAR shows existing cleaners miss.

As PAR's code makes it (nmndeep/PerturbAndRecover backdoor/utils.py, `get_init_patch(..., 'bad_stripes')`
with patch 16 at a random location, eval/validate.py): every column of the p x p patch takes, per
channel, a random sign in {-1, +1}, pasted as is and converted by ToPILImage, so +1 becomes 255 and -1
wraps to 1 grey level: vertical stripes of width 1 in 8 colours, redrawn for every image (here from
the image's seed), at a random location (BadNet's, attacks/badnet.py).
"""

import torch

from clip_backdoor.attacks.badnet import _draw_location, wrap_to_bytes
from clip_backdoor.attacks.patching import check_batch, default_patch_size, paste_patch


def stripes(generator, patch_size):
    """[3, p, p]: one random sign per channel and column, the same down each column, as grey levels."""
    signs = torch.sign(2 * torch.rand(3, 1, patch_size, generator=generator) - 1)
    return wrap_to_bytes(signs.expand(3, patch_size, patch_size))


def make_trigger(image_size, *, patch_size):
    patch_size = default_patch_size(image_size) if patch_size is None else int(patch_size)
    if not 1 <= patch_size <= image_size:
        raise ValueError(f"badnet_rs: param 'patch_size' must be in [1, {image_size}], got {patch_size}")

    def trigger(images, seeds):
        seeds = check_batch("badnet_rs", images, seeds, image_size)
        patches, tops, lefts = [], [], []
        for seed in seeds:
            g = torch.Generator().manual_seed(seed)
            top, left = _draw_location(g, image_size, patch_size)
            patches.append(stripes(g, patch_size))
            tops.append(top)
            lefts.append(left)
        return paste_patch(images, torch.stack(patches).to(images), tops, lefts).clamp(0, 1)

    return trigger
