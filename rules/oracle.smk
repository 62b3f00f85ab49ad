# Oracle rules (segmenter for oracle-based rectification).
# oracle.kind trained: a TinyUNet trained on the embedded world's instance masks (the oracle_train split).
# oracle.kind fastsam: no training; the segmenter file records the FastSAM weights path (an input here,
# so replacing the weights reruns what depends on the oracle) and its inference settings.


rule train_oracle:
    output:
        segmenter=DEFENSE_INPUTS["segmenter"],
        log=f"{RESULTS}/train_logs/oracle.json",
    input:
        unpack(oracle_inputs),
    params:
        py=PYTHON,
        data=DATA_DIR,
        p=lambda wildcards: as_json(oracle_params()),
        state=lambda wildcards, output: state_path(output.segmenter),
    conda:
        "../environment.yml"
    benchmark:
        f"{RESULTS}/benchmarks/train_oracle.tsv"
    log:
        f"logs/{RUN}/train_oracle.log",
    threads: job_threads("oracle")
    resources:
        **train_resources("oracle"),
    shell:
        "{params.py} train_oracle --threads {threads} --params {params.p} --data {params.data}"
        " --out {output.segmenter} --log {output.log} --state {params.state} 2> {log}"
