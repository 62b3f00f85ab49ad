rule pretrain_clean_clip:
    output:
        model=f"{CKPT_DIR}/clean.pt",
        log=f"{RESULTS}/train_logs/clean.json",
    input:
        data=rules.prepare_data.output,
        src=sources("pretrain"),
    params:
        p=lambda wildcards: as_json(pretrain_params()),
        state=f"{CKPT_DIR}/state/clean.state",
    log:
        f"logs/{RUN}/pretrain_clean_clip.log",
    threads: config["threads"]
    resources:
        **train_resources("pretrain"),
    shell:
        "{PYTHON} pretrain --threads {threads} --params {params.p} --data {DATA_DIR}"
        " --out {output.model} --log {output.log} --state {params.state} 2> {log}"
