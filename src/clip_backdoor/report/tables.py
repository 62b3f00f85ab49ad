"""Tables as LaTeX (booktabs, plus a standalone document), Markdown and CSV.

A table is a frame of display strings; an optional boolean frame of the same shape marks the bold cells.
"""

import re

import pandas as pd

from clip_backdoor.report.stats import estimate, interval_text, mean_std_text
from clip_backdoor.runtime.io import write_text

DEFENSE_NAMES = {
    "none": "No defense",
    "never_poisoned": "Clean model (never poisoned)",
    "rvpt": "RVPT",
    "vpt": "VPT",
    "cbpt": "CBPT",
    "oracle": "Oracle (paper)",
    "oracle_ext": "Oracle (+ extensions)",
    "cleanclip": "CleanCLIP",
    "finetune": "Fine-tuning",
    "linear_probe": "Linear probe",
}
ATTACK_NAMES = {
    "badnet": "BadNet",
    "blended": "Blended",
    "sig": "SIG",
    "wanet": "WaNet",
    "issba": "ISSBA",
    "trojvqa": "TrojVQA",
    "badclip": "BadCLIP",
    "badnet_lc": "BadNet-LC",
}
NOT_RUN = "not run"
NOT_APPLICABLE = "n/a"


def defense_label(name):
    if "-no-" in name:  # an ablation variant (clip_backdoor.config.ablations)
        defense, knob = name.split("-no-", 1)
        return f"{DEFENSE_NAMES.get(defense, defense)} without {knob}"
    return DEFENSE_NAMES.get(name, name)


def attack_label(name):
    return ATTACK_NAMES.get(name, name)


def mean_std(values, scale=100.0):
    values = pd.to_numeric(values, errors="coerce").dropna() * scale
    if len(values) == 0:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std():.1f}"


def run_count(frame):
    """Runs behind a cell: every (poisoning seed, defense seed) pair."""
    return len(frame)


def seed_count(counts):
    """'3', or '1–3' when cells of a row rest on different numbers of seeds."""
    counts = sorted({int(c) for c in counts if c})
    if not counts:
        return "0"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def metric_cell(rows, primary, secondary=None):
    """'ASR (CA)' of one defense × attack: mean ± std over seeds; 'n/a' when the metric does not apply."""
    if rows.empty:
        return NOT_RUN
    if rows[primary].isna().all():
        return NOT_APPLICABLE
    text = mean_std(rows[primary])
    return f"{text} ({mean_std(rows[secondary])})" if secondary else text


def average_cell(scores, missing):
    """Mean over attacks; 'not run' if a cell was not run, '*' when n/a cells are left out of the mean."""
    if missing or scores.isna().all():
        return NOT_RUN
    return f"{100 * scores.mean():.1f}" + ("*" if scores.isna().any() else "")


def grid_table(summary, dataset, attacks, defenses, primary="asr", secondary="ca", lower_is_better=True):
    """Rows defenses (none first), columns attacks, plus Avg and n; returns (cells, bold)."""
    frame = summary[summary["dataset"] == dataset]
    cells, bold, means, missing = {}, {}, {}, {}
    for attack in attacks:
        column, scores = [], []
        for defense in ["none", *defenses]:
            rows = frame[(frame["attack"] == attack) & (frame["defense"] == defense)]
            column.append(metric_cell(rows, primary, secondary))
            missing[defense] = missing.get(defense, False) or rows.empty
            value = pd.to_numeric(rows[primary], errors="coerce").mean() if not rows.empty else float("nan")
            scores.append(value)
        best = pd.Series(scores).min() if lower_is_better else pd.Series(scores).max()
        cells[attack_label(attack)] = column
        # a lone number (no defense run yet) is nobody's best
        contested = pd.Series(scores).notna().sum() > 1
        bold[attack_label(attack)] = [contested and pd.notna(s) and s == best for s in scores]
        means[attack] = scores
    rows = ["none", *defenses]
    table = pd.DataFrame(cells)
    per_defense = pd.DataFrame(means, index=rows)
    table["Avg"] = [average_cell(per_defense.loc[d], missing[d]) for d in rows]
    table.insert(0, "Defense", [defense_label(d) for d in rows])
    table["n"] = [
        seed_count(frame[frame["defense"] == d].groupby("attack").size().reindex(attacks).fillna(0))
        for d in rows
    ]
    mask = pd.DataFrame(bold)
    mask.insert(0, "Defense", False)
    mask["Avg"], mask["n"] = False, False
    return table, mask


def numeric_main(summary, attacks, defenses):
    """The main table in machine-readable form: mean, std, n and the 95% t-interval of CA, ASR and PA per
    cell, for the reported split and (as val_*) the validation split."""
    rows = ["none", "never_poisoned", *defenses]
    frame = summary[summary["attack"].isin(attacks) & summary["defense"].isin(rows)]
    metrics = [m for m in ("ca", "asr", "pa", "val_ca", "val_asr", "val_pa") if m in frame]
    lines = []
    for (dataset, defense, attack), g in frame.groupby(["dataset", "defense", "attack"], sort=False):
        line = {"dataset": dataset, "defense": defense, "attack": attack}
        for metric in metrics:
            est = estimate(g[metric])
            fields = (est.mean, est.std, est.n, est.low, est.high) if est else (None, None, 0, None, None)
            keys = (f"{metric}_{k}" for k in ("mean", "std", "count", "ci_low", "ci_high"))
            line.update(zip(keys, fields, strict=True))
        lines.append(line)
    return pd.DataFrame(lines)


MAIN_COLUMNS = ["Attack", "Defense", "ASR (%)", "ASR 95% CI", "CA (%)", "CA 95% CI", "PA (%)", "PA 95% CI",
                "n", "Acceptance"]  # fmt: skip


def acceptance_verdict(asr, ca, clean_ca, asr_max, ca_drop_max):
    """'meets' / 'misses' / 'undecided' by the 95% intervals of ASR and CA; '' where no figure applies."""
    if asr_max is None or asr is None or ca is None or clean_ca is None:
        return ""
    if asr.low is None:
        return "n < 2"
    ca_floor = clean_ca - ca_drop_max
    if asr.high <= asr_max and ca.low >= ca_floor:
        return "meets"
    if asr.low > asr_max or ca.high < ca_floor:
        return "misses"
    return "undecided"


def main_row(rows, attack, defense, clean_ca, acceptance):
    if rows.empty:
        return [attack_label(attack), defense_label(defense), *[NOT_RUN] * 6, 0, ""]
    est = {m: estimate(rows[m]) for m in ("asr", "ca", "pa")}
    cells = []
    for metric in ("asr", "ca", "pa"):
        applies = est[metric] is not None or metric == "ca"
        cells += [mean_std_text(est[metric]), interval_text(est[metric])] if applies else [NOT_APPLICABLE] * 2
    verdict = acceptance_verdict(
        est["asr"], est["ca"], clean_ca, acceptance["asr_max"].get(defense), acceptance["ca_drop_max"]
    )
    return [attack_label(attack), defense_label(defense), *cells, run_count(rows), verdict]


def main_table(summary, dataset, attacks, defenses, acceptance):
    """Per attack, the no-defense row, the never-poisoned clean model under the trigger and every defense:
    ASR, CA and PA as mean ± std with the 95% t-interval over runs, n runs and the acceptance verdict."""
    frame = summary[summary["dataset"] == dataset]
    clean_ca = pd.to_numeric(frame[frame["attack"] == "clean"]["ca"], errors="coerce").mean()
    clean_ca = None if pd.isna(clean_ca) else float(clean_ca)
    lines = []
    for attack in attacks:
        for defense in ["none", "never_poisoned", *defenses]:
            rows = frame[(frame["attack"] == attack) & (frame["defense"] == defense)]
            lines.append(main_row(rows, attack, defense, clean_ca, acceptance))
    return pd.DataFrame(lines, columns=MAIN_COLUMNS)


def floor_distance(summary, dataset, attacks, defenses):
    """Per defense and attack: mean ASR minus the never-poisoned clean model's mean ASR, in points."""
    frame = summary[summary["dataset"] == dataset]
    frame = frame.assign(asr=pd.to_numeric(frame["asr"], errors="coerce"))
    asr = frame.groupby(["defense", "attack"])["asr"].mean()
    lines = []
    for defense in ["none", *defenses]:
        gaps = [100 * (asr.get((defense, a), float("nan")) - asr.get(("never_poisoned", a), float("nan")))
                for a in attacks]  # fmt: skip
        gaps = pd.Series(gaps, dtype=float)
        cells = ["–" if pd.isna(g) else f"{g:+.1f}" for g in gaps]
        mean = "–" if gaps.isna().all() else f"{gaps.mean():+.1f}"
        lines.append([defense_label(defense), *cells, mean])
    return pd.DataFrame(lines, columns=["Defense", *[attack_label(a) for a in attacks], "Avg"])


def latex_escape(text):
    text = re.sub(r"([&%_#$])", r"\\\1", str(text))
    return text.replace("±", r"$\pm$").replace("–", "--").replace("—", "---")


def latex_cell(value, bold):
    text = latex_escape(value)
    return rf"\textbf{{{text}}}" if bold else text


def to_latex(frame, caption, bold=None):
    cols = "l" + "r" * (len(frame.columns) - 1)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in frame.columns) + r" \\",
        r"\midrule",
    ]
    for i in range(len(frame)):
        marks = bold.iloc[i] if bold is not None else [False] * len(frame.columns)
        lines.append(" & ".join(latex_cell(v, b) for v, b in zip(frame.iloc[i], marks, strict=True)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def standalone_latex(fragment):
    """A document that compiles on its own with pdflatex (landscape, for the wide main tables)."""
    return (
        "\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
        "\\usepackage[landscape,margin=1cm]{geometry}\n\\pagestyle{empty}\n\\begin{document}\n"
        + fragment
        + "\\end{document}\n"
    )


def to_markdown(frame, bold=None):
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = []
    for i in range(len(frame)):
        marks = bold.iloc[i] if bold is not None else [False] * len(frame.columns)
        rows.append(
            "| "
            + " | ".join(f"**{v}**" if b else str(v) for v, b in zip(frame.iloc[i], marks, strict=True))
            + " |"
        )
    return "\n".join([header, rule, *rows]) + "\n"


def to_html(frame, bold=None, table_id=None):
    import html

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for i in range(len(frame)):
        marks = bold.iloc[i] if bold is not None else [False] * len(frame.columns)
        cells = (
            f"<td><b>{html.escape(str(v))}</b></td>" if b else f"<td>{html.escape(str(v))}</td>"
            for v, b in zip(frame.iloc[i], marks, strict=True)
        )
        body.append("<tr>" + "".join(cells) + "</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_table(frame, out_dir, stem, caption, bold=None, csv=None):
    """stem.tex (table float to \\input), stem_standalone.tex, stem.md and stem.csv (`csv` if given)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fragment = to_latex(frame, caption, bold)
    write_text(out_dir / f"{stem}.tex", fragment)
    write_text(out_dir / f"{stem}_standalone.tex", standalone_latex(fragment))
    write_text(out_dir / f"{stem}.md", to_markdown(frame, bold))
    write_text(out_dir / f"{stem}.csv", (frame if csv is None else csv).to_csv(index=False))


def clean_table(summary):
    clean = summary[summary["attack"] == "clean"]
    grouped = clean.groupby("dataset")
    return pd.DataFrame(
        {
            "dataset": list(grouped.groups),
            "CA (%)": [mean_std(g["ca"]) for _, g in grouped],
            "n seeds": [len(g) for _, g in grouped],
            "n test": [int(g["n_clean"].iloc[0]) for _, g in grouped],
        }
    )


def attack_table(summary):
    """No-defense rows: CA / ASR / PA per attack (mean ± std over seeds), the clean model first."""
    rows = []
    for (dataset, attack), g in summary[summary["defense"] == "none"].groupby(
        ["dataset", "attack"], sort=False
    ):
        rows.append(
            {
                "dataset": dataset,
                "attack": attack,
                "CA (%)": mean_std(g["ca"]),
                "ASR (%)": mean_std(g["asr"]),
                "PA (%)": mean_std(g["pa"]),
                "n": len(g),
            }
        )
    frame = pd.DataFrame(rows)
    order = {"clean": 0}
    return frame.sort_values("attack", key=lambda s: s.map(lambda a: order.get(a, 1))).reset_index(drop=True)


def cost_table(summary, defenses):
    """Per defense, over attacks and seeds: trainable parameter %, fit wall time, peak memory."""
    rows = []
    for defense in defenses:
        g = summary[(summary["defense"] == defense) & (summary["attack"] != "clean")]
        if g.empty:
            rows.append(
                {
                    "Defense": defense_label(defense),
                    "trainable (%)": NOT_RUN,
                    "time (s)": NOT_RUN,
                    "peak memory (MB)": NOT_RUN,
                    "n": 0,
                }
            )
            continue
        fraction = pd.to_numeric(g.get("trainable_fraction", pd.Series(dtype=float)), errors="coerce") * 100
        rows.append(
            {
                "Defense": defense_label(defense),
                "trainable (%)": "–" if fraction.isna().all() else f"{fraction.mean():.3g}",
                "time (s)": mean_std(g["train_seconds"], scale=1.0),
                "peak memory (MB)": mean_std(g["train_peak_mem_mb"], scale=1.0),
                "n": len(g),
            }
        )
    return pd.DataFrame(rows, columns=["Defense", "trainable (%)", "time (s)", "peak memory (MB)", "n"])
