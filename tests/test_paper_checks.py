"""Planning-time checks of the papers' inputs (data/paper_checks.py) on a fabricated set."""

import hashlib
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from clip_backdoor.data import paper, paper_checks
from clip_backdoor.data.paper_checks import check_paper_inputs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from paper_set import fabricate, paper_config  # noqa: E402


@pytest.fixture
def setup(tmp_path):
    paths = fabricate(tmp_path / "set", n_pairs=8)
    config = paper_config(paths, yaml.safe_load((REPO / "configs" / "paper.yaml").read_text()))
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"not loaded by the check")
    config["model"]["arch"]["pretrained"] = str(weights)
    fastsam = tmp_path / "FastSAM-x.pt"
    fastsam.write_bytes(b"x")
    config["oracle"]["fastsam"].update(weights=str(fastsam), sha256=hashlib.sha256(b"x").hexdigest())
    return paths, config


def test_fastsam_needs_its_weights_and_a_trusted_hash(setup):
    _, config = setup
    config["oracle"]["fastsam"]["sha256"] = None
    one_problem(config, "oracle.fastsam.sha256: not set")


def one_problem(config, *fragments):
    problems = check_paper_inputs(config)
    assert len(problems) == 1, problems
    for fragment in fragments:
        assert fragment in problems[0], problems[0]
    return problems[0]


def test_fabricated_set_passes(setup):
    assert check_paper_inputs(setup[1]) == []


def test_embedded_profile_is_not_checked():
    assert check_paper_inputs({"data": {"kind": "embedded"}}) == []


def test_constants_match_the_adapters():
    for name in ("IMAGE_EXTS", "CALTECH_IGNORED", "CALTECH_RENAME", "CALTECH_SPLIT_FILE"):
        assert getattr(paper_checks, name) == getattr(paper, name)


@pytest.mark.parametrize("name", ["imagenet", "caltech101", "oxfordpets"])
def test_missing_root(setup, name):
    paths, config = setup
    shutil.rmtree(paths[name])
    one_problem(config, f"evaluation.datasets[{name}]", "root folder not found", str(paths[name]))


def test_imagenet_flat_val(setup):
    paths, config = setup
    val = paths["imagenet"] / "val"
    for image in list(val.rglob("*.JPEG")):
        image.rename(val / image.name)
    for folder in [p for p in val.iterdir() if p.is_dir()]:
        folder.rmdir()
    one_problem(config, f"no class folders in {val}", "<wnid>/*.JPEG", "20 images directly")


def test_imagenet_missing_train_split(setup):
    paths, config = setup
    shutil.rmtree(paths["imagenet"] / "train")
    one_problem(config, "train split folder not found", str(paths["imagenet"] / "train"))


def test_imagenet_classnames_count(setup):
    paths, config = setup
    (paths["imagenet"] / "classnames.txt").write_text("banana\n")
    one_problem(config, "classnames.txt: 1 class names for 10 class folders")


def test_imagenet_without_names_misses_the_target(setup):
    paths, config = setup
    (paths["imagenet"] / "classnames.txt").unlink()
    one_problem(config, "target 'banana' is not among the 10 class names", "folder names")


def test_imagenet_1000_classes_use_openai_names(tmp_path, setup):
    _, config = setup
    full = fabricate(tmp_path / "full", n_pairs=2, per_class=1, all_imagenet_classes=True)
    config["evaluation"]["datasets"][0]["root"] = str(full["imagenet"])
    assert check_paper_inputs(config) == []


def test_caltech_without_background_folder(setup):
    paths, config = setup
    categories = paths["caltech101"] / "caltech101" / "101_ObjectCategories"
    shutil.rmtree(categories / "BACKGROUND_Google")
    one_problem(config, "no BACKGROUND_Google folder", str(categories))


def test_caltech_misnamed_images(setup):
    paths, config = setup
    folder = paths["caltech101"] / "caltech101" / "101_ObjectCategories" / "accordion"
    (folder / "image_0001.jpg").rename(folder / "0001.jpg")
    one_problem(config, f"{folder} has no image_0001.jpg")


def test_pets_missing_split_file(setup):
    paths, config = setup
    split = paths["oxfordpets"] / "oxford-iiit-pet" / "annotations" / "test.txt"
    split.unlink()
    one_problem(config, "OxfordIIITPet file not found", str(split))


def test_target_case(setup):
    _, config = setup
    config["evaluation"]["datasets"][2]["target"] = "samoyed"
    one_problem(config, "target 'samoyed'", "'Samoyed' is: the evaluation matches the name exactly")


def test_cc3m_csv_missing(setup):
    paths, config = setup
    paths["cc3m_csv"].unlink()
    one_problem(config, "data.paper.cc3m (csv): CSV not found", str(paths["cc3m_csv"]))


def test_cc3m_csv_images_missing(setup):
    paths, config = setup
    shutil.rmtree(paths["cc3m_csv"].parent / "img")
    one_problem(config, "8 of 8 sampled rows", "name missing image files", "row 1:")


def test_cc3m_csv_columns(setup):
    paths, config = setup
    paths["cc3m_csv"].write_text("path,text\nimg/000000.jpg,a dog\n")
    one_problem(config, "lacks column(s) ['caption', 'image']")


def test_cc3m_shards(setup, tmp_path):
    paths, config = setup
    config["data"]["paper"]["cc3m"].update(source="webdataset", path=str(paths["cc3m_shards"]))
    assert check_paper_inputs(config) == []
    config["data"]["paper"]["cc3m"]["path"] = str(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    one_problem(config, "no .tar shards at")
    (tmp_path / "empty" / "0.tar").write_bytes(b"garbage" * 100)
    one_problem(config, "is not a readable tar shard")


def test_weights_file_missing(setup, tmp_path):
    _, config = setup
    config["model"]["arch"]["pretrained"] = str(tmp_path / "absent.safetensors")
    one_problem(config, "model.arch.pretrained: weights file not found", "absent.safetensors")


def test_weights_tag_not_cached(setup, tmp_path, monkeypatch):
    _, config = setup
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    config["model"]["arch"]["pretrained"] = "openai"
    one_problem(config, "ViT-B-32/'openai' cannot be loaded offline", "not in the local Hugging Face cache")


def test_weights_tag_cached(setup, tmp_path, monkeypatch):
    _, config = setup
    snapshot = tmp_path / "hf" / "models--timm--vit_base_patch32_clip_224.openai"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text("0" * 40)
    for name in ("open_clip_pytorch_model.bin", "open_clip_model.safetensors"):
        (snapshot / "snapshots" / ("0" * 40)).mkdir(parents=True, exist_ok=True)
        (snapshot / "snapshots" / ("0" * 40) / name).write_bytes(b"cached")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    config["model"]["arch"]["pretrained"] = "openai"
    assert check_paper_inputs(config) == []


def test_unknown_tag(setup):
    _, config = setup
    config["model"]["arch"]["pretrained"] = "no-such-tag"
    one_problem(config, "open_clip knows no pretrained tag 'no-such-tag'")
