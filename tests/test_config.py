"""The config's one declaration: profiles that stand alone, the papers' protocol value by value, clear errors
before any job, the Deviations table, and stage sources that cover what each stage imports."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clip_backdoor.config.deviations import deviations
from clip_backdoor.config.modules import module_file, stage_files, trigger_files
from clip_backdoor.config.resolve import ConfigError, resolve
from clip_backdoor.defenses.interface import DefenseContext
from conftest import REPO, copy_workflow, snakemake

OPENAI_TEMPLATES = yaml.safe_load((REPO / "schemas" / "openai_imagenet_templates.yaml").read_text())
ATTACKS = ["badnet", "blended", "sig", "wanet", "issba", "trojvqa", "badclip", "badnet_lc"]


def profile(name):
    return yaml.safe_load((REPO / name).read_text())


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("config"))


def resolved_by_snakemake(work, configfile=None, *extra):
    args = ["--cores", "1", "resolved_config", "--forcerun", "resolved_config"]
    args += ["--configfile", configfile] if configfile else []
    snakemake(work, *args, *extra)
    run = profile(configfile)["run"] if configfile else "synthetic"
    return yaml.safe_load((Path(work) / "results" / run / "config.resolved.yaml").read_text())


def test_the_paper_profile_resolves_to_the_papers_protocol(workflow):
    """Resolved as a run resolves it (Snakemake, --configfile), with config.yaml's tuned values beside it."""
    config = resolved_by_snakemake(workflow, "configs/paper.yaml")
    attacks = config["attacks"]
    assert attacks["enabled"] == ATTACKS
    assert (attacks["n_poison"], config["data"]["paper"]["cc3m"]["size"], attacks["target"]) == (
        1500,
        500000,
        "banana",
    )
    assert attacks["caption_templates"] == OPENAI_TEMPLATES == config["evaluation"]["templates"]
    assert attacks["finetune"] == {
        "epochs": 5, "batch_size": 128, "lr": 1.0e-5, "weight_decay": 0.1, "warmup_steps": 50,
        "save_every_epochs": 1, "amp": True, "text_lr_scale": 1.0, "cpu_attention": "default",
    }  # fmt: skip
    for name in ATTACKS:
        block = attacks["methods"][name]
        assert "finetune" not in block and "n_poison" not in block and "harden" not in block, name
    triggers = {name: attacks["methods"][name]["trigger"] for name in ATTACKS}
    for name in ("badnet", "badnet_lc"):
        assert triggers[name]["location"] == "random" and triggers[name]["pattern"] == "noise"
        assert triggers[name]["patch_size"] in (None, 16)
    assert triggers["blended"]["alpha"] == 0.2
    assert triggers["sig"] == {"amplitude": pytest.approx(60 / 255), "frequency": 6}
    assert (triggers["wanet"]["k"], triggers["wanet"]["strength"]) == (224, 1.0)
    assert attacks["methods"]["issba"]["artefact"]["n_bits"] == 100
    assert attacks["methods"]["issba"]["artefact"]["max_residual"] <= 0.05
    methods = config["defenses"]["methods"]
    rvpt = methods["rvpt"]["params"]
    paper_rvpt = {
        "depth": 3,
        "tokens": 50,
        "alpha": 2.0,
        "alpha_proj": 0.0,
        "lr": 0.002,
        "batch_size": 32,
        "epochs": 50,
    }
    assert {k: rvpt[k] for k in paper_rvpt} == paper_rvpt
    assert methods["vpt"]["params"] == {**rvpt, "alpha": 0.0}
    assert config["defenses"]["shots"] == 16
    cbpt = methods["cbpt"]["params"]
    assert (cbpt["w_away"], cbpt["w_key"], cbpt["w_bd"], cbpt["n_ctx"], cbpt["ctx_init"]) == (
        0,
        0,
        1.0,
        4,
        "a photo of a",
    )
    oracle = methods["oracle"]["params"]
    assert (oracle["null_ratio"], oracle["screen_clean"], oracle["preserve"], oracle["localise_window"]) == (
        0,
        False,
        0,
        0,
    )
    assert (oracle["signature_transplants"], oracle["transplant_region"]) == (0, "localised")
    for name in ("cleanclip", "finetune"):
        params = methods[name]["params"]
        assert (params["epochs"], params["batch_size"], params["lr"], params["pool_size"]) == (
            10,
            64,
            5.0e-6,
            0,
        )
        assert methods[name]["per_attack"] == {"wanet": {"lr": 3.0e-6}, "issba": {"lr": 3.0e-6}}
    assert config["oracle"]["kind"] == "fastsam"
    assert config["model"]["arch"] == {
        "kind": "open_clip",
        "name": "ViT-B-32",
        "pretrained": "openai",
        "quick_gelu": True,
    }
    rows = deviations(config)
    # the one deviation of the papers' path; the "Oracle (+ extensions)" row's knobs are this project's own
    assert [r["key"] for r in rows if not r["key"].startswith("defenses.methods.oracle_ext.")] == [
        "attacks.finetune.lr"
    ]
    extensions = [r for r in rows if r["key"].startswith("defenses.methods.oracle_ext.")]
    assert len(extensions) >= 6 and {r["origin"] for r in extensions} == {"project"}


def test_a_profile_inherits_nothing_from_config_yaml(workflow, tmp_path):
    work = copy_workflow(tmp_path / "w")
    base = profile("config.yaml")
    base["attacks"]["n_poison"] = 777
    base["defenses"]["methods"]["rvpt"]["params"]["alpha_proj"] = 9.0
    (work / "config.yaml").write_text(yaml.safe_dump(base))
    paper = resolved_by_snakemake(work, "configs/paper.yaml")
    assert paper["attacks"]["n_poison"] == 1500
    assert paper["defenses"]["methods"]["rvpt"]["params"]["alpha_proj"] == 0.0
    assert resolved_by_snakemake(work)["attacks"]["n_poison"] == 777
    with_override = resolved_by_snakemake(work, "configs/paper.yaml", "--config", "threads=3")
    assert with_override["threads"] == 3 and with_override["attacks"]["n_poison"] == 1500


def test_the_smoke_profile_never_reaches_paper_only_paths():
    config = resolve(profile("configs/smoke.yaml"))
    assert config["data"]["kind"] == "embedded" and "paper" not in config["data"]
    assert config["model"]["arch"]["kind"] == "embedded" and config["oracle"]["kind"] == "trained"
    assert {d["kind"] for d in config["evaluation"]["datasets"]} == {"embedded"}


def test_every_project_knob_in_use_is_a_listed_deviation():
    rows = {row["key"]: row for row in deviations(resolve(profile("config.yaml")))}
    project = ["attacks.methods.badnet.finetune.text_lr_scale", "defenses.methods.rvpt.params.alpha_proj",
               "defenses.methods.cbpt.params.w_away", "defenses.methods.oracle_ext.params.null_ratio",
               "defenses.methods.oracle_ext.params.screen_clean",
               "attacks.methods.badnet_lc.harden"]  # fmt: skip
    for key in project:
        assert rows[key]["origin"] == "project", key
    assert rows["attacks.finetune.lr"]["paper"] == 1.0e-6
    assert rows["defenses.methods.cleanclip.per_attack.wanet.lr"]["paper"] == 3.0e-6
    assert "defenses.methods.rvpt.params.momentum" not in rows


def edited(change):
    config = profile("configs/smoke.yaml")
    change(config)
    return config


BAD_VALUES = [
    (
        lambda c: c["defenses"]["methods"]["rvpt"]["params"].update(alpha="2e-1"),
        "defenses.methods.rvpt.params.alpha: expected number, got '2e-1' (YAML reads 5e-4 as text",
    ),
    (
        lambda c: c["defenses"]["methods"]["oracle"]["params"].update(transplant_region="everywhere"),
        "defenses.methods.oracle.params.transplant_region: 'everywhere' is not one of localised | signature",
    ),
    (
        lambda c: c["defenses"]["methods"]["cbpt"]["params"].update(w_bd=-1.0),
        "defenses.methods.cbpt.params.w_bd: -1.0 is less than the minimum of 0",
    ),
    (
        lambda c: c["attacks"]["methods"]["badnet"]["trigger"].update(patch_sise=6),
        "attacks.methods.badnet.trigger: unknown key 'patch_sise' (allowed: ",
    ),
    (
        lambda c: c["defenses"]["methods"]["cleanclip"]["per_attack"].update(wanat={"lr": 1e-5}),
        "defenses.methods.cleanclip.per_attack: 'wanat' is not one of badnet",
    ),
    (
        lambda c: c["defenses"]["methods"]["cleanclip"]["per_attack"].update(wanet={"lrr": 1e-5}),
        "defenses.methods.cleanclip.per_attack.wanet: unknown key 'lrr'",
    ),
    (lambda c: c.update(bogus=1), "config: unknown key 'bogus' (allowed: attacks, data,"),
    (lambda c: c["attacks"].update(target="banana"), "attacks.target: 'banana' is not a downstream class"),
    (lambda c: c["attacks"].update(n_poison=5000), "attacks.n_poison: 5000 is more than the 200 pairs"),
    (
        lambda c: c["defenses"].update(shots=5),
        "defenses.shots: 5 is more than data.embedded.train_per_class (4)",
    ),
    (
        lambda c: c["attacks"]["methods"]["badnet"]["trigger"].update(patch_size=40),
        "attacks.methods.badnet.trigger.patch_size: 40 is larger than the 32 px image",
    ),
    (
        lambda c: c["data"]["embedded"]["downstream_classes"].append("banana"),
        "data.embedded.downstream_classes: 'banana' is not in data.embedded.world_classes",
    ),
    (
        lambda c: c["defenses"]["enabled"].append("rvtp"),
        "defenses.enabled: 'rvtp' is neither a built-in defense",
    ),
    (
        lambda c: c["defenses"].update(ablations={"rvpt": ["alpha_prj"]}),
        "defenses.ablations.rvpt: 'alpha_prj' is not a declared knob of rvpt",
    ),
    (
        lambda c: c["defenses"].update(ablations={"rvpt": ["alpha_warmup"]}),
        "defenses.ablations.rvpt: 'alpha_warmup' is already at its declared default 0",
    ),
    (
        lambda c: c["defenses"].update(ablations={"bdetox": ["x"]}),
        "defenses.ablations.bdetox: 'bdetox' is not an enabled defense",
    ),
]


def test_an_ablation_fits_its_defense_with_one_knob_back_at_its_default(workflow, tmp_path):
    config = edited(lambda c: c["defenses"].update(ablations={"rvpt": ["alpha_proj"]}))
    (tmp_path / "ablation.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(
        workflow, "-n", "-p", "all", "--configfile", str(tmp_path / "ablation.yaml"), "--forceall"
    )
    fits = {}
    for line in proc.stdout.splitlines():
        if "python -m clip_backdoor defend " in line:
            params = json.loads(line.split("--params ")[1].split("' --")[0].strip("'"))
            fits.setdefault(params["defense"], []).append(params)
    variant, base = fits["rvpt-no-alpha_proj"], fits["rvpt"]
    assert len(variant) == len(base) > 0
    assert variant[0]["module"] == "clip_backdoor.defenses.rvpt"
    assert variant[0]["params"] == {**base[0]["params"], "alpha_proj": 0.0} != base[0]["params"]


@pytest.mark.parametrize(("change", "message"), BAD_VALUES)
def test_a_bad_value_names_its_key_and_what_is_allowed(change, message):
    with pytest.raises(ConfigError) as err:
        resolve(edited(change))
    assert any(p.startswith(message) for p in err.value.problems), err.value.problems


def test_a_bad_config_stops_snakemake_before_any_job_with_a_short_message(workflow, tmp_path):
    bad = edited(lambda c: (c.update(bogus=1), c["defenses"]["methods"]["rvpt"]["params"].update(alpha="x")))
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    proc = snakemake(workflow, "-n", "all", "--configfile", str(tmp_path / "bad.yaml"), check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert (
        "config: unknown key 'bogus'" in text
        and "defenses.methods.rvpt.params.alpha: expected number" in text
    )
    assert len(text.splitlines()) < 12, text


def test_a_custom_defense_module_declares_its_own_params():
    def add(c):
        c["defenses"]["enabled"].append("mine")
        c["defenses"]["methods"]["mine"] = {"module": "clip_backdoor.defenses.no_such_module"}

    with pytest.raises(ConfigError, match="defenses.methods.mine.module: no module"):
        resolve(edited(add))


def test_defenses_are_told_neither_the_attack_nor_its_target(workflow):
    assert "attack" not in DefenseContext.__dataclass_fields__
    proc = snakemake(workflow, "-n", "-p", "all", "--configfile", "configs/smoke.yaml", "--forceall")
    commands = [line for line in proc.stdout.splitlines() if "python -m clip_backdoor defend " in line]
    assert commands
    for line in commands:
        params = json.loads(line.split("--params ")[1].split("' --")[0].strip("'"))
        assert "attack" not in params and "target" not in params["dataset"], params


def imported_package_files(*modules):
    """The clip_backdoor files that importing `modules` loads, in a fresh interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {list(modules)!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items()"
        " if n.startswith('clip_backdoor') and getattr(m, '__file__', None))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return {Path(p).resolve() for p in json.loads(out.stdout)}


STAGE_CASES = [
    ("prepare_data", None), ("pretrain", None), ("make_trigger", "badnet"), ("poison_data", "wanet"),
    ("poison_finetune", "badnet_lc"), ("asr_gate", None), ("train_oracle", None), ("evaluate", "issba"),
    ("summarize", None), ("report", ATTACKS),
]  # fmt: skip


@pytest.mark.parametrize(("stage", "attack"), STAGE_CASES)
def test_a_stage_declares_every_package_file_it_imports(stage, attack):
    from clip_backdoor.__main__ import STAGES

    loaded = imported_package_files("clip_backdoor.__main__", STAGES[stage])
    attacks = [attack] if isinstance(attack, str) else attack or []
    other_triggers = {p for name, p in trigger_files().items() if name not in attacks}
    declared = {p.resolve() for p in stage_files(stage, attack)}
    assert loaded - other_triggers <= declared, sorted(str(p) for p in loaded - other_triggers - declared)


@pytest.mark.parametrize("defense", ["rvpt", "cbpt", "oracle", "cleanclip", "finetune", "linear_probe"])
def test_a_defense_job_declares_every_package_file_it_imports(defense):
    from clip_backdoor.config.modules import imported_files

    loaded = imported_package_files("clip_backdoor.defenses.defend", f"clip_backdoor.defenses.{defense}")
    declared = stage_files("defend") | imported_files(module_file(f"clip_backdoor.defenses.{defense}"))
    other_triggers = set(trigger_files().values())
    assert loaded - other_triggers <= {p.resolve() for p in declared}


def test_the_declaration_does_not_change_under_resolution():
    config = profile("config.yaml")
    before = copy.deepcopy(config)
    resolve(config)
    assert config == before
