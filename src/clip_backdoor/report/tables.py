"""Tables as LaTeX (booktabs), Markdown and CSV."""

from clip_backdoor.runtime.io import write_text


def mean_std(values, scale=100.0):
    values = values.dropna() * scale
    if len(values) == 0:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std():.1f}"


def latex_escape(text):
    return str(text).replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$")


def to_latex(frame, caption):
    cols = "l" * len(frame.columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in frame.columns) + r" \\",
        r"\midrule",
    ]
    for _, row in frame.iterrows():
        lines.append(" & ".join(latex_escape(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_markdown(frame):
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(map(str, row)) + " |" for _, row in frame.iterrows()]
    return "\n".join([header, rule, *rows]) + "\n"


def write_table(frame, out_dir, stem, caption):
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / f"{stem}.tex", to_latex(frame, caption))
    write_text(out_dir / f"{stem}.md", to_markdown(frame))
    write_text(out_dir / f"{stem}.csv", frame.to_csv(index=False))


def clean_table(summary):
    clean = summary[summary["attack"] == "clean"]
    grouped = clean.groupby("dataset")
    import pandas as pd

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
    import pandas as pd

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
