# ruff: noqa: E501, E731
"""The papers' profile at scale: cost and peak memory per unit of work of every stage, measured on this CPU
with a randomly initialised open_clip ViT-B-32 (the real architecture, no weights) on a fabricated small
set (benchmarks/paper_set.py), then extrapolated to configs/paper.yaml (units × per-unit cost) and
converted to H100 GPU-hours by FLOPs (torch.utils.flop_counter on the very calls that were timed).

Run by hand:  HF_HUB_OFFLINE=1 python benchmarks/paper_scale.py   (about 6 minutes on 2 cores)
Writes benchmarks/paper_scale.md. Each stage runs in its own subprocess, so its peak RSS (ru_maxrss) is
its own. Units are measured at small batch and scaled FLOP-linearly to the profile's batch; peak memory is
measured at two sizes where it grows with batch or data and extrapolated linearly.
"""

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "benchmarks")]

THREADS = 2
# H100 SXM5 dense peaks (NVIDIA H100 Tensor Core GPU datasheet): FP16/BF16 tensor 989 TFLOP/s, FP32 67.
# PyTorch leaves TF32 matmul off by default and the project does not enable it, so fp32 stages run at the
# FP32 rate. Utilisation (our assumption, to be replaced by benchmarks/gpu_check.py's numbers): 30% of
# the tensor peak for AMP training of ViT-B/32 (small matrices: 50 image tokens), 50% of the FP32 peak.
H100 = {"amp": 989e12 * 0.30, "fp32": 67e12 * 0.50}
# Sizes of the papers' downstream sets: test images, classes, train images per class >= 16 (CoOp splits)
DATASETS = {"imagenet": (50000, 1000), "caltech101": (2465, 100), "oxfordpets": (3669, 37)}
SHOTS = 16
# FastSAM-x = YOLOv8x-seg: 344 GFLOPs at 640 px (Ultralytics model table), scaled by area to imgsz 1024
FASTSAM_GFLOP = 344 * (1024 / 640) ** 2
SEGMENTS = 16  # masks per probe of the random segmenter (FastSAM returns tens in everything mode)


def profile():
    """configs/paper.yaml resolved as a run resolves it (the profile alone plus the declared defaults)."""
    from clip_backdoor.config.resolve import resolve

    return resolve(yaml.safe_load((REPO / "configs" / "paper.yaml").read_text()))


# ---- measured stages (each in a subprocess: python paper_scale.py --stage NAME WORK ARG) -----------------
def flops(fn):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def timed(fn, repeat=1):
    fn()  # warm-up (allocations, thread pools)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def models(work):
    from clip_backdoor.models.factory import load_model

    return load_model(work / "clean.pt").eval()


def setup(work, _):
    from paper_set import fabricate

    from clip_backdoor.data import paper
    from clip_backdoor.models.factory import build_model, save_model

    paths = fabricate(work / "set", n_pairs=96, per_class=8)
    paper.prepare(work / "data", {"cc3m": {"source": "csv", "path": str(paths["cc3m_csv"]), "size": 64},
                                  "clean_pool_size": 32})  # fmt: skip
    save_model(work / "clean.pt", build_model({"kind": "open_clip", "name": "ViT-B-32", "pretrained": None}))
    (work / "paths.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    return {}


def record(work, attack, art=None):
    from clip_backdoor.attacks import artefact

    out = work / "triggers" / f"{attack}.pt"
    params = {"attack": attack, "seed": 0, "target": "banana", "image_size": 224, "caption_templates": ["a {}."],
              "trigger": profile()["attacks"]["methods"][attack].get("trigger", {}), "artefact": art or {}}  # fmt: skip
    artefact.run(params, str(work / "data"), str(out), clean_model=str(work / "clean.pt"))
    return out


def poison(work, attack):
    from clip_backdoor.attacks import poison as poisoning

    art = {"n_bits": 100, "steps": 1, "lr": 1e-3, "batch_size": 2, "max_residual": 0.05, "max_images": 4}
    trigger = record(work, attack, art if attack == "issba" else None)
    n = 48
    params = {"attack": attack, "seed": 0, "target": "banana", "n_poison": n, "image_size": 224,
              "caption_templates": ["a photo of a {}."]}  # fmt: skip
    seconds = timed(lambda: poisoning.run(params, str(work / "data"), str(trigger), str(work / "poisoned")))
    return {"seconds": seconds / n, "gflop": 0.0}


def finetune(work, batch):
    import torch

    from clip_backdoor.attacks import poison as poisoning
    from clip_backdoor.data import corpus
    from clip_backdoor.training import train_contrastive

    batch = int(batch)
    params = {"attack": "badnet", "seed": 0, "target": "banana", "n_poison": 8, "image_size": 224,
              "caption_templates": ["a photo of a {}."]}  # fmt: skip
    poisoning.run(params, str(work / "data"), str(record(work, "badnet")), str(work / "ft_corpus"))
    dataset = corpus.poisoned_dataset(work / "ft_corpus", 224)
    load = timed(lambda: [dataset[i] for i in range(32)]) / 32
    model, steps = models(work), 2
    subset = torch.utils.data.Subset(dataset, range(batch * steps))
    hp = {"epochs": 1, "batch_size": batch, "lr": 1e-5, "weight_decay": 0.1, "warmup_steps": 1,
          "save_every_epochs": 1, "seed": 0}  # fmt: skip
    log = train_contrastive(model, subset, None, hp, work / f"ft{batch}.state", "cpu")
    x, tokens = torch.rand(batch, 3, 224, 224), model.tokenize(dataset.captions[:batch])
    from clip_backdoor.training import plain_clip_loss

    step_flops = flops(lambda: plain_clip_loss(model, x, tokens).backward())
    return {"seconds": log["seconds"] / steps, "gflop": step_flops / 1e9, "load_seconds_per_image": load}


def defense_context(work, dataset_name, shots):
    import torch

    from clip_backdoor.data.paper import load_downstream
    from clip_backdoor.defenses.interface import DefenseContext, dataset_labels, few_shot

    paths = json.loads((work / "paths.json").read_text())
    config = next(d for d in profile()["evaluation"]["datasets"] if d["name"] == dataset_name)
    train, classnames = load_downstream({**config, "root": paths[dataset_name]}, "train")
    subset = few_shot(train, dataset_labels(train), shots, 0)
    return DefenseContext(model=models(work), classnames=classnames, templates=["a photo of a {}."],
                          device=torch.device("cpu"), shots=subset, paths={}, state_path=str(work / "s"))  # fmt: skip


def rvpt(work, shots):
    """One fit (epochs 1) on `shots` per class, for memory; one step at batch 8 and the frozen pass per shot."""
    import torch

    from clip_backdoor.defenses import rvpt as mod
    from clip_backdoor.models.visual_prompts import PromptedVisual

    params = {
        **profile()["defenses"]["methods"]["rvpt"]["params"],
        "epochs": 1,
        "batch_size": 8,
    }
    ctx = defense_context(work, "imagenet", int(shots))
    mod.fit(ctx, params)
    images, labels = ctx.shot_tensors
    prompted = PromptedVisual(ctx.model.clip.visual, params["depth"], params["tokens"], params["init_std"])
    base, cls, feat = mod.frozen_pass(prompted, ctx.model, images[:8])
    head, scale = ctx.head(""), ctx.model.logit_scale.detach()
    opt = torch.optim.SGD(prompted.parameters(), lr=params["lr"], momentum=0.9)

    def step():
        loss = mod.rvpt_loss(prompted, base, cls, feat, labels[:8], head, scale, params["alpha"], 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()

    frozen = lambda: mod.frozen_pass(prompted, ctx.model, images[:8])  # noqa: E731
    return {"seconds": timed(step, 2) * 32 / 8, "gflop": flops(step) * 32 / 8 / 1e9,
            "frozen_seconds_per_shot": timed(frozen) / 8, "frozen_gflop_per_shot": flops(frozen) / 8 / 1e9,
            "shots": len(labels)}  # fmt: skip


def cbpt(work, _):
    """One inversion step (batch 8 → 128) and one prompt step (per class of the head)."""
    import torch
    import torch.nn.functional as F

    from clip_backdoor.defenses import cbpt as mod
    from clip_backdoor.defenses.trigger_inversion import invert_trigger

    params = dict(profile()["defenses"]["methods"]["cbpt"]["params"])
    ctx = defense_context(work, "imagenet", 4)
    images, labels = ctx.shot_tensors
    gen = torch.Generator().manual_seed(0)
    inv = {**params, "inv_steps": 1, "inv_batch": 8}
    inv_step = lambda: invert_trigger(ctx.model, images[:8], labels[:8], inv, gen)  # noqa: E731
    with torch.no_grad():
        clean = F.normalize(ctx.model.encode_image(images[:32]), dim=-1)
    prompts = mod.ClassPrompts(ctx.model, ctx.classnames, params["n_ctx"], params["ctx_init"])
    with torch.no_grad():
        original = prompts()
    scale, heads = ctx.model.logit_scale.detach(), [(prompts, 0, 1.0)]
    tune = {**params, "epochs": 1, "batch_size": 32}
    tune_step = lambda: mod.tune_prompts(heads, scale, clean, clean, labels[:32], original, tune, gen)  # noqa: E731
    c = len(ctx.classnames)
    return {"seconds": timed(inv_step) * 128 / 8, "gflop": flops(inv_step) * 128 / 8 / 1e9,
            "prompt_seconds_per_class": timed(tune_step) / c, "prompt_gflop_per_class": flops(tune_step) / c / 1e9}  # fmt: skip


def cleanclip(work, batch):
    import torch

    from clip_backdoor.data import corpus
    from clip_backdoor.defenses.cleanclip import CleanClipLoss
    from clip_backdoor.training import train_contrastive

    batch = int(batch)
    images, captions = corpus.cc3m_pairs(work / "data", "clean_pool")
    dataset = corpus.PairDataset(images, captions, 224)
    params = {
        **profile()["defenses"]["methods"]["cleanclip"]["params"],
        "epochs": 1,
        "batch_size": batch,
    }
    model, steps = models(work), 2
    loss = CleanClipLoss(params, 224)
    subset = torch.utils.data.Subset(dataset, range(batch * steps))
    log = train_contrastive(model, subset, None, {**params, "seed": 0}, work / f"cc{batch}.state", "cpu",
                            loss_fn=loss, augment=loss.augment)  # fmt: skip
    x, tokens = torch.rand(batch, 3, 224, 224), model.tokenize(captions[:batch])
    return {
        "seconds": log["seconds"] / steps,
        "gflop": flops(lambda: loss(model, x, tokens).backward()) / 1e9,
    }


def linear_probe(work, _):
    from clip_backdoor.defenses import linear_probe as mod

    ctx = defense_context(work, "imagenet", 8)
    n = len(ctx.shots)
    fit = lambda: mod.fit(ctx, profile()["defenses"]["methods"]["linear_probe"]["params"])  # noqa: E731
    return {"seconds": timed(fit) / n, "gflop": flops(fit) / n / 1e9}


class RandomSegmenter:
    """SEGMENTS random rectangles per image, largest first, a third of them compact (≤ 2% of the image)."""

    def __init__(self, seed=0):
        import torch

        self.gen = torch.Generator().manual_seed(seed)

    def segment(self, images):
        import torch

        out = []
        for image in images:
            size, masks = image.shape[-1], []
            for k in range(SEGMENTS):
                side = int(
                    size * (0.1 if k % 3 == 0 else 0.2 + 0.6 * torch.rand(1, generator=self.gen).item())
                )
                y, x = torch.randint(0, size - side + 1, (2,), generator=self.gen).tolist()
                mask = torch.zeros(size, size, dtype=torch.bool)
                mask[y : y + side, x : x + side] = True
                masks.append(mask)
            out.append(sorted(masks, key=lambda m: -int(m.sum())))
        return out


def oracle(work, _):
    """Algorithm 1 per probe (null test as configured) and the paste test per region×donor."""
    import torch

    from clip_backdoor.defenses.oracle import algorithm1, evidence, transplant

    params = {**profile()["defenses"]["methods"]["oracle"]["params"], "batch": 32, "thresholds": "absolute"}
    ctx = defense_context(work, "imagenet", 1)
    ctx.templates = ["a photo of a {}."]
    probes = torch.rand(4, 3, 224, 224)
    head = ctx.head("")
    null = head if params["null_ratio"] > 0 else None
    askers = evidence.Askers(ctx.model, head, ctx.model, head, null)
    pixels = (probes * 255).byte()
    run = lambda: algorithm1.find_candidate_triggers(pixels, RandomSegmenter(), askers, params, ctx.device)  # noqa: E731
    probs = lambda x: evidence.probabilities(ctx.model, head, x, params["batch"])  # noqa: E731
    regions = transplant.windows(224, 112, 112)  # 4 regions × 2 donors = 8 pasted images
    paste = lambda: transplant.paste_localise(probes[0], regions, probes[1:3], 0, probs)  # noqa: E731
    n = len(regions) * 2
    return {"seconds": timed(run) / len(probes), "gflop": flops(run) / len(probes) / 1e9,
            "paste_seconds": timed(paste) / n, "paste_gflop": flops(paste) / n / 1e9}  # fmt: skip


def evaluate(work, _):
    import torch

    from clip_backdoor.defenses import rvpt as rvpt_mod
    from clip_backdoor.defenses.interface import EvalContext, zero_shot_classifier
    from clip_backdoor.evaluation.evaluate import predict_dataset
    from clip_backdoor.models.visual_prompts import PromptedVisual
    from clip_backdoor.models.zeroshot import zeroshot_head

    paths = json.loads((work / "paths.json").read_text())
    from clip_backdoor.data.paper import load_downstream

    config = profile()["evaluation"]["datasets"][0]
    test, classnames = load_downstream({**config, "root": paths["imagenet"]}, "test")
    model = models(work)
    templates = profile()["evaluation"]["templates"][:4]
    ctx = EvalContext(model=model, classnames=classnames, templates=templates, device=torch.device("cpu"))
    classify = zero_shot_classifier(ctx)
    n = len(test)
    run = lambda: predict_dataset(classify, test, "cpu", 32)  # noqa: E731
    captions = len(classnames) * len(templates)
    head = lambda: zeroshot_head(model, classnames, templates)  # noqa: E731
    p = profile()["defenses"]["methods"]["rvpt"]["params"]
    state = rvpt_mod.state_of(PromptedVisual(model.clip.visual, p["depth"], p["tokens"]))
    rv = rvpt_mod.classifier(ctx, state, "")
    x = torch.rand(8, 3, 224, 224)
    with torch.no_grad():
        prompted = flops(lambda: rv(x)) / 8 / 1e9
        plain = flops(lambda: classify(x)) / 8 / 1e9
    return {"seconds": timed(run) / n, "gflop": flops(run) / n / 1e9, "head_seconds_per_caption": timed(head) / captions,
            "head_gflop_per_caption": flops(head) / captions / 1e9, "rvpt_flop_ratio": prompted / plain}  # fmt: skip


def artefact_steps(work, _):
    """make_trigger: one BadCLIP/TrojVQA patch step and one ISSBA encoder step (batch 4 → 64)."""
    import numpy as np
    import torch

    from clip_backdoor.attacks import issba
    from clip_backdoor.attacks.patch_opt import optimise_patch

    model = models(work)
    images = np.random.default_rng(0).integers(0, 256, (8, 224, 224, 3), dtype=np.uint8)
    text = torch.nn.functional.normalize(torch.randn(1, model.clip.text_projection.shape[1]), dim=-1)
    hp = {"seed": 0, "patch_size": 16, "lr": 0.1, "steps": 1, "batch_size": 4}
    patch = lambda: optimise_patch(model, images, text, None, hp, "cpu")  # noqa: E731
    stega = lambda: issba.train_stega(images, n_bits=100, steps=1, batch_size=4, device="cpu")  # noqa: E731
    return {"seconds": timed(patch) * 16, "gflop": flops(patch) * 16 / 1e9,
            "issba_seconds": timed(stega) * 16, "issba_gflop": flops(stega) * 16 / 1e9}  # fmt: skip


STAGES = {"setup": setup, "poison": poison, "finetune": finetune, "rvpt": rvpt, "cbpt": cbpt,
          "cleanclip": cleanclip, "linear_probe": linear_probe, "oracle": oracle, "evaluate": evaluate,
          "artefact": artefact_steps}  # fmt: skip


def child(name, work, arg):
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    import torch

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    result = STAGES[name](Path(work), arg)
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def measure(name, work, arg=""):
    started = time.time()
    proc = subprocess.run([sys.executable, __file__, "--stage", name, str(work), str(arg)],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"stage {name} {arg} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    print(f"  {name} {arg}: {time.time() - started:.0f} s", file=sys.stderr)
    return json.loads(lines[-1][7:])


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--stage":
    child(*sys.argv[2:5])
    sys.exit()


# ---- extrapolation to the full profile ----------------------------------------------------------------
IMAGE_BYTES = 3 * 224 * 224 * 4  # one float image at 224 px


def windows_count(size, window, stride):
    starts = len(range(0, size - window + 1, stride))
    return (starts + ((size - window) % stride != 0)) ** 2


def plan(m, config):
    """Rows (stage, units, unit, GFLOP, precision, CPU s, peak MB at full size, mem_mb kind, note)."""
    att, dfs, res = config["attacks"], config["defenses"], config["resources"]
    methods = att["methods"]
    size = config["data"]["paper"]["cc3m"]["size"]
    pool = config["data"]["paper"]["clean_pool_size"]
    ft, rv, cb, cc, lp, orc, ev, art = (m[k] for k in ("finetune", "rvpt", "cbpt", "cleanclip", "linear_probe",
                                                        "oracle", "evaluate", "artefact"))  # fmt: skip
    small, large = m["finetune_small"], ft
    per_image_mb = (large["peak_mb"] - small["peak_mb"]) / (large["batch"] - small["batch"])
    ft_step = ft["gflop"] / ft["batch"]  # GFLOP per image of a fine-tune step (fwd + bwd, image + text)
    shot_mb = (m["rvpt_large"]["peak_mb"] - rv["peak_mb"]) / (m["rvpt_large"]["shots"] - rv["shots"])
    rows = []

    def row(stage, units, unit, gflop, precision, seconds, peak, kind, note=""):
        rows.append({"stage": stage, "units": units, "unit": unit, "gflop": gflop, "precision": precision,
                     "seconds": seconds, "peak_mb": peak, "kind": kind, "note": note})  # fmt: skip

    issba = methods.get("issba", {}).get("artefact", {})
    row(
        "make_trigger issba (encoder steps)",
        issba.get("steps", 0),
        "step @64",
        art["issba_gflop"],
        "fp32",
        art["issba_seconds"],
        art["peak_mb"] + 2048 * IMAGE_BYTES / 2**20,
        "trigger",
        "2,048 images in memory",
    )
    patch_steps = sum(
        methods[a].get("artefact", {}).get("steps", 0) for a in ("trojvqa", "badclip") if a in methods
    )
    row(
        "make_trigger trojvqa+badclip (patch steps)",
        patch_steps,
        "step @64",
        art["gflop"],
        "fp32",
        art["seconds"],
        art["peak_mb"] + 64 * per_image_mb,
        "trigger",
    )
    n_poison = sum(methods.get(a, {}).get("n_poison", att["n_poison"]) for a in att["enabled"])
    row(
        "poison_data",
        n_poison,
        "poisoned pair",
        0.0,
        "cpu",
        m["poison"]["seconds"],
        m["poison"]["peak_mb"] + size * 400 / 2**20,
        None,
        "CPU job (1 thread); +400 B per listed pair",
    )
    for a in att["enabled"]:
        hp = {**att["finetune"], **methods.get(a, {}).get("finetune", {})}
        steps = hp["epochs"] * (size // hp["batch_size"])
        rows_before = len(rows)
        row(
            f"poison_finetune {a}",
            steps,
            f"step @{hp['batch_size']}",
            ft_step * hp["batch_size"],
            "amp" if hp.get("amp") else "fp32",
            ft["seconds"] / ft["batch"] * hp["batch_size"],
            ft["peak_mb"] + per_image_mb * (hp["batch_size"] - ft["batch"]),
            "finetune",
            f"{hp['epochs']} epochs",
        )
        rows[rows_before]["load_s"] = ft["load_seconds_per_image"] * hp["batch_size"] / 8  # 8 loader workers
    head = ev["head_gflop_per_caption"]
    n_templates = len(config["evaluation"]["templates"])
    for name, (n_test, n_classes) in DATASETS.items():
        shots = SHOTS * n_classes
        pairs = len(att["enabled"]) * len(config["seeds"])
        shot_peak = shots * shot_mb
        for d in dfs["enabled"]:
            p = {**dfs["methods"].get(d, {}).get("params", {})}
            label = f"defend {d} × {name}"
            if d in ("rvpt", "vpt"):
                steps = p["epochs"] * -(-shots // p["batch_size"])
                fixed = 2 * shots * rv["frozen_gflop_per_shot"] + n_classes * n_templates * head
                row(
                    label,
                    steps * pairs,
                    "step @32",
                    rv["gflop"] + fixed / steps,
                    "fp32",
                    rv["seconds"],
                    rv["peak_mb"] + shot_peak,
                    "defend",
                    f"{shots} shots, {steps} steps per fit",
                )
            elif d == "cbpt":
                steps = p["epochs"] * -(-shots // p["batch_size"])
                gflop = p["inv_steps"] * cb["gflop"] + steps * n_classes * cb["prompt_gflop_per_class"]
                seconds = p["inv_steps"] * cb["seconds"] + steps * n_classes * cb["prompt_seconds_per_class"]
                row(
                    label,
                    pairs,
                    "fit",
                    gflop,
                    "fp32",
                    seconds,
                    cb["peak_mb"] + shot_peak + 128 * per_image_mb,
                    "defend",
                    f"{p['inv_steps']} inversion steps @128, {steps} prompt steps × {n_classes} class prompts",
                )
            elif d in ("cleanclip", "finetune"):
                steps = p["epochs"] * (pool // p["batch_size"])
                per_image = cc["gflop"] / cc["batch"] if d == "cleanclip" else ft_step
                per_second = cc["seconds"] / cc["batch"] if d == "cleanclip" else ft["seconds"] / ft["batch"]
                factor = 2 if d == "cleanclip" else 1
                row(
                    label,
                    steps * pairs,
                    f"step @{p['batch_size']}",
                    per_image * p["batch_size"],
                    "amp" if p.get("amp") else "fp32",
                    per_second * p["batch_size"],
                    cc["peak_mb"] + factor * per_image_mb * (p["batch_size"] - cc["batch"]),
                    "defend",
                    f"{steps} steps per fit; identical for every dataset",
                )
            elif d == "linear_probe":
                row(
                    label,
                    shots * pairs,
                    "shot",
                    lp["gflop"],
                    "fp32",
                    lp["seconds"],
                    lp["peak_mb"] + shot_peak,
                    "defend",
                )
            elif d == "oracle":
                probes = p["probes"]
                victims = max(1, round(probes * att["n_poison"] / size))
                # the window, its stride and the transplant count are fractions of the image side / the probes
                window = round(p.get("localise_window", 0) * 224)
                stride = max(1, round(p.get("localise_stride", 0.0625) * 224))
                regions = windows_count(224, window, stride) if window else 0
                donors = p.get("localise_donors", 2)
                compact = (
                    victims
                    + p["clean_per_label"]
                    + p["anchor_pairs"]
                    + round(p.get("signature_transplants", 0) * probes)
                    + shots
                )
                rect_steps = p["epochs"] * (compact // p["batch_size"])
                gflop = (
                    probes * (orc["gflop"] + FASTSAM_GFLOP)
                    + victims * regions * donors * orc["paste_gflop"]
                    + (round(p.get("signature_transplants", 0) * probes) + compact) * ev["gflop"]
                    + rect_steps * ft_step * p["batch_size"]
                    + n_classes * (n_templates + 64) * head
                )
                seconds = (
                    probes * orc["seconds"]
                    + victims * regions * donors * orc["paste_seconds"]
                    + rect_steps * ft["seconds"] / ft["batch"] * p["batch_size"]
                )
                # host tensors: probes (float), shots (collated: 2×), the compact set cat → ×255 → round (3×
                # float) → uint8, the preserve set (anchors + shots, float); paste chunks ≤ 2 × PASTE_BYTES
                big = (
                    probes + 2 * shots + 3 * compact + compact / 4 + p["anchor_pairs"] + shots
                ) * IMAGE_BYTES
                row(
                    label,
                    pairs,
                    "fit",
                    gflop,
                    "fp32",
                    seconds,
                    orc["peak_mb"] + big / 2**20,
                    "defend",
                    f"{probes} probes (+FastSAM {FASTSAM_GFLOP:.0f} GFLOP each), ~{victims} victims × "
                    f"{regions} paste regions × {donors} donors, {rect_steps} rectification steps @"
                    f"{p['batch_size']}",
                )
        jobs = [("clean", "none")] + [(a, d) for a in att["enabled"] for d in ["none", *dfs["enabled"]]]
        images = sum(
            n_test * (1 if a == "clean" else 2) * (ev["rvpt_flop_ratio"] if d in ("rvpt", "vpt") else 1)
            for a, d in jobs
        )
        heads = sum(1 + (a == "trojvqa") for a, d in jobs if d != "linear_probe")
        gflop = images * ev["gflop"] + heads * n_classes * n_templates * head
        row(
            f"evaluate × {name}",
            len(jobs) * len(config["seeds"]),
            "job",
            gflop / len(jobs),
            "fp32",
            (images * ev["seconds"] + heads * n_classes * n_templates * ev["head_seconds_per_caption"])
            / len(jobs),
            ev["peak_mb"] + 2 * config["evaluation"]["batch_size"] * IMAGE_BYTES / 2**20,
            "evaluate",
            f"{n_test} test images (×2 with a trigger), {n_classes} classes × {n_templates} templates",
        )
    for r in rows:
        r["gpu_h"] = (
            r["units"] * max(r["gflop"] * 1e9 / H100.get(r["precision"], 1), r.get("load_s", 0)) / 3600
        )
        r["cpu_h"] = r["units"] * r["seconds"] / 3600
        r["mem_mb"] = res[r["kind"]]["mem_mb"] if r["kind"] else None
    return rows


def table(rows):
    lines = ["| stage | units | est. GPU-h (H100) | CPU-h here | GFLOP/unit | peak host memory | declared mem_mb | note |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        over = " **over**" if r["mem_mb"] and r["peak_mb"] > r["mem_mb"] else ""
        gpu = "— (CPU)" if r["precision"] == "cpu" else f"{r['gpu_h']:.2f}"
        lines.append(f"| {r['stage']} | {r['units']:,} × {r['unit']} | {gpu} | {r['cpu_h']:,.1f} | {r['gflop']:,.0f} "
                     f"| {r['peak_mb'] / 1024:.1f} GB{over} | {r['mem_mb'] or '—'} | {r['note']} |")  # fmt: skip
    gpu = sum(r["gpu_h"] for r in rows if r["precision"] != "cpu")
    cpu = sum(r["cpu_h"] for r in rows)
    lines.append(f"| **total** | | **{gpu:,.1f}** | {cpu:,.0f} | | | | |")
    return "\n".join(lines), gpu


def commit():
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=REPO, capture_output=True, text=True)
    return out.stdout.strip() + (" (src modified)" if dirty.stdout.strip() else "")


def cpu_model():
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?"
    )
    return f"{model}, {os.cpu_count()} CPUs ({platform.machine()}), {THREADS} threads"


def main():
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        measure("setup", work)
        m = {"poison": measure("poison", work, "badnet")}
        m["finetune_small"] = {**measure("finetune", work, 2), "batch": 2}
        m["finetune"] = {**measure("finetune", work, 4), "batch": 4}
        m["rvpt"] = measure("rvpt", work, 2)
        m["rvpt_large"] = measure("rvpt", work, 8)
        m["cleanclip"] = {**measure("cleanclip", work, 2), "batch": 2}
        for name in ("cbpt", "linear_probe", "oracle", "evaluate", "artefact"):
            m[name] = measure(name, work)
    (REPO / "benchmarks" / "paper_scale_measurements.json").write_text(json.dumps(m, indent=1) + "\n")
    config = profile()
    rows = plan(m, config)
    text, gpu = table(rows)
    cpu_gflops = m["finetune"]["gflop"] / m["finetune"]["seconds"]
    over = [r for r in rows if r["mem_mb"] and r["peak_mb"] > r["mem_mb"]]
    report = f"""# The papers' profile at scale

`HF_HUB_OFFLINE=1 python benchmarks/paper_scale.py` at commit {commit()} on {cpu_model()}; {time.time() - started:.0f} s.
Random-init open_clip ViT-B-32 at 224 px on a fabricated set (benchmarks/paper_set.py); configs/paper.yaml
resolved on its own (the profile plus the declared defaults), as a run resolves it. Every unit is the project's own function,
timed and FLOP-counted (torch.utils.flop_counter) on this CPU at a small batch and scaled FLOP-linearly.

**GPU-hours** = units × GFLOP/unit ÷ an H100 SXM's effective rate: AMP stages {H100["amp"] / 1e12:.0f} TFLOP/s
(30% of the 989 TFLOP/s dense FP16 tensor peak), fp32 stages {H100["fp32"] / 1e12:.1f} TFLOP/s (50% of the 67 TFLOP/s
FP32 peak; PyTorch leaves TF32 matmuls off). Peaks: NVIDIA H100 Tensor Core GPU datasheet; utilisations
are assumptions, to be replaced by `bash benchmarks/gpu_check.sh`'s images/s. For comparison, this CPU ran the
fine-tune step at {cpu_gflops:.0f} GFLOP/s: one H100 at the AMP rate is ~{H100["amp"] / 1e9 / cpu_gflops:,.0f}× it.
The poisoned fine-tune's GPU time is the larger of its FLOP time and its JPEG decoding with 8 loader workers
({m["finetune"]["load_seconds_per_image"] * 1000:.1f} ms per image here).
**Peak host memory** is the stage's ru_maxrss on the CPU, scaled to the profile: fine-tune/CleanCLIP by the
measured MB per image of batch ({(m["finetune"]["peak_mb"] - m["finetune_small"]["peak_mb"]) / 2:.0f} MB; on a GPU
the activations move to the device), few-shot defenses by the measured MB per shot
({(m["rvpt_large"]["peak_mb"] - m["rvpt"]["peak_mb"]) / (m["rvpt_large"]["shots"] - m["rvpt"]["shots"]):.2f} MB,
16 shots × 1,000 ImageNet classes = 16,000 shots), the oracle by its big host tensors (see the script).
Not measured: FastSAM itself (counted analytically, {FASTSAM_GFLOP:.0f} GFLOP per probe at imgsz 1024), the
oracle's victims (a random model flags none: ~probes × 1,500/500K victims assumed, each paste-tested).

{text}

Stages over their declared mem_mb: {", ".join(r["stage"] for r in over) or "none"}.
"""
    (REPO / "benchmarks" / "paper_scale.md").write_text(report)
    print(report)
    print(f"total {gpu:.1f} GPU-h", file=sys.stderr)


if __name__ == "__main__":
    main()
