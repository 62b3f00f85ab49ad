rule pretrain_clean_clip:
    output:
        model=f"{CKPT_DIR}/clean.pt",
        log=f"{RESULTS}/train_logs/clean.json",
    input:
        data=rules.prepare_data.output,
        src=sources("pretrain"),
    params:
        py=PYTHON,
        data=lambda wildcards, input: os.path.dirname(input.data[0]),
        p=lambda wildcards: as_json(pretrain_params()),
        state=lambda wildcards, output: state_path(output.model),
    conda:
        "../environment.yml"
    benchmark:
        f"{RESULTS}/benchmarks/pretrain_clean_clip.tsv"
    log:
        f"logs/{RUN}/pretrain_clean_clip.log",
    threads: job_threads("pretrain")
    resources:
        **train_resources("pretrain"),
    shell:
        "{params.py} pretrain --threads {threads} --params {params.p} --data {params.data}"
        " --out {output.model} --log {output.log} --state {params.state} 2> {log}"
