"""Defenses: one module per defense, all behind one interface (see `interface.py`).

A defense is a module — `clip_backdoor.defenses.<name>` by default, or any importable module named by
the `module:` key of its config block — that defines:

    PARAMS = {...}     a dict literal of every hyperparameter and its default; a config key not in it is
                       an error. The workflow reads it without importing the module.
    INPUTS = (...)     optional tuple literal: extra inputs the defense reads, from
                       "clean_model" (the clean pretrained CLIP), "segmenter" (the oracle's segmenter),
                       "corpus" (the poisoned fine-tuning corpus the defender holds).
    def fit(ctx: DefenseContext, params: dict) -> tuple[dict, dict]
                       trains the defense against ctx.model (the backdoored CLIP); returns its state
                       (tensors and plain data, saved weights-only) and a log dict for the report.
    def classifier(ctx: EvalContext, state: dict, text_prefix: str) -> callable | None
                       images [B,3,H,W] in [0,1] → logits [B,C] of the defended model; `text_prefix` is
                       an attack's text key (TrojVQA) or "". None: the defense cannot take that input
                       (the evaluation reports it as not applicable rather than inventing a number).

Adding a defense is one module and one config block: `defenses.enabled` lists it, and
`defenses.methods.<name>` may give its `params`, `per_attack` overrides and `module`.
"""

import importlib


def module_name(name, module=None):
    return module or f"clip_backdoor.defenses.{name}"


def load_defense(name, module=None):
    """The module implementing defense `name`, with its interface checked."""
    dotted = module_name(name, module)
    try:
        mod = importlib.import_module(dotted)
    except ModuleNotFoundError as err:
        raise ValueError(f"defenses.methods.{name}.module: cannot import {dotted!r} ({err})") from err
    missing = [attr for attr in ("PARAMS", "fit", "classifier") if not hasattr(mod, attr)]
    if missing:
        raise ValueError(f"defense {name!r} ({dotted}) does not define {', '.join(missing)}")
    return mod


def resolve_params(name, defaults, given):
    """defaults updated by `given`; an unknown key, or a value of another type than its default (a number
    for a number, a bool for a bool), is an error naming the key."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults))
        raise ValueError(f"defenses.methods.{name}.params: unknown key {unknown[0]!r} (known: {known})")
    for key, value in given.items():
        problem = type_problem(defaults[key], value)
        if problem:
            raise ValueError(f"defenses.methods.{name}.params.{key}: {problem}")
    return {**defaults, **given}


def type_problem(default, value):
    """Why `value` cannot stand for a parameter whose default is `default` (None if it can)."""
    if isinstance(default, bool) != isinstance(value, bool):
        return f"expected {type(default).__name__}, got {value!r}"
    if isinstance(default, int | float) and not isinstance(default, bool):
        if not isinstance(value, int | float):
            hint = " (YAML reads 5e-4 as text: write 5.0e-4)" if isinstance(value, str) else ""
            return f"expected a number, got {value!r}{hint}"
    return None
