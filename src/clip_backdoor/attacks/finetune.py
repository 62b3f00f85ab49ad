"""poison_finetune stage: full contrastive fine-tuning of the clean CLIP on a poisoned corpus."""

from pathlib import Path

from clip_backdoor.data.embedded import load_split
from clip_backdoor.models.factory import load_model, save_model
from clip_backdoor.runtime.device import torch_device
from clip_backdoor.runtime.io import write_json
from clip_backdoor.runtime.seeding import seed_everything
from clip_backdoor.runtime.usage import peak_memory_mb
from clip_backdoor.training import train_contrastive


def run(params, clean_model, corpus, out, log, state):
    seed_everything(params["seed"])
    device = torch_device()
    model = load_model(clean_model, map_location=device)
    data = load_split(Path(corpus).parent, Path(corpus).name)
    train_log = train_contrastive(
        model,
        data["images"],
        data["captions"],
        {**params["hp"], "seed": params["seed"]},
        state,
        device,
        desc=f"poison_finetune {params['attack']}",
    )
    train_log["peak_mem_mb"] = peak_memory_mb()
    save_model(out, model.cpu())
    write_json(log, train_log)
    Path(state).unlink(missing_ok=True)
