"""The config's one declaration and what reads it (torch-free: the Snakefile imports it).

Every knob is declared once, in `schemas/config.schema.yaml` and the method files it includes
(`schemas/attacks/`, `schemas/defenses/`, `schemas/trainers/`): default, type and range or choices, one line
of meaning, and `x-origin` (paper, reconstruction or project; `x-paper` where the default is not the paper's
value). Validation, the rules' params, the modules' defaults and the report's Deviations table read it.
"""

from clip_backdoor.config.deviations import deviations
from clip_backdoor.config.resolve import ConfigError, resolve
from clip_backdoor.config.schema import declared_defaults, load_schema

__all__ = ["ConfigError", "declared_defaults", "deviations", "load_schema", "resolve"]
