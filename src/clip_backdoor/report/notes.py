"""The report's "Reconstructions and deviations" section and the comparison with the papers' numbers.

Every value shown comes from the run's config or from the defenses' logs (the params each job ran with).
"""

import html
import inspect
from pathlib import Path

import pandas as pd
import yaml

from clip_backdoor.attacks.badnet import LOCATIONS, PATTERNS
from clip_backdoor.config.deviations import deviations
from clip_backdoor.report.tables import NOT_RUN, attack_label, defense_label, metric_cell

PUBLISHED = Path(__file__).with_name("published.yaml")
RECONSTRUCTED = {
    "cbpt": "The paper's loss forms and weights are not public. Stage 1 inverts a mask and pattern by "
    "contrastive learning (triggered images of different classes are positives, clean images negatives) "
    "plus a mask-size penalty; stage 2 tunes class-wise text contexts with cross-entropy on clean shots, "
    "cross-entropy on dummy-triggered shots against their true labels and a term keeping the prompted text "
    "features near the original zero-shot ones. The weights of these terms are the params below.",
    "oracle": "The paper's thresholds, localisation rule and tuned layers are not public. A class-agnostic "
    "segmenter trained in the pipeline stands in for FastSAM; the thresholds and layers are the params "
    "below.",
}


def published():
    return yaml.safe_load(PUBLISHED.read_text())


def run_params(logs, defense):
    """{param: value} the defense ran with; values that differ between attacks are listed per attack."""
    per_attack = {}
    for (_, attack, name, _), log in sorted(logs["defenses"].items()):
        if name == defense:
            per_attack.setdefault(attack, log.get("params", {}))
    keys = sorted({k for params in per_attack.values() for k in params})
    merged = {}
    for key in keys:
        values = {attack: params.get(key) for attack, params in per_attack.items()}
        distinct = {repr(v) for v in values.values()}
        merged[key] = next(iter(values.values())) if len(distinct) == 1 else values
    return merged


def params_html(params):
    if not params:
        return f"<p><i>{NOT_RUN}: no defense log yet.</i></p>"
    rows = "".join(
        f"<tr><td><code>{html.escape(k)}</code></td><td><code>{html.escape(str(v))}</code></td></tr>"
        for k, v in params.items()
    )
    return (
        f"<table class='params'><thead><tr><th>param</th><th>value (as run)</th></tr></thead>{rows}</table>"
    )


def scale_notes(config):
    """What the run scales down from the papers' protocol (embedded default) or states (paper profile)."""
    data, attacks = config["data"], config["attacks"]
    target = html.escape(str(attacks["target"]))
    notes = [
        f"ASR counts triggered test images whose true class is not the target ({target} for poisoning; each "
        "dataset's own target at evaluation), CleanCLIP-style. PA is the accuracy on the same triggered "
        "images against their true labels.",
        f"Defenses see {config['defenses']['shots']} clean shots per class of the downstream training split; "
        f"every defense and evaluation runs for seeds {config['seeds']} (tables show mean ± std and n).",
    ]
    if data["kind"] == "embedded":
        emb, arch = data["embedded"], html.escape(str(config["model"]["arch"].get("config")))
        rate = attacks["n_poison"] / emb["n_poison_pool"]
        notes += [
            f"Embedded scale: a synthetic world of {len(emb['world_classes'])} shape classes at "
            f"{emb['image_size']} px (downstream task: {len(emb['downstream_classes'])} classes) and a tiny "
            f"CLIP (<code>{arch}</code>) pretrained in the pipeline, in place of OpenAI CLIP ViT-B/32 on "
            "CC3M and ImageNet/Caltech101/OxfordPets at 224 px.",
            f"Poisoning: {attacks['n_poison']} of {emb['n_poison_pool']} pairs ({100 * rate:.1f}%) by "
            "default against the papers' 1,500 of 500K (0.3%); per-attack budgets and trigger settings "
            "below. Patch sizes scale with the image size.",
        ]
    else:
        notes.append(
            "Paper profile: the papers' models, data and budgets; deviations are listed per defense."
        )
    methods = attacks.get("methods", {})
    finetune = {
        a: {**attacks["finetune"], **methods.get(a, {}).get("finetune", {})} for a in attacks["enabled"]
    }
    slowed = [attack_label(a) for a, hp in finetune.items() if hp.get("text_lr_scale", 1) != 1]
    if slowed:
        notes.append(
            f"Deviation: the poisoned fine-tune of {', '.join(slowed)} trains the text tower at a fraction "
            "of the lr (<code>text_lr_scale</code>), where the papers use one lr for both towers."
        )
    for a in ("badnet", "badnet_lc"):
        trigger = methods.get(a, {}).get("trigger", {})
        pattern, location = trigger.get("pattern", PATTERNS[0]), trigger.get("location", LOCATIONS[0])
        if a in attacks["enabled"] and (pattern, location) != (PATTERNS[0], LOCATIONS[0]):
            notes.append(
                f"Deviation: {attack_label(a)}'s patch is a {pattern} pattern at a {location} location, "
                "where CleanCLIP's is noise resampled per image at a random location."
            )
    rows = "".join(
        f"<tr><td>{attack_label(a)}</td><td><code>{html.escape(flow_yaml(methods.get(a, {})))}</code></td>"
        "</tr>"
        for a in attacks["enabled"]
    )
    items = "".join(f"<li>{n}</li>" for n in notes)
    head = "<thead><tr><th>attack</th><th>settings (config)</th></tr></thead>"
    return f"<ul>{items}</ul><table class='params'>{head}{rows}</table>"


def flow_yaml(value):
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip()


def reconstructions_html(config, logs, defenses):
    paper = published()["paper_settings"]
    parts = ["<h3>Scale and protocol</h3>", scale_notes(config)]
    for defense in defenses:
        block = config["defenses"]["methods"].get(defense, {})
        parts.append(f"<h3>{html.escape(defense_label(defense))}</h3>")
        if defense in RECONSTRUCTED:
            parts.append(f"<p><b>Reconstruction.</b> {html.escape(RECONSTRUCTED[defense])}</p>")
        key = block.get("module", defense).rsplit(".", 1)[-1] if defense not in paper else defense
        if key in paper:
            parts.append(f"<p><b>Paper:</b> {html.escape(paper[key])}</p>")
        if block.get("per_attack"):
            parts.append(
                f"<p>Per-attack overrides (config): <code>{html.escape(str(block['per_attack']))}</code></p>"
            )
        parts.append(params_html(run_params(logs, defense)))
        doc = module_doc(block.get("module") or f"clip_backdoor.defenses.{defense}")
        if doc:
            summary = "<summary>Implementation notes (module docstring)</summary>"
            parts.append(f"<details>{summary}<pre>{doc}</pre></details>")
    return "\n".join(parts)


def module_doc(module):
    """A defense module's own account of what it implements (escaped), or '' when it cannot be imported."""
    import importlib

    try:
        return html.escape(inspect.cleandoc(importlib.import_module(module).__doc__ or ""))
    except ImportError:
        return ""


def published_tables(summary, config, defenses):
    """For a paper-profile run: per dataset of the papers, ours beside the published ASR (CA)."""
    if config["data"]["kind"] != "paper":
        return []
    data = published()
    out = []
    for table in data["tables"]:
        frame = summary[summary["dataset"] == table["dataset"]]
        if frame.empty:
            continue
        attacks = list(next(iter(table["cells"].values())))
        rows = []
        for defense in dict.fromkeys(["none", *table["cells"], *defenses]):
            row = {"Defense": defense_label(defense)}
            for attack in attacks:
                ours = metric_cell(
                    frame[(frame["attack"] == attack) & (frame["defense"] == defense)], "asr", "ca"
                )
                cell = table["cells"].get(defense, {}).get(attack, "absent")
                theirs = (
                    "–" if cell == "absent" else ("n/a" if cell is None else f"{cell[0]:.2f} ({cell[1]:.2f})")
                )
                row[attack_label(attack)] = f"{ours} | paper {theirs}"
            rows.append(row)
        for avg in data["averages"]:
            if avg["dataset"] == table["dataset"]:
                rows.append(
                    {
                        "Defense": f"{defense_label(avg['defense'])} (paper average)",
                        **{attack_label(a): "" for a in attacks},
                    }
                )
                rows[-1][attack_label(attacks[0])] = f"paper avg {avg['asr']:.2f} ({avg['ca']:.2f})"
        out.append((table["dataset"], table["source"], pd.DataFrame(rows)))
    return out


def deviation_table(config):
    """Every resolved value that differs from its declared paper value, and every project knob in use."""
    rows = [{**r, "value": flow_yaml(r["value"]), "paper": flow_yaml(r["paper"])} for r in deviations(config)]
    return pd.DataFrame(rows, columns=["key", "value", "paper", "origin", "meaning"])
