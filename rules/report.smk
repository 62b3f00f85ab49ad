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
        src=sources("report"),
    params:
        py=PYTHON,
        out_dir=lambda wildcards, output: os.path.dirname(output.html),
        p=lambda wildcards: as_json({"run": RUN, "config": config, "style": config["report"]}),
    conda:
        "../environment.yml"
    log:
        f"logs/{RUN}/report.log",
    localrule: True
    shell:
        "{params.py} report --params {params.p} --summary {input.summary}"
        " --train-logs {input.train_logs} --out-dir {params.out_dir} 2> {log}"
