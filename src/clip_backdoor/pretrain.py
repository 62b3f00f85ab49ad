"""pretrain_clean_clip stage: contrastive pretraining of the embedded CLIP on the clean corpus,
or, for the papers' protocol, loading the published weights into our checkpoint format."""

from pathlib import Path

from clip_backdoor.data.embedded import load_split
from clip_backdoor.models.factory import build_model, save_model
from clip_backdoor.runtime.device import torch_device
from clip_backdoor.runtime.io import write_json
from clip_backdoor.runtime.seeding import seed_everything
from clip_backdoor.runtime.usage import peak_memory_mb
from clip_backdoor.training import train_contrastive


def run(params, out, log, data=None, state=None):
    seed_everything(params["seed"])
    model = build_model(params["arch"])
    train_log = {"trained": False}
    if params["train"]:
        corpus = load_split(data, "pretrain")
        device = torch_device()
        train_log = train_contrastive(
            model,
            corpus["images"],
            corpus["captions"],
            params["hp"],
            state or f"{out}.state",
            device,
            desc="pretrain",
        )
        train_log["trained"] = True
        train_log["peak_mem_mb"] = peak_memory_mb()
        model.cpu()
    save_model(out, model)
    write_json(log, train_log)
    Path(state or f"{out}.state").unlink(missing_ok=True)
