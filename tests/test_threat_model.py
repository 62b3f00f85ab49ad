"""No privileged knowledge: every enabled defense's `fit`, run through the `defend` CLI in a fabricated run
folder, under a Python audit hook on "open". It may open the files the defend rule declares for it (the
model, the data folder's few-shot and clean-pool splits, its INPUTS, and its own resume state) and the
Python environment, nothing else: not the poison index, not a trigger record, not the test split."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from clip_backdoor.config.modules import module_inputs
from clip_backdoor.config.resolve import resolve
from clip_backdoor.data.embedded import SPLIT_FILES, write_split
from clip_backdoor.models.factory import build_model, save_model
from clip_backdoor.oracle.segmenter import TinyUNet
from clip_backdoor.runtime.io import save_checkpoint, write_json

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
RUN, ATTACK, DATASET = "audit", "badnet", "shapes"
CLASSES = ["circle", "square", "star"]
DATA, CKPT, RESULTS = f"data/{RUN}", f"checkpoints/{RUN}", f"results/{RUN}"
MICRO = {"kind": "embedded", "config": "micro-convvit"}
# the knobs that set a defense's cost, wherever a defense has them
SMALL = {"epochs": 1, "steps": 3, "inv_steps": 2, "key_steps": 2, "probes": 8, "pool_size": 16,
         "batch_size": 8, "inv_batch": 8, "warmup_steps": 1, "clean_per_label": 4, "anchor_pairs": 8,
         "signature_transplants": 8, "batch": 8, "label_captions": 2}  # fmt: skip

# Runs in one child process: it imports the package once, then forks a process per job (each a fresh copy
# of that state, so no defense sees another's caches), where the hook records every path opened while the
# defense's fit runs, with the package frames that opened it. A job's `patch` may rewrite the module.
DRIVER = """
import json, os, sys, traceback
from types import SimpleNamespace
from clip_backdoor.__main__ import main
from clip_backdoor.defenses import defend
OPENED, ACTIVE, load = [], [False], defend.load_defense

def hook(event, args):
    if event != "open" or not ACTIVE[0] or isinstance(args[0], int):
        return
    ACTIVE[0] = False  # no recursion through anything the hook itself does
    stack = traceback.StackSummary.extract(traceback.walk_stack(sys._getframe(1)), lookup_lines=False)
    where = [f"{f.filename}:{f.lineno} {f.name}" for f in stack if "/clip_backdoor/" in f.filename]
    own = [w for w in where[2:] if "/defenses/" in w and "/defend.py" not in w]  # the defense's frames
    path = os.path.abspath(os.fsdecode(args[0]))
    OPENED.append({"path": path, "mode": str(args[1]), "from": where[:2] + own[:2]})
    ACTIVE[0] = True

def audited(job):
    def load_audited(name, module=None):
        mod = load(name, module)
        exec(job["patch"], {"mod": mod})
        def fit(ctx, params):
            ACTIVE[0] = True
            try:
                return mod.fit(ctx, params)
            finally:
                ACTIVE[0] = False
        return SimpleNamespace(fit=fit, classifier=mod.classifier)
    return load_audited

for job in json.loads(sys.argv[1]):
    pid = os.fork()
    if pid == 0:
        try:
            sys.addaudithook(hook)
            defend.load_defense = audited(job)
            main(job["argv"])
            result = {"opened": OPENED}
        except BaseException:
            result = {"error": traceback.format_exc()}
        with open(job["result"], "w") as f:
            json.dump(result, f)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def declared_defense_inputs():
    """rules/common.smk's DEFENSE_INPUTS, evaluated for this run's folders."""
    text = (REPO / "rules/common.smk").read_text()
    block = re.search(r"^DEFENSE_INPUTS = \{.*?^\}", text, re.M | re.S).group(0)
    namespace = {"CKPT_DIR": CKPT, "RESULTS": RESULTS}
    exec(compile(ast.parse(block), "common.smk", "exec"), namespace)
    return {key: value.format(attack=ATTACK) for key, value in namespace["DEFENSE_INPUTS"].items()}


def random_split(directory, n, seed):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    captions = [f"a photo of a {CLASSES[y]}." for y in labels]
    write_split(directory, images, np.zeros((n, 32, 32), np.uint8), labels, captions, CLASSES)


def fabricate(root):
    """A run folder as the workflow leaves it before `defend`: data, models, trigger, poisoned corpus."""
    for seed, split in enumerate(["downstream_train", "downstream_test", "clean_pool", "poison_pool"]):
        random_split(root / DATA / split, 24, seed)
    write_json(root / DATA / "world.json", {"params": {}, "splits": {}})
    inputs, attack = declared_defense_inputs(), root / CKPT / "attacks" / ATTACK
    torch.manual_seed(0)
    save_model(root / inputs["clean_model"], build_model(MICRO))
    save_model(attack / "model.pt", build_model(MICRO))
    save_checkpoint(attack / "trigger.pt", {"attack": ATTACK, "pattern": torch.rand(3, 8, 8)})
    unet = {"kind": "trained", "width": 4, "min_area": 3, "weights": TinyUNet(4).state_dict()}
    save_checkpoint(root / inputs["segmenter"], unet)
    corpus = (root / inputs["corpus"]).parent
    random_split(corpus, 24, 7)
    write_json(corpus / "poison_index.json", {"indices": [0, 1, 2], "seeds": [0, 1, 2], "n_total": 24})
    write_json(root / RESULTS / "gate" / f"{ATTACK}.json", {"passed": True})


def enabled_defenses():
    """(name, module, params) of each defense the default profile enables, its cost knobs made small."""
    config = resolve(yaml.safe_load((REPO / "config.yaml").read_text()))
    out = []
    for name in config["defenses"]["enabled"]:
        block = config["defenses"]["methods"].get(name, {})
        params = {**block.get("params", {}), **block.get("per_attack", {}).get(ATTACK, {})}
        params = {k: SMALL.get(k, v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                  for k, v in params.items()}  # fmt: skip
        out.append((name, block.get("module") or f"clip_backdoor.defenses.{name}", params))
    return out


def job(root, name, module, params, patch=""):
    """The defend CLI's arguments for defense `name`, as the defend rule builds them."""
    inputs = declared_defense_inputs()
    p = {"defense": name, "module": module, "params": params, "seed": 0, "shots": 4,
         "dataset": {"kind": "embedded", "name": DATASET}, "templates": ["a photo of a {}."]}  # fmt: skip
    argv = ["defend", "--threads", "1", "--params", json.dumps(p), "--data", DATA,
            "--model", f"{CKPT}/attacks/{ATTACK}/model.pt", "--out", f"{CKPT}/defenses/{name}/seed0.pt",
            "--log", f"{RESULTS}/train_logs/{name}.json", "--state", f"state/{RUN}/{name}.state"]  # fmt: skip
    for key in module_inputs(module):
        argv += [f"--{key.replace('_', '-')}", inputs[key]]
    return {
        "argv": argv,
        "patch": patch,
        "result": str(root / f"opened_{name}{'_patched' * bool(patch)}.json"),
    }


def audit(root, jobs):
    """Per job, the files `fit` opened (or the error the defend CLI raised)."""
    env = {"PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
           "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(jobs)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(Path(j["result"]).read_text()) for j in jobs]


def peek_at_poison_index(root):
    """A patch that makes a defense's fit read the poison index beside the corpus first."""
    index = (root / declared_defense_inputs()["corpus"]).parent / "poison_index.json"
    return (
        "real = mod.fit\n"
        "def fit(ctx, params):\n"
        f"    open({str(index)!r}).read()\n"
        "    return real(ctx, params)\n"
        "mod.fit = fit\n"
    )


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    fabricate(root)
    return root


@pytest.fixture(scope="module")
def audited(run_root):
    """{(defense, patched): (module, opened)}: every enabled defense, and linear_probe patched to read the
    poison index."""
    defenses = enabled_defenses()
    probe = next(d for d in defenses if d[0] == "linear_probe")
    runs = [(d, "") for d in defenses] + [(probe, peek_at_poison_index(run_root))]
    results = audit(run_root, [job(run_root, *d, patch=patch) for d, patch in runs])
    out = {}
    for ((name, module, _), patch), result in zip(runs, results, strict=True):
        assert "error" not in result, f"defend {name} failed:\n{result['error']}"
        out[name, bool(patch)] = module, result["opened"]
    return out


def allowed(root, module):
    """(files, folders) `fit` may open inside the run folder: what the defend rule declares for it."""
    inputs = declared_defense_inputs()
    files = {f"{CKPT}/attacks/{ATTACK}/model.pt", f"{DATA}/world.json"}
    folders = {f"{DATA}/downstream_train", f"{DATA}/clean_pool", f"state/{RUN}"}
    for key in module_inputs(module):
        files.add(inputs[key])
        if key == "corpus":  # the corpus is its split folder's files, not whatever else lies beside them
            files |= {str(Path(inputs[key]).parent / name) for name in SPLIT_FILES}
    return {str(root / f) for f in files}, {str(root / d) for d in folders}


ENVIRONMENT = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix, str(SRC), "/proc", "/sys", "/dev", "/usr"})


def kind(path):
    if path.endswith("poison_index.json"):
        return "poison index"
    if "trigger" in Path(path).name:
        return "trigger record"
    return "test split" if "downstream_test" in path else "undeclared file"


def violations(root, module, opened):
    """Each open outside the declared inputs, named by what it is and where in the package it came from."""
    files, folders = allowed(root, module)
    found = []
    for entry in opened:
        path = entry["path"]
        if path in files or any(path.startswith(d + "/") for d in folders):
            continue
        if not path.startswith(str(root) + "/") and path.startswith(ENVIRONMENT):
            continue
        found.append(f"{kind(path)}: {path} ({entry['mode']}) from {' <- '.join(entry['from']) or '?'}")
    return found


@pytest.mark.parametrize("name", [d[0] for d in enabled_defenses()])
def test_fit_opens_only_its_declared_inputs(run_root, audited, name):
    module, opened = audited[name, False]
    assert not violations(run_root, module, opened), "\n".join(violations(run_root, module, opened))


def test_a_defense_that_reads_the_poison_index_is_caught(run_root, audited):
    module, opened = audited["linear_probe", True]
    found = violations(run_root, module, opened)
    assert len(found) == 1 and found[0].startswith("poison index:"), found


def test_the_audit_names_each_privileged_file(run_root):
    paths = [f"{RESULTS}/poisoned/{ATTACK}/poison_index.json", f"{CKPT}/attacks/{ATTACK}/trigger.pt",
             f"{DATA}/downstream_test/images.npy", f"{RESULTS}/gate/{ATTACK}.json",
             f"{DATA}/poison_pool/images.npy", f"{RESULTS}/poisoned/{ATTACK}/images.npy",
             f"{DATA}/downstream_train/images.npy"]  # fmt: skip
    opened = [{"path": str(run_root / p), "mode": "r", "from": []} for p in paths]
    opened.append({"path": "/etc/passwd", "mode": "r", "from": []})
    found = [v.split(":")[0] for v in violations(run_root, "clip_backdoor.defenses.linear_probe", opened)]
    assert found == ["poison index", "trigger record", "test split", *["undeclared file"] * 4]
    with_corpus = violations(run_root, "clip_backdoor.defenses.oracle", opened)
    assert len(with_corpus) == 6 and not any("poisoned/badnet/images.npy" in v for v in with_corpus)
