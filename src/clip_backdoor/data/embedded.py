"""Build the embedded benchmark: every split of the procedural world, written losslessly as .npy.

Splits and the corpora they stand in for:
  pretrain          broad world (all classes), clean     — OpenAI's 400M pairs
  poison_pool       broad world, attacker's corpus      — CC3M-500K
  clean_pool        broad world, disjoint clean pairs   — CleanCLIP's 100K
  oracle_train      broad world with masks              — the segmenter's own data (FastSAM's SA-1B)
  downstream_train  downstream classes only, labelled   — ImageNet train (few-shot source)
  downstream_test   downstream classes only, labelled   — ImageNet val (reported, never chosen on)
  downstream_val    downstream classes only, labelled   — the validation split every choice is made on

Files are byte-identical for the same parameters (np.save is deterministic), so data.dvc stays valid.
Each split folder holds SHA256SUMS (`SPLIT_FILES`' hashes), checked when the split is loaded.
"""

from pathlib import Path

import numpy as np
from tqdm import tqdm

from clip_backdoor.data.world import SHAPES, render_scene
from clip_backdoor.errors import ConfigError, MissingDataError
from clip_backdoor.runtime.io import CHECKSUMS, atomic_path, read_json, verified, write_checksums, write_json

WORLD_SPLITS = ("pretrain", "poison_pool", "clean_pool", "oracle_train")
LABELLED_SPLITS = ("downstream_train", "downstream_test", "downstream_val")
ARRAYS = ("images", "instances", "labels")
# every file of a split folder (rules/data.smk declares them as prepare_data's outputs)
SPLIT_FILES = (*(f"{stem}.npy" for stem in ARRAYS), "captions.json", "classes.json", CHECKSUMS)


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
    for stem, array in zip(ARRAYS, (images, instances, labels), strict=True):
        with atomic_path(directory / f"{stem}.npy") as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, array)
    write_json(directory / "captions.json", captions)
    write_json(directory / "classes.json", list(classes))
    write_checksums(directory, [name for name in SPLIT_FILES if name != CHECKSUMS])


def validate_params(params):
    unknown = [c for c in params["world_classes"] if c not in SHAPES]
    if unknown:
        raise ConfigError(f"data.world_classes: unknown shape(s) {unknown}; known: {list(SHAPES)}")
    outside = [c for c in params["downstream_classes"] if c not in params["world_classes"]]
    if outside:
        raise ConfigError(f"data.downstream_classes: {outside} are not in data.world_classes")


def prepare(out_dir, params):
    """Render all splits into `out_dir`; write `world.json` last, as the completion marker."""
    validate_params(params)
    out_dir = Path(out_dir)
    world, downstream = params["world_classes"], params["downstream_classes"]
    plan = [(name, params[f"n_{name}"], world, False) for name in WORLD_SPLITS]
    plan += [
        ("downstream_train", params["train_per_class"] * len(downstream), downstream, True),
        ("downstream_test", params["test_per_class"] * len(downstream), downstream, True),
        # rendered last, from its own seed index: adding it left every other split's bytes as they were
        ("downstream_val", params["val_per_class"] * len(downstream), downstream, True),
    ]
    for index, (name, count, classes, balanced) in enumerate(plan):
        arrays = _render_split(name, index, count, classes, params, balanced)
        write_split(out_dir / name, *arrays, classes)
    write_json(out_dir / "world.json", {"params": params, "splits": {n: c for n, c, _, _ in plan}})


def regenerate_hint(directory):
    """How to rebuild a split folder, a poisoned corpus (results/<run>/poisoned/<attack>) or the world's,
    by itself: its files come out byte-identical, so a later `snakemake all` reruns nothing else."""
    poisoned = Path(directory).parent.name == "poisoned"
    target = Path(directory) / "captions.json" if poisoned else "prepare_data"
    return f"`snakemake -f {target} --configfile <yours>`"


def split_file(directory, name):
    """A file of a split folder (images.npy, captions.json, ...), checked against its SHA256SUMS."""
    return verified(Path(directory) / name, regenerate_hint(directory))


def load_split(data_dir, split):
    """Load one split: dict with images (uint8 N,H,W,3), instances, labels, captions, classes."""
    directory = Path(data_dir) / split
    if not directory.is_dir():
        raise MissingDataError(
            f"dataset split not found: {directory} (regenerate it with {regenerate_hint(directory)})"
        )
    arrays = {stem: np.load(split_file(directory, f"{stem}.npy")) for stem in ARRAYS}
    texts = {stem: read_json(split_file(directory, f"{stem}.json")) for stem in ("captions", "classes")}
    return {**arrays, **texts}
