"""Speed of the embedded pipeline (issue 26), run by hand; writes benchmarks/speed.md (+ speed.json).

    python benchmarks/speed.py --levers    # fp32 matmul ceiling and the training-step levers (minutes)
    python benchmarks/speed.py --stages    # per-stage fixed cost vs compute of the real CLI on a toy run
    python benchmarks/speed.py --cold-run  # clone the repo to a temp dir and time `make run` (an hour+)

Each mode stores its results under its key in speed.json; speed.md is rendered from all stored keys, so
modes can run at different times. The lever step is one training step of the embedded tiny-convvit
CLIP at 32 px, batch 256, on random images and captions; its FLOP count comes from torch's
FlopCounterMode on the fp32 eager step and is the same useful work for every lever. Modes run
interleaved, several rounds, best round kept (the machine may be shared).
"""

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
JSON_OUT, MD_OUT = HERE / "speed.json", HERE / "speed.md"
ARCH = {"kind": "embedded", "config": "tiny-convvit"}
LEVERS = ["fp32", "sdpa_math", "bf16", "channels_last", "fp32_matmul_bf16", "compile"]
STAGE_MODULES = ["clip_backdoor.evaluation.evaluate", "clip_backdoor.defenses.defend"]


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def matmul_ceiling(torch, n=1024, reps=20, rounds=3):
    """Best fp32 GEMM rate (GFLOP/s) at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = 0.0
    for _ in range(rounds):
        a @ b
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def lever_context(torch, lever):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if lever == "sdpa_math":
        return sdpa_kernel(SDPBackend.MATH)
    if lever == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lever_setup(torch, lever, batch):
    """(step function, seconds spent compiling) for one lever on a fresh seeded model."""
    from clip_backdoor.models.factory import build_model
    from clip_backdoor.training import clip_loss, make_optimizer

    torch.manual_seed(0)
    model = build_model(ARCH).train()
    images = torch.rand(batch, 3, 32, 32)
    tokens = model.tokenize([f"a photo of shape {i}." for i in range(batch)])
    if lever == "channels_last":
        model.clip.visual.conv1.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = make_optimizer(model.clip, 1e-3, 0.1, "cpu")
    clip = torch.compile(model.clip) if lever == "compile" else model.clip

    def step():
        torch.set_float32_matmul_precision("medium" if lever == "fp32_matmul_bf16" else "highest")
        with lever_context(torch, lever):
            image_f, text_f, scale = clip(model.normalize(images), tokens)
            loss = clip_loss(image_f, text_f, scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        torch.set_float32_matmul_precision("highest")

    start = time.perf_counter()
    step()
    return step, time.perf_counter() - start


def step_flops(torch, batch):
    from torch.utils.flop_counter import FlopCounterMode

    step, _ = lever_setup(torch, "fp32", batch)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def time_steps(step, steps):
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def measure_levers(threads_list=(1, 2), batch=256, steps=8, rounds=2):
    import torch

    rows, flops = [], step_flops(torch, batch)
    for threads in threads_list:
        torch.set_num_threads(threads)
        setups = {lever: lever_setup(torch, lever, batch) for lever in LEVERS}
        best, ceiling = {lever: float("inf") for lever in LEVERS}, 0.0
        for _ in range(rounds):
            ceiling = max(ceiling, matmul_ceiling(torch))
            for lever, (step, _) in setups.items():
                best[lever] = min(best[lever], time_steps(step, steps))
        for lever in LEVERS:
            gflops = flops / best[lever] / 1e9
            rows.append(
                {"threads": threads, "lever": lever, "s_per_step": best[lever], "gflop_s": gflops,
                 "ceiling": ceiling, "of_ceiling": gflops / ceiling, "setup_s": setups[lever][1]}
            )  # fmt: skip
    return {"batch": batch, "gflop_per_step": flops / 1e9, "rows": rows}


def import_costs(rounds=3):
    """Seconds for a fresh interpreter to import torch, then open_clip, then each heavy stage module."""
    probe = (
        "import time;t=time.perf_counter();import torch;a=time.perf_counter();import open_clip;"
        "b=time.perf_counter();import {m};c=time.perf_counter();print(a-t,b-a,c-b)"
    )
    out = {}
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for module in STAGE_MODULES:
        runs = []
        for _ in range(rounds):
            start = time.perf_counter()
            text = subprocess.run(
                [sys.executable, "-c", probe.format(m=module)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            ).stdout
            runs.append([time.perf_counter() - start, *map(float, text.split())])
        best = min(runs)
        out[module] = dict(zip(["process_s", "torch_s", "open_clip_s", "module_s"], best, strict=True))
    return out


# -- per-stage fixed cost: a toy run of the real workflow, then each job's command timed in-process


def toy_config(work):
    """configs/smoke.yaml with the embedded default's model and test split (the jobs' fixed cost)."""
    import yaml

    cfg = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    default = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["model"] = default["model"]
    for key in ("test_per_class", "world_classes", "downstream_classes"):
        cfg["data"]["embedded"][key] = default["data"]["embedded"][key]
    cfg["data"]["embedded"].update(n_pretrain=1024, n_poison_pool=512, n_clean_pool=256)
    cfg["pretrain"]["hp"].update(epochs=1, batch_size=256)
    cfg["attacks"].update(enabled=["badnet"], n_poison=64)
    cfg["attacks"]["finetune"].update(epochs=1, batch_size=256)
    cfg["attacks"]["methods"]["badnet"]["finetune"].update(epochs=1)
    path = Path(work) / "configs/speed_toy.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_toy_workflow(work):
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import copy_workflow

    copy_workflow(work)
    config = toy_config(work)
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "-p", "all", "--configfile", str(config)]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=work_env(work))
    if proc.returncode:
        raise SystemExit(f"toy workflow failed:\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def work_env(work):
    """The environment of a job in `work`: this interpreter's bin first, `work`'s sources first."""
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": path, "PYTHONPATH": str(Path(work) / "src")}


def job_commands(snakemake_log):
    """One `python -m clip_backdoor <stage> ...` command per stage (the first of each) from `snakemake -p`."""
    seen = {}
    for line in snakemake_log.splitlines():
        match = re.search(r"python -m clip_backdoor (\w+) .*", line)
        if match and match.group(1) not in seen and match.group(1) != "report":
            seen[match.group(1)] = match.group(0)
    return seen


def time_job(work, command):
    """Wall, import and load seconds of one job command rerun through `--time-job`."""
    argv = command.split(" 2> ")[0].replace(
        "python -m clip_backdoor", f"{sys.executable} {__file__} --time-job"
    )
    start = time.perf_counter()
    proc = subprocess.run(argv, shell=True, cwd=work, capture_output=True, text=True, env=work_env(work))
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{command} failed:\n{proc.stderr[-2000:]}")
    timing = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, **timing}


def timed(fn, sink, key):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sink[key] = sink.get(key, 0.0) + time.perf_counter() - start

    return wrapper


def patch_loaders(sink):
    """Time every call of the model, checkpoint and split loaders, wherever clip_backdoor bound them."""
    names = ("load_model", "load_checkpoint", "load_split", "load_world", "load_downstream")
    for module in [m for n, m in list(sys.modules.items()) if n.startswith("clip_backdoor") and m]:
        for name in names:
            if callable(getattr(module, name, None)):
                setattr(module, name, timed(getattr(module, name), sink, "load_s"))


def time_job_main(argv):
    """In-process: imports (torch, open_clip, the stage module), loads and the rest of the stage."""
    import importlib

    start = time.perf_counter()
    import torch  # noqa: F401

    from clip_backdoor import __main__ as cli

    importlib.import_module("open_clip")
    importlib.import_module(cli.STAGES[argv[0]])
    sink = {"import_s": time.perf_counter() - start}
    patch_loaders(sink)
    start = time.perf_counter()
    cli.main(argv)
    sink["run_s"] = time.perf_counter() - start
    print(json.dumps(sink))


def measure_stages(toy_dir=None):
    """Per-stage timings; `toy_dir` keeps the toy run (and reuses it when its snakemake log is there)."""
    with tempfile.TemporaryDirectory(prefix="speed_toy_") as tmp:
        work = Path(toy_dir or tmp)
        log = work / "speed_toy_snakemake.log"
        if not log.exists():
            text = run_toy_workflow(work)
            log.write_text(text)
        commands = job_commands(log.read_text())
        stages = {stage: time_job(work, cmd) for stage, cmd in sorted(commands.items())}
    return {"imports": import_costs(), "stages": stages}


def cold_run():
    """Clone HEAD to a temp dir and time `make run` there with this interpreter's installed environment
    (its venv linked in, not reinstalled; the clone's sources first on PYTHONPATH)."""
    with tempfile.TemporaryDirectory(prefix="speed_cold_") as tmp:
        work = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(work)], check=True)
        (work / ".venv").symlink_to(Path(sys.executable).parent.parent)
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=work, capture_output=True, text=True
        )
        start = time.perf_counter()
        proc = subprocess.run(["make", "-o", ".venv/.installed", "run"], cwd=work, env=work_env(work))
        wall = time.perf_counter() - start
        jobs = sum(1 for p in (work / "results").rglob("*.tsv") if "benchmarks" in p.parts)
    return {"commit": commit.stdout.strip(), "wall_min": wall / 60, "rc": proc.returncode, "jobs": jobs}


# -- report


def lever_md(levers):
    lines = [
        f"One training step: batch {levers['batch']}, {levers['gflop_per_step']:.1f} GFLOP (FlopCounterMode,"
        " fp32 eager). `of ceiling` = achieved GFLOP/s ÷ the fp32 1024² matmul rate measured at the same"
        " thread count in the same run. `setup` = first step (compile time for `compile`).",
        "",
        "| threads | lever | s/step | steps/s | GFLOP/s | ceiling GFLOP/s | of ceiling | vs fp32 | setup s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = {r["threads"]: r["s_per_step"] for r in levers["rows"] if r["lever"] == "fp32"}
    for r in levers["rows"]:
        lines.append(
            f"| {r['threads']} | {r['lever']} | {r['s_per_step']:.3f} | {1 / r['s_per_step']:.2f}"
            f" | {r['gflop_s']:.0f} | {r['ceiling']:.0f} | {r['of_ceiling']:.2f}"
            f" | {base[r['threads']] / r['s_per_step']:.2f}x | {r['setup_s']:.1f} |"
        )
    return lines


def stages_md(stages):
    lines = [
        "Toy run of the real workflow (configs/smoke.yaml with the default's tiny-convvit and test split; one"
        " job per stage rerun through `--time-job`). fixed = wall − (run − load): process start, imports,"
        " data/model/checkpoint loading.",
        "",
        "| stage | wall s | imports s | loads s | compute s | fixed share |",
        "|---|---|---|---|---|---|",
    ]
    for stage, t in stages["stages"].items():
        load = t.get("load_s", 0.0)
        compute = max(0.0, t["run_s"] - load)
        fixed = t["wall_s"] - compute
        lines.append(
            f"| {stage} | {t['wall_s']:.1f} | {t['import_s']:.1f} | {load:.1f} | {compute:.1f}"
            f" | {fixed / t['wall_s']:.0%} |"
        )
    lines += ["", "Fresh-interpreter import costs (best of 3, seconds):", ""]
    lines += ["| module | process | torch | open_clip | module after both |", "|---|---|---|---|---|"]
    for module, t in stages["imports"].items():
        cells = [t[key] for key in ("process_s", "torch_s", "open_clip_s", "module_s")]
        lines.append(f"| {module} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    return lines


def render(results):
    meta = results.get("meta", {})
    lines = [
        "# Speed (issue 26)",
        "",
        f"CPU: {meta.get('cpu')}, {meta.get('cores')} cores; torch {meta.get('torch')}.",
    ]
    lines += ["Written by `benchmarks/speed.py`; the machine is shared, so absolute numbers are noisy.", ""]
    for key, title, fn in (
        ("levers", "Training-step levers", lever_md),
        ("stages", "Fixed cost per stage", stages_md),
    ):
        if key in results:
            lines += [f"## {title} ({results[key]['when']})", "", *fn(results[key]), ""]
    if "cold_run" in results:
        c = results["cold_run"]
        lines += ["## Cold `make run`", "", f"{c['wall_min']:.1f} min wall, {c['jobs']} jobs, rc {c['rc']},"
                  f" commit {c['commit']} ({c['when']})", ""]  # fmt: skip
    if "notes" in results:
        lines += ["## Notes", "", *results["notes"], ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levers", action="store_true")
    parser.add_argument("--stages", action="store_true")
    parser.add_argument("--cold-run", action="store_true")
    parser.add_argument("--toy-dir", help="--stages: keep the toy run here (reused if already there)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="--levers: thread counts")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.path.insert(0, str(REPO / "src"))
    import torch

    results = json.loads(JSON_OUT.read_text()) if JSON_OUT.exists() else {}
    results["meta"] = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__}
    when = time.strftime("%Y-%m-%d")
    if args.levers:
        fresh = measure_levers(threads_list=args.threads, steps=args.steps)
        kept = [r for r in results.get("levers", {}).get("rows", []) if r["threads"] not in args.threads]
        rows = sorted(kept + fresh["rows"], key=lambda r: r["threads"])
        results["levers"] = {**fresh, "rows": rows, "when": when}
    if args.stages:
        results["stages"] = {**measure_stages(args.toy_dir), "when": when}
    if args.cold_run:
        results["cold_run"] = {**cold_run(), "when": when}
    JSON_OUT.write_text(json.dumps(results, indent=1) + "\n")
    MD_OUT.write_text(render(results))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--time-job"]:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        time_job_main(sys.argv[2:])
    else:
        main()
