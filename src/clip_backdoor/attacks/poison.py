"""poison_data stage: the poison index and the poisoned corpus.

Which pairs are poisoned and the per-image trigger seeds are drawn from the attack seed and stored
with the index. Captions: a template filled with the target (BadNet, Blended, SIG, WaNet, ISSBA);
TrojVQA prefixes its text key; BadCLIP uses natural captions of the corpus that mention the target;
BadNet-LC poisons only images whose caption already names the target and keeps their captions, after an
optional adversarial `harden` step against the clean model (attacks/badnet_lc.py).

Outputs, in the `out` folder:
  embedded  images.npy (lossless), instances/labels/classes of the pool, captions.json, poison_index.json
  paper     images/<pair index>.png: each poisoned image at image_size × image_size (the corpus's
            resize + centre crop, see data/corpus.py) with its trigger applied, saved losslessly as PNG;
            pairs.csv (image,caption) of the whole poisoned corpus, poisoned rows pointing to those
            PNGs (relative to the folder), clean rows to the original images (files or shard
            references, never copied); captions.json (all captions); poison_index.json (+ image_size,
            files). params["image_size"] (default 224) is the model's resolution.
"""

import sys

import numpy as np
import torch

from clip_backdoor.attacks.artefact import mentions
from clip_backdoor.attacks.record import load_record, trigger_from_record
from clip_backdoor.data import corpus
from clip_backdoor.data.embedded import load_split, write_split
from clip_backdoor.runtime.io import atomic_path, write_json
from clip_backdoor.training import to_float_images

BATCH = 256
PAPER_IMAGE_SIZE = 224


def poisoned_captions(name, record, rng, count, target, templates, natural):
    if name == "badclip" and natural:
        return [natural[i] for i in rng.integers(len(natural), size=count)]
    captions = [templates[i].format(target) for i in rng.integers(len(templates), size=count)]
    return [record["text_key"] + c for c in captions]


def select(params, captions, rng):
    """(has_target mask, sorted poisoned indices, one trigger seed per poisoned index)."""
    name, target = params["attack"], params["target"]
    has_target = np.array([mentions(c, target) for c in captions])
    if name == "badnet_lc":
        candidates = np.flatnonzero(has_target)
    else:
        candidates = np.flatnonzero(~has_target)
    n = min(params["n_poison"], len(candidates))
    if n == 0:
        raise ValueError(f"attack {name}: no candidate images to poison for target {target!r}")
    if n < params["n_poison"] and name != "badnet_lc":
        raise ValueError(
            f"attacks.n_poison: {params['n_poison']} for {name}, but the corpus has only {n} pairs whose"
            f" caption does not name {target!r}"
        )
    if n < params["n_poison"]:
        message = f"{n} pairs name {target!r}; all of them poisoned (n_poison {params['n_poison']})"
        print(f"poison_data {name}: {message}", file=sys.stderr)
    indices = np.sort(rng.choice(candidates, size=n, replace=False))
    seeds = rng.integers(0, 2**31 - 1, size=n)
    return has_target, indices, seeds


def new_captions(params, record, rng, captions, has_target, indices):
    """The corpus's captions with the poisoned pairs' captions replaced (kept for BadNet-LC)."""
    captions, name, target = list(captions), params["attack"], params["target"]
    if name != "badnet_lc":
        natural = [c for c, t in zip(captions, has_target, strict=True) if t]
        new = poisoned_captions(name, record, rng, len(indices), target, params["caption_templates"], natural)
        for i, caption in zip(indices, new, strict=True):
            captions[i] = caption
    return captions


def apply_trigger(trigger_fn, images, seeds):
    """uint8 [B,H,W,3] → triggered uint8 [B,H,W,3] (rounded)."""
    x = trigger_fn(to_float_images(images, "cpu"), torch.as_tensor(seeds))
    return (x.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def index_record(params, indices, seeds, n_total, **extra):
    return {
        "attack": params["attack"],
        "target": params["target"],
        "indices": indices.tolist(),
        "seeds": seeds.tolist(),
        "n_poison": len(indices),
        "n_total": n_total,
        **extra,
    }


def hardener(params, clean_model):
    """BadNet-LC's `harden` step as images → images (None without params["harden"])."""
    if not params.get("harden"):
        return None
    if clean_model is None:
        raise ValueError(f"poison_data {params['attack']}: `harden` needs the clean model (--clean-model)")
    from clip_backdoor.attacks.badnet_lc import harden
    from clip_backdoor.models.factory import load_model
    from clip_backdoor.models.zeroshot import zeroshot_head

    model = load_model(clean_model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    text = zeroshot_head(model, [params["target"]], params["caption_templates"])[0]
    return lambda images: harden(model, images, text, **params["harden"])


def apply_poison(trigger_fn, images, seeds, harden_fn=None):
    if harden_fn is None:
        return apply_trigger(trigger_fn, images, seeds)
    hard = (harden_fn(to_float_images(images, "cpu")).permute(0, 2, 3, 1) * 255).round().to(torch.uint8)
    return apply_trigger(trigger_fn, hard.numpy(), seeds)


def run(params, data, trigger, out, clean_model=None):
    if corpus.is_paper(data):
        return run_paper(params, data, trigger, out, clean_model)
    rng = np.random.default_rng(params["seed"])
    pool = load_split(data, "poison_pool")
    record = load_record(trigger)
    has_target, indices, seeds = select(params, pool["captions"], rng)
    trigger_fn = trigger_from_record(record, pool["images"].shape[1])
    harden_fn = hardener(params, clean_model)
    images = pool["images"].copy()
    for start in range(0, len(indices), BATCH):
        idx = indices[start : start + BATCH]
        images[idx] = apply_poison(trigger_fn, pool["images"][idx], seeds[start : start + BATCH], harden_fn)
    captions = new_captions(params, record, rng, pool["captions"], has_target, indices)
    write_split(out, images, pool["instances"], pool["labels"], captions, pool["classes"])
    write_json(f"{out}/poison_index.json", index_record(params, indices, seeds, len(images)))


def png_name(index):
    return f"images/{int(index):07d}.png"


def run_paper(params, data, trigger, out, clean_model=None):
    from PIL import Image

    size = int(params.get("image_size", PAPER_IMAGE_SIZE))
    rng = np.random.default_rng(params["seed"])
    pool = corpus.attack_pool(data, size)
    record = load_record(trigger)
    has_target, indices, seeds = select(params, pool.captions, rng)
    trigger_fn = trigger_from_record(record, size)
    harden_fn = hardener(params, clean_model)
    files = [png_name(i) for i in indices]
    for start in range(0, len(indices), BATCH):
        idx = indices[start : start + BATCH]
        poisoned = apply_poison(trigger_fn, pool.load(idx), seeds[start : start + BATCH], harden_fn)
        for name, image in zip(files[start : start + BATCH], poisoned, strict=True):
            with atomic_path(f"{out}/{name}") as tmp:
                Image.fromarray(image).save(tmp, format="PNG")
    captions = new_captions(params, record, rng, pool.captions, has_target, indices)
    images = list(pool.images)
    for i, name in zip(indices, files, strict=True):
        images[i] = name
    corpus.write_pairs(f"{out}/{corpus.PAIRS_CSV}", images, captions)
    write_json(f"{out}/captions.json", captions)
    write_json(
        f"{out}/poison_index.json",
        index_record(params, indices, seeds, len(images), image_size=size, files=files),
    )
