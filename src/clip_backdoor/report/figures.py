"""Figures in one style: colour-blind-safe palette (Okabe–Ito), vector PDF plus PNG.

Every function returns the PNG's file name, or None when it has nothing to draw.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from clip_backdoor.report.stats import estimate  # noqa: E402
from clip_backdoor.report.tables import attack_label, defense_label  # noqa: E402
from clip_backdoor.runtime.io import atomic_path  # noqa: E402

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
HATCHES = ["", "//", "..", "xx", "\\\\", "oo", "--", "++"]


def apply_style():
    plt.rcParams.update(
        {
            "figure.dpi": 150,
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO),
            "savefig.bbox": "tight",
            "pdf.fonttype": 42,
        }
    )


def colour(i):
    return OKABE_ITO[i % len(OKABE_ITO)]


def save(fig, out_dir, stem):
    """Write `stem`.pdf and `stem`.png atomically; return the PNG name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for ext in ("pdf", "png"):
        with atomic_path(out_dir / f"{stem}.{ext}") as tmp:
            fig.savefig(tmp, format=ext)
    plt.close(fig)
    return f"{stem}.png"


def as_image(array):
    """[3,H,W] or [H,W,3] float in [0,1] or uint8 → [H,W,3] float for imshow."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.max() > 1.0:
        array = array / 255.0
    return np.clip(array.squeeze(), 0, 1)


def bare(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def clean_accuracy_bars(summary, out_dir):
    frame = summary[summary["attack"] == "clean"].groupby("dataset")["ca"].agg(["mean", "std", "count"])
    if frame.empty:
        return None
    fig, ax = plt.subplots(figsize=(3.2, 2.4))
    ax.bar(frame.index, 100 * frame["mean"], yerr=100 * frame["std"].fillna(0), color=OKABE_ITO[0])
    ax.set_ylabel("zero-shot CA (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Clean CLIP")
    return save(fig, out_dir, "clean_accuracy")


def training_curves(groups, out_dir):
    """groups: {panel title: {series name: [loss per epoch]}}; one panel per group that has a curve."""
    groups = {title: {k: v for k, v in series.items() if v} for title, series in groups.items()}
    groups = {title: series for title, series in groups.items() if series}
    if not groups:
        return None
    cols = min(3, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.4 * rows), squeeze=False)
    for ax, (title, series) in zip(axes.flat, groups.items(), strict=False):
        for i, (name, curve) in enumerate(series.items()):
            ax.plot(
                range(1, len(curve) + 1),
                curve,
                marker=MARKERS[i % len(MARKERS)],
                ms=2.5,
                lw=1,
                color=colour(i),
                label=attack_label(name),
            )
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlim(0.5, max(len(c) for c in series.values()) + 0.5)
        ax.set_ylabel("training loss")
        ax.legend(frameon=False, fontsize=6)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    fig.tight_layout()
    return save(fig, out_dir, "training_curves")


def trigger_gallery(images, triggered, out_dir):
    """images: [N,3,H,W] clean examples; triggered: {attack: [N,3,H,W]}; one column per attack."""
    names = ["clean", *triggered]
    n = len(images)
    fig, axes = plt.subplots(n, len(names), figsize=(1.1 * len(names), 1.1 * n), squeeze=False)
    for col, name in enumerate(names):
        batch = images if name == "clean" else triggered[name]
        for row in range(n):
            ax = axes[row][col]
            ax.imshow(batch[row].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            bare(ax)
            if row == 0:
                ax.set_title(attack_label(name), fontsize=7)
    return save(fig, out_dir, "trigger_gallery")


def attack_bars(summary, attacks, out_dir):
    frame = summary[(summary["defense"] == "none") & summary["attack"].isin(attacks)].copy()
    if frame.empty:
        return None
    for metric in ("ca", "asr"):
        frame[metric] = pd.to_numeric(frame[metric], errors="coerce")
    frame = (
        frame.groupby("attack")[["ca", "asr"]]
        .mean()
        .reindex([a for a in attacks if a in set(frame["attack"])])
    )
    fig, ax = plt.subplots(figsize=(max(3.0, 0.6 * len(frame) + 1), 2.4))
    xs = range(len(frame))
    ax.bar([x - 0.2 for x in xs], 100 * frame["ca"], width=0.4, label="CA", color=OKABE_ITO[0])
    ax.bar([x + 0.2 for x in xs], 100 * frame["asr"], width=0.4, label="ASR", color=OKABE_ITO[3], hatch="//")
    ax.set_xticks(list(xs), [attack_label(a) for a in frame.index], rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title("Poisoned models, no defense")
    return save(fig, out_dir, "attacks_no_defense")


def cell_stats(frame, attacks, defenses, metric):
    """mean and the 95% t-interval's half width (in %; 0 below two runs) per defense × attack; NaN where not
    run or not applicable."""
    index = pd.MultiIndex.from_product([defenses, attacks], names=["defense", "attack"])
    lines = []
    for defense, attack in index:
        est = estimate(frame[(frame["defense"] == defense) & (frame["attack"] == attack)][metric])
        half = 0.0 if est is None or est.high is None else est.high - est.mean
        lines.append({"mean": None if est is None else 100 * est.mean, "ci": 100 * half})
    return pd.DataFrame(lines, index=index, dtype=float)


def defense_bars(summary, dataset, attacks, defenses, out_dir):
    """ASR (top) and CA (bottom) per attack, one bar per defense (colour and hatch) and one for the
    never-poisoned clean model under the trigger, error bars = 95% t-interval over runs."""
    frame = summary[summary["dataset"] == dataset].copy()
    for metric in ("ca", "asr"):
        frame[metric] = pd.to_numeric(frame[metric], errors="coerce")
    rows = ["none", "never_poisoned", *defenses]
    if frame[frame["attack"].isin(attacks)].empty:
        return None
    width = 0.8 / len(rows)
    fig, axes = plt.subplots(2, 1, figsize=(max(4.0, 0.9 * len(attacks) + 1.5), 4.6), sharex=True)
    for ax, metric, label in zip(axes, ("asr", "ca"), ("ASR (%) ↓", "CA (%) ↑"), strict=True):
        stats = cell_stats(frame, attacks, rows, metric)
        for i, defense in enumerate(rows):
            values = stats.loc[defense]
            xs = np.arange(len(attacks)) + (i - (len(rows) - 1) / 2) * width
            ax.bar(
                xs,
                values["mean"].fillna(0),
                width,
                yerr=values["ci"].fillna(0),
                color=colour(i),
                hatch=HATCHES[i % len(HATCHES)],
                edgecolor="white",
                linewidth=0.3,
                label=defense_label(defense),
                error_kw={"elinewidth": 0.6},
            )
        ax.set_ylabel(label)
        ax.set_ylim(0, 100)
    axes[1].set_xticks(range(len(attacks)), [attack_label(a) for a in attacks], rotation=30, ha="right")
    axes[0].legend(
        frameon=False, ncols=min(3, len(rows)), fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.02)
    )
    fig.tight_layout()
    return save(fig, out_dir, f"defense_bars_{dataset}")


def tradeoff_scatter(summary, dataset, attacks, defenses, clean_ca, out_dir):
    """CA vs ASR, one colour per defense, one marker per attack; the clean model's CA as a dashed line."""
    frame = summary[summary["dataset"] == dataset].copy()
    for metric in ("ca", "asr"):
        frame[metric] = pd.to_numeric(frame[metric], errors="coerce")
    rows = ["none", *defenses]
    asr, ca = cell_stats(frame, attacks, rows, "asr"), cell_stats(frame, attacks, rows, "ca")
    if asr["mean"].isna().all():
        return None
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for i, defense in enumerate(rows):
        for j, attack in enumerate(attacks):
            x, y = asr.loc[(defense, attack), "mean"], ca.loc[(defense, attack), "mean"]
            if pd.notna(x) and pd.notna(y):
                ax.scatter(
                    x,
                    y,
                    color=colour(i),
                    marker=MARKERS[j % len(MARKERS)],
                    s=22,
                    edgecolor="black",
                    linewidth=0.3,
                )
    if clean_ca is not None:
        ax.axhline(100 * clean_ca, color="grey", ls="--", lw=0.8)
    handles = [
        plt.Line2D([], [], color=colour(i), marker="o", ls="", label=defense_label(d))
        for i, d in enumerate(rows)
    ]
    handles += [
        plt.Line2D(
            [], [], color="black", marker=MARKERS[j % len(MARKERS)], ls="", mfc="none", label=attack_label(a)
        )
        for j, a in enumerate(attacks)
    ]
    if clean_ca is not None:
        handles.append(plt.Line2D([], [], color="grey", ls="--", label="clean model CA"))
    ax.legend(handles=handles, frameon=False, fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_xlabel("ASR (%) ↓")
    ax.set_ylabel("CA (%) ↑")
    ax.set_xlim(-3, 103)
    ax.set_title(f"Trade-off on {dataset}")
    return save(fig, out_dir, f"tradeoff_{dataset}")


def cost_chart(costs, defenses, out_dir):
    """costs: frame with columns defense, trainable_pct, seconds, peak_mem_mb (means over attacks/seeds);
    colours follow the defense order of the other figures (none first)."""
    if costs.empty:
        return None
    panels = [
        ("trainable_pct", "trainable parameters (%)", True),
        ("seconds", "fit wall time (s)", False),
        ("peak_mem_mb", "peak memory (MB)", False),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(9.0, 2.6))
    labels = [defense_label(d) for d in costs["defense"]]
    for ax, (column, title, log) in zip(axes, panels, strict=True):
        values = pd.to_numeric(costs[column], errors="coerce")
        ax.barh(
            labels, values.fillna(0), color=[colour(["none", *defenses].index(d)) for d in costs["defense"]]
        )
        if log and (values > 0).any():
            ax.set_xscale("log")
        ax.set_title(title)
        ax.invert_yaxis()
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.tight_layout()
    return save(fig, out_dir, "defense_cost")


def inverted_triggers(items, out_dir):
    """items: [{attack, clean, triggered, mask [1,H,W], pattern [3,H,W], cosine}], one row per attack."""
    if not items:
        return None
    titles = ["clean", "real trigger", "real residual", "inverted mask", "inverted pattern", "mask·pattern"]
    fig, axes = plt.subplots(
        len(items), len(titles), figsize=(1.25 * len(titles), 1.3 * len(items)), squeeze=False
    )
    for row, item in enumerate(items):
        mask, pattern = (
            np.asarray(item["mask"], dtype=np.float32),
            np.asarray(item["pattern"], dtype=np.float32),
        )
        residual = np.abs(as_image(item["triggered"]) - as_image(item["clean"]))
        panels = [
            as_image(item["clean"]),
            as_image(item["triggered"]),
            residual / max(residual.max(), 1e-8),
            mask.squeeze(),
            as_image(pattern),
            as_image(mask * pattern),
        ]
        for col, panel in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(
                panel, cmap="viridis" if panel.ndim == 2 else None, interpolation="nearest", vmin=0, vmax=1
            )
            bare(ax)
            if row == 0:
                ax.set_title(titles[col], fontsize=7)
        label = attack_label(item["attack"])
        if item.get("cosine") is not None:
            label += f"\ncos {item['cosine']:.2f}"
        axes[row][0].set_ylabel(label, fontsize=7)
    fig.tight_layout()
    return save(fig, out_dir, "cbpt_inverted_triggers")


def perturbation_resistivity(items, out_dir):
    """items: [{attack, curves: {"none" | defense: [PR per block]}}], one panel per attack."""
    if not items:
        return None
    cols = min(4, len(items))
    rows = -(-len(items) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.0 * rows), squeeze=False, sharey=True)
    for ax in axes.flat[len(items) :]:
        ax.set_visible(False)
    for ax, item in zip(axes.flat, items, strict=False):
        for i, (name, curve) in enumerate(item["curves"].items()):
            label = "no defense" if name == "none" else defense_label(name)
            blocks = np.arange(1, len(curve) + 1)
            ax.plot(blocks, curve, marker=MARKERS[i % len(MARKERS)], color=colour(i), label=label, ms=3)
        ax.set_title(attack_label(item["attack"]), fontsize=8)
        ax.set_xticks(np.arange(1, len(curve) + 1))
        ax.set_xlabel("block")
    for ax in axes[:, 0]:
        ax.set_ylabel("PR = cos(clean, triggered)")
    axes.flat[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save(fig, out_dir, "rvpt_perturbation_resistivity")


def segment_overlay(image, masks):
    """The image with each segment tinted in its own palette colour."""
    out = as_image(image).copy()
    for k, mask in enumerate(np.asarray(masks, dtype=bool)):
        tint = np.array(matplotlib.colors.to_rgb(colour(k)))
        out[mask] = 0.45 * out[mask] + 0.55 * tint
    return out


def oracle_localisations(items, out_dir):
    """items: [{attack, image, masks [k,H,W], flagged, poisoned_label, oracle_label}], one row each."""
    if not items:
        return None
    fig, axes = plt.subplots(len(items), 3, figsize=(4.2, 1.45 * len(items)), squeeze=False)
    for row, item in enumerate(items):
        image, masks = as_image(item["image"]), np.asarray(item["masks"], dtype=bool)
        flagged = int(item.get("flagged", -1))
        highlight = image * 0.35
        if 0 <= flagged < len(masks):
            highlight[masks[flagged]] = image[masks[flagged]]
        panels = [image, segment_overlay(image, masks), highlight]
        for col, panel in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(panel, interpolation="nearest")
            bare(ax)
        axes[row][0].set_ylabel(attack_label(item["attack"]), fontsize=7)
        axes[row][1].set_xlabel(f"{len(masks)} segments", fontsize=6)
        flag = "flagged segment" if flagged >= 0 else "nothing flagged"
        axes[row][2].set_xlabel(
            f"{flag}\nCLIP: {item.get('poisoned_label', '?')} / oracle: {item.get('oracle_label', '?')}",
            fontsize=6,
        )
    for col, title in enumerate(["image", "segments", "flagged region"]):
        axes[0][col].set_title(title, fontsize=7)
    fig.tight_layout()
    return save(fig, out_dir, "oracle_localisations")
