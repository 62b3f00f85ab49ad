"""Build the embedded benchmark: every split of the procedural world, written losslessly as .npy.

Splits and the corpora they stand in for:
  pretrain          broad world (all classes), clean     — OpenAI's 400M pairs
  poison_pool       broad world, attacker's corpus      — CC3M-500K
  clean_pool        broad world, disjoint clean pairs   — CleanCLIP's 100K
  oracle_train      broad world with masks              — the segmenter's own data (FastSAM's SA-1B)
  downstream_train  downstream classes only, labelled   — ImageNet train (few-shot source)
  downstream_test   downstream classes only, labelled   — ImageNet val

Files are byte-identical for the same parameters (np.save is deterministic), so data.dvc stays valid.
"""

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clip_backdoor.data.world import SHAPES, render_scene
from clip_backdoor.runtime.io import atomic_path, write_json

WORLD_SPLITS = ("pretrain", "poison_pool", "clean_pool", "oracle_train")
LABELLED_SPLITS = ("downstream_train", "downstream_test")


def _render_split(name, index, count, classes, params, balanced):
    seed_seq = np.random.SeedSequence([params["seed"], index])
    rng = np.random.default_rng(seed_seq)
    size = params["image_size"]
    images = np.zeros((count, size, size, 3), np.uint8)
    instances = np.zeros((count, size, size), np.uint8)
    labels = np.zeros(count, np.int64)
    captions = []
    order = rng.permutation(np.arange(count) % len(classes)) if balanced else [None] * count
    for i in tqdm(range(count), desc=f"render {name}", unit="img", mininterval=2, leave=False):
        image, inst, label, caption = render_scene(
            rng,
            classes,
            size,
            tuple(params["radius_range"]),
            params["max_distractors"],
            distractor_shapes=params["world_classes"],
            label=order[i],
        )
        images[i], instances[i], labels[i] = image, inst, label
        captions.append(caption)
    return images, instances, labels, captions


def write_split(directory, images, instances, labels, captions, classes):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stem, array in (("images", images), ("instances", instances), ("labels", labels)):
        with atomic_path(directory / f"{stem}.npy") as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, array)
    write_json(directory / "captions.json", captions)
    write_json(directory / "classes.json", list(classes))


def validate_params(params):
    unknown = [c for c in params["world_classes"] if c not in SHAPES]
    if unknown:
        raise ValueError(f"data.world_classes: unknown shape(s) {unknown}; known: {list(SHAPES)}")
    outside = [c for c in params["downstream_classes"] if c not in params["world_classes"]]
    if outside:
        raise ValueError(f"data.downstream_classes: {outside} are not in data.world_classes")


def prepare(out_dir, params):
    """Render all splits into `out_dir`; write `world.json` last, as the completion marker."""
    validate_params(params)
    out_dir = Path(out_dir)
    world, downstream = params["world_classes"], params["downstream_classes"]
    plan = [(name, params[f"n_{name}"], world, False) for name in WORLD_SPLITS]
    plan += [
        ("downstream_train", params["train_per_class"] * len(downstream), downstream, True),
        ("downstream_test", params["test_per_class"] * len(downstream), downstream, True),
    ]
    for index, (name, count, classes, balanced) in enumerate(plan):
        arrays = _render_split(name, index, count, classes, params, balanced)
        write_split(out_dir / name, *arrays, classes)
    write_json(out_dir / "world.json", {"params": params, "splits": {n: c for n, c, _, _ in plan}})


def load_split(data_dir, split):
    """Load one split: dict with images (uint8 N,H,W,3), instances, labels, captions, classes."""
    directory = Path(data_dir) / split
    if not directory.is_dir():
        raise FileNotFoundError(f"dataset split not found: {directory} (run prepare_data first)")
    return {
        "images": np.load(directory / "images.npy"),
        "instances": np.load(directory / "instances.npy"),
        "labels": np.load(directory / "labels.npy"),
        "captions": json.loads((directory / "captions.json").read_text()),
        "classes": json.loads((directory / "classes.json").read_text()),
    }
