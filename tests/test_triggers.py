"""Known-answer tests for the pure trigger functions."""

import math

import pytest
import torch

from clip_backdoor.attacks import (
    ATTACK_NAMES,
    TRIGGERS,
    badnet,
    badnet_lc,
    get_trigger,
    issba,
    trojvqa,
    wanet,
)
from clip_backdoor.attacks.patching import default_patch_size, paste_patch

SIZE = 32


def rand_images(b=4, size=SIZE, seed=0, dtype=torch.float32):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def artefacts(name):
    """Params that make every trigger buildable: untrained ISSBA encoder, a random optimised patch."""
    if name == "issba":
        torch.manual_seed(0)
        return {"encoder": issba.StegaEncoder(8, SIZE)}
    if name in ("trojvqa", "badclip"):
        return {"patch": torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(1))}
    return {}


def test_registry():
    assert set(ATTACK_NAMES) == set(TRIGGERS)
    assert badnet_lc.make_trigger is badnet.make_trigger


def test_unknown_name_and_param():
    with pytest.raises(ValueError, match="no_such_attack"):
        get_trigger("no_such_attack", SIZE)
    with pytest.raises(ValueError, match="amplitud"):
        get_trigger("sig", SIZE, amplitud=0.1)
    with pytest.raises(ValueError, match="alpha"):
        get_trigger("blended", SIZE, alpha=1.5)
    with pytest.raises(ValueError, match="location"):
        get_trigger("badnet", SIZE, location="corner")
    with pytest.raises(ValueError, match="patch_size"):
        get_trigger("badnet", SIZE, patch_size=SIZE + 1)


def test_default_patch_size():
    assert default_patch_size(224) == 16
    assert default_patch_size(32) == 2
    assert default_patch_size(8) == 2


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_clamped_deterministic_and_input_untouched(name):
    images = rand_images()
    images[0] = 0.0
    images[1] = 1.0
    before = images.clone()
    trigger = get_trigger(name, SIZE, **artefacts(name))
    out = trigger(images, [3, 4, 5, 6])
    assert torch.equal(images, before)
    assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, trigger(images, torch.tensor([3, 4, 5, 6])))
    assert not torch.equal(out, images)
    out64 = trigger(images.double(), [3, 4, 5, 6])
    assert out64.dtype == torch.float64
    with pytest.raises(ValueError, match="seed"):
        trigger(images, [1, 2])


def test_sig_column_profile():
    out = get_trigger("sig", SIZE)(torch.full((2, 3, SIZE, SIZE), 0.5), [0, 1])
    expected = torch.tensor([0.5 + 60 / 255 * math.sin(2 * math.pi * j * 6 / SIZE) for j in range(SIZE)])
    torch.testing.assert_close(out, expected.expand_as(out), atol=1e-6, rtol=0)


def test_blended_fixed_arithmetic():
    pattern = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    images = torch.full((2, 3, SIZE, SIZE), 0.5)
    fixed = {"pattern": "fixed"}
    out = get_trigger("blended", SIZE, **fixed)(images, [0, 1])
    torch.testing.assert_close(out, (0.4 + 0.2 * pattern).expand_as(out), atol=1e-6, rtol=0)
    full = get_trigger("blended", SIZE, alpha=1.0, **fixed)(images, [0, 1])
    assert torch.equal(full, pattern.expand_as(out))
    assert torch.equal(get_trigger("blended", SIZE, alpha=0.0, **fixed)(images, [0, 1]), images)
    other = get_trigger("blended", SIZE, pattern_seed=1, **fixed)(images, [0, 1])
    assert not torch.equal(other, out)
    with pytest.raises(ValueError, match="pattern"):
        get_trigger("blended", SIZE, pattern="random")


def test_blended_per_image_arithmetic():
    images = torch.full((2, 3, SIZE, SIZE), 0.5)
    out = get_trigger("blended", SIZE)(images, [7, 8])
    for i, seed in enumerate([7, 8]):
        pattern = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(out[i], 0.4 + 0.2 * pattern, atol=1e-6, rtol=0)


def test_badnet_patch_at_seeded_location_only():
    p, seeds = 6, [0, 1, 2, 3]
    images = torch.full((4, 3, SIZE, SIZE), 0.5)
    out = get_trigger("badnet", SIZE, patch_size=p)(images, seeds)
    for i, seed in enumerate(seeds):
        top, left = badnet.patch_location(seed, SIZE, p)
        assert 0 <= top <= SIZE - p and 0 <= left <= SIZE - p
        changed = (out[i] != images[i]).any(0)
        expected = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        expected[top : top + p, left : left + p] = True
        assert torch.equal(changed, expected)


@pytest.mark.parametrize("noise", badnet.NOISES)
def test_badnet_zero_noise_patch_is_channel_mean(noise):
    images = rand_images(2)
    out = get_trigger("badnet", SIZE, patch_size=5, noise_std=0.0, noise=noise)(images, [7, 8])
    for i, seed in enumerate([7, 8]):
        top, left = badnet.patch_location(seed, SIZE, 5)
        region = out[i, :, top : top + 5, left : left + 5]
        mean = images[i].mean((1, 2))[:, None, None].expand_as(region)
        if noise == "wrap":  # ToPILImage's conversion: truncated to a grey level
            mean = torch.floor(mean * 255) / 255
        torch.testing.assert_close(region, mean)
    with pytest.raises(ValueError, match="noise"):
        get_trigger("badnet", SIZE, noise="saturate")


def test_badnet_seeds():
    trigger = get_trigger("badnet", SIZE, patch_size=6)
    images = rand_images(2)
    assert torch.equal(trigger(images, [5, 5]), trigger(images, [5, 5]))
    assert badnet.patch_location(0, SIZE, 6) != badnet.patch_location(1, SIZE, 6)
    changed = (trigger(images, [0, 1]) != images).any(1)
    assert not torch.equal(changed[0], changed[1])
    assert len({badnet.patch_location(s, SIZE, 6) for s in range(20)}) > 10


def test_badnet_center():
    p = 6
    trigger = get_trigger("badnet", SIZE, patch_size=p, location="center")
    out = trigger(torch.full((1, 3, SIZE, SIZE), 0.5), [9])
    c = (SIZE - p) // 2
    changed = (out[0] != 0.5).any(0)
    assert changed[c : c + p, c : c + p].all() and changed.sum() == p * p


def test_badnet_checkerboard_is_the_same_board_at_the_seeded_location():
    p, seeds = 4, [3, 4]
    trigger = get_trigger("badnet", SIZE, patch_size=p, pattern="checkerboard")
    out = trigger(torch.full((2, 3, SIZE, SIZE), 0.5), seeds)
    board = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1]] * 2).expand(3, p, p)
    for i, seed in enumerate(seeds):
        top, left = badnet.patch_location(seed, SIZE, p)
        assert torch.equal(out[i, :, top : top + p, left : left + p], board)
        assert (out[i] != 0.5).any(0).sum() == p * p
    with pytest.raises(ValueError, match="pattern"):
        get_trigger("badnet", SIZE, pattern="stripes")


def test_wanet_identity_at_zero_strength():
    assert torch.equal(wanet.make_warp_grid(SIZE, k=4, strength=0.0, seed=0), wanet.identity_grid(SIZE))
    images = rand_images()
    out = get_trigger("wanet", SIZE, strength=0.0)(images, [0, 1, 2, 3])
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)


def test_wanet_warps_and_grid_artefact():
    grid = wanet.make_warp_grid(SIZE, k=4, strength=0.5, seed=0)
    assert grid.shape == (1, SIZE, SIZE, 2) and grid.abs().max() <= 1
    assert torch.equal(grid, wanet.make_warp_grid(SIZE, k=4, strength=0.5, seed=0))
    images = rand_images()
    out = get_trigger("wanet", SIZE, k=4, strength=0.5)(images, [0, 1, 2, 3])
    assert (out - images).abs().max() > 0.05
    assert torch.equal(out, get_trigger("wanet", SIZE, grid=grid)(images, [0, 1, 2, 3]))
    with pytest.raises(ValueError, match="grid"):
        get_trigger("wanet", SIZE, grid=torch.zeros(1, 8, 8, 2))


def test_issba_train_and_residual_bound():
    images = (rand_images(16, size=16) * 255).to(torch.uint8).permute(0, 2, 3, 1)  # NHWC uint8
    max_residual = 8 / 255
    encoder, decoder, accuracy = issba.train_stega(
        images, n_bits=8, steps=3, lr=1e-3, seed=0, batch_size=8, max_residual=max_residual, device="cpu"
    )
    assert 0.0 <= accuracy <= 1.0
    x = rand_images(4, size=16)
    bits = issba.secret_to_bits("Stega!!", 8).expand(4, -1)
    with torch.no_grad():
        assert encoder(x, bits).abs().max() <= max_residual + 1e-7
        assert decoder(x).shape == (4, 8)
    out = get_trigger("issba", 16, encoder=encoder)(x, [0, 1, 2, 3])
    assert (out - x).abs().max() <= max_residual + 1e-6
    with pytest.raises(ValueError, match="issba encoder artefact"):
        get_trigger("issba", 16)


def test_secret_to_bits():
    bits = issba.secret_to_bits("Stega!!", 100)
    assert bits.shape == (100,) and set(bits.tolist()) <= {0.0, 1.0}
    assert torch.equal(bits, issba.secret_to_bits("Stega!!", 100))
    assert not torch.equal(bits, issba.secret_to_bits("other", 100))


@pytest.mark.parametrize("name", ["trojvqa", "badclip"])
def test_patch_triggers_at_centre(name):
    patch = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(2))
    images = torch.zeros(2, 3, SIZE, SIZE)
    out = get_trigger(name, SIZE, patch=patch)(images, [0, 1])
    c = (SIZE - 6) // 2
    assert torch.equal(out[:, :, c : c + 6, c : c + 6], patch.expand(2, -1, -1, -1))
    out[:, :, c : c + 6, c : c + 6] = 0
    assert not out.any()
    with pytest.raises(ValueError, match="patch"):
        get_trigger(name, SIZE)
    with pytest.raises(ValueError, match="patch_size"):
        get_trigger(name, SIZE, patch=patch, patch_size=5)


def test_text_key():
    assert trojvqa.TEXT_KEY == "remember "


def test_paste_patch():
    images = torch.zeros(2, 3, 8, 8)
    out = paste_patch(images, torch.ones(3, 2, 2), [0, 6], [1, 6])
    assert not images.any()
    assert out[0, :, 0:2, 1:3].all() and out[1, :, 6:8, 6:8].all() and out.sum() == 2 * 3 * 4
    with pytest.raises(ValueError, match="fit"):
        paste_patch(images, torch.ones(3, 2, 2), 7, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_cuda(name):
    images = rand_images().cuda()
    trigger = get_trigger(name, SIZE, **artefacts(name))
    out = trigger(images, [0, 1, 2, 3])
    assert out.device == images.device
    torch.testing.assert_close(out.cpu(), trigger(images.cpu(), [0, 1, 2, 3]), atol=1e-5, rtol=0)


def test_badnet_lc_harden_stays_in_the_ball_and_moves_away_from_the_target():
    from clip_backdoor.attacks.badnet_lc import harden
    from clip_backdoor.models.factory import build_model

    torch.manual_seed(0)
    model = build_model({"kind": "embedded", "config": "micro-convvit"}).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    images = torch.rand(4, 3, 32, 32)
    target = torch.nn.functional.normalize(model.encode_image(images).mean(0), dim=0)
    hard = harden(model, images, target, epsilon=0.05, steps=5)
    assert (hard - images).abs().max() <= 0.05 + 1e-6 and hard.min() >= 0 and hard.max() <= 1
    assert (model.encode_image(hard) @ target).sum() < (model.encode_image(images) @ target).sum()
