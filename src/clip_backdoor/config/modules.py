"""The package's modules read without importing them (no torch at planning time): what each stage imports,
and a defense module's INPUTS and, for one that is not built in, its literal PARAMS as a declaration."""

import ast
import importlib.util
from functools import cache
from pathlib import Path

import yaml

from clip_backdoor.__main__ import STAGES

SRC = Path(__file__).resolve().parents[1]
JSON_TYPES = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}


def module_file(dotted):
    """The source file of a module: this package's own under src/, any other found on sys.path."""
    if dotted.split(".")[0] == "clip_backdoor":
        base = SRC.joinpath(*dotted.split(".")[1:])
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
        return None
    try:
        spec = importlib.util.find_spec(dotted)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec and spec.origin else None


@cache
def module_literals(dotted, names=("PARAMS", "INPUTS")):
    """The module's literal top-level assignments of `names` ({} where absent), read without importing it."""
    path = module_file(dotted)
    if path is None:
        raise LookupError(f"no module {dotted!r}")
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in names:
                try:
                    found[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    return found


def module_inputs(dotted):
    return tuple(module_literals(dotted).get("INPUTS", ()))


def module_params_schema(dotted):
    """(declaration of a custom module's literal PARAMS {knob: default}, None) or (None, problem)."""
    try:
        params = module_literals(dotted).get("PARAMS")
    except LookupError as err:
        return None, str(err)
    if not isinstance(params, dict):
        return None, f"{dotted} defines no literal PARAMS dict"
    props = {
        key: {"type": JSON_TYPES.get(type(value), "string"), "default": value, "x-origin": "project"}
        for key, value in params.items()
    }
    return {"type": "object", "additionalProperties": False, "default": {}, "properties": props}, None


@cache
def direct_imports(path):
    """The package files a source file imports (anywhere in it, lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.split(".")[0] == "clip_backdoor" and module_file(name) is not None:
                found.add(module_file(name))
    return frozenset(found | package_inits(Path(path)))


def package_inits(path):
    """The __init__.py files Python runs before a package file: those of its enclosing packages."""
    if not path.is_relative_to(SRC):
        return set()
    return {parent / "__init__.py" for parent in path.parents if parent.is_relative_to(SRC)} - {path}


def imported_files(path, exclude=frozenset()):
    """`path` and every package file it imports, transitively, not descending into `exclude`."""
    seen, todo = set(), [Path(path)] if path is not None else []
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo += [p for p in direct_imports(current) if p not in exclude]
    return seen


@cache
def trigger_files():
    with open(SRC.parents[1] / "schemas" / "attacks" / "names.yaml") as f:
        names = yaml.safe_load(f)["enum"]
    return {name: SRC / "attacks" / f"{name}.py" for name in names}


def stage_files(stage, attacks=()):
    """The package files a stage runs: __main__ and the stage's module with what they import; a trigger
    module only for the attacks given (one name or several)."""
    triggers = frozenset(trigger_files().values())
    files = set()
    for root in (SRC / "__main__.py", module_file(STAGES[stage])):
        files |= imported_files(root, exclude=triggers)
    for attack in [attacks] if isinstance(attacks, str) else attacks or ():
        if attack in trigger_files():
            files |= imported_files(trigger_files()[attack])
    return files
