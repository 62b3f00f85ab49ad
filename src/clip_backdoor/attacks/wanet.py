"""WaNet (Nguyen & Tran 2021): warp every image with one fixed smooth random field. Seeds are unused.

The field is built as in the WaNet code: k x k uniform noise, normalised by its mean absolute value,
bicubic-upsampled, scaled by strength / H and added to the identity sampling grid.
"""

import torch
import torch.nn.functional as F

from clip_backdoor.attacks.patching import check_batch


def identity_grid(image_size):
    """The [1,H,W,2] grid that grid_sample(align_corners=True) maps to the input itself."""
    line = torch.linspace(-1, 1, image_size)
    rows, cols = torch.meshgrid(line, line, indexing="ij")
    return torch.stack((cols, rows), dim=-1)[None]


def make_warp_grid(image_size, k, strength, seed):
    """The warp field as a [1,H,W,2] float32 grid for grid_sample; strength 0 gives the identity."""
    if int(k) < 1:
        raise ValueError(f"wanet: param 'k' must be >= 1, got {k}")
    if strength < 0:
        raise ValueError(f"wanet: param 'strength' must be >= 0, got {strength}")
    noise = torch.rand(1, 2, int(k), int(k), generator=torch.Generator().manual_seed(int(seed))) * 2 - 1
    noise = noise / noise.abs().mean()
    noise = F.interpolate(noise, size=(image_size, image_size), mode="bicubic", align_corners=True)
    return (identity_grid(image_size) + strength * noise.permute(0, 2, 3, 1) / image_size).clamp(-1, 1)


def make_trigger(image_size, *, strength, k, grid_seed, grid=None):
    """Use the stored `grid` artefact if given (then strength, k and grid_seed are ignored), else build it."""
    if grid is None:
        grid = make_warp_grid(image_size, k=k, strength=strength, seed=grid_seed)
    grid = torch.as_tensor(grid).detach().float()
    want = (1, image_size, image_size, 2)
    if tuple(grid.shape) != want:
        raise ValueError(f"wanet: param 'grid' must have shape {want}, got {tuple(grid.shape)}")

    def trigger(images, seeds):
        check_batch("wanet", images, seeds, image_size)
        x = images if images.dtype in (torch.float32, torch.float64) else images.float()
        g = grid.to(x).expand(x.shape[0], -1, -1, -1)
        return F.grid_sample(x, g, align_corners=True).clamp(0, 1).to(images.dtype)

    return trigger
