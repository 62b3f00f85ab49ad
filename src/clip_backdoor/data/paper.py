"""Adapters for the papers' datasets: the downstream evaluation sets and the CC3M pairs.

Downstream sets (`load_downstream`), each a torch Dataset of (float image [3,S,S] in [0,1], int label)
with S = `image_size` (default 224): RGB, Resize(S, bicubic) then CenterCrop(S), NOT normalised
(the model normalises); the poisoning corpus has the same geometry (data/corpus.py). At test the
trigger is applied to the cropped image (evaluation/evaluate.py), clean and triggered images alike.
CleanCLIP's test-time trigger (backdoor/utils.py apply_trigger) instead stretches the raw image to
224×224, triggers it, and its Resize+CenterCrop then does nothing: a declared deviation here, so that
a triggered test image differs from its clean version only by the trigger.
  imagenet_folder  ImageNet-1K in the standard folder layout: <root>/val/<wnid>/*.JPEG ("test")
                   and <root>/train/<wnid>/*.JPEG ("train"). Class names: <split>/classnames.txt or
                   <root>/classnames.txt (one per line, sorted-synset order), else open_clip's
                   IMAGENET_CLASSNAMES for 1000 classes (index 954 = "banana"), else the folder names.
  caltech101       torchvision Caltech101 at <root> (<root>/caltech101/101_ObjectCategories).
                   CoOp's convention: 100 classes (no BACKGROUND_Google, no Faces_easy), CoOp's names;
                   CoOp's split file <root>/split_zhou_Caltech101.json if present, else a fixed seeded
                   70/30 train/test split per class.
  oxfordpets       torchvision OxfordIIITPet at <root> (<root>/oxford-iiit-pet/{images,annotations}),
                   official "trainval" ("train") and "test" splits; torchvision's class names.

CC3M (`prepare`, `load_pairs`), configured by data.paper.cc3m {source, path, size}:
  csv         a CSV with columns image,caption; image paths relative to the CSV's folder (CleanCLIP)
  webdataset  tar shards (a folder of *.tar, one .tar, or a glob); a pair = one key with an image
              member (.jpg/.jpeg/.png/.webp) and a .txt caption
  url_list    a CSV/TSV of url,caption (CC3M's own TSV, headerless caption<TAB>url, works too),
              fetched by img2dataset into webdataset shards under <out>/cc3m
The first `size` pairs are the training set, the next `clean_pool_size` the disjoint clean pool.
`prepare` writes <out>/world.json (the manifest) last, atomically.
"""

import csv
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from clip_backdoor.runtime.io import atomic_path, write_json

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
# CoOp (Zhou et al.) Caltech101 conventions, followed by the prompt-tuning defences.
CALTECH_IGNORED = ("Faces_easy",)
CALTECH_RENAME = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
CALTECH_SPLIT_FILE = "split_zhou_Caltech101.json"
CALTECH_TEST_FRACTION = 0.3
VAL_SEED = 20261203
URL_LIST_NAME = "cc3m_urls.csv"
IMG2DATASET_HINT = (
    "`pip install img2dataset` (img2dataset 1.47 pins pandas<3, which conflicts with this project's "
    "pandas pin: install it in its own environment, e.g. `pipx install img2dataset`, and put its "
    "`img2dataset` command on PATH)"
)


# ---------------------------------------------------------------------------------------------------
# downstream datasets


def rgb(image):
    return image.convert("RGB")


def image_transform(size=224):
    """PIL image → float [3,size,size] in [0,1]: RGB, bicubic resize of the short side, centre crop."""
    from torchvision import transforms

    return transforms.Compose(
        [
            rgb,
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
        ]
    )


def _missing(dataset, what, path):
    name = dataset.get("name", dataset["kind"])
    return FileNotFoundError(f"dataset {name!r} ({dataset['kind']}): {what} not found: {path}")


def _root(dataset):
    if not dataset.get("root"):
        name = dataset.get("name", dataset["kind"])
        raise FileNotFoundError(f"dataset {name!r} ({dataset['kind']}): no `root` folder configured")
    root = Path(dataset["root"]).expanduser()
    if not root.is_dir():
        raise _missing(dataset, "root folder", root)
    return root


class FileDataset:
    """(transform(image file i), labels[i]) pairs."""

    def __init__(self, paths, labels, transform):
        self.paths, self.labels, self.transform = list(paths), [int(y) for y in labels], transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.paths[i]) as image:
            return self.transform(image), self.labels[i]


def load_downstream(dataset, split):
    """(Dataset, classnames) for `split` in {"train", "val", "test"} of a papers' downstream dataset; val
    is carved from the train split (`validation_indices`), train is what remains: no shot is a val image."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', not {split!r}")
    transform = image_transform(int(dataset.get("image_size", 224)))
    loaders = {"imagenet_folder": _imagenet_folder, "caltech101": _caltech101, "oxfordpets": _oxfordpets}
    if dataset["kind"] not in loaders:
        raise ValueError(f"dataset kind {dataset['kind']!r} is not one of {sorted(loaders)}")
    data, classnames = loaders[dataset["kind"]](dataset, "test" if split == "test" else "train", transform)
    if split == "test":
        return data, classnames
    labels = labels_of(data)
    val = set(validation_indices(labels, dataset.get("val_per_class", 10)))
    keep = [i for i in range(len(labels)) if (i in val) == (split == "val")]
    return LabelledSubset(data, keep, [labels[i] for i in keep]), classnames


def labels_of(data):
    for attr in ("labels", "targets", "_labels"):
        if hasattr(data, attr):
            return [int(y) for y in getattr(data, attr)]
    raise TypeError(f"{type(data).__name__}: no label list")


def validation_indices(labels, per_class):
    """The validation slice of a train split: per class, `per_class` images (at most half of the class) drawn
    with a fixed seed, the same on every machine and for every run and seed."""
    import numpy as np

    labels = np.asarray(labels)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        order = np.random.default_rng([VAL_SEED, int(c)]).permutation(len(members))
        chosen.extend(members[order[: min(per_class, len(members) // 2)]].tolist())
    return sorted(chosen)


class LabelledSubset:
    """A map-style subset that keeps its labels (so that drawing shots does not open every image)."""

    def __init__(self, dataset, indices, labels):
        self.dataset, self.indices, self.labels = dataset, indices, labels

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[self.indices[i]]


def _imagenet_folder(dataset, split, transform):
    from torchvision.datasets import ImageFolder

    root = _root(dataset)
    folder = root / ("val" if split == "test" else "train")
    if not folder.is_dir():
        raise _missing(dataset, f"{split} split folder (<root>/<wnid>/<images> expected)", folder)
    if not any(p.is_dir() for p in folder.iterdir()):
        raise _missing(dataset, "class folders", folder)
    data = ImageFolder(str(folder), transform=transform)
    return data, imagenet_classnames(data.classes, folder, root)


def imagenet_classnames(folder_names, *search):
    """Class names for sorted class folders: a classnames.txt in `search`, OpenAI's 1000, or the names."""
    for folder in search:
        path = Path(folder) / "classnames.txt"
        if path.is_file():
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            if len(names) != len(folder_names):
                raise ValueError(f"{path}: {len(names)} class names for {len(folder_names)} class folders")
            return names
    if len(folder_names) == 1000:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        return list(IMAGENET_CLASSNAMES)
    return [name.replace("_", " ") for name in folder_names]


def _caltech101(dataset, split, transform):
    import json

    import numpy as np
    from torchvision.datasets import Caltech101

    root = _root(dataset)
    if root.name == "caltech101" and not (root / "caltech101").is_dir():
        root = root.parent  # torchvision appends "caltech101" itself
    images = root / "caltech101" / "101_ObjectCategories"
    if not images.is_dir():
        raise _missing(dataset, "Caltech101 images (<root>/caltech101/101_ObjectCategories)", images)
    # torchvision lists the images; its __getitem__ needs scipy (for the outline annotations), so the
    # images are opened here instead.
    base = Caltech101(str(root), target_type="category", download=False)
    kept = [c for c in base.categories if c not in CALTECH_IGNORED]
    label = {c: i for i, c in enumerate(kept)}
    classnames = [CALTECH_RENAME.get(c, c).replace("_", " ") for c in kept]
    members = {c: [] for c in kept}
    for y, n in zip(base.y, base.index, strict=True):
        if base.categories[y] in members:
            members[base.categories[y]].append(images / base.categories[y] / f"image_{n:04d}.jpg")
    split_file = root / CALTECH_SPLIT_FILE
    if split_file.is_file():
        entries = json.loads(split_file.read_text())["train" if split == "train" else "test"]
        paths = [images / Path(impath).parts[-2] / Path(impath).parts[-1] for impath, *_ in entries]
        for path in paths:
            if not path.is_file():
                raise _missing(dataset, f"image listed in {split_file.name}", path)
        return FileDataset(paths, [label[path.parent.name] for path in paths], transform), classnames
    paths, labels = [], []
    for category, files in members.items():
        order = np.random.default_rng(label[category]).permutation(len(files))
        n_test = max(1, round(CALTECH_TEST_FRACTION * len(files)))
        chosen = sorted(order[:n_test] if split == "test" else order[n_test:])
        paths += [files[j] for j in chosen]
        labels += [label[category]] * len(chosen)
    return FileDataset(paths, labels, transform), classnames


def _oxfordpets(dataset, split, transform):
    from torchvision.datasets import OxfordIIITPet

    root = _root(dataset)
    if root.name == "oxford-iiit-pet" and not (root / "oxford-iiit-pet").is_dir():
        root = root.parent  # torchvision appends "oxford-iiit-pet" itself
    tv_split = "test" if split == "test" else "trainval"
    base_folder = root / "oxford-iiit-pet"
    for needed in (base_folder / "images", base_folder / "annotations" / f"{tv_split}.txt"):
        if not needed.exists():
            raise _missing(
                dataset, "OxfordIIITPet file (<root>/oxford-iiit-pet/{images,annotations})", needed
            )
    data = OxfordIIITPet(
        str(root), split=tv_split, target_types="category", transform=transform, download=False
    )
    return data, list(data.classes)


# ---------------------------------------------------------------------------------------------------
# CC3M


def prepare(out, params):
    """Check the configured CC3M source, index it (fetching a URL list first) and write world.json last."""
    out = Path(out)
    cc3m = params.get("cc3m") or {}
    source, path = cc3m.get("source"), cc3m.get("path")
    if source not in ("csv", "webdataset", "url_list") or not path:
        raise ValueError("data.paper.cc3m needs `source` (csv | webdataset | url_list) and `path`")
    size, clean = int(cc3m.get("size", 500000)), int(params.get("clean_pool_size", 100000))
    wanted = size + clean
    if source == "csv":
        index = index_csv(path, wanted)
    elif source == "webdataset":
        index = index_shards(shard_paths(path), wanted)
    else:
        index = index_shards(fetch_url_list(path, out, wanted, cc3m), wanted)
    n = index["n_pairs"]
    n_train = min(size, n)
    n_clean = min(clean, n - n_train)
    if n < wanted:
        print(
            f"prepare_data: CC3M source {path} gave {n} pairs, fewer than size + clean_pool_size = "
            f"{wanted}: training set {n_train}, clean pool {n_clean}",
            file=sys.stderr,
        )
    manifest = {
        "kind": "paper",
        "source": source,
        "path": str(Path(path).expanduser().resolve()),
        "n_pairs": n,
        "requested": {"size": size, "clean_pool_size": clean},
        "splits": {"train": [0, n_train], "clean_pool": [n_train, n_train + n_clean]},
        **{k: v for k, v in index.items() if k != "n_pairs"},
    }
    write_json(out / "world.json", manifest)
    return manifest


def index_csv(path, limit):
    """{"n_pairs", "csv"} for the first `limit` rows of an image,caption CSV; every image must exist."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"CC3M csv source not found: {path}")
    n, missing = 0, []
    for image, _caption in _csv_rows(path, limit):
        n += 1
        if not image.is_file():
            missing.append(image)
    if missing:
        examples = ", ".join(str(p) for p in missing[:3])
        raise FileNotFoundError(
            f"CC3M csv source {path}: {len(missing)} of {n} images are missing, e.g. {examples}"
        )
    if n == 0:
        raise ValueError(f"CC3M csv source {path} holds no pairs")
    return {"n_pairs": n, "csv": str(path)}


def _csv_rows(path, limit=None, start=0):
    """(absolute image path, caption) rows [start, limit) of an image,caption CSV."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"image", "caption"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"CC3M csv source {path}: missing column(s) {sorted(missing)} (found {reader.fieldnames})"
            )
        for i, row in enumerate(reader):
            if limit is not None and i >= limit:
                break
            if i >= start:
                yield path.parent / row["image"], row["caption"]


def shard_paths(path):
    """The tar shards of a webdataset source: a folder of *.tar, one .tar file or a glob pattern."""
    text = str(Path(str(path)).expanduser())
    if any(ch in text for ch in "*?["):
        anchor = Path(text).anchor or "."
        shards = sorted(Path(anchor).glob(str(Path(text).relative_to(anchor))))
    elif Path(text).is_dir():
        shards = sorted(Path(text).glob("*.tar"))
    elif Path(text).is_file():
        shards = [Path(text)]
    else:
        raise FileNotFoundError(f"CC3M webdataset source not found: {text}")
    if not shards:
        raise FileNotFoundError(f"CC3M webdataset source {text}: no .tar shards found")
    return [s.resolve() for s in shards]


def _split_key(name):
    """webdataset's rule: key = the path up to the first dot of the file name; the rest is the extension."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _tar_pairs(shard, read=False):
    """(key, image bytes or None, caption or None) for each complete image+txt sample of one shard."""
    samples = {}
    try:
        with tarfile.open(shard) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _split_key(member.name)
                if ext in IMAGE_EXTS or ext == "txt":
                    data = tar.extractfile(member).read() if read else b""
                    samples.setdefault(key, {})[ext] = data
    except (tarfile.TarError, OSError) as err:
        raise ValueError(f"CC3M shard {shard} is not a readable tar file: {err}") from err
    for key, sample in samples.items():
        image = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
        if image is not None and "txt" in sample:
            yield key, (image if read else None), (sample["txt"].decode("utf-8").strip() if read else None)


def index_shards(shards, limit):
    """{"n_pairs", "shards": [{"path", "n_pairs"}]}: pairs counted from the tar headers, shard by shard."""
    for shard in shards:
        if not Path(shard).is_file():
            raise FileNotFoundError(f"CC3M shard not found: {shard}")
    total, listed = 0, []
    for shard in shards:
        if total >= limit:
            break
        count = sum(1 for _ in _tar_pairs(shard))
        listed.append({"path": str(shard), "n_pairs": count})
        total += count
    if total == 0:
        raise ValueError(f"CC3M shards {[str(s) for s in shards[:3]]}...: no image+txt pairs found")
    return {"n_pairs": min(total, limit), "shards": listed}


def _read_url_list(path, limit):
    """(url, caption) rows of a CSV/TSV; with a header naming url and caption, or headerless (CC3M)."""
    with open(path, newline="", encoding="utf-8") as f:
        first = f.readline()
        f.seek(0)
        delimiter = "\t" if "\t" in first or path.suffix.lower() == ".tsv" else ","
        reader = csv.reader(f, delimiter=delimiter)
        header = [h.strip().lower() for h in next(reader, [])]
        if "url" in header:
            if "caption" not in header:
                raise ValueError(f"CC3M url_list {path}: a header with `url` also needs `caption`")
            u, c = header.index("url"), header.index("caption")
            rows = reader
        else:
            if not header:
                raise ValueError(f"CC3M url_list {path} is empty")
            u = next((i for i, v in enumerate(header) if v.startswith(("http://", "https://"))), None)
            if u is None or len(header) < 2:
                raise ValueError(f"CC3M url_list {path}: no `url,caption` header and no URL column")
            c = 1 - u if len(header) == 2 else (0 if u != 0 else 1)
            f.seek(0)
            rows = csv.reader(f, delimiter=delimiter)
        for i, row in enumerate(rows):
            if i >= limit:
                break
            yield row[u], row[c]


def fetch_url_list(path, out, limit, cc3m):
    """Fetch the first `limit` url,caption rows with img2dataset into webdataset shards under out/cc3m."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"CC3M url_list source not found: {path}")
    out = Path(out)
    url_list = out / URL_LIST_NAME
    with atomic_path(url_list) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["url", "caption"])
        writer.writerows(_read_url_list(path, limit))
    folder = out / "cc3m"
    args = {
        "url_list": str(url_list),
        "output_folder": str(folder),
        "output_format": "webdataset",
        "input_format": "csv",
        "url_col": "url",
        "caption_col": "caption",
        "image_size": int(cc3m.get("image_size", 256)),
        "resize_mode": "keep_ratio",
        "processes_count": int(cc3m.get("processes_count", 4)),
        "thread_count": int(cc3m.get("thread_count", 32)),
        "retries": int(cc3m.get("retries", 3)),
        "timeout": int(cc3m.get("timeout", 10)),
        "number_sample_per_shard": int(cc3m.get("shard_size", 10000)),
        "incremental_mode": "incremental",  # a rerun resumes: finished shards are kept
        "enable_wandb": False,
    }
    run_img2dataset(args)
    shards = sorted(folder.glob("*.tar"))
    if not shards:
        raise RuntimeError(f"img2dataset fetched nothing from {path} into {folder} (see its *_stats.json)")
    return shards


def run_img2dataset(args):
    """img2dataset's Python API if importable here, else its command on PATH, else a clear error."""
    import os

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset's albumentations phones home
    try:
        import img2dataset
    except ImportError:
        img2dataset = None
    if img2dataset is not None:
        img2dataset.download(**args)
        return
    command = shutil.which("img2dataset")
    if command is None:
        raise ImportError(
            f"the CC3M url_list source is fetched with img2dataset, which is not installed: "
            f"{IMG2DATASET_HINT}"
        )
    subprocess.run([command, *(f"--{k}={v}" for k, v in args.items())], check=True)


def load_pairs(source, limit=None, split="train"):
    """(images, captions) of a prepared CC3M source for the poisoner.

    `source` is a prepared data folder (or its world.json), or the data.paper params dict (csv and
    webdataset sources only; indexed on the fly). `split` is "train", "clean_pool" or "all". Images are
    file paths (csv source) or encoded image bytes (shards), both loadable with PIL.Image.open
    (wrap bytes in io.BytesIO).
    """
    if isinstance(source, dict):
        params = source.get("paper", source)
        cc3m = params["cc3m"]
        size, clean = int(cc3m.get("size", 500000)), int(params.get("clean_pool_size", 100000))
        if cc3m["source"] == "csv":
            manifest = {"source": "csv", **index_csv(cc3m["path"], size + clean)}
        elif cc3m["source"] == "webdataset":
            manifest = {"source": "webdataset", **index_shards(shard_paths(cc3m["path"]), size + clean)}
        else:
            raise ValueError("load_pairs: a url_list source must be prepared first; pass its data folder")
        n = manifest["n_pairs"]
        manifest["splits"] = {"train": [0, min(size, n)], "clean_pool": [min(size, n), min(size + clean, n)]}
    else:
        path = Path(source)
        path = path / "world.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"no CC3M manifest (run prepare_data first): {path}")
        import json

        manifest = json.loads(path.read_text())
    if split == "all":
        start, stop = 0, manifest["n_pairs"]
    elif split in manifest["splits"]:
        start, stop = manifest["splits"][split]
    else:
        raise ValueError(f"split must be 'train', 'clean_pool' or 'all', not {split!r}")
    if limit is not None:
        stop = min(stop, start + int(limit))
    if manifest["source"] == "csv":
        rows = list(_csv_rows(Path(manifest["csv"]), stop, start))
        return [str(image) for image, _ in rows], [caption for _, caption in rows]
    return _shard_slice(manifest["shards"], start, stop)


def shard_ranges(shards, start, stop):
    """(shard path, lo, hi) for each shard that overlaps pairs [start, stop) of the corpus."""
    offset = 0
    for shard in shards:
        count = shard["n_pairs"]
        if offset + count > start and offset < stop:
            yield shard["path"], max(start - offset, 0), min(stop - offset, count)
        offset += count
        if offset >= stop:
            break


def _shard_slice(shards, start, stop):
    """Pairs [start, stop) across shards (counts from the manifest), read with webdataset if installed."""
    images, captions = [], []
    for path, lo, hi in shard_ranges(shards, start, stop):
        for image, caption in _read_shard(path, lo, hi):
            images.append(image)
            captions.append(caption)
    return images, captions


def _read_shard(path, lo, hi):
    """(image bytes, caption) of pairs lo..hi-1 of one shard."""
    try:
        import webdataset as wds
    except ImportError:
        wds = None
    if wds is None:
        pairs = ((image, caption) for _, image, caption in _tar_pairs(path, read=True))
    else:
        samples = wds.WebDataset(str(path), shardshuffle=False, empty_check=False)
        pairs = (
            (next(s[e] for e in IMAGE_EXTS if e in s), s["txt"].decode("utf-8").strip())
            for s in samples
            if "txt" in s and any(e in s for e in IMAGE_EXTS)
        )
    for i, pair in enumerate(pairs):
        if i >= hi:
            break
        if i >= lo:
            yield pair
