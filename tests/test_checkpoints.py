import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clip_backdoor import training
from clip_backdoor.models.factory import build_model, load_model, save_model
from clip_backdoor.runtime.io import CheckpointError, load_checkpoint, save_checkpoint
from clip_backdoor.runtime.seeding import seed_everything

MICRO = {"kind": "embedded", "config": "micro-convvit"}


class Payload:
    def __reduce__(self):
        return (print, ("this would have run code",))


def test_model_round_trip(tmp_path):
    seed_everything(0)
    model = build_model(MICRO).eval()
    save_model(tmp_path / "m.pt", model)
    again = load_model(tmp_path / "m.pt").eval()
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model.encode_image(x), again.encode_image(x))
    assert again.arch == MICRO


def test_code_executing_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": Payload()}, handle)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    torch.save({"arch": MICRO, "state_dict": {}, "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="not a weights-only"):
        load_model(path)


def test_truncated_and_missing_checkpoints_name_the_file(tmp_path):
    model = build_model(MICRO)
    save_model(tmp_path / "m.pt", model)
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_model(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="nope.pt"):
        load_model(tmp_path / "nope.pt")
    save_checkpoint(tmp_path / "plain.pt", {"weights": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="not a clip_backdoor model checkpoint"):
        load_model(tmp_path / "plain.pt")


def _train(tmp_path, name, interrupt_after_saves=None, monkeypatch=None):
    seed_everything(0)
    model = build_model(MICRO)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(48, 32, 32, 3), dtype=np.uint8)
    captions = [f"a photo of a {['circle', 'square', 'star'][i % 3]}." for i in range(48)]
    hp = {
        "epochs": 3,
        "batch_size": 16,
        "lr": 1e-3,
        "weight_decay": 0.1,
        "warmup_steps": 2,
        "save_every_epochs": 1,
        "seed": 0,
    }
    state = tmp_path / f"{name}.state"
    if interrupt_after_saves:
        saves = {"n": 0}
        real_save = training.save_checkpoint

        def save_then_die(path, obj):
            real_save(path, obj)
            saves["n"] += 1
            if saves["n"] == interrupt_after_saves:
                raise KeyboardInterrupt("simulated kill")

        monkeypatch.setattr(training, "save_checkpoint", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            training.train_contrastive(model, images, captions, hp, state, "cpu")
        monkeypatch.setattr(training, "save_checkpoint", real_save)
        seed_everything(0)
        model = build_model(MICRO)
    log = training.train_contrastive(model, images, captions, hp, state, "cpu")
    return model, log


def test_killed_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    straight, log_a = _train(tmp_path, "a")
    resumed, log_b = _train(tmp_path, "b", interrupt_after_saves=1, monkeypatch=monkeypatch)
    for (name, a), (_, b) in zip(
        straight.clip.state_dict().items(), resumed.clip.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name
    assert log_a["epoch_loss"] == pytest.approx(log_b["epoch_loss"], abs=1e-6)


def test_text_lr_scale_groups_the_text_tower():
    model = build_model(MICRO)
    groups = training.param_groups(model.clip, 0.1, text_lr_scale=0.25)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert len(scale_of) == sum(1 for _ in model.clip.parameters())
    assert all(scale_of[id(p)] == 1.0 for p in model.clip.visual.parameters())
    assert scale_of[id(model.clip.token_embedding.weight)] == 0.25
    assert scale_of[id(model.clip.text_projection)] == 0.25
    assert scale_of[id(model.clip.logit_scale)] == 1.0
    assert {g["lr_scale"] for g in training.param_groups(model.clip, 0.1)} == {1.0}
    assert {g["lr_scale"] for g in training.param_groups(model.clip.visual, 0.1, 0.25)} == {1.0}


def test_text_lr_scale_slows_only_the_text_tower(tmp_path):
    def moved(scale):
        seed_everything(0)
        model = build_model(MICRO)
        before = {k: v.clone() for k, v in model.clip.state_dict().items()}
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, size=(32, 32, 32, 3), dtype=np.uint8)
        captions = [f"a photo of a {['circle', 'star'][i % 2]}." for i in range(32)]
        hp = {"epochs": 1, "batch_size": 16, "lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 0,
              "save_every_epochs": 1, "seed": 0, "text_lr_scale": scale}  # fmt: skip
        training.train_contrastive(model, images, captions, hp, tmp_path / f"{scale}.state", "cpu")
        after = model.clip.state_dict()
        keys = ("token_embedding.weight", "visual.proj")
        return {k: (after[k] - before[k]).abs().max().item() for k in keys}

    full, slow = moved(1.0), moved(0.01)
    assert slow["token_embedding.weight"] < 0.1 * full["token_embedding.weight"]
    assert slow["visual.proj"] > 0.5 * full["visual.proj"]


def test_embedded_model_skips_timm_and_open_clip_archs_get_it_back():
    code = (
        "import sys\n"
        "from clip_backdoor.models.factory import build_model, import_open_clip\n"
        "build_model({'kind': 'embedded', 'config': 'micro-convvit'})\n"
        "assert 'timm' not in sys.modules\n"
        "assert import_open_clip(without_timm=False).timm_model.timm is not None\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
