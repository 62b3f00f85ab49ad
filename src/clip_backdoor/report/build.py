"""report stage: figures, tables and one self-contained HTML page (images inlined) per run.

Every defense result, figure and note appears as soon as its files exist; what is absent shows as
"not run" (tables) or is left out (figures).
"""

import base64
import html
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd
import yaml

from clip_backdoor.report import artefacts, figures, notes, tables
from clip_backdoor.report.selection import RULE
from clip_backdoor.runtime.io import write_text

PACKAGES = [
    "clip-backdoor",
    "torch",
    "torchvision",
    "open_clip_torch",
    "snakemake",
    "dvc",
    "numpy",
    "pandas",
    "matplotlib",
]


def software_versions():
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision():
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return "unknown"
    if rev.returncode != 0:
        return "unknown (not a git checkout)"
    return rev.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def inline_png(path):
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(Path(path).stem)}">'


STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border-bottom:1px solid #ccc;"
    "padding:4px 10px;text-align:right}th{border-bottom:2px solid #333}td:first-child,th:first-child"
    "{text-align:left}table.params td{text-align:left}figure{margin:1.5em 0}img{max-width:100%}"
    "figcaption{font-size:13px;color:#444;max-width:900px}pre{background:#f6f6f6;padding:1em;overflow:auto;"
    "font-size:12px}caption{caption-side:top;text-align:left;font-size:13px;color:#444;padding-bottom:4px}"
    "nav a{margin-right:1em}"
)


def page(title, sections):
    nav = " ".join(f"<a href='#s{i}'>{html.escape(h)}</a>" for i, (h, _) in enumerate(sections))
    body = "\n".join(
        f"<section id='s{i}'><h2>{html.escape(h)}</h2>\n{content}</section>"
        for i, (h, content) in enumerate(sections)
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>\n{body}</body></html>\n"
    )


def gallery(triggers, data, dataset, fig_dir, n):
    """Clean downstream test images next to each attack's triggered version."""
    from clip_backdoor.attacks.record import load_record, trigger_from_record

    images = artefacts.test_images(data, dataset, n)
    triggered = {}
    for path in artefacts.as_list(triggers):
        record = load_record(path)
        triggered[record["name"]] = trigger_from_record(record, images.shape[-1])(images, list(range(n)))
    return figures.trigger_gallery(images, triggered, fig_dir)


def figure_html(fig_dir, png, captions):
    stem = png[:-4]
    caption = next((text for key, text in captions.items() if stem.startswith(key)), stem)
    return (
        f"<figure>{inline_png(fig_dir / png)}<figcaption><b>{html.escape(stem)}</b> "
        f"(<code>figures/{html.escape(stem)}.pdf</code>). {html.escape(caption)}</figcaption></figure>"
    )


def gate_marks(summary, dataset, attacks, floor):
    """Attacks whose no-defense ASR stays below the gate floor: their defense rows measure nothing."""
    rows = summary[(summary["dataset"] == dataset) & (summary["defense"] == "none")]
    asr = rows.groupby("attack")["asr"].mean()
    return {a for a in attacks if a in asr and pd.notna(asr[a]) and asr[a] < floor}


def main_tables(summary, config, attacks, defenses, table_dir):
    """Per dataset: the main table (ASR, CA, PA with 95% intervals, the clean-model floor, the acceptance
    verdicts), the compact ASR (CA) overview and the distance from the floor; returns HTML."""
    parts = []
    floor = config["attacks"].get("gate_floor", 0.0)
    acceptance = config["report"]["acceptance"]
    tables.numeric_main(summary, attacks, defenses).to_csv(table_dir / "main_numeric.csv", index=False)
    for i, dataset in enumerate(d["name"] for d in config["evaluation"]["datasets"]):
        clean = summary[(summary["dataset"] == dataset) & (summary["attack"] == "clean")]
        clean_text = tables.mean_std(clean["ca"]) if not clean.empty else tables.NOT_RUN
        weak = gate_marks(summary, dataset, attacks, floor)
        main = tables.main_table(summary, dataset, attacks, defenses, acceptance)
        marked = {tables.attack_label(w) for w in weak}
        main["Attack"] = [a + (" †" if a in marked else "") for a in main["Attack"]]
        caption = main_caption(dataset, clean_text, acceptance, defenses, weak, floor)
        tables.write_table(main, table_dir, f"main_{dataset}", caption)
        cells, bold = tables.grid_table(summary, dataset, attacks, defenses)
        overview_caption = (
            f"{dataset}: ASR % (CA %) per defense and attack, mean ± std over n runs; lowest ASR per "
            "column in bold; n/a: the defense cannot take the attack's evaluation (text key); Avg: mean "
            "over attacks, * over the attacks it applies to."
        )
        tables.write_table(cells, table_dir, f"overview_{dataset}", overview_caption, bold)
        distance = tables.floor_distance(summary, dataset, attacks, defenses)
        distance_caption = (
            f"{dataset}: each defense's mean ASR minus the never-poisoned clean model's mean ASR under "
            "the same trigger, in points (0: as low as a defense can be expected to go)."
        )
        tables.write_table(distance, table_dir, f"floor_distance_{dataset}", distance_caption)
        table_id = "main-table" if i == 0 else f"main-table-{dataset}"
        files = f"<code>tables/main_{dataset}.tex</code> (+ <code>_standalone.tex</code>, <code>.md</code>"
        parts.append(
            f"<h3>{html.escape(dataset)}</h3><p>{html.escape(caption)}</p>"
            f"{tables.to_html(main, None, table_id)}"
            f"<p>Files: {files}, <code>.csv</code>), <code>tables/main_numeric.csv</code>.</p>"
            f"<p>{html.escape(overview_caption)}</p>{tables.to_html(cells, bold)}"
            f"<p>{html.escape(distance_caption)}</p>{tables.to_html(distance)}"
        )
    return "\n".join(parts)


def ablation_tables(summary, config, attacks, table_dir):
    """Per ablated defense (`defenses.ablations`) and dataset: the defense, then one row per knob turned back
    to its declared default; returns HTML ('' without ablations)."""
    parts = []
    for defense, knobs in config["defenses"]["ablations"].items():
        rows = [defense, *(f"{defense}-no-{knob}" for knob in knobs)]
        for dataset in (d["name"] for d in config["evaluation"]["datasets"]):
            cells, bold = tables.grid_table(summary, dataset, attacks, rows)
            caption = (
                f"{dataset}: ablation of {tables.defense_label(defense)}, each row turning one knob back to "
                "its declared default (off); ASR % (CA %), mean ± std over n runs; lowest ASR in bold."
            )
            tables.write_table(cells, table_dir, f"ablation_{defense}_{dataset}", caption, bold)
            parts.append(f"<p>{html.escape(caption)}</p>{tables.to_html(cells, bold)}")
    return "\n".join(parts)


def main_caption(dataset, clean_text, acceptance, defenses, weak, floor):
    limits = ", ".join(
        f"{tables.defense_label(d)} ≤ {100 * v:g}%" for d, v in acceptance["asr_max"].items() if d in defenses
    )
    caption = (
        f"{dataset}, test split: ASR, CA and PA (%) per attack and defense, mean ± std over n runs "
        "(poisoning seeds × defense seeds) with the 95% t-interval over runs. 'Clean model (never "
        "poisoned)': the clean CLIP under the attack's trigger, the floor a defense can be expected to "
        f"reach. Acceptance, by the interval and not the mean: ASR {limits}, and CA at most "
        f"{100 * acceptance['ca_drop_max']:g} points below the clean model's (meets; misses; undecided "
        f"when the interval straddles a limit). Clean model CA: {clean_text}%."
    )
    if weak:
        caption += f" †: no-defense ASR below the gate floor ({100 * floor:.0f}%), the attack did not take."
    return caption


def cost_frame(summary, defenses):
    rows = []
    for defense in defenses:
        g = summary[(summary["defense"] == defense) & (summary["attack"] != "clean")]
        if g.empty:
            continue
        fraction = pd.to_numeric(g.get("trainable_fraction", pd.Series(dtype=float)), errors="coerce")
        rows.append(
            {
                "defense": defense,
                "trainable_pct": 100 * fraction.mean(),
                "seconds": pd.to_numeric(g["train_seconds"], errors="coerce").mean(),
                "peak_mem_mb": pd.to_numeric(g["train_peak_mem_mb"], errors="coerce").mean(),
            }
        )
    return pd.DataFrame(rows, columns=["defense", "trainable_pct", "seconds", "peak_mem_mb"])


def run(
    params,
    summary,
    out_dir,
    train_logs=(),
    triggers=(),
    data=None,
    states=(),
    models=(),
    poison_index=(),
    captions=None,
):
    """params: run, config (the run's config), style (its `report:` block)."""
    config, style = params["config"], params["style"]
    out_dir = Path(out_dir)
    fig_dir, table_dir = out_dir / "figures", out_dir / "tables"
    table_dir.mkdir(parents=True, exist_ok=True)
    figures.apply_style()
    frame = pd.read_csv(summary)
    attacks, defenses = list(config["attacks"]["enabled"]), list(config["defenses"]["enabled"])
    datasets = config["evaluation"]["datasets"]
    logs = artefacts.read_logs(train_logs)
    states = artefacts.load_states(states)
    caption_text = yaml.safe_load(Path(captions).read_text()) if captions else {}
    frame.to_csv(table_dir / "raw_metrics.csv", index=False)

    main_html = main_tables(frame, config, attacks, defenses, table_dir)
    ablations = ablation_tables(frame, config, attacks, table_dir)
    clean = tables.clean_table(frame)
    tables.write_table(clean, table_dir, "clean_accuracy", "Zero-shot clean accuracy of the clean CLIP")
    attack_rows = tables.attack_table(frame)
    tables.write_table(
        attack_rows, table_dir, "attacks", "Poisoned models without defense: CA, ASR and PA (%)"
    )
    deviations = notes.deviation_table(config)
    tables.write_table(
        deviations, table_dir, "deviations", f"Deviations from the papers (profile {params['run']})"
    )
    cost = tables.cost_table(frame, defenses)
    tables.write_table(
        cost, table_dir, "defense_cost", "Defense cost: trainable parameters, fit time, peak memory"
    )

    pngs = []
    for dataset in datasets:
        clean_ca = frame[(frame["dataset"] == dataset["name"]) & (frame["attack"] == "clean")]["ca"].mean()
        pngs.append(figures.defense_bars(frame, dataset["name"], attacks, defenses, fig_dir))
        pngs.append(
            figures.tradeoff_scatter(
                frame, dataset["name"], attacks, defenses, None if pd.isna(clean_ca) else clean_ca, fig_dir
            )
        )
    pngs += [
        figures.attack_bars(frame, attacks, fig_dir),
        figures.clean_accuracy_bars(frame, fig_dir),
        figures.cost_chart(cost_frame(frame, defenses), defenses, fig_dir),
        figures.training_curves(artefacts.curve_groups(logs, defenses), fig_dir),
    ]
    if triggers and data:
        pngs.append(gallery(triggers, data, datasets[0], fig_dir, style.get("gallery_images", 4)))
    if states and data:
        items = artefacts.inverted_trigger_items(
            states, triggers, models, data, datasets[0], style.get("cosine_images", 200)
        )
        pngs.append(figures.inverted_triggers(items, fig_dir))
        items = artefacts.resistivity_items(
            states, triggers, models, data, datasets[0], style.get("cosine_images", 200)
        )
        pngs.append(figures.perturbation_resistivity(items, fig_dir))
    pngs.append(
        figures.oracle_localisations(
            artefacts.localisation_items(states, datasets[0]["name"], style.get("oracle_examples", 2)),
            fig_dir,
        )
    )
    victims = pd.DataFrame(artefacts.victim_scores(logs, poison_index))
    if not victims.empty:
        victims.to_csv(table_dir / "oracle_victims.csv", index=False)

    sections = [
        ("Main results", main_html),
        *([("Ablations", ablations)] if ablations else []),
        (
            "Model selection",
            f"<p>{html.escape(RULE)}</p><p>The validation split is <code>downstream_val</code> (the embedded "
            "world) or a fixed per-class slice of the downstream train split that no shot is drawn from (the "
            "papers' datasets); evaluation scores both, the tables show test, <code>main_numeric.csv</code> "
            "and <code>raw_metrics.csv</code> also give val. Tuning sweeps score val only and write to "
            "<code>results/&lt;run&gt;/sweeps/</code>.</p>",
        ),
        ("Figures", "\n".join(figure_html(fig_dir, p, caption_text) for p in pngs if p)),
        (
            "Defense cost",
            tables.to_html(cost) + "<p>Mean over attacks and seeds; wall time and peak memory of "
            "the fit job (defend stage).</p>",
        ),
    ]
    if not victims.empty:
        sections.append(
            ("Oracle victims", victims.to_html(index=False, border=0, float_format=lambda v: f"{v:.3f}"))
        )
    for dataset, source, table in notes.published_tables(frame, config, defenses):
        sections.append(
            (
                f"Comparison with the papers: {dataset}",
                f"<p>Ours | paper, ASR % (CA %). Source: {html.escape(source)}.</p>" + tables.to_html(table),
            )
        )
    sections += [
        (
            "Deviations from the papers",
            "<p>Every resolved value that differs from its declared paper value (origin paper or "
            "reconstruction), and every knob of this project's (origin project) set to other than its "
            "default, which is off. Declarations: <code>schemas/</code>.</p>"
            + deviations.to_html(index=False, border=0),
        ),
        ("Reconstructions and deviations", notes.reconstructions_html(config, logs, defenses)),
        (
            "Clean model and attacks",
            clean.to_html(index=False, border=0) + attack_rows.to_html(index=False, border=0),
        ),
        ("Per-run metrics", frame.to_html(index=False, border=0, float_format=lambda v: f"{v:.4f}")),
        (
            "Provenance",
            f"<p>Generated {datetime.now(UTC).isoformat(timespec='seconds')} from git revision "
            f"<code>{html.escape(git_revision())}</code>.</p><pre>"
            + html.escape(yaml.safe_dump(software_versions(), sort_keys=False))
            + "</pre>",
        ),
        ("Configuration", "<pre>" + html.escape(yaml.safe_dump(config, sort_keys=False)) + "</pre>"),
    ]
    title = f"{style.get('title', 'clip-backdoor report')} — run '{params['run']}'"
    write_text(out_dir / "index.html", page(title, sections))
