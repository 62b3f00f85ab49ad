import json
import os
import shlex
import sys
from pathlib import Path

RUN = config["run"]
SRC = Path(workflow.basedir) / "src" / "clip_backdoor"
# Jobs run this workflow's own sources with the interpreter that runs Snakemake.
os.environ.update(
    PYTHONPATH=str(SRC.parent),
    PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
)
PYTHON = "python -m clip_backdoor"
DATA_DIR = f"data/{RUN}"
CKPT_DIR = f"checkpoints/{RUN}"
RESULTS = f"results/{RUN}"
REPORT_DIR = f"report/{RUN}"

# Source modules each stage really runs: editing one reruns that stage's jobs and what follows.
COMMON_SOURCES = ["__main__.py", "runtime/io.py", "runtime/seeding.py", "runtime/device.py", "runtime/usage.py"]
STAGE_SOURCES = {
    "prepare_data": ["data/prepare.py", "data/embedded.py", "data/world.py", "data/paper.py"],
    "pretrain": ["pretrain.py", "training.py", "models/factory.py", "models/configs/"
                 + config["model"]["arch"].get("config", "tiny-convvit") + ".json", "data/embedded.py"],
    "evaluate": ["evaluation/evaluate.py", "evaluation/metrics.py", "models/factory.py", "models/zeroshot.py",
                 "data/downstream.py", "data/embedded.py", "data/paper.py"],
    "summarize": ["report/summarize.py"],
    "report": ["report/build.py", "report/figures.py", "report/tables.py"],
}


def sources(stage):
    """The package files a stage runs, as workflow inputs."""
    return [str(SRC / path) for path in COMMON_SOURCES + STAGE_SOURCES[stage]]


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
    return {"seed": int(seed), "dataset": dataset_config(dataset), "templates": ev["templates"],
            "batch_size": ev["batch_size"], "attack": attack, "defense": defense}


def metric_files():
    return expand(f"{RESULTS}/metrics/{{dataset}}/clean/none/seed{{seed}}.json",
                  dataset=dataset_names(), seed=config["seeds"])


def all_targets():
    return [f"{RESULTS}/summary.csv", f"{REPORT_DIR}/index.html"]


def train_resources(kind):
    res = config["resources"][kind]
    return {"gpu": 1, "mem_mb": res["mem_mb"], "runtime": res["runtime"]}
