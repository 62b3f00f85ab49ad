rule prepare_data:
    output:
        f"{DATA_DIR}/world.json",
        prepared_split_files(),
    input:
        sources("prepare_data"),
        checked_paper_inputs,
    params:
        py=PYTHON,
        out=lambda wildcards, output: os.path.dirname(output[0]),
        p=lambda wildcards: as_json(data_params()),
    conda:
        "../environment.yml"
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data.tsv"
    log:
        f"logs/{RUN}/prepare_data.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{params.py} prepare_data --params {params.p} --out {params.out} 2> {log}"
