"""Figures in one style: colour-blind-safe palette (Okabe–Ito), vector PDF plus PNG."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from clip_backdoor.runtime.io import atomic_path  # noqa: E402

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


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


def save(fig, out_dir, stem):
    """Write `stem`.pdf and `stem`.png atomically; return the PNG name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for ext in ("pdf", "png"):
        with atomic_path(out_dir / f"{stem}.{ext}") as tmp:
            fig.savefig(tmp, format=ext)
    plt.close(fig)
    return f"{stem}.png"


def clean_accuracy_bars(summary, out_dir):
    frame = summary[summary["attack"] == "clean"].groupby("dataset")["ca"].agg(["mean", "std", "count"])
    fig, ax = plt.subplots(figsize=(3.2, 2.4))
    ax.bar(frame.index, 100 * frame["mean"], yerr=100 * frame["std"].fillna(0), color=OKABE_ITO[0])
    ax.set_ylabel("zero-shot CA (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Clean CLIP")
    return save(fig, out_dir, "clean_accuracy")


def training_curves(train_logs, out_dir):
    fig, ax = plt.subplots(figsize=(3.6, 2.4))
    for name, log in train_logs.items():
        if log.get("epoch_loss"):
            ax.plot(range(1, len(log["epoch_loss"]) + 1), log["epoch_loss"], marker="o", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("contrastive loss")
    ax.legend(frameon=False)
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
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=7)
    return save(fig, out_dir, "trigger_gallery")


def attack_bars(summary, out_dir):
    frame = summary[(summary["defense"] == "none") & (summary["attack"] != "clean")]
    frame = frame.groupby("attack", sort=False)[["ca", "asr"]].mean()
    fig, ax = plt.subplots(figsize=(max(3.0, 0.6 * len(frame) + 1), 2.4))
    xs = range(len(frame))
    ax.bar([x - 0.2 for x in xs], 100 * frame["ca"], width=0.4, label="CA", color=OKABE_ITO[0])
    ax.bar([x + 0.2 for x in xs], 100 * frame["asr"], width=0.4, label="ASR", color=OKABE_ITO[3])
    ax.set_xticks(list(xs), frame.index, rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend(frameon=False, ncols=2, loc="lower right")
    ax.set_title("Poisoned models, no defense")
    return save(fig, out_dir, "attacks_no_defense")
