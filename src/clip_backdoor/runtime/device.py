"""Device choice and GPU slots.

A job that may use a GPU calls `claim_gpu_slot()` *before torch is imported*: with N visible CUDA
devices it takes the first free slot (an exclusive file lock held for the life of the process) and
sets CUDA_VISIBLE_DEVICES to it. A preset CUDA_VISIBLE_DEVICES (as under SLURM) is respected.
"""

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_held_locks = []
_announced = False


def visible_gpu_count() -> int:
    """Number of CUDA devices, read without importing torch (CLIP_BACKDOOR_GPU_COUNT overrides)."""
    override = os.environ.get("CLIP_BACKDOOR_GPU_COUNT")
    if override is not None:
        return int(override)
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def claim_gpu_slot(lock_dir=None) -> str | None:
    """Lock a free GPU slot and export CUDA_VISIBLE_DEVICES; return the device id or None."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return os.environ["CUDA_VISIBLE_DEVICES"] or None
    count = visible_gpu_count()
    if count == 0:
        return None
    lock_dir = Path(lock_dir or os.environ.get("CLIP_BACKDOOR_LOCK_DIR", tempfile.gettempdir()))
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(count):
        handle = open(lock_dir / f"clip_backdoor_gpu{slot}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held_locks.append(handle)
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot)
        return str(slot)
    raise RuntimeError(
        f"all {count} GPU slots are busy; run snakemake with --resources gpu=N where N <= {count}"
    )


def torch_device():
    """cuda if available, else cpu (announced once on stderr)."""
    global _announced
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    if not _announced:
        print("clip_backdoor: no CUDA device, running on the CPU", file=sys.stderr)
        _announced = True
    return torch.device("cpu")
