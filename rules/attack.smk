rule make_trigger:
    output:
        f"{CKPT_DIR}/attacks/{{attack}}/trigger.pt",
    input:
        data=rules.prepare_data.output,
        # only the optimised patches need the clean CLIP; the other triggers run beside pretraining
        clean_model=lambda wildcards: rules.pretrain_clean_clip.output.model if trigger_needs_clean_model(wildcards.attack) else [],
        src=lambda wildcards: sources("make_trigger", wildcards.attack),
    params:
        py=PYTHON,
        data=lambda wildcards, input: os.path.dirname(input.data[0]),
        p=lambda wildcards: as_json(trigger_params(wildcards.attack)),
        clean_model=lambda wildcards, input: f"--clean-model {input.clean_model}" if input.clean_model else "",
    conda:
        "../environment.yml"
    benchmark:
        f"{RESULTS}/benchmarks/make_trigger/{{attack}}.tsv"
    log:
        f"logs/{RUN}/make_trigger/{{attack}}.log",
    threads: job_threads("trigger")
    resources:
        **train_resources("trigger"),
    shell:
        "{params.py} make_trigger --threads {threads} --params {params.p} --data {params.data}"
        " {params.clean_model} --out {output} 2> {log}"


rule poison_data:
    output:
        corpus=f"{RESULTS}/poisoned/{{attack}}/captions.json",
        index=f"{RESULTS}/poisoned/{{attack}}/poison_index.json",
    input:
        data=rules.prepare_data.output,
        trigger=rules.make_trigger.output,
        clean_model=lambda wildcards: rules.pretrain_clean_clip.output.model if attack_config(wildcards.attack).get("harden") else [],
        src=lambda wildcards: sources("poison_data", wildcards.attack),
    params:
        py=PYTHON,
        data=lambda wildcards, input: os.path.dirname(input.data[0]),
        out=lambda wildcards, output: os.path.dirname(output.index),
        p=lambda wildcards: as_json(poison_params(wildcards.attack)),
        clean_model=lambda wildcards, input: f"--clean-model {input.clean_model}" if input.clean_model else "",
    conda:
        "../environment.yml"
    benchmark:
        f"{RESULTS}/benchmarks/poison_data/{{attack}}.tsv"
    log:
        f"logs/{RUN}/poison_data/{{attack}}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    shell:
        "{params.py} poison_data --params {params.p} --data {params.data} --trigger {input.trigger}"
        " {params.clean_model} --out {params.out} 2> {log}"


rule poison_finetune:
    output:
        model=f"{CKPT_DIR}/attacks/{{attack}}/model.pt",
        log=f"{RESULTS}/train_logs/attack_{{attack}}.json",
    input:
        clean_model=rules.pretrain_clean_clip.output.model,
        corpus=rules.poison_data.output.corpus,
        src=sources("poison_finetune"),
    params:
        py=PYTHON,
        corpus=lambda wildcards, input: os.path.dirname(input.corpus),
        state=lambda wildcards, output: state_path(output.model),
        p=lambda wildcards: as_json(finetune_params(wildcards.attack)),
    conda:
        "../environment.yml"
    benchmark:
        f"{RESULTS}/benchmarks/poison_finetune/{{attack}}.tsv"
    log:
        f"logs/{RUN}/poison_finetune/{{attack}}.log",
    threads: job_threads("finetune")
    resources:
        **train_resources("finetune"),
    shell:
        "{params.py} poison_finetune --threads {threads} --params {params.p} --clean-model {input.clean_model}"
        " --corpus {params.corpus} --out {output.model} --log {output.log} --state {params.state} 2> {log}"


rule asr_gate:
    output:
        f"{RESULTS}/gate/{{attack}}.json",
    input:
        metrics=lambda wildcards: expand(
            f"{RESULTS}/metrics/{{dataset}}/{wildcards.attack}/none/seed{{seed}}.json",
            dataset=dataset_names(),
            seed=config["seeds"],
        ),
        src=sources("asr_gate"),
    params:
        py=PYTHON,
        p=lambda wildcards: as_json({"floor": config["attacks"]["gate_floor"]}),
    conda:
        "../environment.yml"
    log:
        f"logs/{RUN}/asr_gate/{{attack}}.log",
    localrule: True
    shell:
        "{params.py} asr_gate --params {params.p} --metrics {input.metrics} --out {output} 2> {log}"
