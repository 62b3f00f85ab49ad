"""Poison, fine-tune and evaluate one attack with overridden settings (research helper, run by hand).

    python benchmarks/attack_sweep.py badnet --set n_poison=400 finetune.epochs=12 finetune.lr=7e-4

It reads the run's data, clean model and trigger (run `make run` first), writes into a scratch folder
(never into the run's outputs; `--keep DIR` keeps the fine-tuned model there) and appends one JSON line
per run to benchmarks/attack_tuning/finetune.jsonl with CA and ASR.
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

from clip_backdoor.attacks import finetune, poison  # noqa: E402
from clip_backdoor.attacks.record import load_record  # noqa: E402
from clip_backdoor.evaluation import evaluate  # noqa: E402


def settings(config, attack, overrides):
    """(poison params, fine-tune params) as the rules build them, with `key=value` / `finetune.key=value`."""
    attacks, block = config["attacks"], config["attacks"]["methods"].get(attack, {})
    poison_p = {"attack": attack, "seed": attacks["seed"], "target": attacks["target"],
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
    return poison_p, {"attack": attack, "seed": attacks["seed"], "hp": hp}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("attack")
    parser.add_argument("--set", nargs="*", default=[], help="key=value (YAML); finetune.key: fine-tune hp")
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", default=None, help="folder to keep the fine-tuned model in")
    parser.add_argument("--trigger", default=None, help="trigger record (default: the run's, for the attack)")
    parser.add_argument("--out", default="benchmarks/attack_tuning/finetune.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(Path(args.config).read_text())
    run, dataset = config["run"], config["evaluation"]["datasets"][0]
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    poison_p, finetune_p = settings(config, args.attack, overrides)
    ckpt, data = Path("checkpoints") / run, f"data/{run}"
    trigger = args.trigger or str(ckpt / "attacks" / args.attack / "trigger.pt")
    with tempfile.TemporaryDirectory() as scratch:
        started = time.time()
        poison.run(poison_p, data, trigger, f"{scratch}/corpus", clean_model=str(ckpt / "clean.pt"))
        model = f"{args.keep or scratch}/model.pt"
        Path(model).parent.mkdir(parents=True, exist_ok=True)
        finetune.run(finetune_p, str(ckpt / "clean.pt"), f"{scratch}/corpus", model, f"{scratch}/log.json",
                     f"{scratch}/state.pt")  # fmt: skip
        seconds = time.time() - started
        evaluate.run(
            {"seed": 0, "dataset": dataset, "templates": config["evaluation"]["templates"], "batch_size": 500,
             "attack": args.attack, "defense": "none"},
            model, data, f"{scratch}/metrics.json", trigger=trigger,
        )  # fmt: skip
        result = json.loads(Path(f"{scratch}/metrics.json").read_text())
    row = {
        "attack": args.attack,
        "overrides": overrides,
        "trigger": load_record(trigger)["params"] if args.trigger else None,
        "n_poison": poison_p["n_poison"],
        "hp": finetune_p["hp"],
        "ca": result["ca"],
        "asr": result["asr"],
        "seconds": round(seconds, 1),
    }
    ca, asr = 100 * row["ca"], 100 * row["asr"]
    print(f"{args.attack:>10}  CA {ca:.1f}  ASR {asr:.1f}  {seconds:.0f}s  {overrides}", flush=True)
    with open(args.out, "a") as fh:
        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
