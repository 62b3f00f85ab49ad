"""The selection rule on validation rows, and the tuning tools' refusal of the test split."""

import subprocess
import sys
from pathlib import Path

import pytest

from clip_backdoor.report.selection import select

REPO = Path(__file__).resolve().parents[1]


def rows(setting, asr, ca, split="val"):
    return [{"setting": setting, "attack": a, "seed": s, "split": split, "asr": asr, "ca": ca}
            for a in ("badnet", "sig") for s in (0, 1, 2)]  # fmt: skip


def test_lowest_val_asr_among_settings_that_keep_ca():
    sweep = rows("default", 0.30, 0.95) + rows("strong", 0.01, 0.80) + rows("mild", 0.10, 0.94)
    choice, means = select(sweep, clean_val_ca=0.96)
    assert choice.setting == "mild" and choice.kept_ca and choice.runs == 6
    assert list(means.index) == ["default", "strong", "mild"]
    assert not means.loc["strong", "kept_ca"]


def test_ties_go_to_the_setting_listed_first_and_no_kept_ca_falls_back_to_best_ca():
    choice, _ = select(rows("default", 0.1, 0.95) + rows("other", 0.1, 0.95), clean_val_ca=0.95)
    assert choice.setting == "default"
    choice, _ = select(rows("a", 0.0, 0.5) + rows("b", 0.5, 0.7), clean_val_ca=0.95)
    assert choice.setting == "b" and not choice.kept_ca


def test_rows_scored_on_test_are_refused():
    with pytest.raises(ValueError, match="validation split only"):
        select(rows("a", 0.1, 0.9) + rows("b", 0.1, 0.9, split="test"), clean_val_ca=0.9)


@pytest.mark.parametrize("tool", ["defense_sweep.py rvpt", "attack_sweep.py badnet"])
def test_sweeps_refuse_the_test_split(tool):
    script, name = tool.split()
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), name, "--split", "test"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "validation split only, not 'test'" in proc.stderr


def test_sweep_rows_carry_commit_cpu_split_and_seed(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import sweep_record

    monkeypatch.chdir(tmp_path)
    out = sweep_record.sweep_file({"run": "x"}, "defense_rvpt")
    assert out == Path("results/x/sweeps/defense_rvpt.jsonl")
    sweep_record.append_row(out, {"split": "val", "seed": 1})
    import json

    row = json.loads(out.read_text())
    assert row["split"] == "val" and row["seed"] == 1 and row["cpu"] and row["commit"]
