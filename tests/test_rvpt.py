"""Deep visual prompts and the RVPT/VPT defense on untrained micro models."""

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from clip_backdoor.config.schema import declared_defaults
from clip_backdoor.data.downstream import ArrayDataset
from clip_backdoor.defenses import rvpt
from clip_backdoor.defenses.interface import DefenseContext
from clip_backdoor.models.factory import build_model
from clip_backdoor.models.visual_prompts import PromptedVisual, count_prompt_parameters
from clip_backdoor.runtime.io import load_checkpoint, save_checkpoint

DEFAULTS = {name: declared_defaults(f"defenses.methods.{name}.params") for name in ("rvpt",)}

CLASSES = ["circle", "square", "star"]


def micro_convvit():
    torch.manual_seed(0)
    return build_model({"kind": "embedded", "config": "micro-convvit"}).clip.visual.eval()


def small_vit(pool_type="tok", final_ln_after_pool=False):
    """A 3-block open_clip ViT with its plain patch embedding (conv1 is a strided Conv2d)."""
    torch.manual_seed(0)
    vision = open_clip.model.CLIPVisionCfg(
        image_size=32, patch_size=8, width=64, layers=3, head_width=32, pool_type=pool_type,
        final_ln_after_pool=final_ln_after_pool,
    )  # fmt: skip
    text = open_clip.model.CLIPTextCfg(context_length=8, vocab_size=100, width=32, heads=2, layers=1)
    return open_clip.model.CLIP(embed_dim=48, vision_cfg=vision, text_cfg=text).visual.eval()


ENCODERS = {
    "micro-convvit": micro_convvit,
    "vit": small_vit,
    "vit-avg": lambda: small_vit("avg", final_ln_after_pool=True),
}


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_without_prompt_tokens_the_prompted_encoder_is_the_frozen_encoder(encoder):
    visual = ENCODERS[encoder]()
    x = torch.randn(5, 3, 32, 32)
    layers = len(visual.transformer.resblocks)
    with torch.no_grad():
        expected = visual(x)
        for depth, tokens in [(0, 0), (1, 0), (layers, 4)]:
            prompted = PromptedVisual(visual, depth, tokens)
            feat, cls = prompted(x)
            assert torch.allclose(feat, expected, atol=1e-5), (depth, tokens)
            assert len(cls) == layers - depth
            feat_frozen, _ = PromptedVisual(visual, 0, 4)(x, prompts=False)
            assert torch.allclose(feat_frozen, expected, atol=1e-5)


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_prompts_enter_the_last_blocks_only(encoder):
    visual = ENCODERS[encoder]()
    x = torch.randn(4, 3, 32, 32)
    layers = len(visual.transformer.resblocks)
    prompted = PromptedVisual(visual, 1, 3, init_std=1.0, generator=torch.Generator().manual_seed(0))
    assert prompted.prompts.shape == (layers - 1, 3, visual.transformer.width)
    assert prompted.layers == list(range(1, layers))
    with torch.no_grad():
        base = prompted.split(x)
        _, cls = prompted.run_blocks(base, start=1)
        _, frozen = prompted.run_blocks(base, start=1, prompts=False)
        feat, _ = prompted(x)
    assert base.shape == (4, 1 + 16, visual.transformer.width)
    assert all(not torch.allclose(c, f, atol=1e-3) for c, f in zip(cls, frozen, strict=True))
    assert not torch.allclose(feat, visual(x), atol=1e-3)


def test_prompt_init_is_seeded_gaussian():
    visual = micro_convvit()
    a = PromptedVisual(visual, 0, 50, generator=torch.Generator().manual_seed(1)).prompts
    b = PromptedVisual(visual, 0, 50, generator=torch.Generator().manual_seed(1)).prompts
    assert torch.equal(a, b) and abs(a.std().item() - 0.02) < 0.002 and abs(a.mean().item()) < 0.002


def test_repulsion_is_minus_one_for_opposite_features_and_one_for_equal():
    torch.manual_seed(0)
    cls = [torch.randn(6, 16) for _ in range(3)]
    opposite = [-2.5 * c for c in cls]
    assert torch.isclose(rvpt.repulsion(cls, opposite), torch.tensor(-1.0), atol=1e-6)
    assert torch.isclose(rvpt.repulsion(cls, [3 * c for c in cls]), torch.tensor(1.0), atol=1e-6)
    assert abs(rvpt.repulsion(cls, [torch.randn(6, 16) for _ in range(3)]).item()) < 0.5


def test_only_the_prompts_receive_gradients():
    visual = micro_convvit()
    for p in visual.parameters():
        p.requires_grad_(True)
    prompted = PromptedVisual(visual, 0, 4, generator=torch.Generator().manual_seed(0))
    assert [p.shape for p in prompted.parameters()] == [prompted.prompts.shape]
    x, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        base = prompted.split(x)
        tokens, cls = prompted.run_blocks(base, start=0, prompts=False)
        frozen_cls, frozen_feat = torch.stack(cls), prompted.project(tokens)
    head = F.normalize(torch.randn(3, frozen_feat.shape[1]), dim=-1)
    loss = rvpt.rvpt_loss(prompted, base, frozen_cls, frozen_feat, labels, head, torch.tensor(10.0), 2.0, 1.0)
    loss.backward()
    assert prompted.prompts.grad is not None and prompted.prompts.grad.abs().sum() > 0
    assert all(p.grad is None for p in visual.parameters())


def tiny_context(model, n_per_class=2):
    rng = np.random.default_rng(0)
    n = n_per_class * len(CLASSES)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(n) % len(CLASSES)
    return DefenseContext(
        model=model, classnames=CLASSES, templates=["a photo of a {}."], device=torch.device("cpu"),
        shots=ArrayDataset(images, labels), seed=0,
    )  # fmt: skip


@pytest.mark.parametrize("alpha", [2.0, 0.0])
def test_fit_returns_the_prompts_and_the_log_contract(tmp_path, alpha):
    model = build_model({"kind": "embedded", "config": "micro-convvit"}).eval()
    weights = {k: v.clone() for k, v in model.clip.state_dict().items()}
    ctx = tiny_context(model)
    params = {**DEFAULTS["rvpt"], "depth": 1, "tokens": 3, "epochs": 3, "batch_size": 4, "alpha": alpha,
              "alpha_proj": 1.0, "alpha_warmup": 2, "flip": True, "lr": 0.05}  # fmt: skip
    state, log = rvpt.fit(ctx, params)
    layers, width = len(model.clip.visual.transformer.resblocks), model.clip.visual.transformer.width
    assert set(state) == {"prompts", "depth", "tokens"}
    assert state["prompts"].shape == (layers - 1, 3, width)
    assert log["trainable_params"] == (layers - 1) * 3 * width == state["prompts"].numel()
    assert len(log["curve"]) == 3 and all(np.isfinite(log["curve"]))
    assert log["fr_layers"] == list(range(2, layers + 1)) and len(log["fr_cos"]) == layers - 1
    assert all(-1 <= c <= 1 for c in log["fr_cos"]) and -1 <= log["fr_cos_proj"] <= 1
    init = torch.randn(layers - 1, 3, width, generator=torch.Generator().manual_seed(0)) * params["init_std"]
    assert not torch.allclose(state["prompts"], init)
    assert all(torch.equal(v, weights[k]) for k, v in model.clip.state_dict().items())
    save_checkpoint(tmp_path / "state.pt", {"state": state, "log": log})
    state = load_checkpoint(tmp_path / "state.pt")["state"]
    images = torch.rand(5, 3, 32, 32)
    logits = rvpt.classifier(ctx, state, "")(images)
    keyed = rvpt.classifier(ctx, state, "remember ")(images)
    assert logits.shape == keyed.shape == (5, len(CLASSES)) and not torch.allclose(logits, keyed)
    prompted = rvpt.load_prompted(ctx, state)
    assert count_prompt_parameters(prompted) == 0 and torch.equal(prompted.prompts, state["prompts"])


def test_fit_is_seeded():
    model = build_model({"kind": "embedded", "config": "micro-convvit"}).eval()
    params = {
        **DEFAULTS["rvpt"],
        "depth": 0,
        "tokens": 2,
        "epochs": 2,
        "batch_size": 4,
    }
    first, _ = rvpt.fit(tiny_context(model), params)
    second, _ = rvpt.fit(tiny_context(model), params)
    assert torch.equal(first["prompts"], second["prompts"])


def test_no_prompt_to_train_is_an_error():
    model = build_model({"kind": "embedded", "config": "micro-convvit"}).eval()
    with pytest.raises(ValueError, match="no prompt"):
        rvpt.fit(tiny_context(model), {**DEFAULTS["rvpt"], "depth": 2})


def test_prompts_are_replaced_at_every_prompted_block():
    visual = micro_convvit()
    prompted = PromptedVisual(visual, 0, 2, init_std=1.0, generator=torch.Generator().manual_seed(0))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        tokens = prompted.embed(x)
        n, cls = tokens.shape[1], []
        for blk, p in zip(visual.transformer.resblocks, prompted.prompts, strict=True):
            tokens = blk(torch.cat([tokens[:, :n], p.expand(3, -1, -1)], dim=1))
            cls.append(tokens[:, 0])
        expected = visual.ln_post(tokens[:, 0]) @ visual.proj
        feat, got = prompted(x)
    assert torch.allclose(feat, expected, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, cls, strict=True))


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_cls_per_block_matches_the_prompted_pass(encoder):
    visual = ENCODERS[encoder]()
    x = torch.randn(3, 3, 32, 32)
    prompted = PromptedVisual(visual, 1, 2, init_std=1.0, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        every = prompted.cls_per_block(x)
        _, cls = prompted(x)
        plain = prompted.cls_per_block(x, prompts=False)
        _, frozen = prompted(x, prompts=False)
    assert every.shape == (len(visual.transformer.resblocks), 3, visual.transformer.width)
    assert torch.allclose(every[1:], torch.stack(cls), atol=1e-5)
    assert torch.allclose(plain[1:], torch.stack(frozen), atol=1e-5)
    assert torch.allclose(every[0], plain[0], atol=1e-6)  # block 1 is not prompted


def test_perturbation_resistivity_is_one_without_perturbation_and_lower_with_one():
    model = build_model({"kind": "embedded", "config": "micro-convvit"}).eval()
    layers, width = len(model.clip.visual.transformer.resblocks), model.clip.visual.transformer.width
    state = {"prompts": torch.randn(layers - 1, 2, width), "depth": 1, "tokens": 2}
    clean = torch.rand(6, 3, 32, 32)
    same = rvpt.perturbation_resistivity(model, state, clean, clean.clone())
    assert len(same) == layers and np.allclose(same, 1.0, atol=1e-5)
    triggered = 1.0 - clean  # an untrained encoder's CLS barely moves under a small patch
    for prompts in (True, False):
        pr = rvpt.perturbation_resistivity(model, state, clean, triggered, prompts=prompts)
        assert all(-1 <= v < 1 - 1e-5 for v in pr), pr
    assert not np.allclose(
        rvpt.perturbation_resistivity(model, state, clean, triggered),
        rvpt.perturbation_resistivity(model, state, clean, triggered, prompts=False),
    )
