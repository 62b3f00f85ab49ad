"""Ablations (`defenses.ablations`): per defense, variants that each turn one of its knobs back to the
declared default (for this project's additions: off), fitted and evaluated like any defense and reported
in the ablation table. A variant is named `<defense>-no-<knob>`."""

from clip_backdoor.config.schema import declared_defaults

SEPARATOR = "-no-"


def ablation_variants(config):
    """[(variant, defense, knob)] in the order declared."""
    ablations = config["defenses"]["ablations"]
    return [(f"{d}{SEPARATOR}{k}", d, k) for d, knobs in ablations.items() for k in knobs]


def variant_block(config, variant):
    """The variant's defense block: its defense's resolved block with the knob at its declared default."""
    defense, knob = variant.split(SEPARATOR, 1)
    block = config["defenses"]["methods"][defense]
    default = declared_defaults(f"defenses.methods.{defense}.params")[knob]
    return {**block, "params": {**block["params"], knob: default}}


def ablation_problems(config):
    """A named defense that is not enabled, a knob without a declared default, one already at it."""
    problems = []
    for defense, knobs in config["defenses"]["ablations"].items():
        where = f"defenses.ablations.{defense}"
        if defense not in config["defenses"]["enabled"]:
            problems.append(f"{where}: {defense!r} is not an enabled defense")
            continue
        try:
            defaults = declared_defaults(f"defenses.methods.{defense}.params")
        except KeyError:
            problems.append(f"{where}: {defense!r} has no declared params to ablate")
            continue
        params = config["defenses"]["methods"][defense]["params"]
        for knob in knobs:
            if knob not in defaults:
                problems.append(f"{where}: {knob!r} is not a declared knob of {defense} with a default")
            elif params.get(knob) == defaults[knob]:
                problems.append(f"{where}: {knob!r} is already at its declared default {defaults[knob]!r}")
    return problems
