"""Validate a config against the declaration and fill in every default: the resolved config a run uses."""

import copy
import re

from jsonschema import Draft202012Validator, validators

from clip_backdoor.config.checks import cross_checks
from clip_backdoor.config.modules import module_file, module_params_schema
from clip_backdoor.config.schema import load_schema

NUMBER = re.compile(r"[+-]?\d+(\.\d*)?[eE][+-]?\d+")


class ConfigError(ValueError):
    """A config that cannot run: one line per problem, each naming the key."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("invalid config:\n" + "\n".join(f"  {p}" for p in self.problems))


def filling_defaults(cls):
    check_properties = cls.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for key, spec in props.items():
                if isinstance(spec, dict) and "default" in spec and key not in instance:
                    instance[key] = copy.deepcopy(spec["default"])
        yield from check_properties(validator, props, instance, schema)

    return validators.extend(cls, {"properties": properties})


Filling = filling_defaults(Draft202012Validator)


def resolve(config):
    """The config with every declared default filled in; ConfigError listing every problem otherwise."""
    resolved = copy.deepcopy(dict(config))
    problems = schema_problems(Filling(load_schema()), resolved)
    if not problems:
        problems = custom_defense_problems(resolved) + cross_checks(resolved)
    if problems:
        raise ConfigError(problems)
    return resolved


def schema_problems(validator, instance, prefix=""):
    found = {describe(err, prefix) for err in validator.iter_errors(instance)}
    return sorted(found)


def describe(err, prefix=""):
    path = ".".join(str(p) for p in err.absolute_path)
    where = prefix + (path or "config")
    value, schema = err.instance, err.schema
    if err.validator == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(set(value) - set(allowed))
        known = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"{where}: unknown key {', '.join(map(repr, unknown))}{known}"
    if err.validator == "enum":
        return f"{where}: {value!r} is not one of {' | '.join(map(str, err.validator_value))}"
    if err.validator == "type":
        hint = (
            " (YAML reads 5e-4 as text: write 5.0e-4)"
            if isinstance(value, str) and NUMBER.fullmatch(value)
            else ""
        )
        return f"{where}: expected {' or '.join(as_list(err.validator_value))}, got {value!r}{hint}"
    message = err.message if len(err.message) < 200 else err.message[:200] + " ..."
    return f"{where}: {message}"


def as_list(value):
    return value if isinstance(value, list) else [value]


def custom_defense_problems(config):
    """A defense that is not built in declares its params in its module's literal PARAMS."""
    problems = []
    declared = load_schema()["properties"]["defenses"]["properties"]["methods"]["properties"]
    methods = config["defenses"]["methods"]
    for name in config["defenses"]["enabled"]:
        if name not in methods and module_file(f"clip_backdoor.defenses.{name}") is not None:
            methods[name] = {"params": {}, "per_attack": {}}
    for name, block in methods.items():
        if name in declared:
            continue
        block.setdefault("module", f"clip_backdoor.defenses.{name}")
        schema, problem = module_params_schema(block["module"])
        if problem:
            problems.append(f"defenses.methods.{name}.module: {problem}")
            continue
        prefix = f"defenses.methods.{name}."
        problems += schema_problems(Filling({"properties": {"params": schema}}), block, prefix)
        for attack, given in block.get("per_attack", {}).items():
            merged = {**block["params"], **given}
            problems += schema_problems(Draft202012Validator(schema), merged, f"{prefix}per_attack.{attack}.")
    return problems
