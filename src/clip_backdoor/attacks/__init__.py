"""Backdoor triggers: pure functions `trigger(images, seeds) -> images` on [B,3,H,W] floats in [0,1].

Every trigger is deterministic given one integer seed per image, returns a new tensor clamped to [0,1]
on the input's device and dtype, and never modifies its input.
"""

import importlib
import inspect
from numbers import Integral

from clip_backdoor.config.schema import declared_defaults

ATTACK_NAMES = (
    "badnet", "blended", "sig", "wanet", "issba", "trojvqa", "badclip", "badnet_lc",
    "badnet_rs", "blended_rs",  # Perturb and Recover's structured triggers
)  # fmt: skip
# Each trigger module is imported only when its attack is asked for, so that a job of one attack runs (and
# the workflow counts as its source) that attack's trigger module alone.
TRIGGERS = {name: f"clip_backdoor.attacks.{name}" for name in ATTACK_NAMES}


def get_trigger(name, image_size, **params):
    """Build the named trigger for square `image_size` px images, its params' declared defaults filled in
    (schemas/attacks/<name>.yaml); unknown name or param -> ValueError."""
    if name not in TRIGGERS:
        raise ValueError(f"unknown trigger {name!r}; expected one of {', '.join(ATTACK_NAMES)}")
    if isinstance(image_size, bool) or not isinstance(image_size, Integral) or image_size < 1:
        raise ValueError(f"{name}: image_size must be a positive int, got {image_size!r}")
    make = importlib.import_module(TRIGGERS[name]).make_trigger
    params = {**declared_defaults(f"attacks.methods.{name}.trigger"), **params}
    allowed = [p for p in inspect.signature(make).parameters if p != "image_size"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown param(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return make(int(image_size), **params)
