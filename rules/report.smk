rule summarize:
    output:
        f"{RESULTS}/summary.csv",
    input:
        metrics=metric_files(),
        src=sources("summarize"),
    log:
        f"logs/{RUN}/summarize.log",
    localrule: True
    shell:
        "{PYTHON} summarize --metrics {input.metrics} --out {output} 2> {log}"


rule report:
    output:
        html=f"{REPORT_DIR}/index.html",
    input:
        summary=rules.summarize.output,
        train_logs=[rules.pretrain_clean_clip.output.log],
        src=sources("report"),
    params:
        p=lambda wildcards: as_json({"run": RUN, "config": config, "style": config["report"]}),
    log:
        f"logs/{RUN}/report.log",
    localrule: True
    shell:
        "{PYTHON} report --params {params.p} --summary {input.summary}"
        " --train-logs {input.train_logs} --out-dir {REPORT_DIR} 2> {log}"
