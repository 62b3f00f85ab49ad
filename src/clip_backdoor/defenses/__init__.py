"""Defenses: one module per defense, all behind one interface (see `interface.py`).

A defense is a module — `clip_backdoor.defenses.<name>` by default, or any importable module named by
the `module:` key of its config block — that defines:

    PARAMS = {...}     only for a module that is not built in: a dict literal of every hyperparameter and
                       its default (a built-in defense's are declared in schemas/defenses/<name>.yaml).
                       The workflow reads it, and INPUTS, without importing the module.
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
`defenses.methods.<name>` gives its `module` and may give `params` and `per_attack` overrides. `fit`
receives the resolved params (every declared knob) and never the attack's name.
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
    missing = [attr for attr in ("fit", "classifier") if not hasattr(mod, attr)]
    if missing:
        raise ValueError(f"defense {name!r} ({dotted}) does not define {', '.join(missing)}")
    return mod
