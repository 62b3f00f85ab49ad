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
        train_logs=[rules.pretrain_clean_clip.output.log],
        triggers=expand(rules.make_trigger.output, attack=attack_names()),
        data=rules.prepare_data.output,
        src=sources("report"),
    params:
        py=PYTHON,
        out_dir=lambda wildcards, output: os.path.dirname(output.html),
        triggers=lambda wildcards, input: f"--triggers {' '.join(input.triggers)}" if input.triggers else "",
        data=lambda wildcards, input: os.path.dirname(input.data[0]),
        p=lambda wildcards: as_json({"run": RUN, "config": report_config(), "style": config["report"]}),
    conda:
        "../environment.yml"
    log:
        f"logs/{RUN}/report.log",
    localrule: True
    shell:
        "{params.py} report --params {params.p} --summary {input.summary}"
        " --train-logs {input.train_logs} {params.triggers} --data {params.data} --out-dir {params.out_dir} 2> {log}"
