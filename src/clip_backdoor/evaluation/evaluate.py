"""evaluate stage: zero-shot CA, and ASR / PA under a trigger, for one model on one dataset."""

import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from clip_backdoor.attacks.record import load_record, trigger_from_record
from clip_backdoor.data.downstream import load_downstream
from clip_backdoor.defenses import load_defense
from clip_backdoor.defenses.interface import EvalContext, zero_shot_classifier
from clip_backdoor.evaluation.metrics import attack_success_rate, clean_accuracy, poisoned_accuracy
from clip_backdoor.models.factory import load_model
from clip_backdoor.runtime.device import torch_device
from clip_backdoor.runtime.io import load_checkpoint, write_json
from clip_backdoor.runtime.seeding import seed_everything


@torch.no_grad()
def predict_dataset(classify, dataset, device, batch_size, trigger=None, seed=0):
    """Predictions (and true labels) of `classify(images) -> logits` over a dataset; `trigger(images, seeds)`
    applied first if given."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    preds, labels, start = [], [], 0
    for images, y in tqdm(loader, desc="evaluate", unit="batch", mininterval=5, leave=False):
        images = images.to(device)
        if trigger is not None:
            seeds = torch.arange(start, start + len(images)) + 1_000_003 * (seed + 1)
            images = trigger(images, seeds)
        preds.append(classify(images).argmax(1).cpu())
        labels.append(torch.as_tensor(y))
        start += len(images)
    return torch.cat(preds), torch.cat(labels)


def defended_classifier(ctx, defense, text_prefix):
    """The classifier a defense state gives (the plain zero-shot head for no defense); None if n/a."""
    if defense is None:
        return zero_shot_classifier(ctx, text_prefix)
    module, state = defense
    return module.classifier(ctx, state["state"], text_prefix)


def split_metrics(ctx, defense, dataset, params, record, target, net):
    """CA, and ASR / PA under the trigger record (if any), of one split."""
    device, batch, seed = ctx.device, params["batch_size"], params["seed"]
    pred, labels = predict_dataset(defended_classifier(ctx, defense, ""), dataset, device, batch, seed=seed)
    result = {"ca": clean_accuracy(pred, labels), "asr": None, "pa": None, "n_clean": len(labels)}
    result["n_poisoned"] = 0
    if record is None:
        return result
    classify_bd = defended_classifier(ctx, defense, record["text_key"] or "")
    if classify_bd is None:
        why = f"{params['defense']} cannot take the text key {record['text_key']!r}"
        return {**result, "not_applicable": why}
    trigger_fn = trigger_from_record(record, net.image_size)
    pred_bd, labels_bd = predict_dataset(classify_bd, dataset, device, batch, trigger=trigger_fn, seed=seed)
    return {
        **result,
        "asr": attack_success_rate(pred_bd, labels_bd, target),
        "pa": poisoned_accuracy(pred_bd, labels_bd, target),
        "n_poisoned": int((labels_bd != target).sum()),
    }


def target_index(params, classnames):
    target_name = params["dataset"].get("target")
    if target_name not in classnames:
        where = f"evaluation.datasets[{params['dataset']['name']}].target"
        raise ValueError(f"{where}: {target_name!r} is not one of the classes {classnames}")
    return classnames.index(target_name)


def run(params, model, data, out, train_log=None, trigger=None, defense=None):
    """params: seed, dataset, templates, batch_size, attack (+ attack_seed), defense (+ defense_module when a
    defense state is given), splits (the first is reported at the top level, the others under their names)."""
    started = time.time()
    seed_everything(params["seed"])
    device = torch_device()
    net = load_model(model, map_location=device).eval()
    if defense is not None:
        module = load_defense(params["defense"], params.get("defense_module"))
        defense = (module, load_checkpoint(defense, device))
    record = load_record(trigger) if trigger is not None else None
    splits = params.get("splits", ["test"])
    result = {}
    for split in splits:
        dataset, classnames = load_downstream(data, params["dataset"], split)
        ctx = EvalContext(model=net, classnames=classnames, templates=params["templates"], device=device)
        target = target_index(params, classnames) if record is not None else None
        metrics = split_metrics(ctx, defense, dataset, params, record, target, net)
        if split == splits[0]:
            result.update(metrics)
        else:
            result[split] = metrics
    result.update(
        dataset=params["dataset"]["name"],
        attack=params["attack"],
        attack_seed=params.get("attack_seed"),
        defense=params["defense"],
        seed=params["seed"],
        split=splits[0],
    )
    producer = json.loads(Path(train_log).read_text()) if train_log else {}
    result["train_seconds"] = producer.get("seconds")
    result["train_peak_mem_mb"] = producer.get("peak_mem_mb")
    result["trainable_fraction"] = producer.get("trainable_fraction")
    result["eval_seconds"] = round(time.time() - started, 2)
    write_json(out, result)
