import sys

from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, f"{workflow.basedir}/src")
from clip_backdoor.config.resolve import ConfigError, resolve  # noqa: E402


# A profile stands alone: `--configfile` replaces config.yaml instead of being merged over it.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


try:
    config.update(resolve(config))
except ConfigError as err:
    raise WorkflowError(str(err)) from None


include: "rules/common.smk"
include: "rules/config.smk"
include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/attack.smk"
include: "rules/oracle.smk"
include: "rules/defend.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/dvc.smk"


rule all:
    input:
        all_targets(),
    default_target: True
