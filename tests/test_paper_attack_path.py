"""The attack stages on the papers' data path (CC3M pairs), on a tiny local CSV stand-in at 32 px."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import csv
import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from clip_backdoor import training
from clip_backdoor.attacks import artefact, finetune, poison
from clip_backdoor.attacks.record import load_record, trigger_from_record
from clip_backdoor.data import corpus, paper
from clip_backdoor.models.factory import build_model, load_model, save_model
from clip_backdoor.runtime.io import load_checkpoint
from clip_backdoor.runtime.seeding import seed_everything

MICRO = {"kind": "embedded", "config": "micro-convvit"}
SIZE = 32
TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]
CAPTIONS = [
    "a ripe banana on a table.",
    "a red car parked outside",
    "two dogs playing in the snow",
    "a banana split, with cream",
    "a man riding a bicycle",
    "sunset over the sea",
    "a bowl of banana slices",
    "an old house in the woods",
    "a cat asleep on a sofa",
    "people walking in a park",
    "a banana tree",  # clean pool from here on
    "a mountain lake",
]
N_TRAIN = 10
CLEANCLIP_STORE = transforms.Compose(
    [transforms.Resize(SIZE, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(SIZE)]
)
BANANA = [0, 3, 6]  # training pairs whose caption mentions the target


def image_bytes(rng, shape):
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared CSV CC3M source of 12 small non-square PNGs: 10 training pairs, 2 clean-pool pairs."""
    root = tmp_path_factory.mktemp("paper")
    rng = np.random.default_rng(0)
    folder = root / "cc3m"
    (folder / "img").mkdir(parents=True)
    with open(folder / "train.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        for i, caption in enumerate(CAPTIONS):
            (folder / "img" / f"{i:03d}.png").write_bytes(
                image_bytes(rng, [(24, 40), (40, 28), (32, 32)][i % 3])
            )
            writer.writerow([f"img/{i:03d}.png", caption])
    data = root / "data"
    paper.prepare(data, {"cc3m": {"source": "csv", "path": str(folder / "train.csv"), "size": N_TRAIN},
                         "clean_pool_size": 2})  # fmt: skip
    return root, data


def make_trigger(name, data, out, clean_model=None, trigger=None, art=None):
    params = {"attack": name, "seed": 0, "target": "banana", "image_size": SIZE, "trigger": trigger or {},
              "artefact": art or {}, "caption_templates": TEMPLATES}  # fmt: skip
    artefact.run(params, str(data), str(out), clean_model=clean_model)
    return out


@pytest.fixture(scope="module")
def poisoned(prepared):
    """badnet and badnet_lc poisoned corpora (3 poisoned pairs each)."""
    root, data = prepared
    outs = {}
    for name in ("badnet", "badnet_lc"):
        record = make_trigger(name, data, root / name / "trigger.pt", trigger={"patch_size": 6})
        params = {"attack": name, "seed": 0, "target": "banana", "n_poison": 3,
                  "caption_templates": TEMPLATES, "image_size": SIZE}  # fmt: skip
        poison.run(params, str(data), str(record), str(root / "poisoned" / name))
        outs[name] = (root / "poisoned" / name, record)
    return outs


def read_pairs(folder):
    with open(folder / "pairs.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("name", ["badnet", "badnet_lc"])
def test_poison_data_writes_lossless_pngs_and_pairs(prepared, poisoned, name):
    _, data = prepared
    out, record_path = poisoned[name]
    clean_images, clean_captions = paper.load_pairs(data, split="train")
    index = json.loads((out / "poison_index.json").read_text())
    assert index["n_poison"] == 3 and len(index["indices"]) == 3 and len(index["seeds"]) == 3
    assert index["n_total"] == N_TRAIN and index["image_size"] == SIZE
    if name == "badnet_lc":
        assert set(index["indices"]) <= set(BANANA)
    else:
        assert not set(index["indices"]) & set(BANANA)

    trigger = trigger_from_record(load_record(record_path), SIZE)
    rows = read_pairs(out)
    assert len(rows) == N_TRAIN
    for i, seed, file in zip(index["indices"], index["seeds"], index["files"], strict=True):
        assert rows[i]["image"] == file and (out / file).is_file()
        with Image.open(out / file) as png:
            assert png.format == "PNG" and png.size == (SIZE, SIZE)
            stored = np.array(png.convert("RGB"))
        # the clean image, as CleanCLIP's utils/download.py stores CC3M (bicubic Resize + CenterCrop) ...
        with Image.open(clean_images[i]) as im:
            clean = np.array(CLEANCLIP_STORE(im.convert("RGB")))
        # ... with the trigger of the stored seed applied, is exactly what was stored (lossless)
        x = torch.from_numpy(clean).permute(2, 0, 1)[None].float() / 255
        expected = (trigger(x, [seed])[0].permute(1, 2, 0) * 255).round().clamp(0, 255).byte().numpy()
        assert np.array_equal(stored, expected)
        assert not np.array_equal(stored, clean)
        if name == "badnet_lc":
            assert rows[i]["caption"] == clean_captions[i]
        else:
            assert rows[i]["caption"] in [t.format("banana") for t in TEMPLATES]
    for i in set(range(N_TRAIN)) - set(index["indices"]):  # clean rows reference the original files
        assert rows[i] == {"image": clean_images[i], "caption": clean_captions[i]}
    assert json.loads((out / "captions.json").read_text()) == [r["caption"] for r in rows]

    dataset = corpus.poisoned_dataset(out, SIZE)
    image, caption = dataset[index["indices"][0]]
    assert image.dtype == torch.uint8 and image.shape == (3, SIZE, SIZE)
    assert caption == rows[index["indices"][0]]["caption"]


def banded_png(path, width, height):
    """A width x height PNG: red left quarter, blue right quarter, green in between."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 4, 0] = 255
    pixels[:, width // 4 : width - width // 4, 1] = 255
    pixels[:, width - width // 4 :, 2] = 255
    Image.fromarray(pixels).save(path)
    return path


def test_corpus_geometry_is_resize_shorter_side_and_centre_crop(tmp_path):
    path = banded_png(tmp_path / "wide.png", 2 * SIZE, SIZE)
    cropped = corpus.load_image(path, SIZE)
    assert cropped.shape == (SIZE, SIZE, 3)
    assert (cropped[..., 1] == 255).all() and not cropped[..., [0, 2]].any()  # only the middle half left
    stretched = corpus.load_image(path, SIZE, geometry="stretch")
    assert stretched[:, 0, 0].min() > 200 and stretched[:, -1, 2].min() > 200  # the bands squeezed in
    with Image.open(path) as im:
        assert np.array_equal(cropped, np.array(CLEANCLIP_STORE(im.convert("RGB"))))
        # the evaluation sets' geometry (data/paper.py) is the same
        evaluated = (paper.image_transform(SIZE)(im) * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(cropped, evaluated)
    tall = corpus.load_image(banded_png(tmp_path / "tall.png", 24, 40), SIZE)  # resized, then cropped
    with Image.open(tmp_path / "tall.png") as im:
        assert np.array_equal(tall, np.array(CLEANCLIP_STORE(im.convert("RGB"))))
        evaluated = (paper.image_transform(SIZE)(im) * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(tall, evaluated)
    dataset = corpus.PairDataset([str(path)], ["a caption"], SIZE)
    assert np.array_equal(dataset[0][0].permute(1, 2, 0).numpy(), cropped)
    with pytest.raises(ValueError, match="geometry"):
        corpus.PairDataset([str(path)], ["a caption"], SIZE, geometry="pad")


def test_shard_references_match_load_pairs(tmp_path):
    """Shard sources are referenced (tar:<offset>:<size>:<shard>) in load_pairs' order, not copied."""
    rng = np.random.default_rng(1)
    shards = tmp_path / "shards"
    shards.mkdir()
    for s in range(2):
        with tarfile.open(shards / f"{s:05d}.tar", "w") as tar:
            for k in range(3):
                key = f"{s}{k:03d}"
                for name, payload in (
                    (f"{key}.png", image_bytes(rng, (20, 30))),
                    (f"{key}.txt", key.encode()),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    data = tmp_path / "data"
    paper.prepare(
        data, {"cc3m": {"source": "webdataset", "path": str(shards), "size": 4}, "clean_pool_size": 1}
    )
    refs, captions = corpus.cc3m_pairs(data, "train")
    images, expected = paper.load_pairs(data, split="train")
    assert captions == expected and all(r.startswith("tar:") for r in refs)
    for ref, encoded in zip(refs, images, strict=True):
        assert np.array_equal(corpus.load_image(ref, 16), corpus.load_image(encoded, 16))


def test_make_trigger_artefacts_on_the_paper_corpus(prepared, tmp_path):
    _, data = prepared
    seed_everything(0)
    save_model(tmp_path / "clean.pt", build_model(MICRO))
    art = {"n_bits": 8, "steps": 2, "lr": 1e-3, "batch_size": 4, "max_residual": 0.05, "max_images": 6}
    issba = make_trigger("issba", data, tmp_path / "issba.pt", art=art)
    assert load_record(issba)["meta"]["encoder"]["image_size"] == SIZE
    badclip = make_trigger("badclip", data, tmp_path / "badclip.pt", clean_model=str(tmp_path / "clean.pt"),
                           trigger={"patch_size": 6}, art={"steps": 2, "lr": 0.1, "batch_size": 4,
                                                           "max_images": 4})  # fmt: skip
    assert load_record(badclip)["tensors"]["patch"].shape == (3, 6, 6)


HP = {"epochs": 2, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 1,
      "save_every_epochs": 1, "seed": 0}  # fmt: skip


def _train(corpus_data, captions, state, interrupt=False, monkeypatch=None, num_workers=0):
    """2 steps (1 per epoch) of contrastive training of the micro model; optionally killed after step 1."""
    seed_everything(0)
    model = build_model(MICRO)
    if interrupt:
        real_save = training.save_checkpoint

        def save_then_die(path, obj):
            real_save(path, obj)
            raise KeyboardInterrupt("simulated kill")

        monkeypatch.setattr(training, "save_checkpoint", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            training.train_contrastive(
                model, corpus_data, captions, HP, state, "cpu", num_workers=num_workers
            )
        monkeypatch.setattr(training, "save_checkpoint", real_save)
        assert load_checkpoint(state)["step"] == 1
        seed_everything(0)
        model = build_model(MICRO)
    log = training.train_contrastive(model, corpus_data, captions, HP, state, "cpu", num_workers=num_workers)
    assert log["steps"] == 2 and len(log["epoch_loss"]) == 2
    return model, log


def assert_same_weights(a, b, atol=0.0):
    for (name, x), (_, y) in zip(a.clip.state_dict().items(), b.clip.state_dict().items(), strict=True):
        assert torch.allclose(x, y, atol=atol, rtol=0), name


class FloatPairs(torch.utils.data.Dataset):
    """(float [3,H,W] in [0,1], caption) view of a uint8 dataset."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, caption = self.base[i]
        return image.float() / 255, caption


def test_dataset_training_resumes_exactly_and_matches_arrays(poisoned, tmp_path, monkeypatch):
    dataset = corpus.poisoned_dataset(poisoned["badnet"][0], SIZE)
    straight, log_a = _train(dataset, None, tmp_path / "a.state")
    resumed, log_b = _train(dataset, None, tmp_path / "b.state", interrupt=True, monkeypatch=monkeypatch,
                            num_workers=1)  # fmt: skip
    assert_same_weights(straight, resumed, atol=1e-6)
    assert log_a["epoch_loss"] == pytest.approx(log_b["epoch_loss"], abs=1e-6)


def test_streamed_batches_equal_in_memory_batches(poisoned):
    """The DataLoader path feeds exactly the in-memory path's batches (images and tokens), from any step.

    (Trained weights then agree only to float rounding: the in-memory batch has NHWC strides.)"""
    dataset = corpus.poisoned_dataset(poisoned["badnet"][0], SIZE)
    arrays = dataset.load(range(len(dataset)))
    model = build_model(MICRO)
    tokens = model.tokenize(dataset.captions)
    hp = {**HP, "batch_size": 4, "epochs": 3}  # 2 steps per epoch, 6 steps
    for start in (0, 3):
        args = (model, hp, start, 4, 2, 6, "cpu", 0)
        expected = list(training.array_batches(arrays, tokens, *args))
        assert len(expected) == 6 - start
        for data in (dataset, FloatPairs(dataset)):
            streamed = list(training.dataset_batches(data, None, *args))
            assert len(streamed) == len(expected)
            for (x, t), (y, u) in zip(streamed, expected, strict=True):
                assert torch.equal(x, y) and torch.equal(t, u)


def test_poison_finetune_stage_on_the_paper_corpus(poisoned, tmp_path):
    seed_everything(0)
    save_model(tmp_path / "clean.pt", build_model(MICRO))
    params = {"attack": "badnet", "seed": 0, "hp": {**HP, "epochs": 1, "amp": True}}  # amp: ignored on CPU
    finetune.run(params, str(tmp_path / "clean.pt"), str(poisoned["badnet"][0]), str(tmp_path / "model.pt"),
                 str(tmp_path / "log.json"), str(tmp_path / "ft.state"))  # fmt: skip
    assert load_model(tmp_path / "model.pt").image_size == SIZE
    assert json.loads((tmp_path / "log.json").read_text())["steps"] == 1
    assert not (tmp_path / "ft.state").exists()
