"""What every tuning sweep shares: the resolved profile, the validation-only guard, and rows written to
results/<run>/sweeps/ with their provenance (git commit, CPU, split, seed)."""

import json
import platform
import subprocess
from pathlib import Path

import yaml

from clip_backdoor.config.resolve import resolve

SPLIT_HELP = "split the sweep scores: val (the only one a choice may be made on)"


def resolved_profile(path):
    """The profile as a run sees it: its file, the declared defaults, nothing else."""
    return resolve(yaml.safe_load(Path(path).read_text()))


def checked_split(split):
    if split != "val":
        why = "the test split is reported, never chosen on"
        raise SystemExit(f"sweeps score the validation split only, not {split!r}: {why}")
    return split


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit():
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True)

    head, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def sweep_file(config, name):
    """results/<run>/sweeps/<name>.jsonl: tracked with the run's results, outside the source tree."""
    path = Path("results") / config["run"] / "sweeps" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def append_row(path, row):
    row = {**row, "commit": git_commit(), "cpu": cpu_model()}
    with open(path, "a") as handle:
        handle.write(json.dumps(row, sort_keys=True) + "\n")
