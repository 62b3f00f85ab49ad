# DVC pointers to a run's products (config key `dvc`). The pointers are outputs; `dvc add` writes them
# and puts the files in the DVC cache. Users commit the pointers themselves and share the files with
# `dvc push`; a fresh clone gets them back with `dvc pull` (README, "Sharing a run with DVC").


rule track_checkpoints:
    output:
        f"checkpoints/{RUN}.dvc",
    input:
        final_checkpoints(),
    params:
        rule="track_checkpoints",
        targets=lambda wildcards, output: pointed_dirs(output),
    log:
        f"logs/{RUN}/track_checkpoints.log",
    conda:
        "../environment.yml"
    localrule: True
    shell:
        DVC_ADD


# The train logs and poisoned corpora live in results/<run>: without them a pulled run would retrain.
rule track_results:
    output:
        results=f"results/{RUN}.dvc",
        report=f"report/{RUN}.dvc",
    input:
        run_targets(),
        # one `dvc add` at a time: DVC locks the repository
        [f"checkpoints/{RUN}.dvc"] if config["dvc"]["track_checkpoints"] else [],
    params:
        rule="track_results",
        targets=lambda wildcards, output: pointed_dirs(output),
    log:
        f"logs/{RUN}/track_results.log",
    conda:
        "../environment.yml"
    localrule: True
    shell:
        DVC_ADD
