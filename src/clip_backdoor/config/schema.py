"""Load the declaration: the config schema with the files it includes (`$ref`) inlined.

Directives the loader applies (JSON Schema never sees them): `$ref: <file under schemas/>` inlines a file
(sibling keys are laid over it); `x-select: key` takes one property of the included object; `x-no-defaults`
drops every default (override blocks such as a per-attack fine-tune); on a defense block, `x-params: <file>`
is its declaration, `x-defaults` changes some of its defaults, `x-module` is the module's default and
`x-per-attack` the paper's per-attack values.
"""

import copy
from functools import cache
from pathlib import Path

import yaml

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"
MAIN = "config.schema.yaml"


@cache
def load_schema():
    """The whole config schema as one dict (cached; treat as read-only)."""
    return expand(read(MAIN))


def read(name):
    with open(SCHEMA_DIR / name) as f:
        return yaml.safe_load(f)


def expand(node):
    if isinstance(node, list):
        return [expand(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: expand(value) for key, value in node.items()}
    if "$ref" in node:
        node = include(node)
    if "x-params" in node:
        node = defense_block(node)
    return node


def include(node):
    base = expand(read(node.pop("$ref")))
    if "x-select" in node:
        base = base["properties"][node.pop("x-select")]
    if node.pop("x-no-defaults", False):
        base = without_defaults(base)
    if not isinstance(base, dict):
        return base
    return {**base, **node}


def defense_block(node):
    params = expand(read(node.pop("x-params")))
    for key, value in node.pop("x-defaults", {}).items():
        params["properties"][key] = {**params["properties"][key], "default": value, "x-paper": value}
    block = copy.deepcopy(node)
    props = block["properties"]
    props["params"] = params
    props["per_attack"] = {**props["per_attack"], "additionalProperties": without_defaults(params)}
    if "x-module" in block:
        props["module"] = {**props["module"], "default": block.pop("x-module")}
    if "x-per-attack" in block:
        value = block.pop("x-per-attack")
        props["per_attack"].update({"default": value, "x-origin": "paper", "x-paper": value})
    return block


def without_defaults(node):
    if isinstance(node, list):
        return [without_defaults(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {key: without_defaults(value) for key, value in node.items() if key != "default"}


def subschema(path):
    """The declaration at a dotted config path, e.g. "defenses.methods.rvpt.params"."""
    node = load_schema()
    for key in path.split("."):
        node = node["properties"][key]
    return node


def declared_defaults(path):
    """{knob: default} of the object declared at a dotted config path (knobs without a default left out)."""
    props = subschema(path)["properties"]
    return {key: copy.deepcopy(spec["default"]) for key, spec in props.items() if "default" in spec}
