import functools
import json
import os
import re
import shlex
import sys
from pathlib import Path

from clip_backdoor.config.ablations import ablation_variants, variant_block
from clip_backdoor.config.checks import image_size as config_image_size
from clip_backdoor.config.modules import imported_files, module_file, module_inputs, module_literals, stage_files

RUN = config["run"]
SRC = Path(os.path.relpath(Path(workflow.basedir) / "src" / "clip_backdoor"))
# Jobs run this workflow's own sources with the interpreter that runs Snakemake.
os.environ.update(
    PYTHONPATH=str(SRC.parent.resolve()),
    PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
)
PYTHON = "python -m clip_backdoor"


wildcard_constraints:
    dataset=r"[A-Za-z0-9_\-]+",
    attack=r"[A-Za-z0-9_\-]+",
    defense=r"[A-Za-z0-9_\-]+",
    seed=r"\d+",


DATA_DIR = f"data/{RUN}"
CKPT_DIR = f"checkpoints/{RUN}"
RESULTS = f"results/{RUN}"
REPORT_DIR = f"report/{RUN}"
# Resume state of training jobs: not a declared output, and outside checkpoints/<run>, which DVC tracks.
STATE_DIR = f"state/{RUN}"

# Each stage's sources are the package files it really imports (read with `ast`, transitively, from
# __main__ and the stage's module): editing one reruns exactly the jobs that run it and what follows.
# A trigger module counts only for its own attack's jobs; the stage's data files are added by name.
STAGE_DATA = {
    "pretrain": [f"models/configs/{config['model']['arch'].get('config', 'tiny-convvit')}.json"],
    "report": ["report/published.yaml"],
}


def sources(stage, attacks=()):
    """The package files a stage runs (for the attacks given: one name or several), as workflow inputs."""
    attacks = (attacks,) if isinstance(attacks, str) else tuple(attacks)
    return list(stage_sources(stage, tuple(sorted({attack_base(a) for a in attacks}))))


@functools.cache
def stage_sources(stage, attacks):
    files = {as_source(path) for path in stage_files(stage, list(attacks))}
    return tuple(sorted(files | {str(SRC / path) for path in STAGE_DATA.get(stage, [])}))


@functools.cache
def as_source(path):
    """A source file as a workflow input: under this workflow's src/ relative to it, others as found."""
    package = SRC.resolve()
    path = Path(path)
    return str(SRC / path.relative_to(package)) if path.is_relative_to(package) else os.path.relpath(path)


def as_json(obj):
    """A params value → one shell-quoted JSON argument."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


def dataset_names():
    return [d["name"] for d in config["evaluation"]["datasets"]]


def dataset_config(name):
    return next(d for d in config["evaluation"]["datasets"] if d["name"] == name)


def data_params():
    return {"kind": config["data"]["kind"], config["data"]["kind"]: config["data"][config["data"]["kind"]]}


def pretrain_params():
    pre = config["pretrain"]
    return {"seed": pre["seed"], "train": pre["train"], "arch": config["model"]["arch"],
            "hp": {**pre["hp"], "seed": pre["seed"]}}


def evaluate_params(dataset, seed, attack, defense):
    ev = config["evaluation"]
    params = {"seed": int(seed), "dataset": dataset_config(dataset), "templates": ev["templates"],
              "batch_size": ev["batch_size"], "attack": attack_base(attack), "defense": defense,
              "splits": ["test", "val"]}
    if attack != "clean":
        params["attack_seed"] = attack_seed(attack)
    if defense not in ("none", NEVER_POISONED):
        params["defense_module"] = defense_module(defense)
    return params


def attack_names():
    """The attack instances the DAG holds: each enabled attack once per poisoning seed (`attacks.seeds`); the
    first seed keeps the attack's plain name, so a one-seed run's paths do not depend on the seed."""
    seeds = config["attacks"]["seeds"]
    return [a if k == seeds[0] else f"{a}_seed{k}" for a in config["attacks"]["enabled"] for k in seeds]


def attack_base(instance):
    """badnet_seed1 → badnet."""
    match = re.fullmatch(r"(.+)_seed(\d+)", instance)
    return match.group(1) if match else instance


def attack_seed(instance):
    match = re.fullmatch(r"(.+)_seed(\d+)", instance)
    return int(match.group(2)) if match else config["attacks"]["seeds"][0]


def trigger_needs_clean_model(attack):
    """clip_backdoor.attacks.artefact.NEEDS_CLEAN_MODEL, read without importing torch."""
    literals = module_literals("clip_backdoor.attacks.artefact", ("NEEDS_CLEAN_MODEL",))
    return attack_base(attack) in literals["NEEDS_CLEAN_MODEL"]


def attack_config(attack):
    return config["attacks"]["methods"].get(attack_base(attack), {})


def trigger_params(attack):
    return {"attack": attack_base(attack), "seed": attack_seed(attack), "target": config["attacks"]["target"],
            "image_size": image_size(), "trigger": attack_config(attack).get("trigger", {}),
            "artefact": attack_config(attack).get("artefact", {}),
            "caption_templates": config["attacks"]["caption_templates"]}


def poison_params(attack):
    params = {"attack": attack_base(attack), "seed": attack_seed(attack), "target": config["attacks"]["target"],
              "n_poison": attack_config(attack).get("n_poison", config["attacks"]["n_poison"]),
              "caption_templates": config["attacks"]["caption_templates"]}
    if attack_config(attack).get("harden"):
        params["harden"] = attack_config(attack)["harden"]
    if config["data"]["kind"] != "embedded":
        # the papers' corpus is resized to the model's resolution when poisoned; the embedded pool is
        # used at its own size (and its params stay as they were, so its jobs are not invalidated)
        params["image_size"] = image_size()
    return params


def finetune_params(attack):
    return {"attack": attack_base(attack), "seed": attack_seed(attack),
            "hp": {**config["attacks"]["finetune"], **attack_config(attack).get("finetune", {})}}


def image_size():
    return config_image_size(config)


# The never-poisoned clean CLIP evaluated under an attack's trigger: how low a defense can be expected to go.
NEVER_POISONED = "never_poisoned"


def evaluate_inputs(wildcards):
    """The model (and trigger record) an evaluation job reads."""
    inputs = {"data": f"{DATA_DIR}/world.json"}
    clean = {"model": f"{CKPT_DIR}/clean.pt", "train_log": f"{RESULTS}/train_logs/clean.json"}
    if wildcards.attack == "clean":
        return {**inputs, **clean}
    inputs.update(model=f"{CKPT_DIR}/attacks/{wildcards.attack}/model.pt",
                  train_log=f"{RESULTS}/train_logs/attack_{wildcards.attack}.json",
                  trigger=f"{CKPT_DIR}/attacks/{wildcards.attack}/trigger.pt")
    if wildcards.defense == NEVER_POISONED:
        inputs.update(clean)
    return inputs


def evaluate_sources(wildcards):
    return sources("evaluate", wildcards.attack)


def metric_files():
    rows = ["none", NEVER_POISONED, *fitted_defenses()]
    combos = [("clean", "none")] + [(a, d) for a in attack_names() for d in rows]
    return [f"{RESULTS}/metrics/{d}/{a}/{df}/seed{s}.json"
            for d in dataset_names() for a, df in combos for s in config["seeds"]]


def run_targets():
    """What a run produces: the summary, the report and one ASR gate per attack."""
    gates = expand(f"{RESULTS}/gate/{{attack}}.json", attack=attack_names())
    return [f"{RESULTS}/config.resolved.yaml", f"{RESULTS}/summary.csv", f"{REPORT_DIR}/index.html", *gates]


def all_targets():
    """The run's targets, plus the prepared data files, so that `snakemake all` notices a deleted one."""
    return run_targets() + dvc_pointers() + list(rules.prepare_data.output)


def state_path(checkpoint):
    """The resume state of the job that writes `checkpoint` (checkpoints/<run>/X.pt → state/<run>/X.state).

    Rules pass it as a params function of `output`, so Snakemake counts it as derived from the output
    and a move of the state directory does not invalidate finished jobs."""
    rel = os.path.relpath(checkpoint, CKPT_DIR)
    return os.path.join(STATE_DIR, os.path.splitext(rel)[0] + ".state")


def final_checkpoints():
    """The final checkpoints of the run: the clean model, per attack its trigger record and model, the
    defense states and the oracle's segmenter."""
    attacks = [f"{CKPT_DIR}/attacks/{a}/{name}.pt" for a in attack_names() for name in ("trigger", "model")]
    defenses = [defense_state(d, a, df, s) for d in dataset_names() for a in attack_names()
                for df in fitted_defenses() for s in config["seeds"]]  # fmt: skip
    # a trained segmenter lives in checkpoints/<run>/oracle; FastSAM's file is the user's own weights path
    oracle = [DEFENSE_INPUTS["segmenter"]] if any("segmenter" in defense_inputs(df) for df in defense_names()) else []
    return [f"{CKPT_DIR}/clean.pt", *attacks, *defenses, *oracle]


def dvc_pointers():
    """The DVC pointers the workflow's target asks for (config key `dvc`): checkpoints/<run>.dvc, and
    results/<run>.dvc plus report/<run>.dvc."""
    pointers = []
    if config["dvc"]["track_checkpoints"]:
        pointers.append(f"checkpoints/{RUN}.dvc")
    if config["dvc"]["track_results"]:
        pointers += [f"results/{RUN}.dvc", f"report/{RUN}.dvc"]
    return pointers


def pointed_dirs(pointers):
    """The directories DVC pointers <dir>.dvc track, as one shell argument list."""
    return " ".join(os.path.splitext(pointer)[0] for pointer in pointers)


# Shell command of the DVC rules: `dvc add` on {params.targets} (each pointer's directory), or a clear
# message when there is no DVC repository (a download of the sources rather than a clone, or a copy).
DVC_ADD = (
    "if ! dvc root > /dev/null 2>&1; then"
    " echo '{params.rule}: cannot track {params.targets} with DVC: no DVC repository here (clone the"
    " repository, or run git init && dvc init), or set dvc.{params.rule}: false in the config' >&2; exit 1; fi;"
    " dvc add --quiet {params.targets} > {log} 2>&1"
)


def job_threads(kind):
    """Threads of one job of a resource kind: small jobs run one thread each, several side by side."""
    return config["resources"][kind].get("threads", config["threads"])


def train_resources(kind):
    res = config["resources"][kind]
    return {"gpu": 1, "mem_mb": res["mem_mb"], "runtime": res["runtime"]}


def report_config():
    """The config the report shows: all of it but the DVC switches, which do not change the report."""
    return {key: value for key, value in config.items() if key != "dvc"}


# ---- defenses ---------------------------------------------------------------------------------------
# A defense is a module with an optional literal INPUTS, read with `ast` without importing the module (which
# would import torch into every Snakemake start); its hyperparameters are in the resolved config.
DEFENSE_INPUTS = {
    "clean_model": f"{CKPT_DIR}/clean.pt",
    "segmenter": f"{CKPT_DIR}/oracle/segmenter.pt",
    "corpus": f"{RESULTS}/poisoned/{{attack}}/captions.json",
}


def defense_names():
    return list(config["defenses"]["enabled"])


ABLATIONS = {variant: (defense, knob) for variant, defense, knob in ablation_variants(config)}


def fitted_defenses():
    """Every defense the run fits: the enabled ones and their ablation variants (`defenses.ablations`)."""
    return defense_names() + list(ABLATIONS)


def defense_config(defense):
    if defense in ABLATIONS:
        return variant_block(config, defense)
    return config["defenses"]["methods"].get(defense, {})


def defense_module(defense):
    name = ABLATIONS[defense][0] if defense in ABLATIONS else defense
    return defense_config(defense).get("module") or f"clip_backdoor.defenses.{name}"


def defense_inputs(defense):
    try:
        return module_inputs(defense_module(defense))
    except LookupError as err:
        raise WorkflowError(f"defenses.methods.{defense}.module: {err}") from None


@functools.cache
def defense_sources(stage, defense):
    """The stage's own sources plus the defense module and what it imports from the package."""
    files = set(sources(stage)) | {as_source(p) for p in imported_files(module_file(defense_module(defense)))}
    return sorted(files)


def defense_params(defense, attack):
    """The defense's resolved hyperparameters for one attack: `params`, then the paper's `per_attack` values."""
    block = defense_config(defense)
    return {**block["params"], **block["per_attack"].get(attack, {})}


def defend_params(dataset, defense, attack, seed):
    """A defense is fitted per downstream dataset (its shots and class names); it is told neither the attack
    nor its target."""
    dataset = {key: value for key, value in dataset_config(dataset).items() if key != "target"}
    return {"defense": defense, "module": defense_module(defense), "params": defense_params(defense, attack),
            "seed": int(seed), "shots": config["defenses"]["shots"], "dataset": dataset,
            "templates": config["evaluation"]["templates"]}


def defend_inputs(wildcards):
    extra = defense_inputs(wildcards.defense)
    unknown = sorted(set(extra) - set(DEFENSE_INPUTS))
    if unknown:
        raise WorkflowError(f"defense {wildcards.defense!r}: unknown INPUTS {unknown} (known: {sorted(DEFENSE_INPUTS)})")
    # the gate: a defense against an attack that never took is meaningless, so it waits for the gate to pass
    inputs = {"model": f"{CKPT_DIR}/attacks/{wildcards.attack}/model.pt", "data": f"{DATA_DIR}/world.json",
              "gate": f"{RESULTS}/gate/{wildcards.attack}.json",
              "trigger": f"{CKPT_DIR}/attacks/{wildcards.attack}/trigger.pt",
              "src": sorted(set(defense_sources("defend", wildcards.defense)) | set(sources("evaluate", wildcards.attack)))}
    inputs.update({key: DEFENSE_INPUTS[key].format(attack=wildcards.attack) for key in extra})
    return inputs


def defense_state(dataset, attack, defense, seed):
    return f"{CKPT_DIR}/defenses/{dataset}/{attack}/{defense}/seed{seed}.pt"


def defense_log(dataset, attack, defense, seed):
    return f"{RESULTS}/train_logs/defenses/{dataset}/{attack}/{defense}/seed{seed}.json"


# ---- report ------------------------------------------------------------------------------------------
def report_sources():
    """The report stage's modules, its published numbers and the figure captions."""
    return sources("report", attack_names()) + ["report/templates/captions.yaml"]


def report_defense_runs():
    """(dataset, attack, defense, seed) of every defended evaluation the summary holds."""
    runs = []
    for path in metric_files():
        dataset, attack, defense, seed = Path(path).parts[-4:]
        if defense not in ("none", NEVER_POISONED):
            runs.append((dataset, attack, defense, int(Path(seed).stem.removeprefix("seed"))))
    return runs


def report_train_logs():
    """Training logs the report plots: pretraining, each attack's fine-tuning, every defense fit."""
    attacks = [f"{RESULTS}/train_logs/attack_{a}.json" for a in attack_names()]
    return [f"{RESULTS}/train_logs/clean.json", *attacks, *[defense_log(*run) for run in report_defense_runs()]]


def report_states():
    """Defense states whose figures the report draws (`report.state_figures`): first dataset and seed."""
    first = (dataset_names()[0], int(config["seeds"][0]))
    wanted = set(config["report"].get("state_figures", []))
    return [defense_state(d, a, df, s) for d, a, df, s in report_defense_runs() if df in wanted and (d, s) == first]


def report_models():
    """Poisoned models the CBPT figure measures the inverted trigger on (only when a state figure needs one)."""
    attacks = sorted({Path(p).parts[-3] for p in report_states()})
    return [f"{CKPT_DIR}/attacks/{a}/model.pt" for a in attacks]


# ---- oracle and report ------------------------------------------------------------------------------
def oracle_params():
    """The settings of the configured kind only (editing the other kind's block reruns nothing)."""
    block = config["oracle"]
    return {"kind": block["kind"], "seed": block["seed"], block["kind"]: block[block["kind"]]}


def oracle_inputs(wildcards):
    if config["oracle"]["kind"] == "fastsam":
        return {"weights": config["oracle"]["fastsam"]["weights"], "src": sources("train_oracle")}
    return {"data": rules.prepare_data.output[0], "src": sources("train_oracle")}


def cli_list(flag, paths):
    return f"--{flag} {' '.join(paths)}" if paths else ""


# ---- papers' inputs -----------------------------------------------------------------------------
def checked_paper_inputs(wildcards):
    """No files: with data.kind paper, the CC3M source, downstream folders and pretrained weights are checked
    while planning (data/paper_checks.py), so a wrong path stops the run before any job."""
    from clip_backdoor.data.paper_checks import check_paper_inputs

    problems = check_paper_inputs(config)
    if problems:
        raise WorkflowError("the papers' inputs are not usable:\n  " + "\n  ".join(problems))
    return []


# ---- prepared data ----------------------------------------------------------------------------
# Every file of the embedded world's split folders (clip_backdoor.data.embedded: the splits and
# SPLIT_FILES), so that `snakemake all` notices a deleted one; the papers' kind writes world.json only.
EMBEDDED_SPLITS = ["pretrain", "poison_pool", "clean_pool", "oracle_train", "downstream_train", "downstream_test",
                   "downstream_val"]
EMBEDDED_SPLIT_FILES = ["images.npy", "instances.npy", "labels.npy", "captions.json", "classes.json", "SHA256SUMS"]


def prepared_split_files():
    if config["data"]["kind"] != "embedded":
        return []
    return [f"{DATA_DIR}/{split}/{name}" for split in EMBEDDED_SPLITS for name in EMBEDDED_SPLIT_FILES]
