"""report stage: figures, tables and one self-contained HTML page (images inlined) per run."""

import base64
import html
import json
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd
import yaml

from clip_backdoor.report import figures, tables
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


def page(title, sections):
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border-bottom:1px solid #ccc;padding:4px 10px;"
        "text-align:right}th{border-bottom:2px solid #333}td:first-child,th:first-child{text-align:left}"
        "figure{display:inline-block;margin:1em}img{max-width:480px}pre{background:#f6f6f6;padding:1em;"
        "overflow:auto;font-size:12px}"
    )
    body = "\n".join(f"<section><h2>{html.escape(h)}</h2>\n{content}</section>" for h, content in sections)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>\n{body}</body></html>\n"
    )


def gallery(triggers, data, fig_dir, n=4):
    """Clean downstream test images next to each attack's triggered version."""
    from clip_backdoor.attacks.record import load_record, trigger_from_record
    from clip_backdoor.data.embedded import load_split

    test = load_split(data, "downstream_test")
    import torch

    images = torch.from_numpy(test["images"][:n]).permute(0, 3, 1, 2).float() / 255
    triggered = {}
    for path in [triggers] if isinstance(triggers, str) else triggers:
        record = load_record(path)
        triggered[record["name"]] = trigger_from_record(record, images.shape[-1])(images, list(range(n)))
    return figures.trigger_gallery(images, triggered, fig_dir)


def run(params, summary, out_dir, train_logs=(), triggers=(), data=None):
    out_dir = Path(out_dir)
    figures.apply_style()
    frame = pd.read_csv(summary)
    logs = {
        Path(p).stem: json.loads(Path(p).read_text())
        for p in ([train_logs] if isinstance(train_logs, str) else train_logs)
    }
    fig_dir, table_dir = out_dir / "figures", out_dir / "tables"
    clean = tables.clean_table(frame)
    tables.write_table(clean, table_dir, "clean_accuracy", "Zero-shot clean accuracy of the clean CLIP")
    frame.to_csv(table_dir / "raw_metrics.csv", index=False)
    pngs = [figures.clean_accuracy_bars(frame, fig_dir), figures.training_curves(logs, fig_dir)]
    attacks = tables.attack_table(frame)
    tables.write_table(attacks, table_dir, "attacks", "Poisoned models without defense: CA, ASR and PA (%)")
    if (frame["attack"] != "clean").any():
        pngs.append(figures.attack_bars(frame, fig_dir))
    if triggers and data:
        pngs.append(gallery(triggers, data, fig_dir))
    sections = [
        ("Clean model", clean.to_html(index=False, border=0)),
        ("Attacks (no defense)", attacks.to_html(index=False, border=0)),
        (
            "Figures",
            "\n".join(
                f"<figure>{inline_png(fig_dir / p)}<figcaption>{html.escape(p[:-4])}</figcaption></figure>"
                for p in pngs
            ),
        ),
        ("Per-run metrics", frame.to_html(index=False, border=0, float_format=lambda v: f"{v:.4f}")),
        (
            "Provenance",
            f"<p>Generated {datetime.now(UTC).isoformat(timespec='seconds')} from git revision "
            f"<code>{html.escape(git_revision())}</code>.</p><pre>"
            + html.escape(yaml.safe_dump(software_versions(), sort_keys=False))
            + "</pre>",
        ),
        (
            "Configuration",
            "<pre>" + html.escape(yaml.safe_dump(params["config"], sort_keys=False)) + "</pre>",
        ),
    ]
    write_text(out_dir / "index.html", page(f"clip-backdoor report — run '{params['run']}'", sections))
