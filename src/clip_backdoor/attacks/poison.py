"""poison_data stage: the poison index and the poisoned corpus (lossless .npy + captions).

Which pairs are poisoned and the per-image trigger seeds are drawn from the attack seed and stored
with the index. Captions: a template filled with the target (BadNet, Blended, SIG, WaNet, ISSBA);
TrojVQA prefixes its text key; BadCLIP uses natural captions of the corpus that mention the target;
BadNet-LC poisons only images whose caption already names the target and keeps their captions.
"""

import numpy as np
import torch

from clip_backdoor.attacks.artefact import mentions
from clip_backdoor.attacks.record import load_record, trigger_from_record
from clip_backdoor.data.embedded import load_split, write_split
from clip_backdoor.runtime.io import write_json
from clip_backdoor.training import to_float_images


def poisoned_captions(name, record, rng, count, target, templates, natural):
    if name == "badclip" and natural:
        return [natural[i] for i in rng.integers(len(natural), size=count)]
    captions = [templates[i].format(target) for i in rng.integers(len(templates), size=count)]
    return [record["text_key"] + c for c in captions]


def run(params, data, trigger, out):
    name, target = params["attack"], params["target"]
    rng = np.random.default_rng(params["seed"])
    pool = load_split(data, "poison_pool")
    record = load_record(trigger)
    has_target = np.array([mentions(c, target) for c in pool["captions"]])
    if name == "badnet_lc":
        candidates = np.flatnonzero(has_target)
    else:
        candidates = np.flatnonzero(~has_target)
    n = min(params["n_poison"], len(candidates))
    if n == 0:
        raise ValueError(f"attack {name}: no candidate images to poison for target {target!r}")
    indices = np.sort(rng.choice(candidates, size=n, replace=False))
    seeds = rng.integers(0, 2**31 - 1, size=n)
    trigger_fn = trigger_from_record(record, pool["images"].shape[1])
    images, captions = pool["images"].copy(), list(pool["captions"])
    for start in range(0, n, 256):
        idx = indices[start : start + 256]
        x = trigger_fn(
            to_float_images(pool["images"][idx], "cpu"), torch.as_tensor(seeds[start : start + 256])
        )
        images[idx] = (x.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    if name != "badnet_lc":
        natural = [c for c, t in zip(pool["captions"], has_target, strict=True) if t]
        new = poisoned_captions(name, record, rng, n, target, params["caption_templates"], natural)
        for i, caption in zip(indices, new, strict=True):
            captions[i] = caption
    write_split(out, images, pool["instances"], pool["labels"], captions, pool["classes"])
    write_json(
        f"{out}/poison_index.json",
        {
            "attack": name,
            "target": target,
            "indices": indices.tolist(),
            "seeds": seeds.tolist(),
            "n_poison": int(n),
            "n_total": len(images),
        },
    )
