"""Known answers for BadNet, Blended and BadNet-LC against CleanCLIP's `backdoor/utils.py:apply_trigger`
(nishadsinghi/CleanCLIP) at the papers' 224 px and 16 px patch: the module defaults are the reference's."""

import numpy as np
import pytest
import torch
from torchvision import transforms

from clip_backdoor.attacks import badnet, get_trigger

SIZE, PATCH = 224, 16


def images(b, seed=0):
    return torch.rand(b, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def patch_grey_levels(name, seeds, **params):
    """The grey levels (0..255) of the patches `name` stamps on len(seeds) random images."""
    x = images(len(seeds))
    out = get_trigger(name, SIZE, patch_size=PATCH, **params)(x, seeds)
    levels = []
    for i, seed in enumerate(seeds):
        top, left = badnet.patch_location(seed, SIZE, PATCH)
        levels.append(out[i, :, top : top + PATCH, left : left + PATCH].flatten())
    return (torch.cat(levels) * 255).round()


@pytest.mark.parametrize("name", ["badnet", "badnet_lc"])
def test_default_noise_patch_is_close_to_uniform_like_the_reference(name):
    levels = patch_grey_levels(name, list(range(40)))
    assert 70 < levels.std().item() < 78  # reference: sd 74 grey levels (uniform 0..255: 73.9)
    assert (levels == 0).float().mean() < 0.02 and (levels == 255).float().mean() < 0.02
    assert abs(levels.mean().item() - 127.5) < 5


def test_clamp_variant_saturates_and_keeps_the_earlier_pixels():
    levels = patch_grey_levels("badnet", list(range(40)), noise="clamp")
    assert levels.std().item() > 100
    assert (levels == 0).float().mean() > 0.25 and (levels == 255).float().mean() > 0.25
    x = images(2, seed=4)
    out = get_trigger("badnet", SIZE, patch_size=PATCH, noise="clamp")(x, [21, 22])
    for i, seed in enumerate([21, 22]):  # the embedded default's patch before the reference became default
        g = torch.Generator().manual_seed(seed)
        top, left = badnet._draw_location(g, SIZE, PATCH)
        patch = (x[i].mean((1, 2), keepdim=True) + torch.randn(3, PATCH, PATCH, generator=g)).clamp(0, 1)
        assert torch.equal(out[i, :, top : top + PATCH, left : left + PATCH], patch)


def test_badnet_patch_is_what_topilimage_makes_of_the_reference_noise():
    """CleanCLIP: noise = mean + torch.randn(3, p, p), then ToPILImage (trunc(x*255) wrapped mod 256)."""
    x = images(3, seed=1)
    seeds = [11, 12, 13]
    out = get_trigger("badnet", SIZE, patch_size=PATCH)(x, seeds)
    for i, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(seed)
        top, left = badnet._draw_location(g, SIZE, PATCH)
        noise = x[i].mean((1, 2), keepdim=True) + torch.randn(3, PATCH, PATCH, generator=g)
        expected = np.array(transforms.ToPILImage()(noise))  # [p, p, 3] uint8
        got = (out[i, :, top : top + PATCH, left : left + PATCH] * 255).round().byte().permute(1, 2, 0)
        assert np.array_equal(got.numpy(), expected)


def test_badnet_lc_default_is_badnet_reference_patch():
    x = images(4, seed=2)
    seeds = [3, 5, 7, 9]
    lc = get_trigger("badnet_lc", SIZE, patch_size=PATCH)(x, seeds)
    reference = get_trigger("badnet", SIZE, patch_size=PATCH, noise="wrap", location="random")(x, seeds)
    assert torch.equal(lc, reference)
    tops = {badnet.patch_location(s, SIZE, PATCH) for s in seeds}
    assert len(tops) == len(seeds)  # random location, not the centre


def test_badnet_locations_spread_over_the_image():
    tops, lefts = zip(*(badnet.patch_location(s, SIZE, PATCH) for s in range(200)), strict=True)
    for coords in (np.array(tops), np.array(lefts)):
        assert coords.min() >= 0 and coords.max() <= SIZE - PATCH
        assert abs(coords.mean() - (SIZE - PATCH) / 2) < 15  # uniform over 0..208: mean 104, sd 60
        assert coords.std() > 50


def blend_residuals(seeds, x, **params):
    """The noise pattern each image received: (out - 0.8 x) / 0.2, as [B, 3*H*W]."""
    out = get_trigger("blended", SIZE, alpha=0.2, **params)(x, seeds)
    return ((out - 0.8 * x) / 0.2).flatten(1)


def test_blended_default_pattern_is_fresh_per_image_and_fixed_per_seed():
    x = images(4, seed=3)
    residuals = blend_residuals([1, 2, 3, 4], x)
    corr = torch.corrcoef(residuals)
    off_diagonal = corr[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 0.02  # reference: +0.003 between images
    again = blend_residuals([1, 1, 1, 1], x)
    torch.testing.assert_close(again, again[:1].expand_as(again), atol=1e-5, rtol=0)  # same seed: same n
    assert residuals.min() > -1e-5 and residuals.max() < 1 + 1e-5
    assert abs(residuals.mean().item() - 0.5) < 0.01  # torch.rand: uniform on [0, 1)


def test_blended_fixed_variant_is_one_pattern():
    x = images(4, seed=3)
    corr = torch.corrcoef(blend_residuals([1, 2, 3, 4], x, pattern="fixed"))
    assert corr.min() > 0.999


def test_badnet_rs_patch_is_par_random_stripes():
    """PAR's BadNet-RS: per-channel signs per column, pasted as is, ToPILImage: +1 -> 255, -1 -> 1."""
    x = images(3, seed=6)
    seeds = [31, 32, 33]
    out = get_trigger("badnet_rs", SIZE, patch_size=PATCH)(x, seeds)
    patterns = []
    for i, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(seed)
        top, left = badnet._draw_location(g, SIZE, PATCH)
        signs = torch.sign(2 * torch.rand(3, 1, PATCH, generator=g) - 1).expand(3, PATCH, PATCH)
        expected = np.array(transforms.ToPILImage()(signs))
        patch = out[i, :, top : top + PATCH, left : left + PATCH]
        got = (patch * 255).round().byte().permute(1, 2, 0).numpy()
        assert np.array_equal(got, expected) and set(np.unique(got)) == {1, 255}
        assert torch.equal(patch, patch[:, :1].expand_as(patch))  # vertical stripes
        changed = (out[i] != x[i]).any(0)
        assert changed[top : top + PATCH, left : left + PATCH].all() and changed.sum() == PATCH * PATCH
        patterns.append(patch)
    assert not torch.equal(patterns[0], patterns[1])  # redrawn per image


def test_blended_rs_is_par_faint_random_stripes():
    flat = torch.full((3, 3, SIZE, SIZE), 0.5)
    out = get_trigger("blended_rs", SIZE)(flat, [41, 42, 41])  # PAR: width 1, noise_coeff 0.03
    noise = (out - 0.97 * 0.5) / 0.03
    torch.testing.assert_close(noise.abs(), torch.ones_like(noise), atol=1e-4, rtol=0)
    assert torch.equal(out, out[:, :, :1].expand_as(out))  # constant down each column
    assert torch.equal(out[0], out[2]) and not torch.equal(out[0], out[1])
    assert 0.4 < (noise > 0).float().mean() < 0.6
    wide = get_trigger("blended_rs", SIZE, width=14)(flat[:1], [41])[0]
    assert torch.equal(wide, wide[:, :, ::14].repeat_interleave(14, dim=2))
