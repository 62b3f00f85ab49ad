rule defend:
    wildcard_constraints:
        # its metrics output shares the evaluate rule's pattern: only an enabled defense is fitted
        defense="|".join(map(re.escape, fitted_defenses())),
    output:
        state=defense_state("{dataset}", "{attack}", "{defense}", "{seed}"),
        log=defense_log("{dataset}", "{attack}", "{defense}", "{seed}"),
        metrics=f"{RESULTS}/metrics/{{dataset}}/{{attack}}/{{defense}}/seed{{seed}}.json",
    input:
        unpack(defend_inputs),
    params:
        py=PYTHON,
        data=lambda wildcards, input: os.path.dirname(input.data),
        extra=lambda wildcards, input: " ".join(
            f"--{key.replace('_', '-')} {input[key]}" for key in DEFENSE_INPUTS if key in input.keys()
        ),
        state=lambda wildcards, output: state_path(output.state),
        p=lambda wildcards: as_json(defend_params(wildcards.dataset, wildcards.defense, wildcards.attack, wildcards.seed)),
        e=lambda wildcards: as_json(
            evaluate_params(wildcards.dataset, wildcards.seed, wildcards.attack, wildcards.defense)
        ),
    conda:
        "../environment.yml"
    benchmark:
        f"{RESULTS}/benchmarks/defend/{{dataset}}_{{attack}}_{{defense}}_seed{{seed}}.tsv"
    log:
        f"logs/{RUN}/defend/{{dataset}}_{{attack}}_{{defense}}_seed{{seed}}.log",
    threads: job_threads("defend")
    resources:
        **train_resources("defend"),
    shell:
        "{params.py} defend --threads {threads} --params {params.p} --model {input.model} --data {params.data}"
        " {params.extra} --out {output.state} --log {output.log} --state {params.state}"
        " --evaluate {params.e} --trigger {input.trigger} --metrics {output.metrics} 2> {log}"
