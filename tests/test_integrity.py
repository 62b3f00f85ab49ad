"""Faults: identical checkpoint bytes, content hashes checked at load, one-line errors, trusted FastSAM."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from clip_backdoor.data import embedded
from clip_backdoor.data.corpus import is_paper
from clip_backdoor.errors import CheckpointError, DataError, UntrustedWeightsError, UserError
from clip_backdoor.models.factory import build_model, load_model, save_model
from clip_backdoor.oracle.fastsam import load_fastsam
from clip_backdoor.runtime.io import load_checkpoint, save_checkpoint
from clip_backdoor.runtime.seeding import seed_everything
from conftest import REPO

MICRO = {"kind": "embedded", "config": "micro-convvit"}
SPLIT = {"images": np.arange(4 * 8 * 8 * 3, dtype=np.uint8).reshape(4, 8, 8, 3)}


def flip(path, pattern, count=1):
    """Flip `count` bytes of `path` where `pattern` starts (a tensor's or an array's own bytes)."""
    data = bytearray(path.read_bytes())
    at = data.find(pattern)
    assert at >= 0
    for i in range(at, at + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_the_same_content_saved_twice_gives_the_same_bytes(tmp_path):
    seed_everything(0)
    model = build_model(MICRO)
    save_model(tmp_path / "a.pt", model)
    save_model(tmp_path / "b.pt", model)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    obj = {"w": torch.arange(6.0), "meta": {"n": 1}}
    save_checkpoint(tmp_path / "c.pt", obj)
    save_checkpoint(tmp_path / "c.pt", obj)  # over the first: the file's own name is not in it
    save_checkpoint(tmp_path / "d.pt", obj)
    assert (tmp_path / "c.pt").read_bytes() == (tmp_path / "d.pt").read_bytes()
    save_checkpoint(tmp_path / "e.pt", {**obj, "w": torch.arange(6.0) + 1})
    assert (tmp_path / "e.pt").read_bytes() != (tmp_path / "d.pt").read_bytes()


def test_flipped_bytes_in_a_checkpoint_are_refused_naming_the_file(tmp_path):
    weights = torch.full((64,), 1.2345)
    save_checkpoint(tmp_path / "ok.pt", {"w": weights})
    assert torch.equal(load_checkpoint(tmp_path / "ok.pt")["w"], weights)
    save_checkpoint(tmp_path / "flipped.pt", {"w": weights})
    flip(tmp_path / "flipped.pt", weights.numpy().tobytes(), count=1)
    with pytest.raises(CheckpointError, match=r"flipped\.pt is damaged.*snakemake -f .*flipped\.pt"):
        load_checkpoint(tmp_path / "flipped.pt")
    # the case: 64 flipped bytes in a model's weights, mtime kept
    seed_everything(0)
    model = build_model(MICRO)
    save_model(tmp_path / "model.pt", model)
    proj = model.clip.visual.proj.detach().contiguous().numpy().tobytes()
    flip(tmp_path / "model.pt", proj[:16], count=64)
    with pytest.raises(CheckpointError, match=r"model\.pt is damaged"):
        load_model(tmp_path / "model.pt")


def test_a_checkpoint_without_a_content_hash_is_refused(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match=r"bare\.pt carries no content hash"):
        load_checkpoint(tmp_path / "bare.pt")
    state = tmp_path / "job.state"
    torch.save({"step": 1}, state)
    with pytest.raises(CheckpointError, match="delete it"):
        load_checkpoint(state)


def test_flipped_byte_in_a_data_array_is_refused_naming_the_file(tmp_path):
    images = SPLIT["images"]
    embedded.write_split(tmp_path / "pretrain", images, images[..., 0], np.arange(4), list("abcd"), ["x"])
    assert np.array_equal(embedded.load_split(tmp_path, "pretrain")["images"], images)
    flip(tmp_path / "pretrain/images.npy", images[2].tobytes())
    with pytest.raises(DataError, match=r"pretrain/images\.npy is damaged.*snakemake -f prepare_data"):
        embedded.load_split(tmp_path, "pretrain")


def test_deleted_or_unlisted_data_files_are_refused(tmp_path):
    images = SPLIT["images"]
    poisoned = tmp_path / "poisoned"
    embedded.write_split(poisoned / "badnet", images, images[..., 0], np.arange(4), list("abcd"), ["x"])
    (poisoned / "badnet/labels.npy").unlink()
    rebuild = r"snakemake -f .*poisoned/badnet/captions\.json"
    with pytest.raises(FileNotFoundError, match=rf"badnet/labels\.npy.*{rebuild}"):
        embedded.load_split(poisoned, "badnet")
    embedded.write_split(poisoned / "badnet", images, images[..., 0], np.arange(4), list("abcd"), ["x"])
    (poisoned / "badnet/SHA256SUMS").unlink()
    with pytest.raises(DataError, match=r"SHA256SUMS not found"):
        embedded.load_split(poisoned, "badnet")


def test_a_truncated_manifest_names_the_file(tmp_path):
    (tmp_path / "world.json").write_text('{"kind": "pap')
    with pytest.raises(DataError, match=r"world\.json is not valid JSON"):
        is_paper(tmp_path)


def stage(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "clip_backdoor", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_project_errors_print_one_line_and_exit_2(tmp_path):
    empty = tmp_path / "weights.pt"
    empty.touch()
    arch = {"kind": "open_clip", "name": "RN50", "pretrained": str(empty)}
    params = json.dumps({"seed": 0, "train": False, "arch": arch, "hp": {}})
    out = ["--out", str(tmp_path / "m.pt"), "--log", str(tmp_path / "l.json")]
    proc = stage("pretrain", "--params", params, *out)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr and "EOFError" not in proc.stderr
    assert last.startswith("clip_backdoor pretrain: error: model.arch.pretrained:") and str(empty) in last


def test_unexpected_errors_keep_their_traceback(tmp_path):
    proc = stage("prepare_data", "--params", '{"kind": "embedded"}', "--out", str(tmp_path))
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "KeyError" in proc.stderr


def test_fastsam_weights_are_opened_only_with_the_trusted_hash(tmp_path, monkeypatch):
    # no ultralytics here: the gate must refuse before the import is tried
    monkeypatch.setitem(sys.modules, "ultralytics", None)
    weights = tmp_path / "FastSAM-x.pt"
    weights.write_bytes(b"a pickle that would run code")
    good = hashlib.sha256(weights.read_bytes()).hexdigest()
    with pytest.raises(UntrustedWeightsError, match=rf"oracle.fastsam.sha256 is not set.*{good}"):
        load_fastsam(weights, None)
    with pytest.raises(UntrustedWeightsError, match=r"FastSAM-x\.pt: its sha256 .* is not the trusted"):
        load_fastsam(weights, "0" * 64)
    with pytest.raises(FileNotFoundError, match="weights not found"):
        load_fastsam(tmp_path / "absent.pt", good)
    with pytest.raises(ImportError, match="ultralytics"):  # the hash matched: only now is the import tried
        load_fastsam(weights, good.upper())
    assert issubclass(UntrustedWeightsError, UserError)
