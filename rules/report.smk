rule summarize:
    output:
        f"{RESULTS}/summary.csv",
    input:
        metrics=metric_files(),
        src=sources("summarize"),
    params:
        py=PYTHON,
    conda:
        "../environment.yml"
    log:
        f"logs/{RUN}/summarize.log",
    localrule: True
    shell:
        "{params.py} summarize --metrics {input.metrics} --out {output} 2> {log}"


rule report:
    output:
        html=f"{REPORT_DIR}/index.html",
    input:
        summary=rules.summarize.output,
        train_logs=report_train_logs(),
        triggers=expand(rules.make_trigger.output, attack=attack_names()),
        states=report_states(),
        models=report_models(),
        poison_index=expand(f"{RESULTS}/poisoned/{{attack}}/poison_index.json", attack=attack_names()),
        data=rules.prepare_data.output,
        captions="report/templates/captions.yaml",
        src=report_sources(),
    params:
        py=PYTHON,
        out_dir=lambda wildcards, output: os.path.dirname(output.html),
        files=lambda wildcards, input: " ".join(
            cli_list(key.replace("_", "-"), input[key]) for key in ("triggers", "states", "models", "poison_index")
        ),
        data=lambda wildcards, input: os.path.dirname(input.data[0]),
        p=lambda wildcards: as_json({"run": RUN, "config": report_config(), "style": config["report"]}),
    conda:
        "../environment.yml"
    log:
        f"logs/{RUN}/report.log",
    localrule: True
    shell:
        "{params.py} report --params {params.p} --summary {input.summary} --train-logs {input.train_logs}"
        " {params.files} --data {params.data} --captions {input.captions} --out-dir {params.out_dir} 2> {log}"
