"""benchmarks/paper_pattern.py reads a run's summary cell by cell against RVPT's Table 1 pattern."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def rows(defense, attack, asrs):
    return [{"dataset": "shapes10", "attack": attack, "defense": defense, "seed": s, "asr": a, "ca": 0.9}
            for s, a in enumerate(asrs)]  # fmt: skip


def test_pattern_verdicts_and_floor(tmp_path):
    frame = pd.DataFrame(
        rows("linear_probe", "badnet", [0.05, 0.06, 0.07])  # removed, as in the paper
        + rows("linear_probe", "badclip", [0.30, 0.31, 0.32])  # the paper: survives (>= 80%)
        + rows("cleanclip", "trojvqa", [0.9, 0.9, 0.9])
        + rows("never_poisoned", "badnet", [0.20, 0.20, 0.20])
        + rows("never_poisoned", "badclip", [0.01, 0.01, 0.01])
    )
    (tmp_path / "results/x").mkdir(parents=True)
    frame.to_csv(tmp_path / "results/x/summary.csv", index=False)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/paper_pattern.py"), "--run", "x"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    lines = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in table[1:]
             if "floor" not in line}  # fmt: skip
    assert lines[("Linear probe", "BadNet")].rstrip(" |").endswith("agrees")
    assert lines[("Linear probe", "BadCLIP")].rstrip(" |").endswith("differs")
    assert lines[("CleanCLIP", "TrojVQA")].rstrip(" |").endswith("agrees")
    assert "not run" in lines[("CleanCLIP", "BadCLIP")]
    # the linear probe's BadNet ASR (6%) is far below the never-poisoned model's 20%: beyond noise
    floor = [line for line in table if "floor −" in line]
    assert len(floor) == 1 and "Linear probe | BadNet" in floor[0] and "6.0 vs floor 20.0" in floor[0]
    assert (tmp_path / "results/x/paper_pattern.md").read_text().strip() == proc.stdout.strip()
