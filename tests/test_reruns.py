"""Exact reruns: a change plans exactly the jobs it affects (dry runs on a copy of the smoke run)."""

import re
import shutil
from collections import Counter

import pytest
import yaml

from conftest import snakemake

pytestmark = pytest.mark.workflow


def planned(work, configfile="configs/smoke.yaml"):
    """(Counter of rule → jobs, set of attack wildcards) that `snakemake -n all` plans."""
    out = snakemake(work, "-n", "all", "--configfile", configfile).stdout
    jobs = Counter(re.findall(r"^(?:local)?rule (\w+):", out, flags=re.M))
    attacks = set(re.findall(r"wildcards: .*?attack=(\w+)", out))
    return jobs, attacks


@pytest.fixture
def work(smoke_run, tmp_path):
    dest = tmp_path / "wf"
    shutil.copytree(smoke_run, dest, symlinks=True)
    return dest


def _config_change(work, mutate):
    cfg = yaml.safe_load((work / "configs/smoke.yaml").read_text())
    mutate(cfg)
    (work / "changed.yaml").write_text(yaml.safe_dump(cfg))
    return planned(work, "changed.yaml")


def test_nothing_planned_without_a_change(work):
    assert planned(work) == (Counter(), set())


def test_one_attack_parameter_reruns_that_attack_only(work):
    jobs, attacks = _config_change(
        work, lambda c: c["attacks"]["methods"]["badnet"]["trigger"].update(noise_std=0.5)
    )
    assert attacks == {"badnet"}
    assert jobs == Counter(
        make_trigger=1, poison_data=1, poison_finetune=1, evaluate=1, asr_gate=1, summarize=1, report=1, all=1
    )


def test_one_attack_module_edit_reruns_that_attack_only(work):
    module = work / "src/clip_backdoor/attacks/wanet.py"
    module.write_text(module.read_text() + "\n")
    jobs, attacks = planned(work)
    assert attacks == {"wanet"}
    assert jobs == Counter(
        make_trigger=1, poison_data=1, poison_finetune=1, evaluate=1, asr_gate=1, summarize=1, report=1, all=1
    )


def test_report_style_reruns_the_report_only(work):
    jobs, attacks = _config_change(work, lambda c: c["report"].update(title="another title"))
    assert jobs == Counter(report=1, all=1) and attacks == set()
