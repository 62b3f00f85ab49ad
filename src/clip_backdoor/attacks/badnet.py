"""BadNet (Gu et al. 2017) as in CleanCLIP: a patch of Gaussian noise around the image's channel means,
resampled for every image; or (pattern: checkerboard, Huang et al. ICLR'25) the same black-and-white
checkerboard on every image.

How the noise patch becomes pixel values (`noise`):
  wrap   CleanCLIP's `backdoor/utils.py:apply_trigger`: the float patch goes through ToPILImage, which
         truncates x*255 to an integer and wraps it modulo 256, so the patch is close to uniform over
         0..255 (sd ~74 grey levels, <1% at 0 or at 255). The default (the papers' trigger).
  clamp  this project's earlier variant: x clamped to [0, 1] (a third of the values at 0, a third at 255).
"""

import torch

from clip_backdoor.attacks.patching import check_batch, default_patch_size, paste_patch

LOCATIONS = ("random", "center")  # the first of each is the default
PATTERNS = ("noise", "checkerboard")
NOISES = ("wrap", "clamp")


def _draw_location(generator, image_size, patch_size):
    top, left = torch.randint(0, image_size - patch_size + 1, (2,), generator=generator).tolist()
    return top, left


def patch_location(seed, image_size, patch_size):
    """(top, left) of the random-location patch for an image with this seed."""
    return _draw_location(torch.Generator().manual_seed(int(seed)), image_size, patch_size)


def checkerboard(patch_size):
    """[3, p, p] of ones where row + column is even, zeros elsewhere."""
    rows, cols = torch.meshgrid(torch.arange(patch_size), torch.arange(patch_size), indexing="ij")
    return ((rows + cols) % 2 == 0).float().expand(3, -1, -1)


def wrap_to_bytes(x):
    """Float values -> what ToPILImage makes of them, back in [0,1]: trunc(x*255) modulo 256, / 255."""
    return (torch.trunc(x * 255).long() % 256).float() / 255


def noise_patch(image, noise, noise_std, mode):
    """The noise patch of one image [3,H,W]: channel means + noise_std * noise ([3,p,p] standard normal).

    `wrap` is computed on the CPU in float32 (as CleanCLIP does), so that no device's rounding moves a
    value across a grey-level boundary; `clamp` in the image's dtype on its device.
    """
    if mode == "clamp":
        return (image.mean((1, 2), keepdim=True) + noise_std * noise.to(image)).clamp(0, 1)
    values = image.detach().cpu().float().mean((1, 2), keepdim=True) + noise_std * noise
    return wrap_to_bytes(values).to(image)


def make_trigger(image_size, *, patch_size, noise_std, location, pattern, noise):
    patch_size = default_patch_size(image_size) if patch_size is None else int(patch_size)
    if not 1 <= patch_size <= image_size:
        raise ValueError(f"badnet: param 'patch_size' must be in [1, {image_size}], got {patch_size}")
    if noise_std < 0:
        raise ValueError(f"badnet: param 'noise_std' must be >= 0, got {noise_std}")
    if location not in LOCATIONS:
        raise ValueError(f"badnet: param 'location' must be one of {LOCATIONS}, got {location!r}")
    if pattern not in PATTERNS:
        raise ValueError(f"badnet: param 'pattern' must be one of {PATTERNS}, got {pattern!r}")
    if noise not in NOISES:
        raise ValueError(f"badnet: param 'noise' must be one of {NOISES}, got {noise!r}")
    centre = (image_size - patch_size) // 2

    def trigger(images, seeds):
        seeds = check_batch("badnet", images, seeds, image_size)
        board = checkerboard(patch_size).to(images)
        patches, tops, lefts = [], [], []
        for image, seed in zip(images, seeds, strict=True):
            g = torch.Generator().manual_seed(seed)
            top, left = _draw_location(g, image_size, patch_size)
            if location == "center":
                top = left = centre
            if pattern == "checkerboard":
                patches.append(board)
            else:
                draw = torch.randn(3, patch_size, patch_size, generator=g)
                patches.append(noise_patch(image, draw, noise_std, noise))
            tops.append(top)
            lefts.append(left)
        return paste_patch(images, torch.stack(patches), tops, lefts).clamp(0, 1)

    return trigger
