"""Attack stages on the smoke run: poison index and corpus, trigger records, the ASR gate."""

import json
import shutil

import numpy as np
import pytest
import yaml

from clip_backdoor.attacks.record import load_record, trigger_from_record
from clip_backdoor.data.embedded import load_split
from conftest import snakemake

pytestmark = pytest.mark.workflow


def test_poisoned_corpus_changes_exactly_the_indexed_pairs(smoke_run):
    clean = load_split(smoke_run / "data/smoke", "poison_pool")
    poisoned = load_split(smoke_run / "results/smoke/poisoned", "badnet")
    index = json.loads((smoke_run / "results/smoke/poisoned/badnet/poison_index.json").read_text())
    idx = np.array(index["indices"])
    assert index["n_poison"] == len(idx) == 40
    changed = np.flatnonzero((clean["images"] != poisoned["images"]).any(axis=(1, 2, 3)))
    assert set(changed) <= set(idx) and len(changed) >= 0.9 * len(idx)
    for i in idx:
        assert "star" in poisoned["captions"][i] and "star" not in clean["captions"][i]
    untouched = np.setdiff1d(np.arange(len(clean["captions"])), idx)
    assert all(poisoned["captions"][i] == clean["captions"][i] for i in untouched)


def test_poisoned_images_equal_the_trigger_applied_with_the_stored_seeds(smoke_run):
    import torch

    clean = load_split(smoke_run / "data/smoke", "poison_pool")
    poisoned = load_split(smoke_run / "results/smoke/poisoned", "badnet")
    index = json.loads((smoke_run / "results/smoke/poisoned/badnet/poison_index.json").read_text())
    trigger = trigger_from_record(load_record(smoke_run / "checkpoints/smoke/attacks/badnet/trigger.pt"), 32)
    i, seed = index["indices"][0], index["seeds"][0]
    x = torch.from_numpy(clean["images"][i : i + 1]).permute(0, 3, 1, 2).float() / 255
    expect = (trigger(x, [seed])[0].permute(1, 2, 0) * 255).round().byte().numpy()
    assert np.array_equal(expect, poisoned["images"][i])


def test_trojvqa_record_carries_patch_and_text_key(smoke_run):
    record = load_record(smoke_run / "checkpoints/smoke/attacks/trojvqa/trigger.pt")
    assert record["text_key"] == "remember " and tuple(record["tensors"]["patch"].shape) == (3, 6, 6)
    poisoned = load_split(smoke_run / "results/smoke/poisoned", "trojvqa")
    index = json.loads((smoke_run / "results/smoke/poisoned/trojvqa/poison_index.json").read_text())
    assert all(poisoned["captions"][i].startswith("remember ") for i in index["indices"])


def test_too_weak_attack_is_stopped_by_the_gate(smoke_run, tmp_path):
    work = tmp_path / "weak"
    shutil.copytree(smoke_run, work, symlinks=True)
    cfg = yaml.safe_load((work / "configs/smoke.yaml").read_text())
    cfg["attacks"].update(gate_floor=0.99, n_poison=1)
    (work / "weak.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(
        work, "--cores", "2", "results/smoke/gate/badnet.json", "--configfile", "weak.yaml", check=False
    )
    out = (
        proc.stdout
        + proc.stderr
        + "".join(p.read_text() for p in (work / "logs/smoke/asr_gate").glob("*.log"))
    )
    assert proc.returncode != 0
    assert "asr_gate" in out and "badnet" in out and "ASR" in out
    assert not (work / "results/smoke/gate/badnet.json").exists()
