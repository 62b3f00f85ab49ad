rule prepare_data:
    output:
        f"{DATA_DIR}/world.json",
    input:
        sources("prepare_data"),
    params:
        p=lambda wildcards: as_json(data_params()),
    log:
        f"logs/{RUN}/prepare_data.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{PYTHON} prepare_data --params {params.p} --out {DATA_DIR} 2> {log}"
