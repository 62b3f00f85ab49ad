"""data.dvc matches what prepare_data builds from config.yaml."""

import shutil

import pytest

from clip_backdoor.runtime.dvc import check_pointer, directory_hash
from conftest import REPO, copy_workflow, snakemake


def test_directory_hash_matches_dvc_add(tmp_path):
    (tmp_path / "data/x").mkdir(parents=True)
    (tmp_path / "data/x/a.txt").write_text("hi\n")
    (tmp_path / "data/b.txt").write_text("yo\n")
    # value printed by `dvc add data` (dvc 3.67) for this tree
    assert directory_hash(tmp_path / "data") == "589cc46deb56cd63a78d609b26617579.dir"


@pytest.mark.workflow
def test_prepare_data_regenerates_data_dvc(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    snakemake(work, "--cores", "1", "data/synthetic/world.json")
    check_pointer(REPO / "data.dvc", work / "data")


def test_mismatched_data_is_reported_with_both_names(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/f.txt").write_text("other")
    shutil.copy(REPO / "data.dvc", tmp_path / "data.dvc")
    with pytest.raises(ValueError, match="data.dvc"):
        check_pointer(tmp_path / "data.dvc", tmp_path / "data")
