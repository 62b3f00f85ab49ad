"""poison_finetune stage: full contrastive fine-tuning of the clean CLIP on a poisoned corpus.

The corpus is the poison_data folder: the embedded .npy arrays (trained on in memory), or the papers'
pairs.csv, streamed as a Dataset at the model's image size through DataLoader workers (one fewer than
the CPUs this job may use, at most 8).
"""

import os
from pathlib import Path

from clip_backdoor.data import corpus as corpora
from clip_backdoor.data.embedded import load_split
from clip_backdoor.models.factory import load_model, save_model
from clip_backdoor.runtime.device import torch_device
from clip_backdoor.runtime.io import write_json
from clip_backdoor.runtime.seeding import seed_everything
from clip_backdoor.runtime.usage import peak_memory_mb
from clip_backdoor.training import train_contrastive

MAX_WORKERS = 8


def loader_workers():
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(MAX_WORKERS, cpus - 1))


def run(params, clean_model, corpus, out, log, state):
    seed_everything(params["seed"])
    device = torch_device()
    model = load_model(clean_model, map_location=device)
    hp = {**params["hp"], "seed": params["seed"]}
    desc = f"poison_finetune {params['attack']}"
    if corpora.is_paper_corpus(corpus):
        dataset = corpora.poisoned_dataset(corpus, model.image_size)
        train_log = train_contrastive(
            model, dataset, None, hp, state, device, desc=desc, num_workers=loader_workers()
        )
    else:
        data = load_split(Path(corpus).parent, Path(corpus).name)
        train_log = train_contrastive(model, data["images"], data["captions"], hp, state, device, desc=desc)
    train_log["peak_mem_mb"] = peak_memory_mb()
    save_model(out, model.cpu())
    write_json(log, train_log)
    Path(state).unlink(missing_ok=True)
