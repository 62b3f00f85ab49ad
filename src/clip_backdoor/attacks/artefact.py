"""make_trigger stage: build an attack's trigger record (and train/optimise its artefact if it has one).

Images come from the attacker's corpus (data/corpus.py): the embedded pool in full, or, for the papers'
CC3M corpus, a bounded subset loaded into memory at the model's resolution (params["image_size"]):
ISSBA's encoder trains on the first `artefact.max_images` pairs (default 2048); the TrojVQA/BadCLIP
patch is optimised on the first `max_images` pairs whose caption does not name the target, and
BadCLIP's image target is the mean embedding of the first min(512, max_images) pairs that do (found
by caption over the whole corpus).
"""

import numpy as np
import torch

from clip_backdoor.attacks import issba, trojvqa, wanet
from clip_backdoor.attacks.patch_opt import optimise_patch
from clip_backdoor.attacks.patching import default_patch_size
from clip_backdoor.attacks.record import save_record
from clip_backdoor.config.schema import declared_defaults, subschema
from clip_backdoor.data import corpus
from clip_backdoor.models.factory import load_model
from clip_backdoor.models.zeroshot import zeroshot_head
from clip_backdoor.runtime.device import torch_device
from clip_backdoor.runtime.seeding import seed_everything


def declared(path):
    """The declared defaults of an attack's artefact block ({} for an attack without an artefact)."""
    try:
        subschema(path)
    except KeyError:
        return {}
    return declared_defaults(path)


def mentions(caption, word):
    return word in caption.lower().replace(".", " ").replace(",", " ").split()


# the attacks whose trigger is optimised against the clean CLIP (rules/common.smk gives them no other input)
NEEDS_CLEAN_MODEL = ("trojvqa", "badclip")


def run(params, data, out, clean_model=None):
    if params["attack"] in NEEDS_CLEAN_MODEL and clean_model is None:
        raise TypeError(f"make_trigger {params['attack']}: the trigger is optimised against --clean-model")
    seed_everything(params["seed"])
    name, target = params["attack"], params["target"]
    trigger_params = {**declared_defaults(f"attacks.methods.{name}.trigger"), **params["trigger"]}
    art = {**declared(f"attacks.methods.{name}.artefact"), **params.get("artefact", {})}
    tensors, meta, text_key = {}, {}, ""
    # the embedded pool is used whole (as before); the papers' corpus is bounded
    limit = art.get("max_images") if corpus.is_paper(data) else None
    if name == "wanet":
        k, strength, seed = (
            trigger_params.pop("k"),
            trigger_params.pop("strength"),
            trigger_params.pop("grid_seed"),
        )
        tensors["grid"] = wanet.make_warp_grid(params["image_size"], k=k, strength=strength, seed=seed)
        meta = {"k": k, "strength": strength, "grid_seed": seed}
    elif name == "issba":
        pool = corpus.attack_pool(data, params["image_size"])
        images = pool.images if limit is None else pool.load(range(min(limit, len(pool))))
        encoder, _, accuracy = issba.train_stega(
            images,
            n_bits=art["n_bits"],
            steps=art["steps"],
            lr=art["lr"],
            seed=params["seed"],
            batch_size=art["batch_size"],
            max_residual=art["max_residual"],
            device=torch_device(),
        )
        tensors["encoder"] = encoder.state_dict()
        meta = {
            "encoder": {
                "n_bits": art["n_bits"],
                "image_size": params["image_size"],
                "max_residual": art["max_residual"],
                "width": encoder.net[0].out_channels,
            },
            "bit_accuracy": accuracy,
        }
    elif name in ("trojvqa", "badclip"):
        device = torch_device()
        model = load_model(clean_model, map_location=device)
        pool = corpus.attack_pool(data, params["image_size"])
        is_target = np.array([mentions(c, target) for c in pool.captions])
        text_key = trojvqa.TEXT_KEY if name == "trojvqa" else ""
        with torch.no_grad():
            text_targets = zeroshot_head(model, [target], params["caption_templates"], text_key, device)
            image_target = None
            if name == "badclip" and is_target.any():
                targets = np.flatnonzero(is_target)[: min(512, limit or 512)]
                x = torch.from_numpy(pool.load(targets)).permute(0, 3, 1, 2).float().div(255)
                image_target = torch.nn.functional.normalize(model.encode_image(x.to(device)).mean(0), dim=-1)
        hp = {
            **art,
            "seed": params["seed"],
            "patch_size": trigger_params.get("patch_size") or default_patch_size(params["image_size"]),
        }
        others = np.flatnonzero(~is_target)[:limit]
        patch, loss = optimise_patch(model, pool.load(others), text_targets, image_target, hp, device)
        trigger_params.pop("patch_size", None)
        tensors["patch"], meta = patch, {"final_loss": loss}
    save_record(out, name, trigger_params, tensors, text_key=text_key, meta=meta)
