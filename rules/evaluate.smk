rule evaluate_clean:
    output:
        f"{RESULTS}/metrics/{{dataset}}/clean/none/seed{{seed}}.json",
    input:
        model=rules.pretrain_clean_clip.output.model,
        train_log=rules.pretrain_clean_clip.output.log,
        src=sources("evaluate"),
    params:
        p=lambda wildcards: as_json(evaluate_params(wildcards.dataset, wildcards.seed, "clean", "none")),
    log:
        f"logs/{RUN}/evaluate/{{dataset}}_clean_none_seed{{seed}}.log",
    threads: config["threads"]
    resources:
        **train_resources("evaluate"),
    shell:
        "{PYTHON} evaluate --threads {threads} --params {params.p} --model {input.model}"
        " --data {DATA_DIR} --train-log {input.train_log} --out {output} 2> {log}"
