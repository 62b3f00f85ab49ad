"""The config's one declaration and what reads it (torch-free: the Snakefile imports it).

Every knob is declared once, in `schemas/config.schema.yaml` and the method files it includes
(`schemas/attacks/`, `schemas/defenses/`, `schemas/trainers/`): default, type and range or choices, one line
of meaning, and `x-origin` (paper, reconstruction or project; `x-paper` where the default is not the paper's
value). Validation, the rules' params, the modules' defaults and the report's Deviations table read it.
Import from the submodules (resolve, schema, deviations): this file imports nothing, so that a module
reading a default does not depend on the validator.
"""
