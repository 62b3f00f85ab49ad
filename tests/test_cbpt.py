"""CBPT on the untrained micro model: the class-wise text head, what gets gradients, trigger inversion
against a planted patch backdoor, and the trigger-effect diagnostic."""

import numpy as np
import pytest
import torch
from torch import nn

from clip_backdoor.config.schema import declared_defaults
from clip_backdoor.data.downstream import ArrayDataset
from clip_backdoor.defenses import cbpt
from clip_backdoor.defenses.interface import DefenseContext, zero_shot_classifier
from clip_backdoor.defenses.trigger_inversion import invert_trigger, trigger_effect_cosine
from clip_backdoor.models.factory import build_model
from clip_backdoor.models.zeroshot import zeroshot_head
from clip_backdoor.runtime.io import load_checkpoint, save_checkpoint

DEFAULTS = {name: declared_defaults(f"defenses.methods.{name}.params") for name in ("cbpt",)}

CLASSES = ["circle", "square", "star", "heart"]
PATCH = 8


def micro_model(seed=0):
    torch.manual_seed(seed)
    return build_model({"kind": "embedded", "config": "micro-convvit"}).eval()


class PlantedBackdoor(nn.Module):
    """The micro image encoder, except that a white top-left PATCH×PATCH corner maps to a fixed feature.

    The gate is smooth in the corner's pixels so a trigger can be found by gradient descent."""

    def __init__(self, visual, mean, std, dim):
        super().__init__()
        self.visual, self.mean, self.std = visual, mean, std
        self.register_buffer("target", 5 * torch.randn(dim, generator=torch.Generator().manual_seed(9)))

    def forward(self, x):
        corner = (x * self.std + self.mean)[:, :, :PATCH, :PATCH].mean((1, 2, 3))
        gate = torch.sigmoid(10 * (corner - 0.7)).unsqueeze(1)
        return (1 - gate) * self.visual(x) + gate * self.target


def white_corner(images, seeds=None):
    out = images.clone()
    out[:, :, :PATCH, :PATCH] = 1.0
    return out


def planted_model():
    model = micro_model()
    model.clip.visual = PlantedBackdoor(model.clip.visual, model.mean, model.std, 64)
    return model.requires_grad_(False)


def shots(n_per_class=4, seed=0):
    rng = np.random.default_rng(seed)
    images = (rng.random((n_per_class * len(CLASSES), 32, 32, 3)) * 200).astype(np.uint8)
    return ArrayDataset(images, np.arange(len(images)) % len(CLASSES))


def context(model, seed=0):
    return DefenseContext(
        model=model, classnames=CLASSES, templates=["a photo of a {}."], device=torch.device("cpu"),
        shots=shots(), seed=seed,
    )  # fmt: skip


def small_params(**kw):
    """Few steps, with the embedded profile's loss weights and soft text key (both extensions on)."""
    return {
        **DEFAULTS["cbpt"],
        "inv_lr": 0.1,
        "inv_tau": 0.1,
        "inv_mask_weight": 10.0,
        "w_bd": 0.05,
        "w_away": 1.0,
        "w_key": 0.5,
        "inv_steps": 4,
        "inv_batch": 8,
        "key_steps": 3,
        "epochs": 2,
        "batch_size": 8,
        **kw,
    }


@pytest.mark.parametrize("prefix", ["", "remember "])
def test_initial_contexts_give_the_zero_shot_head_of_the_same_template(prefix):
    model = micro_model()
    prompts = cbpt.ClassPrompts(model, CLASSES, 4, "a photo of a", prefix)
    head = zeroshot_head(model, CLASSES, ["a photo of a {}."], prefix)
    with torch.no_grad():
        assert torch.allclose(prompts(), head, atol=1e-5)
    state = {"ctx": prompts.ctx.detach().clone(), "n_ctx": 4, "ctx_init": "a photo of a"}
    ctx, images = context(model), torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        ours = cbpt.classifier(ctx, state, prefix)(images)
        zero = zero_shot_classifier(ctx, prefix)(images)
    assert torch.allclose(ours, zero, atol=1e-4)
    state["ctx"] = state["ctx"] + 0.5 * torch.randn(state["ctx"].shape)
    with torch.no_grad():
        assert not torch.allclose(cbpt.classifier(ctx, state, prefix)(images), zero, atol=1e-2)


def test_a_soft_key_set_to_a_words_embedding_is_that_text_prefix():
    model = micro_model()
    prompts = cbpt.ClassPrompts(model, CLASSES, 4, "a photo of a")
    keyed = cbpt.soft_key_prompts(
        model,
        prompts,
        CLASSES,
        {**DEFAULTS["cbpt"], "n_ctx": 4, "key_tokens": 1},
    )
    assert keyed.ctx is prompts.ctx
    with torch.no_grad():
        keyed.key.copy_(model.clip.token_embedding(model.tokenize(["remember"])[:, 1:2]))
        assert torch.allclose(
            keyed(), zeroshot_head(model, CLASSES, ["a photo of a {}."], "remember "), atol=1e-5
        )


def test_ctx_init_must_match_n_ctx():
    with pytest.raises(ValueError, match="n_ctx"):
        cbpt.ClassPrompts(micro_model(), CLASSES, 3, "a photo of a")


def test_only_prompt_and_trigger_parameters_get_gradients():
    model = micro_model().requires_grad_(True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state, log = cbpt.fit(context(model), small_params())
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert log["trainable_params"] == len(CLASSES) * 4 * 64 + 4 * 32 * 32 + 64
    assert len(log["key_curve"]) == small_params()["key_steps"]
    assert len(log["curve"]) == 2
    initial = cbpt.ClassPrompts(model, CLASSES, 4, "a photo of a").ctx
    assert not torch.allclose(state["ctx"], initial)
    assert state["report"]["inverted_mask"].shape == (1, 32, 32)
    assert state["report"]["inverted_pattern"].shape == (3, 32, 32)


def test_state_is_weights_only_and_classifies_with_a_text_key(tmp_path):
    model = micro_model()
    ctx = context(model)
    state, _ = cbpt.fit(ctx, small_params())
    save_checkpoint(tmp_path / "s.pt", {"state": state})
    loaded = load_checkpoint(tmp_path / "s.pt")["state"]
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        a = cbpt.classifier(ctx, state, "")(images)
        assert torch.equal(a, cbpt.classifier(ctx, loaded, "")(images))
        assert cbpt.classifier(ctx, loaded, "remember ")(images).shape == (3, len(CLASSES))


def test_inversion_finds_a_planted_patch_backdoor():
    model = planted_model()
    images, labels = context(model).shot_tensors
    params = {
        **DEFAULTS["cbpt"],
        "inv_lr": 0.1,
        "inv_tau": 0.1,
        "inv_steps": 30,
        "inv_batch": 16,
        "inv_mask_weight": 0.3,
    }
    trigger, curve = invert_trigger(model, images, labels, params, torch.Generator().manual_seed(0))
    assert curve[-1] < 0.5 * curve[0]
    mask = trigger.mask()[0]
    assert mask[:PATCH, :PATCH].mean() > 2 * mask[PATCH:, PATCH:].mean()
    state = {"report": {"inverted_mask": trigger.mask(), "inverted_pattern": trigger.pattern()}}
    assert trigger_effect_cosine(model, state, white_corner, images) > 0.5


def test_trigger_effect_cosine_is_one_for_the_real_trigger_and_lower_otherwise():
    model = planted_model()
    images = torch.rand(6, 3, 32, 32)
    mask = torch.zeros(1, 32, 32)
    mask[:, :PATCH, :PATCH] = 1
    exact = {"report": {"inverted_mask": mask, "inverted_pattern": torch.ones(3, 32, 32)}}
    assert trigger_effect_cosine(model, exact, white_corner, images) == pytest.approx(1.0, abs=1e-5)
    other = {"report": {"inverted_mask": mask.flip(-1), "inverted_pattern": torch.zeros(3, 32, 32)}}
    assert trigger_effect_cosine(model, other, white_corner, images) < 0.5


def test_away_loss_penalises_only_the_collapse_class_on_other_shots():
    labels = torch.tensor([0, 1, 2])
    on_k = torch.tensor([[0.0, 0.0, 9.0], [0.0, 0.0, 9.0], [0.0, 0.0, 9.0]])
    off_k = torch.tensor([[9.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 9.0]])
    assert cbpt.away_loss(on_k, labels, 2) > 5
    assert cbpt.away_loss(off_k, labels, 2) < 1e-3
    assert cbpt.away_loss(on_k, torch.tensor([2, 2, 2]), 2) == 0


def test_w_key_must_be_a_share():
    with pytest.raises(ValueError, match="w_key"):
        cbpt.fit(context(micro_model()), small_params(w_key=1.5))
