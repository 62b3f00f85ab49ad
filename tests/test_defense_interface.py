"""The defense interface (adding a defense is one module and one config block) and the baseline defenses
(CleanCLIP, clean fine-tuning, linear probe) on the untrained micro model."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from clip_backdoor.config.schema import declared_defaults
from clip_backdoor.data.downstream import ArrayDataset
from clip_backdoor.data.embedded import write_split
from clip_backdoor.defenses import cleanclip, finetune, linear_probe
from clip_backdoor.defenses.interface import DefenseContext
from clip_backdoor.models.factory import build_model
from clip_backdoor.training import clip_loss
from conftest import snakemake

CLASSES = ["circle", "square", "star"]
DEFAULTS = {
    name: declared_defaults(f"defenses.methods.{name}.params")
    for name in ("cleanclip", "finetune", "linear_probe")
}

# A tiny extra defense written into the workflow copy: a learned class bias over the zero-shot head.
CLASS_BIAS = '''
"""A learned per-class bias added to the zero-shot logits (a test defense)."""

import torch
import torch.nn.functional as F

from clip_backdoor.defenses.interface import zero_shot_classifier

PARAMS = {"steps": 5, "lr": 0.1}


def fit(ctx, params):
    images, labels = ctx.shot_tensors
    with torch.no_grad():
        logits = zero_shot_classifier(ctx)(images)
    bias = torch.zeros(logits.shape[1], requires_grad=True)
    opt = torch.optim.Adam([bias], lr=params["lr"])
    curve = []
    for _ in range(params["steps"]):
        loss = F.cross_entropy(logits + bias, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(loss.item())
    return {"bias": bias.detach()}, {"trainable_params": bias.numel(), "curve": curve}


def classifier(ctx, state, text_prefix):
    head = zero_shot_classifier(ctx, text_prefix)
    return lambda images: head(images) + state["bias"].to(images.device)
'''


STEM = "class_bias/seed0.json"


def add_class_bias(work, params):
    (work / "src/clip_backdoor/defenses/class_bias.py").write_text(CLASS_BIAS)
    extra = {"defenses": {"enabled": ["class_bias"], "methods": {"class_bias": {"params": params}}}}
    (work / "class_bias.yaml").write_text(yaml.safe_dump(extra))
    return ["--configfile", "configs/smoke.yaml", "class_bias.yaml"]


@pytest.mark.workflow
def test_new_defense_is_one_module_and_one_config_block(smoke_run, tmp_path):
    work = tmp_path / "wf"
    shutil.copytree(smoke_run, work, symlinks=True)
    snakemake(work, "--cores", "2", "all", *add_class_bias(work, {"steps": 3}))
    attacks = yaml.safe_load((work / "configs/smoke.yaml").read_text())["attacks"]["enabled"]
    for attack in attacks:
        metrics = json.loads((work / f"results/smoke/metrics/shapes10/{attack}/{STEM}").read_text())
        for key in ("ca", "asr", "pa", "n_clean", "n_poisoned", "train_seconds", "trainable_fraction"):
            assert key in metrics
        assert metrics["defense"] == "class_bias" and 0 <= metrics["ca"] <= 1 and 0 <= metrics["asr"] <= 1
        log = json.loads((work / f"results/smoke/train_logs/defenses/shapes10/{attack}/{STEM}").read_text())
        assert log["params"] == {"steps": 3, "lr": 0.1} and len(log["curve"]) == 3
    summary = pd.read_csv(work / "results/smoke/summary.csv")
    assert sorted(summary.loc[summary["defense"] == "class_bias", "attack"]) == sorted(attacks)


@pytest.mark.workflow
def test_unknown_defense_param_is_named(smoke_run, tmp_path):
    work = tmp_path / "wf"
    shutil.copytree(smoke_run, work, symlinks=True)
    args = add_class_bias(work, {"steps": 3, "learning_rate": 0.5})
    proc = snakemake(work, "-n", "all", *args, check=False)
    assert proc.returncode != 0
    assert "learning_rate" in proc.stdout + proc.stderr


# ---- the baselines on the micro model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return build_model({"kind": "embedded", "config": "micro-convvit"}).eval()


def tiny_context(model, tmp_path, pool=16):
    """A DefenseContext with 2 shots per class and a clean pool of `pool` random pairs."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (pool, 32, 32, 3), dtype=np.uint8)
    captions = [f"a {'large ' * (i % 2)}photo of a {CLASSES[i % 3]}." for i in range(pool)]
    labels = np.arange(pool) % 3
    instances = np.zeros((pool, 32, 32), np.uint8)
    write_split(tmp_path / "clean_pool", images, instances, labels, captions, CLASSES)
    for p in model.parameters():
        p.requires_grad_(False)
    shots = ArrayDataset(images[:6], labels[:6])
    return DefenseContext(
        model=model, classnames=CLASSES, templates=["a photo of a {}."], device=torch.device("cpu"),
        shots=shots, seed=0, paths={"data": str(tmp_path)}, state_path=str(tmp_path / "fit.state"),
    )  # fmt: skip


def test_inmodal_loss_is_symmetric_and_lower_for_identical_views():
    torch.manual_seed(0)
    a = F.normalize(torch.randn(8, 16), dim=-1)
    b = F.normalize(a + 0.5 * torch.randn(8, 16), dim=-1)
    scale = torch.tensor(20.0)
    assert torch.allclose(cleanclip.inmodal_loss(a, b, scale), cleanclip.inmodal_loss(b, a, scale))
    assert cleanclip.inmodal_loss(a, a, scale) < cleanclip.inmodal_loss(a, b, scale)


@pytest.mark.parametrize("size", [32, 224])
def test_image_views_are_seeded_augmentations(size):
    images = torch.rand(4, 3, size, size)
    transform = cleanclip.image_transform(size, 0.5, 0.4)
    view = cleanclip.image_views(images, transform, seed=7)
    assert view.shape == images.shape and 0 <= view.min() and view.max() <= 1
    assert torch.equal(view, cleanclip.image_views(images, transform, seed=7))
    assert not torch.allclose(view, images)
    assert not torch.equal(view, cleanclip.image_views(images, transform, seed=8))


def test_text_views_swap_and_drop_words_only(micro):
    tokens = micro.tokenize(["a large red star on a checkered background.", "a circle."])
    view = cleanclip.text_views(tokens, seed=3, swap=0.5, drop=0.3)
    assert torch.equal(view, cleanclip.text_views(tokens, seed=3, swap=0.5, drop=0.3))
    for row, new in zip(tokens, view, strict=True):
        end, new_end = int(row.argmax()), int(new.argmax())
        assert new[0] == row[0] and new[new_end] == row[end] and 1 < new_end <= end
        assert not new[new_end + 1 :].any()
        assert set(new[1:new_end].tolist()) <= set(row[1:end].tolist())
    assert not torch.equal(view[0], tokens[0])
    assert torch.equal(cleanclip.text_views(tokens, seed=3, swap=0.0, drop=0.0), tokens)


def test_cleanclip_loss_adds_inmodal_terms_to_the_clip_loss(micro):
    images, tokens = torch.rand(6, 3, 32, 32), micro.tokenize([f"a photo of a {c}." for c in CLASSES * 2])
    params = {**DEFAULTS["cleanclip"], "multimodal_weight": 1.0}
    with torch.no_grad():
        plain = clip_loss(micro.encode_image(images), micro.encode_text(tokens), micro.logit_scale)
        mm_only = cleanclip.CleanClipLoss({**params, "inmodal_weight": 0.0}, 32)(micro, images, tokens)
        both = cleanclip.CleanClipLoss({**params, "inmodal_weight": 1.0}, 32)(micro, images, tokens)
    assert torch.allclose(plain, mm_only)
    assert both > mm_only


@pytest.mark.parametrize("module", [cleanclip, finetune])
def test_clean_pool_fit_trains_the_whole_model(module, micro, tmp_path):
    ctx = tiny_context(micro, tmp_path)
    before = {k: v.clone() for k, v in micro.clip.state_dict().items()}
    params = {
        **DEFAULTS[module.__name__.rsplit(".", 1)[1]],
        "epochs": 2,
        "batch_size": 8,
        "lr": 1e-3,
        "warmup_steps": 1,
        "pool_size": 12,
    }
    state, log = module.fit(ctx, params)
    assert log["trainable_params"] == sum(p.numel() for p in micro.clip.parameters())
    assert len(log["curve"]) == 2 and log["pool_pairs"] == 12 and log["steps"] == 2
    assert not torch.equal(state["clip"]["visual.proj"], before["visual.proj"])
    assert not any(p.requires_grad for p in micro.parameters())
    micro.clip.load_state_dict(before)
    logits = module.classifier(ctx, state, "remember ")(torch.rand(5, 3, 32, 32))
    assert logits.shape == (5, 3)
    assert torch.equal(micro.clip.state_dict()["visual.proj"], state["clip"]["visual.proj"])
    micro.clip.load_state_dict(before)


def test_logistic_regression_fits_separable_features():
    torch.manual_seed(0)
    centres = 3 * torch.eye(4, 8)
    labels = torch.arange(40) % 4
    features = centres[labels] + 0.3 * torch.randn(40, 8)
    weight, bias, loss = linear_probe.fit_logistic(features, labels, 4, 1e-4, 100, 1.0)
    assert (features @ weight.t() + bias).argmax(1).eq(labels).all() and loss < 0.1
    strong, _, strong_loss = linear_probe.fit_logistic(features, labels, 4, 1.0, 100, 1.0)
    assert strong.norm() < weight.norm() and strong_loss > loss


def test_linear_probe_classifies_and_declines_a_text_key(micro, tmp_path):
    ctx = tiny_context(micro, tmp_path)
    state, log = linear_probe.fit(ctx, {**DEFAULTS["linear_probe"], "weight_decay": 0.0})
    assert log["trainable_params"] == 3 * 64 + 3 and log["train_accuracy"] == 1.0
    images, labels = ctx.shot_tensors
    with torch.no_grad():
        assert linear_probe.classifier(ctx, state, "")(images).argmax(1).eq(labels).all()
    assert linear_probe.classifier(ctx, state, "remember ") is None
