"""The one model-selection rule every default of this project is chosen by, on the validation split
(stated before any sweep; the README and the report quote RULE)."""

from dataclasses import dataclass

import pandas as pd

RULE = (
    "Among the settings whose mean validation CA over attacks and seeds stays within 3 points of the clean "
    "model's validation CA, take the one with the lowest mean validation ASR over attacks and seeds (ties: "
    "the setting listed first, the declared default first); if none keeps CA, the one with the highest mean "
    "validation CA. One rule for every defense, applied once per defense for all attacks; per-attack values "
    "only where a paper's protocol has them. The test split is only reported."
)


@dataclass(frozen=True)
class Choice:
    setting: str
    mean_val_asr: float
    mean_val_ca: float
    runs: int
    kept_ca: bool


def select(rows, clean_val_ca, ca_drop_max=0.03):
    """rows: dicts with `setting` (a stable text of the params), `attack`, `seed`, `split`, `asr`, `ca`.
    Returns (the Choice, a frame with every setting's means)."""
    frame = pd.DataFrame(rows)
    wrong = sorted(set(frame["split"]) - {"val"})
    if wrong:
        raise ValueError(f"selection reads the validation split only; these rows were scored on {wrong}")
    order = {s: i for i, s in enumerate(dict.fromkeys(frame["setting"]))}
    means = frame.groupby("setting").agg(
        mean_val_asr=("asr", "mean"), mean_val_ca=("ca", "mean"), runs=("asr", "size")
    )
    means["kept_ca"] = means["mean_val_ca"] >= clean_val_ca - ca_drop_max
    means["order"] = means.index.map(order)
    kept = means[means["kept_ca"]]
    best = (
        kept.sort_values(["mean_val_asr", "order"]).iloc[0]
        if not kept.empty
        else means.sort_values(["mean_val_ca", "order"], ascending=[False, True]).iloc[0]
    )
    choice = Choice(
        best.name, float(best.mean_val_asr), float(best.mean_val_ca), int(best.runs), bool(best.kept_ca)
    )
    return choice, means.sort_values("order").drop(columns="order")
