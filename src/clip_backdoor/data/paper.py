"""Adapters for the papers' datasets (filled in by the attack-suite work)."""


def prepare(out, params):
    raise NotImplementedError("the papers' data preparation is not implemented yet")


def load_downstream(dataset, split):
    raise NotImplementedError(f"dataset kind {dataset['kind']!r} is not implemented yet")
