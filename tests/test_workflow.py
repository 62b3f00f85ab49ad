"""The workflow on configs/smoke.yaml, run in a temporary copy of the repository."""

import json
import re
import time

import pandas as pd
import pytest
import yaml

from conftest import copy_workflow, snakemake

pytestmark = pytest.mark.workflow


def test_smoke_run_produces_metrics_summary_and_report(smoke_run):
    metrics = json.loads((smoke_run / "results/smoke/metrics/shapes10/clean/none/seed0.json").read_text())
    for key in ("ca", "asr", "pa", "n_clean", "n_poisoned", "train_seconds", "train_peak_mem_mb"):
        assert key in metrics
    assert 0 <= metrics["ca"] <= 1 and metrics["n_clean"] == 32
    assert metrics["split"] == "test" and metrics["val"]["n_clean"] == 32  # val as large as test
    summary = pd.read_csv(smoke_run / "results/smoke/summary.csv")
    cfg = yaml.safe_load((smoke_run / "configs/smoke.yaml").read_text())
    rows = {(a, d) for a, d in zip(summary["attack"], summary["defense"], strict=True)}
    attacks, defenses = cfg["attacks"]["enabled"], ["none", "never_poisoned", *cfg["defenses"]["enabled"]]
    assert rows == {("clean", "none")} | {(a, d) for a in attacks for d in defenses}
    assert len(summary) == len(rows)
    assert summary["val_ca"].notna().all() and summary["val_asr"].notna().sum() >= len(attacks)
    floor = json.loads(
        (smoke_run / "results/smoke/metrics/shapes10/badnet/never_poisoned/seed0.json").read_text()
    )
    # the never-poisoned clean CLIP under BadNet's trigger: the clean model's own CA, and an ASR
    assert floor["ca"] == metrics["ca"] and floor["asr"] is not None
    defended = json.loads((smoke_run / "results/smoke/metrics/shapes10/badnet/rvpt/seed0.json").read_text())
    assert defended["defense"] == "rvpt" and defended["train_seconds"] is not None
    html = (smoke_run / "report/smoke/index.html").read_text()
    assert "Clean model" in html and "data:image/png;base64" in html
    for stem in ("clean_accuracy", "training_curves", "attacks_no_defense", "trigger_gallery"):
        assert (smoke_run / f"report/smoke/figures/{stem}.pdf").stat().st_size > 0
    assert (smoke_run / "report/smoke/tables/clean_accuracy.tex").read_text().count(r"\toprule") == 1
    assert not list((smoke_run / "checkpoints/smoke").rglob("*.state")), "resume state left behind"
    assert not list((smoke_run / "state/smoke").rglob("*.state")), "resume state left behind"
    assert not (smoke_run / "checkpoints/smoke/state").exists(), "resume state in the DVC-tracked checkpoints"


def test_finished_run_plans_nothing(smoke_run):
    start = time.time()
    proc = snakemake(smoke_run, "-n", "all", "--configfile", "configs/smoke.yaml")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert time.time() - start < 20


def _bad_config(tmp_path, mutate):
    work = copy_workflow(tmp_path / "wf")
    cfg = yaml.safe_load((work / "configs/smoke.yaml").read_text())
    mutate(cfg)
    (work / "bad.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, "-n", "all", "--configfile", "bad.yaml", check=False)
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


def test_unknown_config_key_is_named(tmp_path):
    out = _bad_config(tmp_path, lambda c: c["pretrain"]["hp"].update(learning_rate=0.1))
    assert "learning_rate" in out


def test_bad_config_value_is_named(tmp_path):
    out = _bad_config(tmp_path, lambda c: c["pretrain"]["hp"].update(epochs=0))
    assert "epochs" in out and "minimum" in out


def test_attack_seeds_repeat_the_poisoning_and_keep_the_first_seeds_paths(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    cfg = yaml.safe_load((work / "configs/smoke.yaml").read_text())
    cfg["attacks"]["seeds"] = [0, 1]
    (work / "seeds.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(work, "-n", "-p", "all", "--configfile", "seeds.yaml").stdout
    finetunes = set(re.findall(r"poison_finetune .*--out checkpoints/smoke/attacks/(\w+)/model.pt", out))
    attacks = cfg["attacks"]["enabled"]
    assert finetunes == {*attacks, *(f"{a}_seed1" for a in attacks)}
    # the second poisoning seed reaches its jobs; the summary then aggregates over both seeds of an attack
    assert re.search(r'poison_data --params .*"attack": "badnet".*"seed": 1', out)
    assert "results/smoke/metrics/shapes10/badnet_seed1/rvpt/seed0.json" in out
