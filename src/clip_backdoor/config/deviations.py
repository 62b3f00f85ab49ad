"""Deviations from the papers: every resolved value that differs from its declared paper value, and every
project knob in use (set to other than its default, which is off)."""

from clip_backdoor.config.schema import load_schema

EFFECTIVE = "attacks.methods.{attack}.finetune"


def deviations(config):
    """Rows {key, value, paper, origin, meaning} for the enabled attacks and defenses."""
    rows = []
    for path, spec, value in knobs(load_schema(), config):
        origin = spec.get("x-origin")
        if origin is None or (value is None and "default" not in spec):
            continue
        reference = spec.get("x-paper", spec.get("default"))
        if origin == "project":
            if "default" not in spec or value != spec["default"]:
                rows.append(row(path, value, spec.get("default"), origin, spec))
        elif value != reference:
            rows.append(row(path, value, reference, origin, spec))
    return rows


def row(path, value, reference, origin, spec):
    return {
        "key": path,
        "value": value,
        "paper": reference,
        "origin": origin,
        "meaning": spec.get("description", ""),
    }


def knobs(schema, config):
    """(dotted path, declaration, resolved value) of every declared knob in use."""
    yield from walk(schema, config, "", skip={"attacks.methods", "defenses.methods"})
    attacks = config.get("attacks", {})
    finetune = schema["properties"]["attacks"]["properties"]["finetune"]
    for name in attacks.get("enabled", []):
        block = attacks["methods"][name]
        spec = schema["properties"]["attacks"]["properties"]["methods"]["properties"][name]
        yield from walk(spec, {k: v for k, v in block.items() if k != "finetune"}, f"attacks.methods.{name}.")
        for key, value in block.get("finetune", {}).items():
            yield f"attacks.methods.{name}.finetune.{key}", finetune["properties"][key], value
    declared = schema["properties"]["defenses"]["properties"]["methods"]["properties"]
    for name in config.get("defenses", {}).get("enabled", []):
        if name in declared:
            yield from defense_knobs(name, declared[name], config["defenses"]["methods"][name], attacks)


def defense_knobs(name, spec, block, attacks):
    params = spec["properties"]["params"]
    yield from walk(params, block["params"], f"defenses.methods.{name}.params.")
    paper = spec["properties"]["per_attack"].get("x-paper", {})
    for attack in attacks.get("enabled", []):
        given, expected = block["per_attack"].get(attack, {}), paper.get(attack, {})
        for key in sorted(set(given) | set(expected)):
            value = given.get(key, block["params"][key])
            declared = {
                **params["properties"][key],
                "x-paper": expected.get(key, params["properties"][key].get("default")),
            }
            if value != declared["x-paper"]:
                yield f"defenses.methods.{name}.per_attack.{attack}.{key}", declared, value


def walk(spec, value, prefix, skip=()):
    if prefix.rstrip(".") in skip:
        return
    props = spec.get("properties") if isinstance(spec, dict) else None
    if "x-origin" in spec or not props or not isinstance(value, dict):
        if prefix and "x-origin" in spec:
            yield prefix.rstrip("."), spec, value
        return
    for key, sub in props.items():
        if key in value or "x-origin" in sub:
            yield from walk(sub, value.get(key), f"{prefix}{key}.", skip)
