"""summarize stage: gather every per-run metrics JSON into one CSV."""

import json

import pandas as pd

from clip_backdoor.runtime.io import atomic_path

COLUMNS = [
    "dataset",
    "attack",
    "defense",
    "attack_seed",
    "seed",
    "split",
    "ca",
    "asr",
    "pa",
    "n_clean",
    "n_poisoned",
    "train_seconds",
    "train_peak_mem_mb",
    "eval_seconds",
]


def flat(metrics):
    """One row: the reported split's metrics as they are, another split's as <split>_<metric> (val_asr)."""
    row = {key: value for key, value in metrics.items() if not isinstance(value, dict)}
    for split, values in metrics.items():
        if isinstance(values, dict):
            row.update({f"{split}_{key}": value for key, value in values.items()})
    return row


def run(params, metrics, out):
    files = [metrics] if isinstance(metrics, str) else metrics
    rows = [flat(json.loads(open(path).read())) for path in files]
    frame = pd.DataFrame(rows)
    frame = frame[[c for c in COLUMNS if c in frame] + [c for c in frame if c not in COLUMNS]]
    keys = [c for c in ("dataset", "attack", "defense", "attack_seed", "seed") if c in frame]
    frame = frame.sort_values(keys, na_position="first")
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False)
