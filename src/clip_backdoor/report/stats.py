"""Mean, standard deviation, n and the 95% t-interval of a metric over seeds."""

import math
from dataclasses import dataclass

import pandas as pd

# two-sided 95% quantiles of Student's t, t_{0.975, df}, for df = 1..30; beyond, the normal's 1.960
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)  # fmt: skip


def t_quantile(df):
    return T_975[df - 1] if df <= len(T_975) else 1.960


@dataclass(frozen=True)
class Estimate:
    """mean, std (sample, ddof 1), n and the 95% t-interval (None below two values)."""

    mean: float
    std: float
    n: int
    low: float | None
    high: float | None


def estimate(values):
    """The Estimate of the non-missing values (None if there are none)."""
    values = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    n = len(values)
    if n == 0:
        return None
    mean = float(values.mean())
    if n == 1:
        return Estimate(mean, 0.0, 1, None, None)
    std = float(values.std(ddof=1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return Estimate(mean, std, n, mean - half, mean + half)


def percent(value):
    return f"{100 * value:.1f}"


def mean_std_text(est):
    if est is None:
        return "–"
    return percent(est.mean) if est.n == 1 else f"{percent(est.mean)} ± {percent(est.std)}"


def interval_text(est):
    if est is None or est.low is None:
        return "–"
    return f"[{percent(est.low)}, {percent(est.high)}]"
