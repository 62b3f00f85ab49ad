"""A pulled run does not retrain: clone, `dvc pull`, `snakemake --touch --forceall` plans no job (DESIGN §3).

The smoke run is put in a git repository with the repository's own .dvc/config (default remote: a directory
beside the clone, here tmp_path/clip-backdoor-dvc-remote), tracked by the workflow's DVC rules, pushed,
cloned and pulled.
"""

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, snakemake

pytestmark = pytest.mark.workflow

CONFIG = ["--configfile", "configs/smoke.yaml", "track.yaml"]
TRAINING = {"pretrain_clean_clip", "make_trigger", "poison_data", "poison_finetune"}
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_CONFIG_NOSYSTEM": "1"}
GIT = ["git", "-c", "user.name=clip-backdoor tests", "-c", "user.email=tests@example.invalid",
       "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"]  # fmt: skip
DVC = [str(Path(sys.executable).with_name("dvc"))]


def run(cwd, *cmd):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def planned(work):
    """Counter of rule → jobs that `snakemake -n all` plans, and the dry run's output."""
    out = snakemake(work, "-n", "all", *CONFIG).stdout
    return Counter(re.findall(r"^(?:local)?rule (\w+):", out, flags=re.M)), out


@pytest.fixture
def clone(smoke_run, tmp_path):
    """A fresh clone, after `dvc pull`, of a repository holding the smoke run tracked by DVC."""
    origin = tmp_path / "origin"
    shutil.copytree(smoke_run, origin, symlinks=True)
    (origin / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(REPO / ".dvc" / name, origin / ".dvc" / name)
    (origin / "track.yaml").write_text("dvc: {track_checkpoints: true, track_results: true}\n")
    run(origin, *GIT, "init", "-q")
    # the smoke run is finished: switching the DVC rules on runs them and nothing else
    proc = snakemake(origin, "--cores", "2", "all", *CONFIG)
    ran = set(re.findall(r"^(?:local)?rule (\w+):", proc.stdout + proc.stderr, flags=re.M))
    assert ran == {"track_checkpoints", "track_results", "all"}, proc.stderr
    for pointer in ("checkpoints/smoke.dvc", "results/smoke.dvc", "report/smoke.dvc"):
        assert (origin / pointer).is_file(), pointer
    run(origin, *DVC, "add", "--quiet", "data")
    run(origin, *DVC, "push", "--quiet")
    run(origin, *GIT, "add", "-A")
    run(origin, *GIT, "commit", "-q", "-m", "smoke run")
    committed = run(origin, *GIT, "ls-files").split()
    assert {"data.dvc", "checkpoints/smoke.dvc", "results/smoke.dvc", "report/smoke.dvc"} <= set(committed)
    assert (tmp_path / "clip-backdoor-dvc-remote").is_dir(), "the default remote is beside the clone"

    work = tmp_path / "clone"
    run(tmp_path, *GIT, "clone", "-q", str(origin), str(work))
    assert not (work / "checkpoints/smoke").exists()
    run(work, *DVC, "pull", "--quiet")
    return work


def test_pulled_run_plans_no_job(clone):
    pulled = [
        "data/smoke/world.json",
        "checkpoints/smoke/clean.pt",
        "checkpoints/smoke/attacks/badnet/model.pt",
        "results/smoke/train_logs/clean.json",
        "results/smoke/poisoned/badnet/captions.json",
        "results/smoke/summary.csv",
        "report/smoke/index.html",
    ]
    for path in pulled:
        assert (clone / path).is_file(), f"{path} not pulled"
    assert not (clone / ".snakemake").exists()
    # Pulled files get the time of the pull, in DVC's order; with no Snakemake records yet, a dry run
    # now plans whatever that order makes look outdated (not asserted). `--touch --forceall` fixes it
    # once: every output touched in workflow order, every job recorded (params, input checksums).
    before, _ = planned(clone)
    print("planned right after dvc pull:", dict(before))
    snakemake(clone, "--touch", "--forceall", "--cores", "1", "all", *CONFIG)
    jobs, out = planned(clone)
    assert jobs == Counter(), out
    assert "Nothing to be done" in out and "missing provenance" not in out
    assert run(clone, *GIT, "status", "--porcelain") == "", "the pull or the touch changed tracked files"

    # A later checkout rewrites the checkpoints with new times: the checksums Snakemake recorded
    # (max-checksum-file-size in the default profile) keep them up to date.
    shutil.rmtree(clone / "checkpoints/smoke")
    run(clone, *DVC, "checkout", "--quiet")
    jobs, out = planned(clone)
    assert not TRAINING & set(jobs), out
    assert jobs == Counter(), out


def test_track_rule_without_dvc_repository_says_so(smoke_run, tmp_path):
    work = tmp_path / "wf"
    shutil.copytree(smoke_run, work, symlinks=True)
    (work / "track.yaml").write_text("dvc: {track_checkpoints: true, track_results: false}\n")
    proc = snakemake(work, "--cores", "1", "all", *CONFIG, check=False)
    assert proc.returncode != 0
    assert "no DVC repository here" in proc.stdout + proc.stderr
    assert "dvc.track_checkpoints: false" in proc.stdout + proc.stderr
