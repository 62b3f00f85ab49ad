"""evaluate stage: zero-shot CA, and ASR / PA under a trigger, for one model on one dataset."""

import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from clip_backdoor.data.downstream import load_downstream
from clip_backdoor.evaluation.metrics import attack_success_rate, clean_accuracy, poisoned_accuracy
from clip_backdoor.models.factory import load_model
from clip_backdoor.models.zeroshot import zeroshot_head
from clip_backdoor.runtime.device import torch_device
from clip_backdoor.runtime.io import write_json
from clip_backdoor.runtime.seeding import seed_everything


@torch.no_grad()
def predict_dataset(model, dataset, head, device, batch_size, trigger=None, seed=0, encoder=None):
    """Predictions (and true labels) over a dataset; `trigger(images, seeds)` applied if given."""
    encoder = encoder or model.encode_image
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    preds, labels, start = [], [], 0
    for images, y in tqdm(loader, desc="evaluate", unit="batch", mininterval=5, leave=False):
        images = images.to(device)
        if trigger is not None:
            seeds = torch.arange(start, start + len(images)) + 1_000_003 * (seed + 1)
            images = trigger(images, seeds)
        features = encoder(images)
        preds.append((features @ head.t()).argmax(1).cpu())
        labels.append(torch.as_tensor(y))
        start += len(images)
    return torch.cat(preds), torch.cat(labels)


def run(params, model, data, out, train_log=None, trigger=None):
    started = time.time()
    seed_everything(params["seed"])
    device = torch_device()
    net = load_model(model, map_location=device).eval()
    dataset, classnames = load_downstream(data, params["dataset"], "test")
    head = zeroshot_head(net, classnames, params["templates"], device=device)
    pred, labels = predict_dataset(net, dataset, head, device, params["batch_size"], seed=params["seed"])
    result = {
        "ca": clean_accuracy(pred, labels),
        "asr": None,
        "pa": None,
        "n_clean": len(labels),
        "n_poisoned": 0,
        "dataset": params["dataset"]["name"],
        "attack": params["attack"],
        "defense": params["defense"],
        "seed": params["seed"],
    }
    if trigger is not None:
        from clip_backdoor.attacks.record import load_record, trigger_from_record

        record = load_record(trigger)
        target_name = params["dataset"].get("target")
        if target_name not in classnames:
            where = f"evaluation.datasets[{params['dataset']['name']}].target"
            raise ValueError(f"{where}: {target_name!r} is not one of the classes {classnames}")
        target = classnames.index(target_name)
        trigger_fn = trigger_from_record(record, net.image_size)
        head_bd = head
        if record["text_key"]:
            head_bd = zeroshot_head(net, classnames, params["templates"], record["text_key"], device)
        pred_bd, labels_bd = predict_dataset(
            net, dataset, head_bd, device, params["batch_size"], trigger=trigger_fn, seed=params["seed"]
        )
        result.update(
            asr=attack_success_rate(pred_bd, labels_bd, target),
            pa=poisoned_accuracy(pred_bd, labels_bd, target),
            n_poisoned=int((labels_bd != target).sum()),
        )
    producer = json.loads(Path(train_log).read_text()) if train_log else {}
    result["train_seconds"] = producer.get("seconds")
    result["train_peak_mem_mb"] = producer.get("peak_mem_mb")
    result["eval_seconds"] = round(time.time() - started, 2)
    write_json(out, result)
