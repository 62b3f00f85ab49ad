"""Trigger records: everything a trigger needs, in one weights-only file every later stage reads.

A record is {"name", "params", "text_key", "tensors": {...}, "meta": {...}}: `params` are the plain
trigger params; `tensors` hold artefacts (WaNet grid, optimised patch, ISSBA encoder weights).
"""

from clip_backdoor.attacks import get_trigger, issba
from clip_backdoor.runtime.io import CheckpointError, load_checkpoint, save_checkpoint


def save_record(path, name, params, tensors=None, text_key="", meta=None):
    record = {"name": name, "params": dict(params), "text_key": text_key, "tensors": tensors or {}}
    save_checkpoint(path, {**record, "meta": meta or {}})


def load_record(path):
    record = load_checkpoint(path)
    if not isinstance(record, dict) or "name" not in record or "tensors" not in record:
        raise CheckpointError(f"{path} is not a trigger record")
    return record


def trigger_from_record(record, image_size):
    """Rebuild the trigger callable of a record."""
    params, tensors = dict(record["params"]), record["tensors"]
    if record["name"] == "wanet":
        params["grid"] = tensors["grid"]
    elif record["name"] in ("trojvqa", "badclip"):
        params["patch"] = tensors["patch"]
    elif record["name"] == "issba":
        cfg = record["meta"]["encoder"]
        encoder = issba.StegaEncoder(cfg["n_bits"], cfg["image_size"], cfg["max_residual"], cfg["width"])
        encoder.load_state_dict(tensors["encoder"])
        params["encoder"] = encoder
    return get_trigger(record["name"], image_size, **params)
