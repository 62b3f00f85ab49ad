"""Poison, fine-tune and score one attack with overridden settings on the VALIDATION split (research helper,
run by hand; the test split is refused).

    python benchmarks/attack_sweep.py badnet --set n_poison=400 finetune.epochs=12 finetune.lr=7e-4

It reads the run's data, clean model and trigger (`make run` first), works in a scratch folder (never the
run's outputs; `--keep DIR` keeps the fine-tuned model) and appends one row per run to
results/<run>/sweeps/attack_<attack>.jsonl with the setting, split, seed, commit and CPU.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import yaml  # noqa: E402
from sweep_record import SPLIT_HELP, append_row, checked_split, resolved_profile, sweep_file  # noqa: E402

from clip_backdoor.attacks import finetune, poison  # noqa: E402
from clip_backdoor.evaluation import evaluate  # noqa: E402


def settings(config, attack, seed, overrides):
    """(poison params, fine-tune params) as rules/common.smk builds them, with `key=value` (poisoning) and
    `finetune.key=value` (fine-tune hyperparameters) overrides."""
    attacks, block = config["attacks"], config["attacks"]["methods"].get(attack, {})
    poison_p = {"attack": attack, "seed": seed, "target": attacks["target"],
                "n_poison": block.get("n_poison", attacks["n_poison"]),
                "caption_templates": attacks["caption_templates"]}  # fmt: skip
    if block.get("harden"):
        poison_p["harden"] = block["harden"]
    hp = {**attacks["finetune"], **block.get("finetune", {})}
    for key, value in overrides.items():
        if key.startswith("finetune."):
            hp[key.split(".", 1)[1]] = value
        else:
            poison_p[key] = value
    return poison_p, {"attack": attack, "seed": seed, "hp": hp}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("attack")
    parser.add_argument("--set", nargs="*", default=[], help="key=value (YAML); finetune.key: fine-tune hp")
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--seed", type=int, default=None, help="poisoning seed (default: attacks.seeds[0])")
    parser.add_argument("--split", default="val", help=SPLIT_HELP)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", default=None, help="folder to keep the fine-tuned model in")
    args = parser.parse_args()
    checked_split(args.split)
    torch.set_num_threads(args.threads)
    config = resolved_profile(args.config)
    run, dataset = config["run"], config["evaluation"]["datasets"][0]
    seed = config["attacks"]["seeds"][0] if args.seed is None else args.seed
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    poison_p, finetune_p = settings(config, args.attack, seed, overrides)
    ckpt, data = Path("checkpoints") / run, f"data/{run}"
    trigger = str(ckpt / "attacks" / args.attack / "trigger.pt")
    with tempfile.TemporaryDirectory() as scratch:
        started = time.time()
        poison.run(poison_p, data, trigger, f"{scratch}/corpus", clean_model=str(ckpt / "clean.pt"))
        model = f"{args.keep or scratch}/model.pt"
        Path(model).parent.mkdir(parents=True, exist_ok=True)
        finetune.run(finetune_p, str(ckpt / "clean.pt"), f"{scratch}/corpus", model, f"{scratch}/log.json",
                     f"{scratch}/state.pt")  # fmt: skip
        seconds = time.time() - started
        evaluate.run(
            {"seed": 0, "dataset": dataset, "templates": config["evaluation"]["templates"],
             "batch_size": config["evaluation"]["batch_size"], "attack": args.attack, "defense": "none",
             "splits": [args.split]},
            model, data, f"{scratch}/metrics.json", trigger=trigger,
        )  # fmt: skip
        result = json.loads(Path(f"{scratch}/metrics.json").read_text())
    row = {"attack": args.attack, "seed": seed, "split": args.split,
           "setting": json.dumps(overrides, sort_keys=True), "n_poison": poison_p["n_poison"],
           "hp": finetune_p["hp"], "ca": result["ca"], "asr": result["asr"],
           "seconds": round(seconds, 1)}  # fmt: skip
    append_row(sweep_file(config, f"attack_{args.attack}"), row)
    print(f"{args.attack:>10} {args.split}  CA {100 * row['ca']:.1f}  ASR {100 * row['asr']:.1f}"
          f"  {seconds:.0f}s  {overrides}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
