"""The papers' qualitative pattern as the benchmark's own check (run by hand after a run): RVPT's Table 1
(ImageNet, ViT-B/32) read cell by cell against a run's test-split matrix.

    python benchmarks/paper_pattern.py [--run synthetic] [--out results/<run>/paper_pattern.md]

Checks (means over runs, with the 95% t-interval over runs):
  the linear probe removes BadNet, Blended, ISSBA and WaNet (ASR <= 20%) and not BadCLIP (>= 80%);
  CleanCLIP fails on TrojVQA and BadCLIP (ASR >= 80%);
  no defense beats the never-poisoned clean model's ASR under the same trigger by more than noise (its
  mean below the floor's by more than the two intervals' combined half width).
"""

import argparse
import math
from pathlib import Path

import pandas as pd

from clip_backdoor.report.stats import estimate
from clip_backdoor.report.tables import attack_label, defense_label, to_markdown

# (defense, attack, "<=" or ">=", limit): RVPT Table 1's pattern (linear probe 0.08-5.52% on the four, 99.70%
# on BadCLIP; CleanCLIP's failures on TrojVQA and BadCLIP are the RVPT and CBPT papers' motivation)
EXPECTED = [
    *[("linear_probe", a, "<=", 0.20) for a in ("badnet", "blended", "issba", "wanet")],
    ("linear_probe", "badclip", ">=", 0.80),
    ("cleanclip", "trojvqa", ">=", 0.80),
    ("cleanclip", "badclip", ">=", 0.80),
]


def cell(frame, defense, attack):
    return estimate(frame[(frame["defense"] == defense) & (frame["attack"] == attack)]["asr"])


def half(est):
    return 0.0 if est is None or est.high is None else est.high - est.mean


def expected_rows(frame):
    rows = []
    for defense, attack, op, limit in EXPECTED:
        est, expected = cell(frame, defense, attack), f"{op} {100 * limit:.0f}%"
        if est is None:
            rows.append([defense_label(defense), attack_label(attack), expected, "not run", ""])
            continue
        agrees = est.mean <= limit if op == "<=" else est.mean >= limit
        value = f"{100 * est.mean:.1f} ± {100 * half(est):.1f} (n={est.n})"
        rows.append([defense_label(defense), attack_label(attack), expected, value,
                     "agrees" if agrees else "differs"])  # fmt: skip
    return rows


def floor_rows(frame):
    rows = []
    for (defense, attack), _ in frame[~frame["defense"].isin(["none", "never_poisoned"])].groupby(
        ["defense", "attack"]
    ):
        est, floor = cell(frame, defense, attack), cell(frame, "never_poisoned", attack)
        if est is None or floor is None:
            continue
        noise = math.hypot(half(est), half(floor))
        gap = est.mean - floor.mean
        if gap < -noise:
            rows.append([defense_label(defense), attack_label(attack), "≥ floor − noise",
                         f"{100 * est.mean:.1f} vs floor {100 * floor.mean:.1f} (noise {100 * noise:.1f})",
                         "differs"])  # fmt: skip
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="synthetic")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    summary = Path("results") / args.run / "summary.csv"
    if not summary.is_file():
        raise SystemExit(f"{summary} not found: run the workflow first")
    frame = pd.read_csv(summary)
    frame = frame[frame["dataset"] == frame["dataset"].iloc[0]]
    columns = ["Defense", "Attack", "Paper pattern", "Ours (test ASR %)", "Verdict"]
    table = pd.DataFrame(expected_rows(frame) + floor_rows(frame), columns=columns)
    n_floor = len(table) - len(EXPECTED)
    text = "\n".join([
        f"# The papers' pattern on run `{args.run}`", "", (__doc__ or "").split("\n\n")[2].strip(), "",
        to_markdown(table),
        f"Cells beating the never-poisoned floor by more than noise: {n_floor} (listed above; none is the "
        "papers' pattern).", "",
    ])  # fmt: skip
    out = Path(args.out) if args.out else Path("results") / args.run / "paper_pattern.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
