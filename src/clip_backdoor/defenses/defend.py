"""defend stage: fit one defense against one backdoored model; writes the defense's state and a log, then
evaluates the defended model in the same process (saving a process start and the imports per fit).

The defense sees the backdoored model, the few-shot train split of the downstream task and the extra
inputs it declared (never the trigger, the attack, its target or the test split: the evaluation's params
and the trigger record are opened only after the fit has returned and its state is saved). The state is
saved weights-only; the evaluation rebuilds the defended classifier from the saved file through the
defense's own `classifier`, exactly as a separate evaluate job would.
"""

import json
import time
from pathlib import Path

import torch

from clip_backdoor.data.downstream import load_downstream
from clip_backdoor.defenses import load_defense
from clip_backdoor.defenses.interface import DefenseContext, count_parameters, dataset_labels, few_shot
from clip_backdoor.models.factory import load_model
from clip_backdoor.runtime.device import torch_device
from clip_backdoor.runtime.io import save_checkpoint, write_json
from clip_backdoor.runtime.seeding import seed_everything
from clip_backdoor.runtime.usage import peak_memory_mb


def run(params, model, data, out, log, state, metrics=None, trigger=None, evaluate=None, **extra):
    """params: defense, module, params (resolved by the workflow), seed, shots, dataset, templates;
    `evaluate` (JSON) the evaluate stage's params for `metrics`, with the attack's `trigger` record."""
    fit(params, model, data, out, log, state, extra)
    if metrics is not None:
        from clip_backdoor.evaluation import evaluate as evaluation

        eval_params = json.loads(evaluate)
        evaluation.run(eval_params, model, data, metrics, train_log=log, trigger=trigger, defense=out)


def fit(params, model, data, out, log, state, extra):
    started = time.time()
    name = params["defense"]
    defense = load_defense(name, params.get("module"))
    hp = params["params"]
    seed_everything(params["seed"])
    device = torch_device()
    net = load_model(model, map_location=device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    train, classnames = load_downstream(data, params["dataset"], "train")
    shots = few_shot(train, dataset_labels(train), params["shots"], params["seed"])
    ctx = DefenseContext(
        model=net, classnames=classnames, templates=params["templates"], device=device, shots=shots,
        seed=params["seed"], paths={"data": data, **extra}, state_path=state,
        threads=torch.get_num_threads(),
    )  # fmt: skip
    total = count_parameters(net)
    fitted, fit_log = defense.fit(ctx, hp)
    save_checkpoint(out, {"defense": name, "params": hp, "state": fitted})
    trainable = fit_log.pop("trainable_params", None)
    write_json(
        log,
        {
            "defense": name,
            "seed": params["seed"],
            "params": hp,
            "shots": len(shots),
            "trainable_params": trainable,
            "trainable_fraction": None if trainable is None else trainable / total,
            "model_params": total,
            **fit_log,
            "seconds": round(time.time() - started, 2),
            "peak_mem_mb": peak_memory_mb(),
        },
    )
    Path(state).unlink(missing_ok=True)
