"""defend stage: fit one defense against one backdoored model; writes the defense's state and a log.

The defense sees the backdoored model, the few-shot train split of the downstream task and the extra
inputs it declared (never the trigger). Its state is saved weights-only; evaluation rebuilds the defended
classifier from it through the defense's own `classifier`.
"""

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


def run(params, model, data, out, log, state, **extra):
    """params: defense, module, params (resolved by the workflow), seed, shots, dataset, templates."""
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
