"""A fabricated stand-in for the papers' data, in the layouts data/paper.py reads (random-noise JPEGs):
ImageNet-1K folders (real class names through classnames.txt, or all 1000 with open_clip's names),
Caltech101 (torchvision's 101_ObjectCategories), OxfordPets (images + annotations), and CC3M pairs as an
image,caption CSV and as webdataset shards. Used by paper_scale.py, gpu_check.py and the tests."""

import csv
import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

IMAGENET_CLASSES = {"banana": 954, "tench": 0, "goldfish": 1, "great white shark": 2, "tiger shark": 3,
                    "hen": 8, "ostrich": 9, "jay": 17, "magpie": 18, "chickadee": 19}  # fmt: skip
CALTECH = ["BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "accordion", "airplanes", "anchor", "ant"]
PETS = ["Abyssinian", "Bengal", "samoyed", "beagle"]
WORDS = ["a dog on a beach", "a ripe banana", "a red car", "sunset over the sea", "a bowl of fruit",
         "two people walking", "an old house", "a cat asleep on a sofa"]  # fmt: skip


def jpeg(rng, size=(256, 224)):
    buffer = io.BytesIO()
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def imagenet(root, rng, per_class=2, all_classes=False):
    """<root>/{train,val}/<wnid>/*.JPEG; 10 classes with a classnames.txt, or all 1000 without one."""
    indices = range(1000) if all_classes else sorted(IMAGENET_CLASSES.values())
    for split in ("train", "val"):
        for i in indices:
            for k in range(per_class):
                write(root / split / f"n{i:08d}" / f"n{i:08d}_{k}.JPEG", jpeg(rng))
    if not all_classes:
        names = {v: k for k, v in IMAGENET_CLASSES.items()}
        (root / "classnames.txt").write_text("".join(f"{names[i]}\n" for i in indices))
    return root


def caltech101(root, rng, per_class=4):
    for category in CALTECH:
        for k in range(1, per_class + 1):
            write(root / "caltech101" / "101_ObjectCategories" / category / f"image_{k:04d}.jpg", jpeg(rng))
    return root


def oxfordpets(root, rng, per_class=4):
    base = root / "oxford-iiit-pet"
    lines = {"trainval": [], "test": []}
    for c, breed in enumerate(PETS, start=1):
        species = 1 if breed[0].isupper() else 2  # the dataset's convention: cats capitalised
        for k in range(1, per_class + 1):
            write(base / "images" / f"{breed}_{k}.jpg", jpeg(rng))
            lines["test" if k % 2 else "trainval"].append(f"{breed}_{k} {c} {species} 1")
    for split, rows in lines.items():
        write(base / "annotations" / f"{split}.txt", ("\n".join(rows) + "\n").encode())
    return root


def cc3m(root, rng, n_pairs=64, shard_size=32):
    """<root>/train.csv (image,caption; images under img/) and the same pairs as shards/<k>.tar."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "shards").mkdir(exist_ok=True)
    pairs = [(f"img/{i:06d}.jpg", f"{WORDS[i % len(WORDS)]}, photo {i}") for i in range(n_pairs)]
    with open(root / "train.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        writer.writerows(pairs)
    for start in range(0, n_pairs, shard_size):
        with tarfile.open(root / "shards" / f"{start // shard_size:05d}.tar", "w") as tar:
            for i in range(start, min(start + shard_size, n_pairs)):
                data = jpeg(rng, (300, 240))
                write(root / pairs[i][0], data)
                for name, payload in ((f"{i:06d}.jpg", data), (f"{i:06d}.txt", pairs[i][1].encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return root / "train.csv", root / "shards"


def fabricate(root, n_pairs=64, per_class=2, all_imagenet_classes=False, seed=0):
    """All four sets under `root`; returns their paths."""
    root, rng = Path(root), np.random.default_rng(seed)
    csv_path, shards = cc3m(root / "cc3m", rng, n_pairs)
    return {
        "imagenet": imagenet(root / "imagenet", rng, per_class, all_imagenet_classes),
        "caltech101": caltech101(root / "caltech101", rng, 2 * per_class),
        "oxfordpets": oxfordpets(root / "oxfordpets", rng, 2 * per_class),
        "cc3m_csv": csv_path,
        "cc3m_shards": shards,
    }


def paper_config(paths, base_config):
    """A copy of a papers' config dict with its data paths on the fabricated set."""
    import copy

    config = copy.deepcopy(base_config)
    config["data"]["paper"]["cc3m"].update(source="csv", path=str(paths["cc3m_csv"]))
    for dataset in config["evaluation"]["datasets"]:
        dataset["root"] = str(paths[dataset["name"]])
    return config
