"""summarize stage: gather every per-run metrics JSON into one CSV."""

import json

import pandas as pd

from clip_backdoor.runtime.io import atomic_path

COLUMNS = [
    "dataset",
    "attack",
    "defense",
    "seed",
    "ca",
    "asr",
    "pa",
    "n_clean",
    "n_poisoned",
    "train_seconds",
    "train_peak_mem_mb",
    "eval_seconds",
]


def run(params, metrics, out):
    files = [metrics] if isinstance(metrics, str) else metrics
    rows = [json.loads(open(path).read()) for path in files]
    frame = pd.DataFrame(rows)
    frame = frame[[c for c in COLUMNS if c in frame] + [c for c in frame if c not in COLUMNS]]
    frame = frame.sort_values(["dataset", "attack", "defense", "seed"])
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False)
