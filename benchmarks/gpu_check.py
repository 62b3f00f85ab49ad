# ruff: noqa: E501
"""The GPU check (run through benchmarks/gpu_check.sh; --cpu runs part (b) tiny on the CPU, part (a) not).

(a) the smoke profile in a temporary copy of the workflow with `--resources gpu=N` (N visible GPUs),
    sampling nvidia-smi's compute processes: training jobs running at once must sit on distinct GPUs;
    then the poisoned fine-tunes again under a preset CUDA_VISIBLE_DEVICES: all on that GPU.
(b) on the fabricated papers' set, a random-init ViT-B/32: the poisoned fine-tune with AMP (as the
    profile runs it), an RVPT fit and a zero-shot evaluation (fp32, as the pipeline runs them): losses
    finite, images/s and peak GPU memory.
(c) writes the results (default benchmarks/gpu_check.md).
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "benchmarks"), str(REPO / "tests")]


def sample_gpus(stop, rows):
    """(time, pid, gpu bus id) of the compute processes, every 0.5 s until `stop` is set."""
    query = ["nvidia-smi", "--query-compute-apps=pid,gpu_bus_id", "--format=csv,noheader"]
    while not stop.is_set():
        now = time.time()
        out = subprocess.run(query, capture_output=True, text=True).stdout
        rows += [(now, *[x.strip() for x in line.split(",")]) for line in out.splitlines() if "," in line]
        time.sleep(0.5)


def snakemake_sampled(work, args, env):
    rows, stop = [], threading.Event()
    thread = threading.Thread(target=sample_gpus, args=(stop, rows), daemon=True)
    thread.start()
    cmd = [sys.executable, "-m", "snakemake", *args, "--configfile", "configs/smoke.yaml"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
    stop.set()
    thread.join()
    if proc.returncode:
        raise SystemExit(f"gpu_check: snakemake {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return rows


def part_a(lines):
    from conftest import copy_workflow

    bus = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,pci.bus_id", "--format=csv,noheader"],
        capture_output=True,
        text=True,
    ).stdout
    gpus = {b.strip(): int(i) for i, b in (line.split(",") for line in bus.splitlines() if "," in line)}
    n = len(gpus)
    with tempfile.TemporaryDirectory() as tmp:
        work = copy_workflow(Path(tmp) / "wf")
        env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
        env["CLIP_BACKDOOR_LOCK_DIR"] = str(Path(tmp) / "locks")
        started = time.time()
        rows = snakemake_sampled(work, ["--cores", str(max(2, 2 * n)), "--resources", f"gpu={n}", "all"], env)
        by_time = {}
        for t, pid, b in rows:
            by_time.setdefault(t, []).append((pid, b))
        shared = [s for s in by_time.values() if len({b for _, b in s}) < len({p for p, _ in s})]
        most = max((len(s) for s in by_time.values()), default=0)
        used = sorted({gpus.get(b, b) for _, _, b in rows})
        ok = not shared and (n == 1 or most > 1)
        lines += [
            f"- (a) smoke profile, `--resources gpu={n}` on {n} GPU(s): {time.time() - started:.0f} s; "
            f"up to {most} GPU processes at once, GPUs used {used}; samples with two processes on one GPU: "
            f"{len(shared)} → {'PASS' if ok else 'FAIL'}"
        ]
        last = n - 1
        env["CUDA_VISIBLE_DEVICES"] = str(last)
        rows = snakemake_sampled(
            work, ["--cores", "2", "--resources", "gpu=1", "--forcerun", "poison_finetune", "all"], env
        )
        seen = sorted({gpus.get(b, b) for _, _, b in rows})
        ok_preset = seen == [last]
        lines += [
            f"- (a) preset CUDA_VISIBLE_DEVICES={last}, poisoned fine-tunes rerun: processes seen on GPUs "
            f"{seen} → {'PASS' if ok_preset else 'FAIL'}"
        ]
        return ok and ok_preset


def part_b(lines, cpu):
    import torch
    from paper_set import fabricate

    from clip_backdoor.attacks import artefact, poison
    from clip_backdoor.config.schema import declared_defaults
    from clip_backdoor.data import corpus, paper
    from clip_backdoor.data.paper import load_downstream
    from clip_backdoor.defenses import rvpt
    from clip_backdoor.defenses.interface import (
        DefenseContext,
        EvalContext,
        dataset_labels,
        few_shot,
        zero_shot_classifier,
    )
    from clip_backdoor.evaluation.evaluate import predict_dataset
    from clip_backdoor.models.factory import build_model, save_model
    from clip_backdoor.training import train_contrastive

    device = torch.device("cpu" if cpu else "cuda")
    batch, steps, pairs, per_class = (4, 2, 16, 2) if cpu else (128, 20, 2560, 24)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = fabricate(work / "set", n_pairs=pairs, per_class=per_class)
        paper.prepare(
            work / "data",
            {"cc3m": {"source": "csv", "path": str(paths["cc3m_csv"]), "size": pairs}, "clean_pool_size": 0},
        )
        torch.manual_seed(0)
        model = build_model({"kind": "open_clip", "name": "ViT-B-32", "pretrained": None})
        save_model(work / "clean.pt", model)
        record = {
            "attack": "badnet",
            "seed": 0,
            "target": "banana",
            "image_size": 224,
            "trigger": {"patch_size": 16},
            "artefact": {},
            "caption_templates": ["a photo of a {}."],
        }
        artefact.run(record, str(work / "data"), str(work / "trigger.pt"))
        params = {**record, "n_poison": max(1, pairs // 100)}
        poison.run(params, str(work / "data"), str(work / "trigger.pt"), str(work / "poisoned"))
        dataset = torch.utils.data.Subset(
            corpus.poisoned_dataset(work / "poisoned", 224), range(batch * steps)
        )
        hp = {
            "epochs": 1,
            "batch_size": batch,
            "lr": 1e-5,
            "weight_decay": 0.1,
            "warmup_steps": 5,
            "save_every_epochs": 1,
            "seed": 0,
            "amp": not cpu,
        }
        reset = getattr(torch.cuda, "reset_peak_memory_stats", None) if not cpu else None

        def peak():
            return f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if not cpu else "n/a (CPU)"

        reset and reset()
        workers = 0 if cpu else min(8, (os.cpu_count() or 2) - 1)
        log = train_contrastive(model, dataset, None, hp, work / "ft.state", device, num_workers=workers)
        finite = all(math.isfinite(x) for x in log["epoch_loss"])
        ok &= finite
        lines.append(
            f"- (b) poisoned fine-tune, batch {batch}, {steps} steps, AMP {hp['amp']}, {workers} loader "
            f"workers: {batch * steps / log['seconds']:.1f} images/s (first step included), loss "
            f"{log['epoch_loss']} finite={finite}, peak GPU memory {peak()}"
        )
        config = paper_dataset(paths, "imagenet")
        train, classnames = load_downstream(config, "train")
        shots = few_shot(train, dataset_labels(train), 16, 0)
        net = model.to(device).eval().requires_grad_(False)
        ctx = DefenseContext(
            model=net,
            classnames=classnames,
            templates=["a photo of a {}."],
            device=device,
            shots=shots,
            paths={},
            state_path=str(work / "rvpt.state"),
        )
        p = {**declared_defaults("defenses.methods.rvpt.params"), "epochs": 1 if cpu else 5}
        reset and reset()
        started = time.perf_counter()
        _, fit_log = rvpt.fit(ctx, p)
        seconds = time.perf_counter() - started
        finite = all(math.isfinite(x) for x in fit_log["curve"])
        ok &= finite
        lines.append(
            f"- (b) RVPT fit (fp32, depth 3, 50 tokens), {len(shots)} shots × {p['epochs']} epochs: "
            f"{len(shots) * p['epochs'] / seconds:.1f} images/s (shot loading and frozen pass included), "
            f"loss {[round(x, 3) for x in fit_log['curve']]} finite={finite}, peak GPU memory {peak()}"
        )
        test, classnames = load_downstream(config, "test")
        ectx = EvalContext(model=net, classnames=classnames, templates=["a photo of a {}."], device=device)
        classify = zero_shot_classifier(ectx)
        reset and reset()
        started = time.perf_counter()
        pred, labels = predict_dataset(classify, test, device, 256)
        seconds = time.perf_counter() - started
        lines.append(
            f"- (b) evaluation (fp32, batch 256, JPEG decoding in the loop): {len(labels) / seconds:.1f} "
            f"images/s over {len(labels)} images, peak GPU memory {peak()}"
        )
    return ok


def paper_dataset(paths, name):
    import yaml

    config = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    dataset = next(d for d in config["evaluation"]["datasets"] if d["name"] == name)
    return {**dataset, "root": str(paths[name])}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", action="store_true", help="part (b) tiny on the CPU; no part (a)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(
        args.out
        or (
            Path(tempfile.gettempdir()) / "gpu_check_cpu.md"
            if args.cpu
            else REPO / "benchmarks" / "gpu_check.md"
        )
    )
    started = time.time()
    lines = []
    ok = True
    if args.cpu:
        lines.append("- (a) skipped: --cpu (no GPUs to hand out)")
    else:
        ok &= part_a(lines)
    ok &= part_b(lines, args.cpu)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    gpu = (
        "CPU dry run"
        if args.cpu
        else subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
        ).stdout.strip()
    )
    text = (
        f"# GPU check\n\n`bash benchmarks/gpu_check.sh{' --cpu' if args.cpu else ''}` at commit "
        f"{commit.stdout.strip()} on {gpu.splitlines()[0] if gpu else '?'} ({len(gpu.splitlines())} device(s)); "
        f"{time.time() - started:.0f} s; {'PASS' if ok else 'FAIL'}\n\n" + "\n".join(lines) + "\n"
    )
    out.write_text(text)
    print(text)
    print(f"written to {out}", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
