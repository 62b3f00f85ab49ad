import hashlib

import numpy as np

from clip_backdoor.data import embedded
from clip_backdoor.data.world import SHAPES, render_object, render_scene, shape_mask

PARAMS = {
    "seed": 7,
    "image_size": 32,
    "n_pretrain": 40,
    "n_poison_pool": 10,
    "n_clean_pool": 10,
    "n_oracle_train": 5,
    "train_per_class": 2,
    "test_per_class": 3,
    "val_per_class": 3,
    "radius_range": [6.5, 13.5],
    "max_distractors": 2,
    "world_classes": ["circle", "square", "star", "ring"],
    "downstream_classes": ["circle", "star"],
}


def tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_every_shape_has_a_distinct_silhouette():
    u, v = np.meshgrid(np.linspace(-1.2, 1.2, 48), np.linspace(-1.2, 1.2, 48))
    masks = {s: shape_mask(s, u, v) for s in SHAPES}
    for s, m in masks.items():
        assert 0.1 < m.mean() < 0.9, s
    for i, a in enumerate(SHAPES):
        for b in SHAPES[i + 1 :]:
            assert (masks[a] != masks[b]).mean() > 0.03, (a, b)


def test_render_object_coverage_is_antialiased_and_bounded():
    cover = render_object("circle", 32, 16, 16, 8)
    assert cover.min() == 0 and cover.max() == 1
    assert np.abs(cover.sum() - np.pi * 64) < 8


def test_scene_caption_names_class_and_mask_marks_object():
    rng = np.random.default_rng(0)
    for _ in range(30):
        image, inst, label, caption = render_scene(rng, list(SHAPES), 32, (6.5, 13.5), 2)
        assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
        assert SHAPES[label] in caption
        assert (inst == 1).sum() > 20
        assert " a e" not in caption and " a a" not in caption


def test_prepare_is_byte_identical_and_splits_are_right(tmp_path):
    embedded.prepare(tmp_path / "a", PARAMS)
    embedded.prepare(tmp_path / "b", PARAMS)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    test = embedded.load_split(tmp_path / "a", "downstream_test")
    assert test["classes"] == ["circle", "star"]
    assert np.bincount(test["labels"]).tolist() == [3, 3]
    pre = embedded.load_split(tmp_path / "a", "pretrain")
    assert len(pre["captions"]) == 40 and pre["images"].shape == (40, 32, 32, 3)
    assert (tmp_path / "a" / "world.json").exists()


def test_val_split_is_disjoint_as_large_as_test_and_leaves_the_other_splits_unchanged(tmp_path):
    embedded.prepare(tmp_path / "a", PARAMS)
    val, test = (embedded.load_split(tmp_path / "a", f"downstream_{s}") for s in ("val", "test"))
    train = embedded.load_split(tmp_path / "a", "downstream_train")
    assert np.bincount(val["labels"]).tolist() == np.bincount(test["labels"]).tolist() == [3, 3]
    seen = {img.tobytes() for split in (train, test) for img in split["images"]}
    assert not any(img.tobytes() in seen for img in val["images"])
    # every other split is rendered from its own seed index, so they are what they were before val existed
    without = {k: v for k, v in PARAMS.items() if k != "val_per_class"}
    for name in ("pretrain", "downstream_train", "downstream_test"):
        written = embedded.load_split(tmp_path / "a", name)
        count = len(written["labels"])
        split = embedded._render_split(name, embedded_index(name), count, *render_args(name, without))
        assert np.array_equal(split[0], written["images"]), name


def embedded_index(name):
    return [*embedded.WORLD_SPLITS, "downstream_train", "downstream_test"].index(name)


def render_args(name, params):
    downstream = name.startswith("downstream")
    classes = params["downstream_classes"] if downstream else params["world_classes"]
    return classes, params, downstream


def test_different_seed_gives_different_data(tmp_path):
    embedded.prepare(tmp_path / "a", PARAMS)
    embedded.prepare(tmp_path / "b", {**PARAMS, "seed": 8})
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "b")


def test_downstream_classes_must_be_in_world():
    import pytest

    with pytest.raises(ValueError, match="downstream_classes"):
        embedded.validate_params({**PARAMS, "downstream_classes": ["banana"]})
