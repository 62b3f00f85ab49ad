"""RVPT's cost: trainable-parameter fraction (embedded model and ViT-B/32) and the wall time of one fit
against one plain forward+backward pass of the whole CLIP image tower over the same number of images.

Run by hand (one thread, as the defend rule runs it):  python benchmarks/rvpt_cost.py [model.pt]
With a model checkpoint of a run (default: checkpoints/synthetic/attacks/badnet/model.pt) the fit uses
that model; otherwise an untrained tiny-convvit (the times do not depend on the weights).
Writes benchmarks/rvpt_cost.md and prints it.
"""

import sys
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import yaml

from clip_backdoor.data.downstream import ArrayDataset
from clip_backdoor.defenses import rvpt
from clip_backdoor.defenses.interface import DefenseContext
from clip_backdoor.models.factory import build_model, load_model
from clip_backdoor.models.visual_prompts import PromptedVisual, count_prompt_parameters

CONFIG = yaml.safe_load(Path("config.yaml").read_text())
CLASSES = CONFIG["data"]["embedded"]["downstream_classes"]
EMBEDDED = CONFIG["defenses"]["methods"]["rvpt"]["params"]  # the embedded default's RVPT settings


def fraction(clip, depth, tokens):
    prompted = PromptedVisual(clip.visual, depth, tokens)
    n = count_prompt_parameters(prompted)
    return (
        n,
        100 * n / sum(p.numel() for p in clip.parameters()),
        100 * n / sum(p.numel() for p in clip.visual.parameters()),
    )


def plain_pass_seconds(model, images, labels, epochs, batch_size):
    """Forward+backward of the whole image tower (all weights trainable) over epochs × len(images)."""
    visual = model.clip.visual.train().requires_grad_(True)
    head = torch.nn.Linear(model.clip.visual.output_dim, len(CLASSES))
    opt = torch.optim.SGD([*visual.parameters(), *head.parameters()], lr=1e-4)
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True):
            loss = torch.nn.functional.cross_entropy(head(visual(model.normalize(x))), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def main(path="checkpoints/synthetic/attacks/badnet/model.pt"):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    source = path if Path(path).is_file() else "untrained tiny-convvit"
    model = (
        load_model(path)
        if Path(path).is_file()
        else build_model({"kind": "embedded", "config": "tiny-convvit"})
    )
    model.eval()
    rng = np.random.default_rng(0)
    n = CONFIG["defenses"]["shots"] * len(CLASSES)
    shots = ArrayDataset(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % len(CLASSES))
    ctx = DefenseContext(
        model=model,
        classnames=CLASSES,
        templates=["a photo of a {}."],
        device=torch.device("cpu"),
        shots=shots,
    )
    params = {**rvpt.PARAMS, **EMBEDDED}
    start = time.perf_counter()
    rvpt.fit(ctx, params)
    fit_seconds = time.perf_counter() - start
    images, labels = ctx.shot_tensors
    plain = plain_pass_seconds(
        build_model(model.arch), images, labels, params["epochs"], params["batch_size"]
    )

    emb = fraction(model.clip, params["depth"], params["tokens"])
    vit = fraction(
        open_clip.create_model("ViT-B-32", pretrained=None), rvpt.PARAMS["depth"], rvpt.PARAMS["tokens"]
    )
    text = (
        "# RVPT cost\n\n"
        f"Model: {source}; {n} shots, {params['epochs']} epochs, batch {params['batch_size']}, "
        "one thread.\n\n"
        "| measure | value |\n|---|---|\n"
        f"| RVPT fit (embedded defaults) | {fit_seconds:.1f} s |\n"
        f"| plain forward+backward of the image tower, same images × epochs | {plain:.1f} s |\n"
        f"| ratio | {fit_seconds / plain:.2f} |\n"
        f"| trainable, embedded (depth {params['depth']}, {params['tokens']} tokens) | {emb[0]} = "
        f"{emb[1]:.3f}% of CLIP, "
        f"{emb[2]:.3f}% of the image tower |\n"
        f"| trainable, ViT-B/32 (depth 3, 50 tokens) | {vit[0]} = {vit[1]:.3f}% of CLIP, "
        f"{vit[2]:.3f}% of the image tower (paper: 0.27%) |\n"
    )
    Path("benchmarks/rvpt_cost.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(*sys.argv[1:])
