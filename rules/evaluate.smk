rule evaluate_clean:
    output:
        f"{RESULTS}/metrics/{{dataset}}/clean/none/seed{{seed}}.json",
    input:
        data=rules.prepare_data.output,
        model=rules.pretrain_clean_clip.output.model,
        train_log=rules.pretrain_clean_clip.output.log,
        src=sources("evaluate"),
    params:
        py=PYTHON,
        data=lambda wildcards, input: os.path.dirname(input.data[0]),
        p=lambda wildcards: as_json(evaluate_params(wildcards.dataset, wildcards.seed, "clean", "none")),
    conda:
        "../environment.yml"
    log:
        f"logs/{RUN}/evaluate/{{dataset}}_clean_none_seed{{seed}}.log",
    threads: config["threads"]
    resources:
        **train_resources("evaluate"),
    shell:
        "{params.py} evaluate --threads {threads} --params {params.p} --model {input.model}"
        " --data {params.data} --train-log {input.train_log} --out {output} 2> {log}"
