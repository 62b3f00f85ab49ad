"""Fit one defense against finished attacks of a run and print CA/ASR (research helper, run by hand).

    python benchmarks/defense_sweep.py rvpt --attacks badnet blended --set alpha=2 epochs=30 [--seeds 0 1]

It reads the run's data and checkpoints (run `make run` first), writes into a scratch folder (never into
the run's outputs; `--keep DIR` copies each fitted state there) and appends one JSON line per
(attack, seed) to benchmarks/defense_sweep.jsonl.
"""

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import yaml  # noqa: E402

from clip_backdoor.defenses import defend  # noqa: E402
from clip_backdoor.evaluation import evaluate  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("defense")
    parser.add_argument("--attacks", nargs="+", default=None)
    parser.add_argument("--set", nargs="*", default=[], help="param=value (YAML value)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--module", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/defense_sweep.jsonl")
    parser.add_argument("--keep", default=None, help="folder to copy each fitted defense state into")
    parser.add_argument(
        "--show", nargs="*", default=[], help="keys of the defense's fit log to print and record"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(Path(args.config).read_text())
    run, dataset = config["run"], config["evaluation"]["datasets"][0]
    block = config.get("defenses", {}).get("methods", {}).get(args.defense, {})
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    attacks = args.attacks or config["attacks"]["enabled"]
    ckpt, data = Path("checkpoints") / run, f"data/{run}"
    extra = {"clean_model": str(ckpt / "clean.pt"), "segmenter": str(ckpt / "oracle" / "segmenter.pt")}
    module = args.module or block.get("module") or f"clip_backdoor.defenses.{args.defense}"
    with tempfile.TemporaryDirectory() as scratch:
        for attack in attacks:
            for seed in args.seeds:
                per_attack = block.get("per_attack", {}).get(attack, {})
                given = {**block.get("params", {}), **per_attack, **overrides}
                params = {"defense": args.defense, "module": module, "params": given, "seed": seed,
                          "shots": config.get("defenses", {}).get("shots", 16), "dataset": dataset,
                          "templates": config["evaluation"]["templates"], "attack": attack}  # fmt: skip
                stem = f"{scratch}/{attack}{seed}"
                state, log, metrics = (f"{stem}.{ext}" for ext in ("pt", "log.json", "json"))
                started = time.time()
                paths = {**extra, "corpus": f"results/{run}/poisoned/{attack}/captions.json"}
                defend.run(params, str(ckpt / "attacks" / attack / "model.pt"), data, state, log,
                           f"{scratch}/{attack}{seed}.state", **paths)  # fmt: skip
                fit_seconds = time.time() - started
                evaluate.run(
                    {"seed": seed, "dataset": dataset, "templates": config["evaluation"]["templates"],
                     "batch_size": 500, "attack": attack, "defense": args.defense, "defense_module": module},
                    str(ckpt / "attacks" / attack / "model.pt"), data, metrics, train_log=log,
                    trigger=str(ckpt / "attacks" / attack / "trigger.pt"), defense=state,
                )  # fmt: skip
                result = json.loads(Path(metrics).read_text())
                if args.keep:
                    Path(args.keep).mkdir(parents=True, exist_ok=True)
                    shutil.copy(state, Path(args.keep) / f"{args.defense}_{attack}{seed}.pt")
                row = {"defense": args.defense, "module": module, "attack": attack, "seed": seed,
                       "params": given, "ca": result["ca"], "asr": result["asr"], "pa": result["pa"],
                       "fit_seconds": round(fit_seconds, 1)}  # fmt: skip
                fit_log = json.loads(Path(log).read_text())
                row.update({key: fit_log.get(key) for key in args.show})
                asr = "n/a" if row["asr"] is None else f"{100 * row['asr']:.1f}"
                print(f"{args.defense:>12} {attack:>10} seed{seed}  CA {100 * row['ca']:.1f}  ASR {asr}"
                      f"  fit {fit_seconds:.0f}s  {given}", flush=True)  # fmt: skip
                for key in args.show:
                    print(f"    {key}: {row[key]}", flush=True)
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
