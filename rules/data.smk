def checked_paper_inputs(wildcards):
    """No files: with data.kind paper, the CC3M source, downstream folders and pretrained weights are checked
    while planning (data/paper_checks.py), so a wrong path stops the run before any job."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("paper_checks", SRC / "data" / "paper_checks.py")
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    problems = checks.check_paper_inputs(config)
    if problems:
        raise WorkflowError("the papers' inputs are not usable:\n  " + "\n  ".join(problems))
    return []


rule prepare_data:
    output:
        f"{DATA_DIR}/world.json",
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
