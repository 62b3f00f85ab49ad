import resource
import sys


def peak_memory_mb() -> float:
    """Peak resident memory of this process (and CUDA peak allocation if any), in MiB."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = kib / 1024 if sys.platform != "darwin" else kib / 2**20
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        peak = max(peak, torch.cuda.max_memory_allocated() / 2**20)
    return round(peak, 1)
