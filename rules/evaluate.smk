# The undefended and the never-poisoned models; a defended model is evaluated inside its defend job.
rule evaluate:
    output:
        f"{RESULTS}/metrics/{{dataset}}/{{attack}}/{{defense}}/seed{{seed}}.json",
    wildcard_constraints:
        defense=f"none|{NEVER_POISONED}",
    input:
        unpack(evaluate_inputs),
        src=evaluate_sources,
    params:
        py=PYTHON,
        data=lambda wildcards, input: os.path.dirname(input.data),
        trigger=lambda wildcards, input: f"--trigger {input.trigger}" if "trigger" in input.keys() else "",
        p=lambda wildcards: as_json(
            evaluate_params(wildcards.dataset, wildcards.seed, wildcards.attack, wildcards.defense)
        ),
    conda:
        "../environment.yml"
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}_{{attack}}_{{defense}}_seed{{seed}}.tsv"
    log:
        f"logs/{RUN}/evaluate/{{dataset}}_{{attack}}_{{defense}}_seed{{seed}}.log",
    threads: job_threads("evaluate")
    resources:
        **train_resources("evaluate"),
    shell:
        "{params.py} evaluate --threads {threads} --params {params.p} --model {input.model}"
        " --data {params.data} --train-log {input.train_log} {params.trigger}"
        " --out {output} 2> {log}"
