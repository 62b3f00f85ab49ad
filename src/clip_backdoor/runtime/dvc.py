"""DVC directory hashes, computed the way `dvc add` does, to check data against its .dvc pointer."""

import hashlib
import json
from pathlib import Path

import yaml


def file_md5(path, chunk=1 << 20):
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_hash(root):
    """`<md5>.dir` of a directory, as in a .dvc file's `md5` field."""
    root = Path(root)
    entries = [
        {"md5": file_md5(p), "relpath": p.relative_to(root).as_posix()}
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def pointer_hash(dvc_file):
    outs = yaml.safe_load(Path(dvc_file).read_text())["outs"]
    return outs[0]["md5"]


def check_pointer(dvc_file, root):
    """Raise ValueError naming both files if `root` does not match its DVC pointer."""
    expected, actual = pointer_hash(dvc_file), directory_hash(root)
    if expected != actual:
        raise ValueError(f"{root} does not match {dvc_file}: DVC hash {actual}, pointer says {expected}")
