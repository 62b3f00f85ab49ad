"""The attacker's image–caption corpus, read one way by make_trigger, poison_data and poison_finetune.

embedded  the `poison_pool` split: uint8 arrays [N,H,W,3] in memory, exactly as before (`ArrayPool`).
paper     the prepared CC3M training pairs (data/<run>/world.json, split "train"), decoded lazily with
          PIL as a torch Dataset (`PairDataset`) of (uint8 tensor [3,S,S], caption): RGB, then bicubic
          Resize(S) of the shorter side and CenterCrop(S), as CleanCLIP stores CC3M (its
          `utils/download.py`), so the trigger lands on the cropped image its training data shows.
          S is the model's image size (224). Clean and poisoned images get the same treatment, so a
          poisoned image differs from its clean version only by the trigger. The evaluation sets use
          the same geometry (data/paper.py `image_transform`), the trigger applied after the crop.
          `geometry="stretch"` (PIL bicubic resize to S×S, aspect ratio ignored) is this project's
          earlier corpus geometry, kept for comparison.

Image references (a `PairDataset`'s `images`, the `image` column of a poisoned corpus's pairs.csv):
  a file path       absolute, or relative to the dataset's `root` (the poisoned corpus folder)
  tar:<o>:<n>:<tar> the n bytes at offset o of a webdataset shard (one member's data), so shard
                    sources are referenced, never copied or held in memory
  bytes             encoded image bytes (what `paper.load_pairs` returns for shards)

A poisoned paper corpus is a folder with pairs.csv (image,caption; poisoned rows point to lossless
PNGs at S×S under images/, clean rows to the original images) — `poisoned_dataset` reads it.
"""

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

PAIRS_CSV = "pairs.csv"
GEOMETRIES = ("crop", "stretch")  # the first is the default


def is_paper(data_dir):
    """Whether a prepared data folder holds the papers' CC3M manifest (else the embedded world)."""
    from clip_backdoor.runtime.io import read_json

    manifest = Path(data_dir) / "world.json"
    return manifest.is_file() and read_json(manifest).get("kind") == "paper"


def read_image(ref, root=None):
    """A PIL image (RGB) from a file path, a tar:<offset>:<size>:<shard> reference or encoded bytes."""
    from PIL import Image

    if isinstance(ref, bytes | bytearray):
        data, name = bytes(ref), "<image bytes>"
    elif str(ref).startswith("tar:"):
        _, offset, size, shard = str(ref).split(":", 3)
        with open(shard, "rb") as handle:
            handle.seek(int(offset))
            data, name = handle.read(int(size)), ref
    else:
        path = Path(ref)
        if root is not None and not path.is_absolute():
            path = Path(root) / path
        data, name = None, str(path)
    try:
        with Image.open(io.BytesIO(data) if data is not None else name) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as err:
        raise OSError(f"cannot read image {name}: {err}") from err


def resize_centre_crop(image, size):
    """A PIL image resized (bicubic) so its shorter side is `size`, then centre-cropped to size×size."""
    from torchvision import transforms

    resize = transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC)
    return transforms.CenterCrop(size)(resize(image))


def load_image(ref, size, root=None, geometry="crop"):
    """uint8 [size,size,3]: RGB, then `resize_centre_crop` ("crop") or a bicubic resize to size×size
    ignoring the aspect ratio ("stretch")."""
    from PIL import Image

    if geometry not in GEOMETRIES:
        raise ValueError(f"corpus geometry must be one of {GEOMETRIES}, got {geometry!r}")
    image = read_image(ref, root)
    if image.size != (size, size):
        if geometry == "crop":
            image = resize_centre_crop(image, size)
        else:
            image = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.array(image, dtype=np.uint8)  # a writable copy (torch.from_numpy warns on read-only arrays)


class ArrayPool:
    """The embedded corpus: uint8 images [N,H,W,3] and captions, in memory."""

    def __init__(self, images, captions):
        self.images, self.captions = images, list(captions)

    def __len__(self):
        return len(self.images)

    def load(self, indices):
        return self.images[indices]


class PairDataset(Dataset):
    """(uint8 tensor [3,S,S], caption) pairs decoded from image references (see the module docstring)."""

    def __init__(self, images, captions, image_size, root=None, geometry="crop"):
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        if geometry not in GEOMETRIES:
            raise ValueError(f"corpus geometry must be one of {GEOMETRIES}, got {geometry!r}")
        self.images, self.captions = list(images), list(captions)
        self.image_size, self.root, self.geometry = int(image_size), root, geometry

    def __len__(self):
        return len(self.images)

    def image(self, i):
        """uint8 [S,S,3] of pair i."""
        return load_image(self.images[i], self.image_size, self.root, self.geometry)

    def __getitem__(self, i):
        return torch.from_numpy(self.image(i)).permute(2, 0, 1).contiguous(), self.captions[i]

    def load(self, indices):
        """uint8 [k,S,S,3] of the pairs `indices` (in memory)."""
        size = self.image_size
        out = np.empty((len(indices), size, size, 3), np.uint8)
        for j, i in enumerate(indices):
            out[j] = self.image(int(i))
        return out


def attack_pool(data_dir, image_size):
    """The attacker's corpus of a prepared data folder: `ArrayPool` (embedded) or `PairDataset` (paper)."""
    if not is_paper(data_dir):
        from clip_backdoor.data.embedded import load_split

        split = load_split(data_dir, "poison_pool")
        return ArrayPool(split["images"], split["captions"])
    images, captions = cc3m_pairs(data_dir, "train")
    return PairDataset(images, captions, image_size)


def cc3m_pairs(data_dir, split="train"):
    """(image references, captions) of a prepared CC3M split: file paths (csv) or tar references (shards)."""
    manifest = json.loads((Path(data_dir) / "world.json").read_text())
    from clip_backdoor.data.paper import load_pairs, shard_ranges

    if manifest["source"] == "csv":
        return load_pairs(data_dir, split=split)
    start, stop = manifest["splits"][split]
    images, captions = [], []
    for path, lo, hi in shard_ranges(manifest["shards"], start, stop):
        for j, (ref, caption) in enumerate(shard_refs(path)):
            if j >= hi:
                break
            if j >= lo:
                images.append(ref)
                captions.append(caption)
    return images, captions


def shard_refs(shard):
    """(tar:<offset>:<size>:<shard>, caption) per image+txt sample, in `paper._tar_pairs`'s order and
    pairing (a key's first image extension in IMAGE_EXTS order), reading only the captions' bytes."""
    from clip_backdoor.data.paper import IMAGE_EXTS, _split_key

    samples = {}
    with tarfile.open(shard) as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, ext = _split_key(member.name)
            if ext == "txt":
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read().decode("utf-8").strip()
            elif ext in IMAGE_EXTS:
                samples.setdefault(key, {})[ext] = f"tar:{member.offset_data}:{member.size}:{shard}"
    for sample in samples.values():
        ref = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
        if ref is not None and "txt" in sample:
            yield ref, sample["txt"]


def write_pairs(path, images, captions):
    """pairs.csv (image,caption): the CleanCLIP CSV layout (paths relative to the CSV's folder)."""
    from clip_backdoor.runtime.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        writer.writerows(zip(images, captions, strict=True))


def poisoned_dataset(corpus_dir, image_size):
    """The poisoned paper corpus of a poison_data output folder as a `PairDataset`."""
    corpus_dir = Path(corpus_dir)
    with open(corpus_dir / PAIRS_CSV, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return PairDataset([r["image"] for r in rows], [r["caption"] for r in rows], image_size, corpus_dir)


def is_paper_corpus(corpus_dir):
    """Whether a poison_data output folder holds a paper corpus (pairs.csv) rather than .npy arrays."""
    return (Path(corpus_dir) / PAIRS_CSV).is_file() and not (Path(corpus_dir) / "images.npy").is_file()
