"""Atomic writes, content hashes and safe checkpoint loading.

Every file a stage declares as output is written to a temporary sibling and renamed into place,
so a killed job never leaves a file that looks complete. Checkpoints are loaded weights-only:
this tool opens models that other people poisoned.

Integrity: a checkpoint holds the sha256 of its content (every tensor's bytes, dtype and shape and
every other value), written by `save_checkpoint` and checked by `load_checkpoint`; the same content
always gives the same file bytes. A folder of data files holds SHA256SUMS (`sha256sum -c` reads it),
written by `write_checksums` and checked by `verified` once per file and process.
"""

import hashlib
import json
import os
import pickle
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

from clip_backdoor.errors import CheckpointError, DataError, MissingDataError

__all__ = ["CheckpointError", "atomic_path", "load_checkpoint", "save_checkpoint", "verified"]

CHECKSUMS = "SHA256SUMS"
RESTORE = "or restore it with `dvc checkout`"


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); give it the mode a plain open() would (0666 & ~umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path, hint=""):
    """A JSON file's value; a missing or unreadable file raises a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"{path} not found{hint}")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}){hint}") from err


# ---- checkpoints --------------------------------------------------------------------------------


def _feed(digest, obj):
    """Hash `obj` into `digest`: tensors by dtype, shape and bytes, containers in order, other values by
    type and repr."""
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{t.dtype}{tuple(obj.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        digest.update(f"D{len(obj)};".encode())
        for key, value in obj.items():
            _feed(digest, key)
            _feed(digest, value)
    elif isinstance(obj, (list, tuple)):
        digest.update(f"{type(obj).__name__}{len(obj)};".encode())
        for value in obj:
            _feed(digest, value)
    elif isinstance(obj, str):
        data = obj.encode()
        digest.update(f"S{len(data)};".encode() + data)
    elif isinstance(obj, bytes):
        digest.update(f"B{len(obj)};".encode() + obj)
    else:  # None, bool, int, float, torch.dtype, ...: a type and a repr that fix the value
        text = repr(obj)
        digest.update(f"{type(obj).__qualname__}{len(text)};{text}".encode())


def content_sha256(obj):
    """The sha256 of a checkpoint's content (what `load_checkpoint` returns)."""
    digest = hashlib.sha256()
    _feed(digest, obj)
    return digest.hexdigest()


def _regenerate(path):
    if Path(path).suffix == ".state":
        return "delete it and the job starts over from scratch"
    return f"regenerate it with `snakemake -f {path} --configfile <yours>` {RESTORE}"


def save_checkpoint(path, obj):
    """torch.save `obj` (tensors, dicts, lists, numbers, strings only) with its content hash, atomically.

    Written through a file object, so the zip's root folder is torch's fixed "archive" rather than the
    temporary file's random name: the same content gives the same bytes, and Snakemake's input checksums
    see a retrained but identical model as unchanged."""
    import torch

    wrapped = {"content": obj, "content_sha256": content_sha256(obj)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            torch.save(wrapped, handle)


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint with weights_only=True; refuse anything that would run code, is damaged or
    does not match the content hash it was saved with."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except Exception as err:
            raise CheckpointError(f"corrupt or truncated safetensors checkpoint {path}: {err}") from err
    try:
        wrapped = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {path}: it is not a weights-only checkpoint "
            f"(unpickling it could execute code). Details: {str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        message = f"corrupt or truncated checkpoint {path} ({first}): {_regenerate(path)}"
        raise CheckpointError(message) from err
    if not isinstance(wrapped, dict) or set(wrapped) != {"content", "content_sha256"}:
        raise CheckpointError(
            f"{path} carries no content hash (not written by this version's save_checkpoint): "
            + _regenerate(path)
        )
    if content_sha256(wrapped["content"]) != wrapped["content_sha256"]:
        raise CheckpointError(f"{path} is damaged: its content does not match its hash: {_regenerate(path)}")
    return wrapped["content"]


# ---- data files ---------------------------------------------------------------------------------


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(directory, names):
    """Write `directory`/SHA256SUMS (sha256sum's format) for the files `names` in it."""
    directory = Path(directory)
    lines = [f"{file_sha256(directory / name)}  {name}\n" for name in sorted(names)]
    write_text(directory / CHECKSUMS, "".join(lines))


_VERIFIED = set()


def verified(path, regenerate):
    """`path`, after checking it against the SHA256SUMS beside it (once per file, size and mtime in a
    process); `regenerate` says how to rebuild it. A missing, unlisted or altered file raises a DataError."""
    path = Path(path)
    hint = f": regenerate it with {regenerate} {RESTORE}"
    if not path.is_file():
        raise MissingDataError(f"data file not found: {path}{hint}")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return path
    sums = path.parent / CHECKSUMS
    if not sums.is_file():
        raise MissingDataError(f"{sums} not found, so {path} cannot be checked{hint}")
    listed = {}
    for line in sums.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            listed[name.lstrip("*")] = digest
    if path.name not in listed:
        raise DataError(f"{path} is not listed in {sums}{hint}")
    if file_sha256(path) != listed[path.name]:
        raise DataError(f"{path} is damaged: its sha256 does not match {sums}{hint}")
    _VERIFIED.add(key)
    return path
