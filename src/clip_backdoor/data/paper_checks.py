"""Planning-time checks of the papers' inputs (data.kind paper): the CC3M source, the downstream folders
and the pretrained weights, each problem one line naming the path and what was expected.

Standard library only (the workflow calls it while planning, without torch); the layouts are those the
adapters of data/paper.py read. The pretrained-weights check of an open_clip tag runs open_clip in a
subprocess with HF_HUB_OFFLINE=1 (it imports torch) and only tries the local cache.
"""

import ast
import csv
import importlib.util
import json
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path

# As data/paper.py (tests/test_paper_checks.py keeps them equal).
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
CALTECH_IGNORED = ("Faces_easy",)
CALTECH_RENAME = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
CALTECH_SPLIT_FILE = "split_zhou_Caltech101.json"
# torchvision ImageFolder's extensions
FOLDER_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CSV_HEAD_ROWS = 100
CSV_RANDOM_ROWS = 5
WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors")


def check_paper_inputs(config):
    """Problems (strings) with the inputs of a papers' profile config; [] when fine or not data.kind paper."""
    if config.get("data", {}).get("kind") != "paper":
        return []
    paper = config["data"].get("paper", {})
    problems = check_cc3m(paper.get("cc3m") or {}, int(paper.get("clean_pool_size", 100000)))
    for dataset in config.get("evaluation", {}).get("datasets", []):
        check = DOWNSTREAM.get(dataset.get("kind"))
        if check is not None:
            problems += check(dataset)
    problems += check_weights(config.get("model", {}).get("arch", {}))
    return problems + check_fastsam(config.get("oracle", {}))


def check_fastsam(oracle):
    """FastSAM's weights are a pickle that runs code: they need a declared trusted hash."""
    if oracle.get("kind") != "fastsam":
        return []
    fastsam = oracle.get("fastsam", {})
    problems = []
    if not Path(str(fastsam.get("weights", ""))).expanduser().is_file():
        problems.append(f"oracle.fastsam.weights: no file {fastsam.get('weights')!r} (FastSAM-x.pt)")
    if not fastsam.get("sha256"):
        problems.append("oracle.fastsam.sha256: not set; give the weights file's trusted sha256 (sha256sum)")
    return problems


# ---- CC3M --------------------------------------------------------------------------------------------
def check_cc3m(cc3m, clean_pool_size):
    source, path = cc3m.get("source"), cc3m.get("path")
    where = f"data.paper.cc3m ({source})"
    if source not in ("csv", "webdataset", "url_list") or not path:
        return [f"data.paper.cc3m: needs `source` (csv | webdataset | url_list) and `path`, got {cc3m}"]
    path = Path(str(path)).expanduser()
    if source == "csv":
        return check_csv(path, int(cc3m.get("size", 500000)) + clean_pool_size, where)
    if source == "webdataset":
        return check_shards(path, where)
    return [] if path.is_file() else [f"{where}: URL list not found: {path} (a CSV/TSV of url,caption)"]


def check_csv(path, wanted, where, seed=0):
    """The CSV's header, and that the images of its first rows and of a few random rows (of the first
    `wanted`) exist, relative to the CSV's folder."""
    if not path.is_file():
        return [f"{where}: CSV not found: {path} (columns image,caption)"]
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"image", "caption"} - set(reader.fieldnames or [])
        if missing:
            found = reader.fieldnames
            return [
                f"{where}: {path} lacks column(s) {sorted(missing)} (found {found}; expected image,caption)"
            ]
        images = [row["image"] for _, row in zip(range(wanted), reader, strict=False)]
    if not images:
        return [f"{where}: {path} holds no image,caption rows"]
    rows = list(range(min(CSV_HEAD_ROWS, len(images))))
    rows += random.Random(seed).sample(range(len(images)), min(CSV_RANDOM_ROWS, len(images)))
    absent = sorted({i for i in rows if not (path.parent / images[i]).is_file()})
    if not absent:
        return []
    examples = ", ".join(f"row {i + 1}: {path.parent / images[i]}" for i in absent[:3])
    return [f"{where}: {len(absent)} of {len(set(rows))} sampled rows of {path} name missing image files "
            f"(paths are relative to the CSV's folder), e.g. {examples}"]  # fmt: skip


def check_shards(path, where):
    text = str(path)
    if any(ch in text for ch in "*?["):
        anchor = Path(text).anchor or "."
        shards = sorted(Path(anchor).glob(str(Path(text).relative_to(anchor))))
    elif path.is_dir():
        shards = sorted(path.glob("*.tar"))
    elif path.is_file():
        shards = [path]
    else:
        return [f"{where}: shards not found: {path} (a folder of *.tar, one .tar or a glob)"]
    if not shards:
        return [f"{where}: no .tar shards at {path}"]
    try:
        with tarfile.open(shards[0]) as tar:
            tar.next()
    except (tarfile.TarError, OSError) as err:
        return [f"{where}: {shards[0]} is not a readable tar shard ({err})"]
    return []


# ---- downstream datasets -----------------------------------------------------------------------------
def _label(dataset):
    return f"evaluation.datasets[{dataset.get('name', dataset.get('kind'))}] ({dataset.get('kind')})"


def _root(dataset):
    root = dataset.get("root")
    if not root:
        return None, [f"{_label(dataset)}: no `root` folder configured"]
    root = Path(str(root)).expanduser()
    if not root.is_dir():
        return None, [f"{_label(dataset)}: root folder not found: {root}"]
    return root, []


def is_image(path):
    return path.suffix.lower() in FOLDER_IMAGE_EXTS


def _target(dataset, classnames, source):
    target = dataset.get("target")
    if target is None or target in classnames:
        return []
    close = [c for c in classnames if c.casefold() == str(target).casefold()]
    hint = f" ({close[0]!r} is: the evaluation matches the name exactly)" if close else ""
    return [
        f"{_label(dataset)}: target {target!r} is not among the {len(classnames)} class names of {source}"
        + hint
    ]


def check_imagenet(dataset):
    root, problems = _root(dataset)
    where = _label(dataset)
    if root is None:
        return problems
    counts = {}
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            problems.append(
                f"{where}: {split} split folder not found: {folder} (expected {folder}/<wnid>/*.JPEG)"
            )
            continue
        classes = sorted(p for p in folder.iterdir() if p.is_dir())
        flat = sum(map(is_image, folder.iterdir()))
        if not classes:
            found = f"; found {flat} images directly in it (sort them into class folders)" if flat else ""
            problems.append(f"{where}: no class folders in {folder} (expected {folder}/<wnid>/*.JPEG{found})")
            continue
        empty = [c for c in (classes[0], classes[-1]) if not any(map(is_image, c.iterdir()))]
        if empty:
            problems.append(f"{where}: class folder without images: {empty[0]} (expected <wnid>/*.JPEG)")
        counts[split] = [c.name for c in classes]
    if problems:
        return problems
    if counts["train"] != counts["val"]:
        return [f"{where}: {root}/train has {len(counts['train'])} class folders, {root}/val "
                f"{len(counts['val'])} (expected the same classes in both)"]  # fmt: skip
    names, source = imagenet_names(counts["val"], root / "val", root)
    if isinstance(names, str):
        return [f"{where}: {names}"]
    return _target(dataset, names, source)


def imagenet_names(folders, *search):
    """(class names, where they come from) as paper.imagenet_classnames reads them, or (problem, None)."""
    for folder in search:
        path = Path(folder) / "classnames.txt"
        if path.is_file():
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            if len(names) != len(folders):
                return (
                    f"{path}: {len(names)} class names for {len(folders)} class folders (one per line)",
                    None,
                )
            return names, str(path)
    if len(folders) == 1000:
        return openai_imagenet_classnames(), "open_clip's IMAGENET_CLASSNAMES"
    return [name.replace("_", " ") for name in folders], f"the folder names of {search[0]}"


def openai_imagenet_classnames():
    """open_clip's IMAGENET_CLASSNAMES, read from its source (importing open_clip imports torch)."""
    spec = importlib.util.find_spec("open_clip")
    source = Path(spec.submodule_search_locations[0]) / "zero_shot_metadata.py"
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "IMAGENET_CLASSNAMES":
            return list(ast.literal_eval(node.value))
    raise RuntimeError(f"{source} defines no literal IMAGENET_CLASSNAMES")


def check_caltech101(dataset):
    root, problems = _root(dataset)
    where = _label(dataset)
    if root is None:
        return problems
    if root.name == "caltech101" and not (root / "caltech101").is_dir():
        root = root.parent
    images = root / "caltech101" / "101_ObjectCategories"
    if not images.is_dir():
        layout = "<root>/caltech101/101_ObjectCategories/<category>/image_0001.jpg ..."
        return [f"{where}: Caltech101 images not found: {images} (expected {layout})"]
    categories = sorted(p.name for p in images.iterdir() if p.is_dir())
    if "BACKGROUND_Google" not in categories:
        return [f"{where}: {images} has no BACKGROUND_Google folder (torchvision needs all 102 folders)"]
    kept = [c for c in categories if c not in ("BACKGROUND_Google", *CALTECH_IGNORED)]
    bad = [c for c in kept if not (images / c / "image_0001.jpg").is_file()]
    if bad:
        return [f"{where}: {images / bad[0]} has no image_0001.jpg (expected image_0001.jpg, ...;"
                f" {len(bad)} such folders)"]  # fmt: skip
    split = root / CALTECH_SPLIT_FILE
    if split.is_file():
        try:
            entries = json.loads(split.read_text())
            assert {"train", "test"} <= set(entries)
        except (ValueError, AssertionError):
            return [f"{where}: {split} is not CoOp's split file (JSON with train and test lists)"]
    names = [CALTECH_RENAME.get(c, c).replace("_", " ") for c in kept]
    return _target(dataset, names, str(images))


def check_oxfordpets(dataset):
    root, problems = _root(dataset)
    where = _label(dataset)
    if root is None:
        return problems
    if root.name == "oxford-iiit-pet" and not (root / "oxford-iiit-pet").is_dir():
        root = root.parent
    base = root / "oxford-iiit-pet"
    expected = "(expected <root>/oxford-iiit-pet/images/*.jpg and annotations/{trainval,test}.txt)"
    for needed in (base / "images", base / "annotations" / "trainval.txt", base / "annotations" / "test.txt"):
        if not needed.exists():
            return [f"{where}: OxfordIIITPet file not found: {needed} {expected}"]
    test = base / "annotations" / "test.txt"
    rows = [line.split() for line in test.read_text().splitlines() if line.strip()]
    if not rows or any(len(r) < 2 for r in rows):
        return [f"{where}: {test} is not '<image id> <class id> ...' per line"]
    first = base / "images" / f"{rows[0][0]}.jpg"
    if not first.is_file():
        return [f"{where}: image listed in annotations/test.txt not found: {first} {expected}"]
    # torchvision's class names: the image ids' breed part, title-cased, in class-id order
    breeds = dict(sorted({(int(r[1]), r[0].rsplit("_", 1)[0]) for r in rows}))
    names = [" ".join(part.title() for part in breed.split("_")) for breed in breeds.values()]
    return _target(dataset, names, str(base / "annotations" / "test.txt"))


DOWNSTREAM = {
    "imagenet_folder": check_imagenet,
    "caltech101": check_caltech101,
    "oxfordpets": check_oxfordpets,
}


# ---- pretrained weights ------------------------------------------------------------------------------
OFFLINE_PROBE = """
import os, sys
from open_clip.pretrained import download_pretrained, get_pretrained_cfg, has_hf_hub
cfg = get_pretrained_cfg(sys.argv[1], sys.argv[2])
if not cfg:
    sys.exit(f"open_clip knows no pretrained tag {sys.argv[2]!r} for {sys.argv[1]}")
if not (cfg.get("hf_hub") and has_hf_hub()) and cfg.get("url"):  # a URL download: look in its cache only
    cached = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
    sys.exit(0 if os.path.isfile(cached) else f"not in the local cache: {cached}")
try:
    path = download_pretrained(cfg)  # HF_HUB_OFFLINE=1: the Hugging Face cache only
except Exception as err:
    sys.exit(f"not in the local Hugging Face cache ({type(err).__name__})")
if not path:
    sys.exit("open_clip resolved no file for it")
"""


def check_weights(arch, timeout=120):
    """An open_clip `pretrained` must be a local file that exists, or a tag whose weights are cached."""
    pretrained = arch.get("pretrained")
    if arch.get("kind") != "open_clip" or not pretrained:
        return []
    text = str(pretrained)
    if os.sep in text or text.startswith("~") or text.endswith(WEIGHT_SUFFIXES):
        path = Path(text).expanduser()
        if path.is_file():
            return []
        return [
            f"model.arch.pretrained: weights file not found: {path} (an open_clip .bin/.safetensors file)"
        ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-c", OFFLINE_PROBE, arch["name"], text], env=env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return [f"model.arch.pretrained: checking open_clip tag {text!r} offline took over {timeout} s"]
    if proc.returncode == 0:
        return []
    reason = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
    name = f"{arch['name']}/{text!r}"
    return [f"model.arch.pretrained: open_clip weights {name} cannot be loaded offline: {reason}"
            " (download them once with network access, or give a local weights file path)"]  # fmt: skip
