"""Apply the selection rule (clip_backdoor.report.selection.RULE) to a sweep's validation rows.

    python benchmarks/select_defaults.py results/synthetic/sweeps/defense_rvpt.jsonl [--config config.yaml]

The clean model's validation CA is the run's own (results/<run>/metrics/<dataset>/clean/none/seed*.json,
its `val` block). Writes <sweep>.selection.md beside the sweep: every setting's means and the choice.
"""

import argparse
import json
from pathlib import Path

import pandas as pd
from sweep_record import resolved_profile

from clip_backdoor.report.selection import RULE, select
from clip_backdoor.report.tables import to_markdown


def clean_val_ca(config):
    dataset = config["evaluation"]["datasets"][0]["name"]
    folder = Path("results") / config["run"] / "metrics" / dataset / "clean" / "none"
    files = sorted(folder.glob("seed*.json"))
    if not files:
        raise SystemExit(f"no clean-model metrics under results/{config['run']}: run the workflow first")
    return sum(json.loads(f.read_text())["val"]["ca"] for f in files) / len(files)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("sweep")
    parser.add_argument("--config", default="config.yaml")
    args = parser.parse_args()
    config = resolved_profile(args.config)
    rows = [json.loads(line) for line in Path(args.sweep).read_text().splitlines() if line.strip()]
    clean = clean_val_ca(config)
    drop = config["report"]["acceptance"]["ca_drop_max"]
    choice, means = select(rows, clean, drop)
    table = means.reset_index()
    for column in ("mean_val_asr", "mean_val_ca"):
        table[column] = (100 * table[column]).map(lambda v: f"{v:.1f}")
    verdict = "" if choice.kept_ca else "; no setting kept CA"
    text = "\n".join([
        f"# Selection from {args.sweep}", "", f"Rule: {RULE}", "",
        f"Clean model validation CA: {100 * clean:.1f}%", "", to_markdown(pd.DataFrame(table)),
        f"Chosen: `{choice.setting}` (mean val ASR {100 * choice.mean_val_asr:.1f}%, CA "
        f"{100 * choice.mean_val_ca:.1f}%, {choice.runs} runs{verdict})", "",
    ])  # fmt: skip
    out = Path(args.sweep).with_suffix(".selection.md")
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
