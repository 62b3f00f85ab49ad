# Every file of the embedded world's split folders (clip_backdoor.data.embedded: the splits and
# SPLIT_FILES), so that `snakemake all` notices a deleted one; the papers' kind writes world.json only.
EMBEDDED_SPLITS = ["pretrain", "poison_pool", "clean_pool", "oracle_train", "downstream_train", "downstream_test"]
EMBEDDED_SPLIT_FILES = ["images.npy", "instances.npy", "labels.npy", "captions.json", "classes.json", "SHA256SUMS"]


def prepared_split_files():
    if config["data"]["kind"] != "embedded":
        return []
    return [f"{DATA_DIR}/{split}/{name}" for split in EMBEDDED_SPLITS for name in EMBEDDED_SPLIT_FILES]


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
