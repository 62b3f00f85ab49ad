"""Fit one defense against a run's finished attacks with overridden settings and score the VALIDATION split
(research helper, run by hand; the test split is refused).

    python benchmarks/defense_sweep.py rvpt --set alpha=2 epochs=30 --seeds 0 1 2 [--config config.yaml]

It reads the run's data and checkpoints (`make run` first), fits in a scratch folder (never the run's
outputs; `--keep DIR` copies each state there) and appends one row per (attack, seed) to
results/<run>/sweeps/defense_<defense>.jsonl with the setting, the split, the seed, the commit and the CPU.
`benchmarks/select_defaults.py` applies the selection rule to those rows.
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
from sweep_record import SPLIT_HELP, append_row, checked_split, resolved_profile, sweep_file  # noqa: E402

from clip_backdoor.defenses import defend  # noqa: E402
from clip_backdoor.evaluation import evaluate  # noqa: E402


def fit_params(config, defense, attack, seed, overrides):
    """The defend job's params as rules/common.smk builds them (without the attack or its target)."""
    block = config["defenses"]["methods"][defense]
    given = {**block["params"], **block["per_attack"].get(attack, {}), **overrides}
    dataset = {k: v for k, v in config["evaluation"]["datasets"][0].items() if k != "target"}
    module = block.get("module") or f"clip_backdoor.defenses.{defense}"
    return {"defense": defense, "module": module, "params": given, "seed": seed,
            "shots": config["defenses"]["shots"], "dataset": dataset,
            "templates": config["evaluation"]["templates"]}  # fmt: skip


def fit_and_score(config, args, attack, seed, overrides, scratch):
    run, data = config["run"], f"data/{config['run']}"
    ckpt = Path("checkpoints") / run
    params = fit_params(config, args.defense, attack, seed, overrides)
    state, log, metrics = (f"{scratch}/{attack}{seed}.{ext}" for ext in ("pt", "log.json", "json"))
    paths = {"clean_model": str(ckpt / "clean.pt"), "segmenter": str(ckpt / "oracle" / "segmenter.pt"),
             "corpus": f"results/{run}/poisoned/{attack}/captions.json"}  # fmt: skip
    started = time.time()
    model = str(ckpt / "attacks" / attack / "model.pt")
    defend.run(params, model, data, state, log, f"{scratch}/{attack}{seed}.state", **paths)
    fit_seconds = time.time() - started
    evaluate.run(
        {"seed": seed, "dataset": config["evaluation"]["datasets"][0], "templates": params["templates"],
         "batch_size": config["evaluation"]["batch_size"], "attack": attack, "defense": args.defense,
         "defense_module": params["module"], "splits": [args.split]},
        model, data, metrics, train_log=log, trigger=str(ckpt / "attacks" / attack / "trigger.pt"),
        defense=state,
    )  # fmt: skip
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(state, Path(args.keep) / f"{args.defense}_{attack}{seed}.pt")
    return params["params"], json.loads(Path(metrics).read_text()), fit_seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("defense")
    parser.add_argument("--attacks", nargs="+", default=None)
    parser.add_argument("--set", nargs="*", default=[], help="param=value (YAML value)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the profile's seeds")
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--split", default="val", help=SPLIT_HELP)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", default=None, help="folder to copy each fitted defense state into")
    args = parser.parse_args()
    checked_split(args.split)
    torch.set_num_threads(args.threads)
    config = resolved_profile(args.config)
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    out = sweep_file(config, f"defense_{args.defense}")
    with tempfile.TemporaryDirectory() as scratch:
        for attack in args.attacks or config["attacks"]["enabled"]:
            for seed in args.seeds or config["seeds"]:
                given, result, seconds = fit_and_score(config, args, attack, seed, overrides, scratch)
                row = {"defense": args.defense, "attack": attack, "seed": seed, "split": args.split,
                       "setting": json.dumps(overrides, sort_keys=True), "params": given,
                       "ca": result["ca"], "asr": result["asr"], "pa": result["pa"],
                       "fit_seconds": round(seconds, 1)}  # fmt: skip
                append_row(out, row)
                asr = "n/a" if row["asr"] is None else f"{100 * row['asr']:.1f}"
                print(f"{args.defense:>12} {attack:>10} seed{seed} {args.split}  CA {100 * row['ca']:.1f}"
                      f"  ASR {asr}  fit {seconds:.0f}s  {overrides}", flush=True)  # fmt: skip
    print(f"rows appended to {out}")


if __name__ == "__main__":
    main()
