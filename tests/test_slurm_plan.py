"""The SLURM profile's plan of the papers' profile on a fabricated set: GPU jobs carry the GPU request and
go to the GPU partition; a missing dataset stops the plan with one message."""

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import copy_workflow

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from paper_set import fabricate, paper_config  # noqa: E402

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
    reason="snakemake-executor-plugin-slurm is not installed (pip install -e '.[cluster]')",
)
GPU_RULES = {"pretrain_clean_clip", "make_trigger", "poison_finetune", "evaluate", "defend", "train_oracle"}


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    work = copy_workflow(root / "wf")
    paths = fabricate(root / "set", n_pairs=8)
    config = paper_config(paths, yaml.safe_load((REPO / "configs" / "paper.yaml").read_text()))
    files = (
        ("weights.bin", ("model", "arch", "pretrained")),
        ("FastSAM-x.pt", ("oracle", "fastsam", "weights")),
    )
    for name, key in files:
        (root / name).write_bytes(b"x")
        block = config
        for part in key[:-1]:
            block = block[part]
        block[key[-1]] = str(root / name)
    config["oracle"]["fastsam"]["sha256"] = hashlib.sha256(b"x").hexdigest()
    profile = root / "paper.yaml"
    profile.write_text(yaml.safe_dump(config))
    return work, profile, paths


def plan(work, profile):
    """The dry run; the planning process imports the copy's own package (common.smk imports clip_backdoor)."""
    env = {**os.environ, "PYTHONPATH": str(work / "src")}
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/slurm", "-n", "all",
           "--configfile", str(profile)]  # fmt: skip
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env, timeout=900)


def jobs(stdout):
    """{rule: [resources line of each job]} of a dry run's job listing."""
    out, rule = {}, None
    for line in stdout.splitlines():
        found = re.match(r"\s*(?:local)?rule (\w+):", line)
        if found:
            rule = found.group(1)
            out.setdefault(rule, [])
        elif rule and line.strip().startswith("resources:"):
            out[rule].append(line)
    return out


def test_gpu_jobs_carry_the_gpu_request(planned):
    work, profile, _ = planned
    proc = plan(work, profile)
    assert proc.returncode == 0, proc.stderr[-3000:]
    planned_jobs = jobs(proc.stdout + proc.stderr)
    assert GPU_RULES - {"pretrain_clean_clip"} <= set(planned_jobs), sorted(planned_jobs)
    for rule in GPU_RULES & set(planned_jobs):
        for resources in planned_jobs[rule]:
            assert re.search(r"\bgpu=1\b", resources), (rule, resources)
            assert "slurm_partition=gpu" in resources, (rule, resources)
    for resources in planned_jobs["poison_data"]:
        assert "gpu=" not in resources and "slurm_partition=cpu" in resources, resources


def test_missing_dataset_stops_the_plan(planned):
    work, profile, paths = planned
    moved = paths["caltech101"].with_name("elsewhere")
    shutil.move(paths["caltech101"], moved)
    try:
        proc = plan(work, profile)
    finally:
        shutil.move(moved, paths["caltech101"])
    assert proc.returncode != 0
    assert f"root folder not found: {paths['caltech101']}" in proc.stdout + proc.stderr
