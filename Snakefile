from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")


include: "rules/common.smk"
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
