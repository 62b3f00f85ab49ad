"""The resolved config as a file: what a run uses, every default filled in."""

import yaml

from clip_backdoor.runtime.io import write_text

HEADER = (
    "# The resolved config of run {run}: its profile, the declared defaults (schemas/), --config values.\n"
    "# Written by `snakemake resolved_config`; the report lists its deviations from the papers.\n"
)


def write_resolved(path, config):
    write_text(
        path, HEADER.format(run=config["run"]) + yaml.safe_dump(dict(config), sort_keys=False, width=110)
    )
