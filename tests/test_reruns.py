"""Exact reruns: a change plans exactly the jobs it affects (dry runs on a copy of the smoke run)."""

import re
import shutil
from collections import Counter

import pytest
import yaml

from conftest import REPO, snakemake

pytestmark = pytest.mark.workflow


def planned(work, configfile="configs/smoke.yaml", with_defenses=False):
    """(Counter of rule → jobs, set of attack wildcards[, set of defense wildcards]) that `snakemake -n all`
    plans."""
    out = snakemake(work, "-n", "all", "--configfile", configfile).stdout
    jobs = Counter(re.findall(r"^(?:local)?rule (\w+):", out, flags=re.M))
    attacks = set(re.findall(r"wildcards: .*?attack=(\w+)", out))
    if with_defenses:
        return jobs, attacks, set(re.findall(r"wildcards: .*?defense=(\w+)", out))
    return jobs, attacks


def smoke_config():
    return yaml.safe_load((REPO / "configs/smoke.yaml").read_text())


@pytest.fixture
def work(smoke_run, tmp_path):
    dest = tmp_path / "wf"
    shutil.copytree(smoke_run, dest, symlinks=True)
    return dest


def _config_change(work, mutate, with_defenses=False):
    """What a config change plans, less the resolved config, which every config change rewrites."""
    cfg = yaml.safe_load((work / "configs/smoke.yaml").read_text())
    mutate(cfg)
    (work / "changed.yaml").write_text(yaml.safe_dump(cfg))
    jobs, *rest = planned(work, "changed.yaml", with_defenses)
    assert jobs.pop("resolved_config") == 1
    return (jobs, *rest)


def attack_jobs(n_defenses):
    """The jobs one attack's change plans: its chain, its defenses (each evaluated in its defend job), the
    undefended and the never-poisoned evaluations under its trigger, the report."""
    return Counter(
        make_trigger=1, poison_data=1, poison_finetune=1, asr_gate=1, defend=n_defenses,
        evaluate=2, summarize=1, report=1, all=1,
    )  # fmt: skip


def defense_jobs(n_runs):
    return Counter(defend=n_runs, summarize=1, report=1, all=1)


def test_nothing_planned_without_a_change(work):
    assert planned(work) == (Counter(), set())


def test_one_attack_parameter_reruns_that_attack_only(work):
    jobs, attacks = _config_change(
        work, lambda c: c["attacks"]["methods"]["badnet"]["trigger"].update(noise_std=0.5)
    )
    assert attacks == {"badnet"}
    assert jobs == attack_jobs(len(smoke_config()["defenses"]["enabled"]))


def test_one_attack_module_edit_reruns_that_attack_only(work):
    module = work / "src/clip_backdoor/attacks/wanet.py"
    assert "wanet" in smoke_config()["attacks"]["enabled"]
    module.write_text(module.read_text() + "\n")
    jobs, attacks = planned(work)
    assert attacks == {"wanet"}
    assert jobs == attack_jobs(len(smoke_config()["defenses"]["enabled"]))


def test_report_style_reruns_the_report_only(work):
    jobs, attacks = _config_change(work, lambda c: c["report"].update(title="another title"))
    assert jobs == Counter(report=1, all=1) and attacks == set()


def test_one_defense_hyperparameter_reruns_that_defense_only(work):
    cfg = smoke_config()
    assert "cbpt" in cfg["defenses"]["enabled"]
    jobs, attacks, defenses = _config_change(
        work,
        lambda c: c["defenses"]["methods"]["cbpt"]["params"].update(inv_mask_weight=0.123),
        with_defenses=True,
    )
    assert defenses == {"cbpt"} and attacks == set(cfg["attacks"]["enabled"])
    assert jobs == defense_jobs(len(cfg["attacks"]["enabled"]) * len(cfg["seeds"]))


def test_one_defense_module_edit_reruns_that_defense_only(work):
    cfg = smoke_config()
    module = work / "src/clip_backdoor/defenses/linear_probe.py"
    module.write_text(module.read_text() + "\n")
    jobs, attacks, defenses = planned(work, with_defenses=True)
    assert defenses == {"linear_probe"} and attacks == set(cfg["attacks"]["enabled"])
    assert jobs == defense_jobs(len(cfg["attacks"]["enabled"]) * len(cfg["seeds"]))


def test_an_identical_retrained_clean_model_reruns_only_the_readers_of_its_train_log(work):
    model = work / "checkpoints/smoke/clean.pt"
    before = model.read_bytes()
    retrain = ("checkpoints/smoke/clean.pt", "--forcerun", "pretrain_clean_clip")
    snakemake(work, "--cores", "2", *retrain, "--configfile", "configs/smoke.yaml")
    assert model.read_bytes() == before
    # the weights' checksum is unchanged, so nothing that reads clean.pt reruns; the train log holds the
    # training's wall time, which the clean model's evaluations (alone and under each trigger) copy
    cfg = smoke_config()
    attacks = cfg["attacks"]["enabled"]
    n_clean_evaluations = len(cfg["evaluation"]["datasets"]) * len(cfg["seeds"]) * (1 + len(attacks))
    expected = Counter(evaluate=n_clean_evaluations, summarize=1, report=1, all=1)
    assert planned(work) == (expected, {"clean", *attacks})


def test_all_notices_a_deleted_data_file(work):
    (work / "data/smoke/clean_pool/labels.npy").unlink()
    assert planned(work)[0]["prepare_data"] == 1


def test_a_deleted_data_file_is_regenerated_and_reruns_nothing_else(work):
    (work / "data/smoke/clean_pool/labels.npy").unlink()
    # as a target the rule checks all its outputs (a file target only the files asked for)
    out = snakemake(work, "-n", "prepare_data", "--configfile", "configs/smoke.yaml").stdout
    assert "Missing output files: data/smoke/clean_pool/labels.npy" in out
    snakemake(work, "--cores", "2", "prepare_data", "--configfile", "configs/smoke.yaml")
    assert (work / "data/smoke/clean_pool/labels.npy").is_file()
    assert planned(work) == (Counter(), set())
