"""The report from a synthetic run made here (metric files, logs, states; no training): tables, LaTeX,
HTML in headless Chromium, screenshot."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from clip_backdoor.attacks.record import save_record
from clip_backdoor.config.resolve import resolve
from clip_backdoor.data.embedded import write_split
from clip_backdoor.report import browser
from clip_backdoor.runtime.io import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
ATTACKS = ["badnet", "sig", "trojvqa"]
DEFENSES = ["rvpt", "cbpt", "oracle", "linear_probe"]
SEEDS = [0, 1, 2]
CLASSES = ["circle", "square", "star", "cross"]
# ASR per defense × attack for seeds 0, 1, 2 (None: not applicable); CA is 0.9 + seed / 100 everywhere.
ASR = {
    "none": {"badnet": [0.90, 0.92, 0.94], "sig": [0.97, 0.98, 0.99], "trojvqa": [0.99, 0.99, 0.99]},
    "never_poisoned": {"badnet": [0.1, 0.1, 0.1], "sig": [0.03, 0.04, 0.05], "trojvqa": [0.01, 0.01, 0.01]},
    "rvpt": {"badnet": [0.01, 0.02, 0.03], "sig": [0.02, 0.05, 0.08], "trojvqa": [0.02, 0.02, 0.02]},
    "cbpt": {"badnet": [0.05, 0.05, 0.05], "sig": [0.04, 0.04, 0.04], "trojvqa": [0.30, 0.30, 0.30]},
    "oracle": {"badnet": [0.20, 0.20, 0.20], "trojvqa": [0.50, 0.50, 0.50]},  # sig: never run
    "linear_probe": {"badnet": [0.00, 0.00, 0.00], "sig": [0.50, 0.50, 0.50], "trojvqa": [None] * 3},
    "rvpt-no-alpha_proj": {
        "badnet": [0.30, 0.30, 0.30],
        "sig": [0.40, 0.40, 0.40],
        "trojvqa": [0.5, 0.5, 0.5],
    },
}


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def metric(dataset, attack, defense, seed, asr):
    row = {
        "dataset": dataset,
        "attack": attack,
        "defense": defense,
        "seed": seed,
        "ca": 0.9 + seed / 100,
        "asr": asr,
        "pa": None if asr is None else 1 - asr,
        "n_clean": 400,
        "n_poisoned": 300,
        "train_seconds": 10.0 + seed,
        "train_peak_mem_mb": 500.0,
        "eval_seconds": 1.0,
    }
    row["val"] = {"ca": row["ca"] - 0.01, "asr": asr, "pa": row["pa"], "n_clean": 40, "n_poisoned": 30}
    if defense not in ("none", "never_poisoned"):
        fractions = {"rvpt": 0.003, "cbpt": 0.001, "oracle": 0.2, "linear_probe": 0.0005}
        row["trainable_fraction"] = fractions[defense.split("-no-")[0]]
    if asr is None:
        row["not_applicable"] = f"{defense} cannot take the text key 'remember '"
    return row


def embedded_data(root, size=16):
    """A downstream test split of the embedded layout (4 classes, `size` px images)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(CLASSES)), 3)
    images = rng.integers(0, 255, (len(labels), size, size, 3), dtype=np.uint8)
    instances = np.zeros((len(labels), size, size), dtype=np.uint8)
    write_split(root / "downstream_test", images, instances, labels, [""] * len(labels), CLASSES)


def make_run(tmp_path):
    """Metric files, train logs, defense states, trigger records and poison indices of a fake run."""
    run = tmp_path / "run"
    metrics, logs, states, triggers, indices = [], [], [], [], []
    for defense, cells in {"clean": {"clean": [None] * 3}, **ASR}.items():
        for attack, values in cells.items():
            for seed, asr in zip(SEEDS, values, strict=True):
                name = "none" if defense == "clean" else defense
                path = run / "metrics" / "shapes4" / attack / name / f"seed{seed}.json"
                row = metric("shapes4", attack, name, seed, 0.95 if defense == "clean" else asr)
                if defense == "clean":
                    row.update(asr=None, pa=None)
                write_json(path, row)
                metrics.append(path)
                if name not in ("none", "never_poisoned"):
                    log = run / "train_logs" / "defenses" / "shapes4" / attack / name / f"seed{seed}.json"
                    entry = {
                        "defense": name,
                        "params": {"alpha": 2.0, "mask_weight": 0.01},
                        "curve": [2.0, 1.5, 1.2],
                        "trainable_params": 100,
                        "seconds": 10.0,
                        "peak_mem_mb": 500.0,
                    }
                    if name == "oracle":
                        entry.update(affected_labels=["star"], victims=[0, 1, 5])
                    write_json(log, entry)
                    logs.append(log)
    write_json(run / "train_logs" / "clean.json", {"epoch_loss": [4.0, 3.0, 2.5]})
    logs.append(run / "train_logs" / "clean.json")
    for attack in ATTACKS:
        write_json(run / "train_logs" / f"attack_{attack}.json", {"epoch_loss": [1.5, 1.3, 1.2]})
        logs.append(run / "train_logs" / f"attack_{attack}.json")
        write_json(
            run / "poisoned" / attack / "poison_index.json", {"attack": attack, "indices": [0, 1, 2, 3]}
        )
        indices.append(run / "poisoned" / attack / "poison_index.json")
        params = {"badnet": {"patch_size": 4}, "sig": {}, "trojvqa": {"patch_size": 4}}[attack]
        tensors = {"patch": torch.rand(3, 4, 4)} if attack == "trojvqa" else {}
        record = run / "checkpoints" / "attacks" / attack / "trigger.pt"
        save_record(record, attack, params, tensors, text_key="remember " if attack == "trojvqa" else "")
        triggers.append(record)
        cbpt = run / "checkpoints" / "defenses" / "shapes4" / attack / "cbpt" / "seed0.pt"
        mask = torch.zeros(1, 16, 16)
        mask[:, 10:14, 10:14] = 1
        save_checkpoint(
            cbpt,
            {
                "defense": "cbpt",
                "params": {},
                "state": {
                    "ctx": torch.zeros(4, 2),
                    "report": {"inverted_mask": mask, "inverted_pattern": torch.rand(3, 16, 16)},
                },
            },
        )
        oracle = run / "checkpoints" / "defenses" / "shapes4" / attack / "oracle" / "seed0.pt"
        masks = np.zeros((2, 16, 16), dtype=bool)
        masks[0, 2:8, 2:8], masks[1, 10:14, 10:14] = True, True
        example = {
            "image": torch.full((16, 16, 3), 120, dtype=torch.uint8),
            "masks": torch.from_numpy(masks),
            "flagged": 1,
            "poisoned_label": "star",
            "oracle_label": "circle",
        }
        save_checkpoint(
            oracle, {"defense": "oracle", "params": {}, "state": {"report": {"examples": [example]}}}
        )
        states += [cbpt, oracle]
    embedded_data(run / "data")
    return run, metrics, logs, states, triggers, indices


def run_config():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["attacks"]["enabled"] = ATTACKS
    config["defenses"]["enabled"] = DEFENSES
    config["evaluation"]["datasets"] = [{"name": "shapes4", "kind": "embedded", "target": "star"}]
    config["seeds"] = SEEDS
    config["defenses"]["ablations"] = {"rvpt": ["alpha_proj"]}
    resolved = resolve(config)
    resolved.pop("dvc", None)
    return resolved


def cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "clip_backdoor", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Build the report through the stage's command line, as the `report` rule calls it."""
    tmp_path = tmp_path_factory.mktemp("report")
    run, metrics, logs, states, triggers, indices = make_run(tmp_path)
    cli("summarize", "--metrics", *metrics, "--out", run / "summary.csv")
    config = run_config()
    params = json.dumps({"run": "synthetic-test", "config": config, "style": config["report"]})
    out = tmp_path / "report"
    cli(
        "report",
        "--params",
        params,
        "--summary",
        run / "summary.csv",
        "--train-logs",
        *logs,
        "--triggers",
        *triggers,
        "--states",
        *states,
        "--poison-index",
        *indices,
        "--data",
        run / "data",
        "--captions",
        REPO / "report" / "templates" / "captions.yaml",
        "--out-dir",
        out,
    )
    return out


def markdown_rows(path):
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]
    ]


def test_main_table_gives_all_metrics_intervals_floor_and_verdicts(report):
    rows = {(r["Attack"], r["Defense"]): r for r in markdown_rows(report / "tables" / "main_shapes4.md")}
    defenses = ["No defense", "Clean model (never poisoned)", "RVPT", "CBPT", "Oracle (paper)"]
    defenses.append("Linear probe")
    assert list(rows) == [(a, d) for a in ("BadNet", "SIG", "TrojVQA") for d in defenses]
    rvpt = rows[("BadNet", "RVPT")]
    # t_{0.975,2} = 4.303: 2.0 ± 4.303 * 1.0 / sqrt(3) = [-0.5, 4.5]; CA 91.0 ± 1.0 the same way
    assert (rvpt["ASR (%)"], rvpt["ASR 95% CI"]) == ("2.0 ± 1.0", "[-0.5, 4.5]")
    assert (rvpt["CA (%)"], rvpt["CA 95% CI"], rvpt["PA (%)"]) == ("91.0 ± 1.0", "[88.5, 93.5]", "98.0 ± 1.0")
    assert rvpt["n"] == "3"
    # acceptance by the interval: clean CA 91.0, so CA must stay >= 88.0 at the interval's lower end
    assert rvpt["Acceptance"] == "meets"
    assert rows[("SIG", "RVPT")]["Acceptance"] == "undecided"  # 5.0 ± 3.0: [-2.5, 12.5] straddles 5%
    assert rows[("TrojVQA", "CBPT")]["Acceptance"] == "misses"
    assert rows[("BadNet", "Oracle (paper)")]["Acceptance"] == "misses"  # 20% against 10%
    assert rows[("BadNet", "Linear probe")]["Acceptance"] == ""  # no acceptance figure for it
    assert rows[("BadNet", "Clean model (never poisoned)")]["ASR (%)"] == "10.0 ± 0.0"
    assert rows[("TrojVQA", "Linear probe")]["ASR (%)"] == "n/a"
    assert rows[("SIG", "Oracle (paper)")]["ASR (%)"] == "not run"
    numeric = pd.read_csv(report / "tables" / "main_numeric.csv")
    cell = numeric[(numeric["defense"] == "rvpt") & (numeric["attack"] == "badnet")].iloc[0]
    assert cell["asr_ci_low"] == pytest.approx(0.02 - 4.303 * 0.01 / 3**0.5)
    assert cell["val_ca_mean"] == pytest.approx(0.90)


def test_ablation_table_turns_one_knob_off_per_row(report):
    rows = {r["Defense"]: r for r in markdown_rows(report / "tables" / "ablation_rvpt_shapes4.md")}
    assert list(rows) == ["No defense", "RVPT", "RVPT without alpha_proj"]
    assert rows["RVPT without alpha_proj"]["BadNet"] == "30.0 ± 0.0 (91.0 ± 1.0)"
    assert "Ablations" in (report / "index.html").read_text()


def test_floor_distance(report):
    rows = {r["Defense"]: r for r in markdown_rows(report / "tables" / "floor_distance_shapes4.md")}
    assert rows["RVPT"]["BadNet"] == "-8.0" and rows["CBPT"]["TrojVQA"] == "+29.0"
    assert rows["No defense"]["SIG"] == "+94.0"


def test_overview_cells_bold_and_seeds(report):
    rows = {row["Defense"]: row for row in markdown_rows(report / "tables" / "overview_shapes4.md")}
    assert list(rows) == ["No defense", "RVPT", "CBPT", "Oracle (paper)", "Linear probe"]
    # mean ± std over the three seeds; CA is 90, 91, 92 → 91.0 ± 1.0
    assert rows["RVPT"]["BadNet"] == "2.0 ± 1.0 (91.0 ± 1.0)"
    assert rows["No defense"]["SIG"] == "98.0 ± 1.0 (91.0 ± 1.0)"
    # the lowest ASR of each column is bold, and only it
    assert rows["Linear probe"]["BadNet"] == "**0.0 ± 0.0 (91.0 ± 1.0)**"
    assert rows["CBPT"]["SIG"] == "**4.0 ± 0.0 (91.0 ± 1.0)**"
    assert rows["RVPT"]["TrojVQA"] == "**2.0 ± 0.0 (91.0 ± 1.0)**"
    bold = [(d, a) for d, row in rows.items() for a, cell in row.items() if cell.startswith("**")]
    assert sorted(bold) == [("CBPT", "SIG"), ("Linear probe", "BadNet"), ("RVPT", "TrojVQA")]
    assert rows["Linear probe"]["TrojVQA"] == "n/a"
    assert rows["Oracle (paper)"]["SIG"] == "not run"
    assert rows["RVPT"]["n"] == "3" and rows["Oracle (paper)"]["Avg"] == "not run"
    assert rows["RVPT"]["Avg"] == "3.0"  # mean of 2, 5, 2
    assert rows["Linear probe"]["Avg"] == "25.0*"  # BadNet 0 and SIG 50; TrojVQA n/a
    numeric = pd.read_csv(report / "tables" / "main_numeric.csv")
    cell = numeric[(numeric["defense"] == "rvpt") & (numeric["attack"] == "badnet")].iloc[0]
    assert cell["asr_count"] == 3 and cell["asr_mean"] == pytest.approx(0.02)


def booktabs_rows(text):
    """Parse the booktabs tabular of a LaTeX table: (number of columns, rows split into cells)."""
    spec = re.search(r"\\begin\{tabular\}\{([lrc|]+)\}", text)
    assert spec, "no tabular"
    body = text[spec.end() : text.index(r"\end{tabular}")]
    positions = [body.index(rule) for rule in (r"\toprule", r"\midrule", r"\bottomrule")]
    assert positions == sorted(positions), "booktabs rules out of order"
    rows = [line.strip()[: -len(r"\\")] for line in body.splitlines() if line.strip().endswith(r"\\")]
    cells = [re.split(r"(?<!\\)&", row) for row in rows]
    for row in rows:
        assert row.count("{") == row.count("}"), row
        assert "±" not in row and "_" not in row.replace(r"\_", ""), row
    return len(spec.group(1).replace("|", "")), cells


def test_latex_parses_as_booktabs_and_compiles(report, tmp_path):
    text = (report / "tables" / "main_shapes4.tex").read_text()
    ncols, rows = booktabs_rows(text)
    assert ncols == 10  # Attack, Defense, ASR, CI, CA, CI, PA, CI, n, Acceptance
    assert all(len(row) == ncols for row in rows)
    assert len(rows) == 1 + len(ATTACKS) * (2 + len(DEFENSES))
    assert r"2.0 $\pm$ 1.0" in text and r"95\% CI" in text
    overview = (report / "tables" / "overview_shapes4.tex").read_text()
    ncols, rows = booktabs_rows(overview)
    assert ncols == 1 + len(ATTACKS) + 2  # Defense, attacks, Avg, n
    assert sum(cell.count(r"\textbf{") for row in rows for cell in row) == len(ATTACKS)
    standalone = (report / "tables" / "main_shapes4_standalone.tex").read_text()
    assert r"\usepackage{booktabs}" in standalone and standalone.rstrip().endswith(r"\end{document}")
    if shutil.which("pdflatex") is None:
        return  # parsed above; no TeX installation here to compile it
    shutil.copy(report / "tables" / "main_shapes4_standalone.tex", tmp_path / "t.tex")
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_figures_written_as_pdf_and_png(report):
    stems = {p.stem for p in (report / "figures").glob("*.png")}
    expected = {
        "defense_bars_shapes4",
        "tradeoff_shapes4",
        "defense_cost",
        "training_curves",
        "trigger_gallery",
        "cbpt_inverted_triggers",
        "oracle_localisations",
        "attacks_no_defense",
        "clean_accuracy",
    }
    assert expected <= stems
    assert all((report / "figures" / f"{stem}.pdf").stat().st_size > 0 for stem in stems)


def test_html_notes_and_victims(report):
    page = (report / "index.html").read_text()
    assert "Reconstructions and deviations" in page and "mask_weight" in page
    assert "Comparison with the papers" not in page  # an embedded run has no published numbers
    assert 'src="http' not in page and "<link" not in page  # self-contained
    assert "Deviation: the poisoned fine-tune of BadNet trains the text tower" in page  # not SIG, TrojVQA
    victims = pd.read_csv(report / "tables" / "oracle_victims.csv")
    assert set(victims["attack"]) == {"badnet", "trojvqa"}  # the oracle never ran against SIG
    assert len(victims) == 2 * len(SEEDS) and (victims["victims"] == 3).all()
    # victims [0, 1, 5] scored against poison indices 0..3
    assert victims["precision"].tolist() == pytest.approx([2 / 3] * len(victims))
    assert victims["recall"].tolist() == pytest.approx([0.5] * len(victims))


def test_victim_precision_recall(tmp_path):
    from clip_backdoor.report import artefacts

    path = tmp_path / "poison_index.json"
    path.write_text(json.dumps({"indices": [1, 2, 3, 10]}))
    out = artefacts.victim_precision_recall([1, 2, 5], path, probed=[1, 2, 3, 5, 7])
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(2 / 3)


def test_victim_scores_are_scored_against_the_poison_index(tmp_path):
    from clip_backdoor.report import artefacts

    index = tmp_path / "results" / "r" / "poisoned" / "badnet" / "poison_index.json"
    index.parent.mkdir(parents=True)
    index.write_text(json.dumps({"indices": [3, 7]}))
    logs = {
        "defenses": {
            ("d", "badnet", "oracle", 0): {"victims": [3, 4], "affected_labels": ["star"], "probed": [3, 4]},
            ("d", "badnet", "rvpt", 0): {"curve": [1.0]},
        }
    }
    rows = artefacts.victim_scores(logs, [str(index)])
    assert rows == [
        {"dataset": "d", "attack": "badnet", "defense": "oracle", "seed": 0, "victims": 2,
         "affected_labels": "star", "precision": 0.5, "recall": 1.0, "poisoned_probed": 1}
    ]  # fmt: skip


@pytest.fixture(scope="module")
def chromium():
    """Debian's chromium; installed here when missing and apt-get can (as root), else the test skips."""
    if browser.chromium() is None:
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            pytest.skip("chromium is not installed and cannot be installed here (needs apt-get as root)")
        proc = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0 or browser.chromium() is None:
            pytest.skip(f"apt-get install chromium failed: {proc.stderr[-500:]}")
    return browser.chromium()


def test_html_renders_in_chromium(report, chromium):
    seen = browser.check_page(report / "index.html")
    pngs = list((report / "figures").glob("*.png"))
    assert len(seen["images"]) == len(pngs)
    assert all(image["complete"] and image["width"] > 0 for image in seen["images"]), seen["images"]
    table = seen["main_table"]
    assert table == {"rows": 1 + len(ATTACKS) * (2 + len(DEFENSES)), "cols": 10, "bold": 0}


def test_screenshot(report, chromium, tmp_path):
    png = browser.screenshot(report / "index.html", tmp_path / "shot.png", width=900, height=700)
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(header[16:20], "big") == 900 and int.from_bytes(header[20:24], "big") == 700


def test_paper_run_places_published_numbers(tmp_path):
    """A paper-profile summary gets the papers' numbers beside ours."""
    from clip_backdoor.report import notes

    rows = [metric("imagenet", "badnet", d, 0, a) for d, a in [("none", 0.8), ("rvpt", 0.001)]]
    config = {"data": {"kind": "paper"}}
    (dataset, source, table), *_ = notes.published_tables(pd.DataFrame(rows), config, ["rvpt"])
    assert dataset == "imagenet" and "Table 1" in source
    cells = table.set_index("Defense")["BadNet"]
    assert cells["RVPT"] == "0.1 (90.0) | paper 0.05 (62.76)"
    assert cells["Linear probe"].startswith("not run | paper 3.05")
    assert notes.published_tables(pd.DataFrame(rows), {"data": {"kind": "embedded"}}, ["rvpt"]) == []


def test_perturbation_resistivity_figure_from_prompt_states(tmp_path):
    from clip_backdoor.models.factory import build_model, save_model
    from clip_backdoor.report import artefacts, figures

    torch.manual_seed(0)
    model = build_model({"kind": "embedded", "config": "micro-convvit"})
    save_model(tmp_path / "attacks" / "badnet" / "model.pt", model)
    record = tmp_path / "attacks" / "badnet" / "trigger.pt"
    save_record(record, "badnet", {"patch_size": 8}, {}, text_key="")
    embedded_data(tmp_path / "data", size=32)
    layers, width = len(model.clip.visual.transformer.resblocks), model.clip.visual.transformer.width
    states = {}
    for defense, depth in (("rvpt", 0), ("vpt", 1)):
        path = tmp_path / "defenses" / "shapes4" / "badnet" / defense / "seed0.pt"
        prompts = torch.randn(layers - depth, 2, width)
        save_checkpoint(path, {"state": {"prompts": prompts, "depth": depth, "tokens": 2}})
        states.update(artefacts.load_states([str(path)]))
    assert states[("shapes4", "badnet", "rvpt", 0)]["report"] == {}
    dataset = {"name": "shapes4", "kind": "embedded", "target": "star"}
    model_path = str(tmp_path / "attacks" / "badnet" / "model.pt")
    items = artefacts.resistivity_items(states, [str(record)], [model_path], tmp_path / "data", dataset, 6)
    assert [item["attack"] for item in items] == ["badnet"]
    curves = items[0]["curves"]
    assert set(curves) == {"none", "rvpt", "vpt"} and all(len(c) == layers for c in curves.values())
    assert all(-1 <= v <= 1 for c in curves.values() for v in c)
    assert curves["none"] != curves["rvpt"]
    figures.apply_style()
    png = figures.perturbation_resistivity(items, tmp_path / "figures")
    assert png == "rvpt_perturbation_resistivity.png"
    assert (tmp_path / "figures" / "rvpt_perturbation_resistivity.pdf").stat().st_size > 0
    assert figures.perturbation_resistivity([], tmp_path / "figures") is None


def test_scale_notes_name_a_patch_deviation_of_an_enabled_badnet():
    from clip_backdoor.report import notes

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    lc = {"trigger": {"patch_size": 10, "location": "center", "pattern": "checkerboard"}}
    config["attacks"]["methods"]["badnet_lc"] = lc
    config["attacks"]["enabled"] = ["badnet", "badnet_lc"]
    page = notes.scale_notes(config)
    assert "BadNet-LC's patch is a checkerboard pattern at a center location" in page
    assert "BadNet's patch" not in page
    config["attacks"]["enabled"] = ["badnet"]
    assert "BadNet-LC's patch" not in notes.scale_notes(config)
