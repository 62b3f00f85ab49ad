"""RVPT's bug classes, each checked against a reference computed without the code under test: the frozen
targets of the repulsion, the signs inside the loss, the zero-shot head's templates, the classifier's use
of the prompts, and a planted shortcut on the micro model that RVPT weakens and VPT (alpha 0) does not."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clip_backdoor.config.schema import declared_defaults
from clip_backdoor.data.downstream import ArrayDataset
from clip_backdoor.defenses import rvpt
from clip_backdoor.defenses.interface import DefenseContext, zero_shot_classifier
from clip_backdoor.models.factory import build_model
from clip_backdoor.models.visual_prompts import PromptedVisual
from clip_backdoor.runtime.io import load_checkpoint, save_checkpoint

DEFAULTS = declared_defaults("defenses.methods.rvpt.params")
CLASSES = ["red", "green", "blue"]
TEMPLATES = ["a photo of a {}."]


def micro_model(seed=0):
    torch.manual_seed(seed)
    return build_model({"kind": "embedded", "config": "micro-convvit"}).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def model():
    return micro_model()


def colour_images(n, seed):
    """Images in [0,1] whose class is the dominant colour channel, with noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(CLASSES)
    images = 0.35 * torch.rand(n, 3, 32, 32, generator=gen) + 0.2
    images[torch.arange(n), labels] += 0.4
    return images.clamp(0, 1), labels


def as_shots(images, labels):
    return ArrayDataset((images.permute(0, 2, 3, 1) * 255).round().byte().numpy(), labels.numpy())


def context(model, templates=TEMPLATES, n=12, seed=0):
    return DefenseContext(
        model=model, classnames=CLASSES, templates=list(templates), device=torch.device("cpu"),
        shots=as_shots(*colour_images(n, 1)), seed=seed,
    )  # fmt: skip


def params(**kw):
    return {**DEFAULTS, "depth": 0, "tokens": 4, "epochs": 3, "batch_size": 8, "lr": 0.05, **kw}


def reference_head(model, templates):
    """Per class the mean of the templates' normalised text features, renormalised."""
    rows = []
    for name in CLASSES:
        tokens = model.tokenize([t.format(name) for t in templates])
        rows.append(F.normalize(F.normalize(model.clip.encode_text(tokens), dim=-1).mean(0), dim=-1))
    return torch.stack(rows)


def unprompted_cls(model, images):
    """The frozen encoder's CLS after every block and its image feature, read with forward hooks on
    open_clip's own forward (no prompt code involved)."""
    cls = []
    blocks = model.clip.visual.transformer.resblocks
    hooks = [b.register_forward_hook(lambda m, i, out: cls.append(out[:, 0].clone())) for b in blocks]
    try:
        with torch.no_grad():
            feat = model.clip.visual(model.normalize(images))
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(cls), feat


def checkerboard(images):
    """The trigger: a black-and-white checkerboard on the top-left 8x8 pixels (one stem token)."""
    out = images.clone()
    out[:, :, :8, :8] = (torch.arange(8).view(-1, 1) + torch.arange(8)).remainder(2).float()
    return out


@pytest.fixture(scope="module")
def backdoored():
    """The micro model with a checkerboard→red backdoor planted in its transformer blocks (stem frozen,
    as a ViT's linear patch embedding cannot detect a trigger): 80 Adam steps, a quarter poisoned."""
    model = micro_model()
    ctx = context(model)
    head, scale = ctx.head(""), model.logit_scale.detach()
    blocks = list(model.clip.visual.transformer.parameters())
    for p in blocks:
        p.requires_grad_(True)
    opt = torch.optim.Adam(blocks, lr=1e-3)
    for step in range(80):
        images, labels = colour_images(32, 100 + step)
        images[:8], labels[:8] = checkerboard(images[:8]), 0
        loss = F.cross_entropy(scale * model.encode_image(images) @ head.t(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.requires_grad_(False)


# ---- (1) the frozen targets are the unprompted encoder's ---------------------------------------------


@pytest.mark.parametrize("depth", [0, 1])
def test_frozen_pass_is_the_unprompted_encoder(model, depth):
    images = colour_images(6, 2)[0]
    prompted = PromptedVisual(
        model.clip.visual, depth, 4, init_std=1.0, generator=torch.Generator().manual_seed(0)
    )
    _, frozen_cls, frozen_feat = rvpt.frozen_pass(prompted, model, images)
    cls, feat = unprompted_cls(model, images)
    assert torch.allclose(frozen_cls, cls[depth:], atol=1e-5)
    assert torch.allclose(frozen_feat, feat, atol=1e-5)
    with torch.no_grad():
        prompted_feat, _ = prompted(model.normalize(images))
    assert not torch.allclose(prompted_feat, feat, atol=1e-2)  # the prompts would have shown


def nearest_error(rows, reference):
    """Per row, the largest absolute difference to its closest reference row."""
    return (rows[:, None] - reference[None]).abs().amax(-1).amin(1)


@pytest.mark.parametrize("flip", [False, True])
def test_fit_repels_from_the_unprompted_features_of_each_shot(backdoored, monkeypatch, flip):
    model = backdoored
    ctx = context(model)
    images, _ = ctx.shot_tensors
    views = torch.cat([images, images.flip(-1)]) if flip else images
    ref_cls, ref_feat = unprompted_cls(model, views)
    seen = []
    real = rvpt.rvpt_loss

    def spy(prompted, base, frozen_cls, frozen_feat, *args):
        seen.append((frozen_cls.detach().clone(), frozen_feat.detach().clone()))
        return real(prompted, base, frozen_cls, frozen_feat, *args)

    monkeypatch.setattr(rvpt, "rvpt_loss", spy)
    rvpt.fit(ctx, params(alpha_proj=1.0, flip=flip))
    assert len(seen) == 6
    for frozen_cls, frozen_feat in seen:
        assert nearest_error(frozen_feat, ref_feat).max() < 1e-4
        for layer, cls in enumerate(frozen_cls):
            assert nearest_error(cls, ref_cls[layer]).max() < 1e-4


# ---- (2) the signs: FR repels, CE is minimised --------------------------------------------------------


def prompted_pass(model, images, seed=0):
    prompted = PromptedVisual(
        model.clip.visual, 0, 4, init_std=0.5, generator=torch.Generator().manual_seed(seed)
    )
    base = prompted.split(model.normalize(images))
    tokens, cls = prompted.run_blocks(base)
    return prompted, base, torch.stack(cls).detach(), prompted.project(tokens).detach()


def test_loss_is_ce_plus_alpha_times_the_cosine_to_the_targets(model):
    images, labels = colour_images(6, 3)
    prompted, base, cls, feat = prompted_pass(model, images)
    head, scale = reference_head(model, TEMPLATES), model.logit_scale

    def loss(targets_cls, targets_feat, alpha, alpha_proj):
        return rvpt.rvpt_loss(
            prompted, base, targets_cls, targets_feat, labels, head, scale, alpha, alpha_proj
        )

    ce = F.cross_entropy(scale * F.normalize(feat, dim=-1) @ head.t(), labels)
    assert torch.isclose(loss(cls, feat, 0.0, 0.0), ce, atol=1e-5)
    # targets equal to the prompted features (cos 1) cost alpha more than opposite ones (cos -1) cost less
    assert torch.isclose(loss(cls, feat, 2.0, 0.0), ce + 2.0, atol=1e-4)
    assert torch.isclose(loss(-cls, feat, 2.0, 0.0), ce - 2.0, atol=1e-4)
    assert torch.isclose(loss(cls, feat, 0.0, 3.0), ce + 3.0, atol=1e-4)
    assert torch.isclose(loss(cls, -feat, 0.0, 3.0), ce - 3.0, atol=1e-4)


def blind_context(model):
    """A context whose zero-shot head is all zeros: CE is constant, only the repulsion moves the prompts."""
    ctx = context(model)
    ctx.__dict__["_heads"] = {"": torch.zeros(len(CLASSES), model.clip.visual.output_dim)}
    return ctx


@pytest.mark.parametrize(
    "weights, moved",
    [({}, ()), ({"alpha": 2.0}, ("fr_cos",)), ({"alpha_proj": 2.0}, ("fr_cos_proj",))],
)
def test_fit_moves_the_prompted_features_away_from_the_frozen_ones(backdoored, weights, moved):
    model = backdoored  # an untrained encoder's CLS barely responds to prompts
    ctx = blind_context(model)
    _, log = rvpt.fit(ctx, params(epochs=8, **{"alpha": 0.0, **weights}))
    images = ctx.shot_tensors[0]
    init = PromptedVisual(
        model.clip.visual, 0, 4, DEFAULTS["init_std"], torch.Generator().manual_seed(ctx.seed)
    )
    cls, feat = unprompted_cls(model, images)
    start = rvpt.final_similarity(init, init.split(model.normalize(images)), cls, feat)
    for key in ("fr_cos", "fr_cos_proj"):
        got, before = np.atleast_1d(log[key]), np.atleast_1d(start[key])
        if key in moved:
            assert (got < before - 0.2).all(), (key, got, before)
        elif not moved:
            assert np.allclose(got, before, atol=0.02), (key, got, before)


def shot_ce(ctx, state):
    images, labels = ctx.shot_tensors
    with torch.no_grad():
        return F.cross_entropy(rvpt.classifier(ctx, state, "")(images), labels).item()


def test_fit_lowers_the_cross_entropy_of_the_shots(backdoored):
    model, ctx = backdoored, context(backdoored)
    ctx.classnames = ["green", "blue", "red"]  # renamed classes: the zero-shot head is wrong on every shot
    p = params(alpha=0.0, epochs=10)
    layers, width = len(model.clip.visual.transformer.resblocks), model.clip.visual.transformer.width
    init = torch.randn(layers, 4, width, generator=torch.Generator().manual_seed(0)) * p["init_std"]
    state, _ = rvpt.fit(ctx, p)
    before = shot_ce(ctx, {"prompts": init, "depth": 0, "tokens": 4})
    assert before > 2 and shot_ce(ctx, state) < before - 1


# ---- (3) the head comes from the declared templates ----------------------------------------------------


@pytest.mark.parametrize("templates", [TEMPLATES, ["itap of a {}.", "a drawing of the {}."]])
def test_head_is_built_from_the_declared_templates(model, monkeypatch, templates):
    heads = []
    real = rvpt.rvpt_loss

    def spy(prompted, base, frozen_cls, frozen_feat, labels, head, *args):
        heads.append(head.detach().clone())
        return real(prompted, base, frozen_cls, frozen_feat, labels, head, *args)

    monkeypatch.setattr(rvpt, "rvpt_loss", spy)
    ctx = context(model, templates)
    state, _ = rvpt.fit(ctx, params(epochs=1))
    expected = reference_head(model, templates)
    assert heads and all(torch.allclose(h, expected, atol=1e-5) for h in heads)
    other = reference_head(model, ["a sketch of a {}."])
    assert not torch.allclose(expected, other, atol=1e-3)
    images = ctx.shot_tensors[0]
    feat, _ = rvpt.load_prompted(ctx, state)(model.normalize(images))
    with torch.no_grad():
        logits = rvpt.classifier(ctx, state, "")(images)
    assert torch.allclose(logits, model.logit_scale * F.normalize(feat, dim=-1) @ expected.t(), atol=1e-4)


# ---- (4) the classifier uses the learned prompts, and the saved state gives the same logits ------------


def random_state(model, seed, depth=0, tokens=4):
    layers, width = len(model.clip.visual.transformer.resblocks), model.clip.visual.transformer.width
    prompts = torch.randn(layers - depth, tokens, width, generator=torch.Generator().manual_seed(seed))
    return {"prompts": prompts, "depth": depth, "tokens": tokens}


@pytest.mark.parametrize("depth", [0, 1])
def test_classifier_uses_the_prompts_of_the_state(model, tmp_path, depth):
    ctx, images = context(model), colour_images(5, 4)[0]
    a, b = random_state(model, 0, depth), random_state(model, 1, depth)
    with torch.no_grad():
        logits_a = rvpt.classifier(ctx, a, "")(images)
        logits_b = rvpt.classifier(ctx, b, "")(images)
        plain = zero_shot_classifier(ctx)(images)
    assert not torch.allclose(logits_a, logits_b, atol=1e-2)
    assert not torch.allclose(logits_a, plain, atol=1e-2)
    zero = {**a, "prompts": torch.zeros_like(a["prompts"])}
    assert not torch.allclose(rvpt.classifier(ctx, zero, "")(images), plain, atol=1e-3)  # zeros still attend
    save_checkpoint(tmp_path / "state.pt", {"state": a})
    loaded = load_checkpoint(tmp_path / "state.pt")["state"]
    with torch.no_grad():
        assert torch.equal(rvpt.classifier(ctx, loaded, "")(images), logits_a)


def test_the_evaluated_classifier_is_the_trained_one(model, tmp_path):
    """After fit, CE of the saved-and-loaded classifier on the shots equals the training loss's CE term."""
    ctx = context(model)
    state, _ = rvpt.fit(ctx, params(init_std=0.5, epochs=2, depth=1))
    save_checkpoint(tmp_path / "state.pt", {"state": state})
    state = load_checkpoint(tmp_path / "state.pt")["state"]
    images, labels = ctx.shot_tensors
    prompted = rvpt.load_prompted(ctx, state)
    with torch.no_grad():
        base = prompted.split(model.normalize(images))
        _, cls, feat = rvpt.frozen_pass(prompted, model, images)
        train_ce = rvpt.rvpt_loss(
            prompted, base, cls, feat, labels, ctx.head(""), model.logit_scale, 0.0, 0.0
        )
    assert torch.isclose(torch.tensor(shot_ce(ctx, state)), train_ce, atol=1e-5)


# ---- (5) a planted shortcut: RVPT weakens it, VPT does not ----------------------------------------------


def ca_asr(classify):
    images, labels = colour_images(150, 5)
    with torch.no_grad():
        ca = (classify(images).argmax(1) == labels).float().mean().item()
        asr = (classify(checkerboard(images[labels != 0])).argmax(1) == 0).float().mean().item()
    return ca, asr


def test_rvpt_weakens_a_planted_shortcut_that_vpt_keeps(backdoored):
    ctx = DefenseContext(
        model=backdoored, classnames=CLASSES, templates=TEMPLATES, device=torch.device("cpu"),
        shots=as_shots(*colour_images(48, 7)),
    )  # fmt: skip
    ca, asr = ca_asr(zero_shot_classifier(ctx))
    assert ca > 0.9 and asr > 0.9, "the planted backdoor did not take"
    results = {}
    for alpha in (0.0, 2.0):  # VPT, RVPT at the paper's alpha, depth 0, 16 tokens, init std 0.02
        runs = []
        for seed in range(3):
            ctx.seed = seed
            state, _ = rvpt.fit(ctx, params(alpha=alpha, tokens=16, epochs=60, batch_size=16))
            runs.append(ca_asr(rvpt.classifier(ctx, state, "")))
        results[alpha] = np.mean(runs, axis=0)
    (vpt_ca, vpt_asr), (rvpt_ca, rvpt_asr) = results[0.0], results[2.0]
    assert vpt_ca > 0.9 and rvpt_ca > 0.9, results
    assert rvpt_asr < vpt_asr - 0.3, results
