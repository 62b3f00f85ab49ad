"""The papers' adapters on tiny local stand-ins: downstream folders, CC3M sources, open_clip checkpoints."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import csv
import functools
import http.server
import io
import json
import re
import shutil
import sys
import tarfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pytest
import torch
from PIL import Image

from clip_backdoor.data import paper
from clip_backdoor.runtime.io import CheckpointError, load_checkpoint

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def write_png(path, colour, size=(12, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def png_bytes(colour, size=(12, 8)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def imagenet_layout(root, classes=("n0001", "n0002"), per_class=2):
    for split in ("train", "val"):
        for c, wnid in enumerate(classes):
            for i in range(per_class):
                write_png(root / split / wnid / f"{wnid}_{i}.PNG", COLOURS[c])
    return root


# ---------------------------------------------------------------------------------------------------
# downstream datasets


def test_imagenet_folder_loads_labels_and_classnames(tmp_path):
    root = imagenet_layout(tmp_path / "imagenet")
    cfg = {"name": "tinynet", "kind": "imagenet_folder", "root": str(root), "image_size": 32}
    data, classnames = paper.load_downstream(cfg, "test")
    assert classnames == ["n0001", "n0002"]
    assert len(data) == 4
    assert [data[i][1] for i in range(4)] == [0, 0, 1, 1]
    image, label = data[2]
    assert isinstance(label, int)
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    # not normalised: pure green stays (0, 1, 0) in [0,1]
    assert torch.allclose(image[:, 16, 16], torch.tensor([0.0, 1.0, 0.0]), atol=1e-2)
    assert image.min() >= 0 and image.max() <= 1

    (root / "classnames.txt").write_text("tench\ngoldfish\n")
    train, names = paper.load_downstream({**cfg, "image_size": 224}, "train")
    assert names == ["tench", "goldfish"]
    assert train[0][0].shape == (3, 224, 224)


def test_val_is_carved_from_train_disjoint_from_every_shot_set(tmp_path):
    from clip_backdoor.defenses.interface import dataset_labels, few_shot_indices

    root = imagenet_layout(tmp_path / "imagenet", per_class=6)
    cfg = {
        "name": "tinynet",
        "kind": "imagenet_folder",
        "root": str(root),
        "image_size": 16,
        "val_per_class": 2,
    }
    val, _ = paper.load_downstream(cfg, "val")
    train, _ = paper.load_downstream(cfg, "train")
    full, _ = paper.load_downstream(cfg, "test")  # the val folder: untouched by the carving
    assert len(full) == 12 and len(val) == 4 and len(train) == 8
    assert sorted(dataset_labels(val)) == [0, 0, 1, 1]
    assert not set(val.indices) & set(train.indices)
    assert paper.validation_indices([0] * 6 + [1] * 6, 2) == sorted(val.indices)  # the same on every call
    for seed in range(5):  # shots are drawn from what train keeps, so no shot is ever a val image
        shots = {train.indices[i] for i in few_shot_indices(dataset_labels(train), 16, seed)}
        assert not shots & set(val.indices)
    assert train[0][0].shape == (3, 16, 16)


def test_evaluation_geometry_crops_then_triggers(tmp_path):
    """Test images: bicubic Resize of the shorter side + CenterCrop; the trigger sees the cropped image."""
    from clip_backdoor.evaluation.evaluate import predict_dataset

    pixels = torch.zeros(16, 32, 3, dtype=torch.uint8)  # 2:1, red | green | green | blue quarters
    pixels[:, :8, 0], pixels[:, 8:24, 1], pixels[:, 24:, 2] = 255, 255, 255
    path = tmp_path / "imagenet" / "val" / "n0001" / "wide.PNG"
    path.parent.mkdir(parents=True)
    Image.fromarray(pixels.numpy()).save(path)
    data, _ = paper.load_downstream({"name": "wide", "kind": "imagenet_folder", "root": str(path.parents[2]),
                                     "image_size": 16}, "test")  # fmt: skip
    image = data[0][0]
    assert torch.equal(image, torch.stack([torch.zeros(16, 16), torch.ones(16, 16), torch.zeros(16, 16)]))
    seen = []

    def trigger(images, seeds):
        seen.append(images.clone())
        return images

    predict_dataset(lambda x: torch.zeros(len(x), 2), data, "cpu", 4, trigger=trigger)
    assert len(seen) == 1 and torch.equal(seen[0][0], image)


def test_imagenet_classnames_are_openai_order():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    assert IMAGENET_CLASSNAMES[954] == "banana"
    names = paper.imagenet_classnames([f"n{i:08d}" for i in range(1000)])
    assert names[954] == "banana" and len(names) == 1000


@pytest.mark.parametrize("kind", ["imagenet_folder", "caltech101", "oxfordpets"])
def test_missing_root_names_dataset_and_path(tmp_path, kind):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=rf"'mydata'.*{re.escape(str(missing))}"):
        paper.load_downstream({"name": "mydata", "kind": kind, "root": str(missing)}, "test")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=rf"'mydata'.*{re.escape(str(empty))}"):
        paper.load_downstream({"name": "mydata", "kind": kind, "root": str(empty)}, "test")
    assert not missing.exists() and list(empty.iterdir()) == []  # torchvision created nothing


def test_caltech101_coop_names_and_disjoint_splits(tmp_path):
    images = tmp_path / "caltech101" / "101_ObjectCategories"
    for c, category in enumerate(["BACKGROUND_Google", "Faces", "Faces_easy", "accordion", "airplanes"]):
        for i in range(1, 5):
            write_png(images / category / f"image_{i:04d}.jpg", COLOURS[c % 4], size=(10, 7))
    cfg = {"name": "caltech", "kind": "caltech101", "root": str(tmp_path), "image_size": 16}
    test, names = paper.load_downstream(cfg, "test")
    train, _ = paper.load_downstream(cfg, "train")
    val, _ = paper.load_downstream(cfg, "val")  # carved from train: 3 per class, at most half of it (1)
    assert names == ["face", "accordion", "airplane"]
    assert len(test) + len(train) + len(val) == 12 and len(test) == 3 and len(val) == 3
    assert sorted(test.labels) == [0, 1, 2]
    train_paths = {train.dataset.paths[i] for i in train.indices}
    val_paths = {val.dataset.paths[i] for i in val.indices}
    assert set(test.paths).isdisjoint(train_paths | val_paths) and train_paths.isdisjoint(val_paths)
    image, label = test[0]
    assert image.shape == (3, 16, 16) and isinstance(label, int)


# ---------------------------------------------------------------------------------------------------
# CC3M sources


def csv_source(folder, n=3):
    rows = []
    for i in range(n):
        write_png(folder / "images" / f"{i}.png", COLOURS[i % 4])
        rows.append({"image": f"images/{i}.png", "caption": f"caption {i}"})
    path = folder / "train.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_csv_source_is_indexed_and_manifest_written(tmp_path):
    path = csv_source(tmp_path / "cc3m")
    out = tmp_path / "data"
    paper.prepare(out, {"cc3m": {"source": "csv", "path": str(path), "size": 2}, "clean_pool_size": 5})
    world = json.loads((out / "world.json").read_text())
    assert world["source"] == "csv" and world["path"] == str(path.resolve()) and world["n_pairs"] == 3
    assert world["splits"] == {"train": [0, 2], "clean_pool": [2, 3]}
    images, captions = paper.load_pairs(out, limit=5)
    assert captions == ["caption 0", "caption 1"]
    assert Image.open(images[1]).size == (12, 8)
    assert paper.load_pairs(out, split="clean_pool")[1] == ["caption 2"]

    (tmp_path / "cc3m" / "images" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 3 images are missing"):
        paper.prepare(tmp_path / "data2", {"cc3m": {"source": "csv", "path": str(path)}})
    assert not (tmp_path / "data2" / "world.json").exists()


def write_shard(path, samples):
    with tarfile.open(path, "w") as tar:
        for name, data in samples:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("reader", ["webdataset", "tarfile"])
def test_webdataset_source(tmp_path, monkeypatch, reader):
    if reader == "tarfile":
        monkeypatch.setitem(sys.modules, "webdataset", None)  # import fails → tarfile fallback
    else:
        pytest.importorskip("webdataset")
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(shards / "00000.tar", [
        ("000.jpg", png_bytes(COLOURS[0])), ("000.txt", b"a red thing"),
        ("001.png", png_bytes(COLOURS[1])), ("001.txt", b"a green thing"),
        ("002.jpg", png_bytes(COLOURS[2])),  # no caption: not a pair
    ])  # fmt: skip
    write_shard(shards / "00001.tar", [("003.jpg", png_bytes(COLOURS[3])), ("003.txt", b"a yellow thing")])
    out = tmp_path / "data"
    paper.prepare(
        out, {"cc3m": {"source": "webdataset", "path": str(shards), "size": 2}, "clean_pool_size": 1}
    )
    world = json.loads((out / "world.json").read_text())
    assert world["n_pairs"] == 3 and [s["n_pairs"] for s in world["shards"]] == [2, 1]
    images, captions = paper.load_pairs(out, split="all")
    assert captions == ["a red thing", "a green thing", "a yellow thing"]
    assert Image.open(io.BytesIO(images[2])).convert("RGB").getpixel((0, 0)) == COLOURS[3]
    assert paper.load_pairs(out, split="clean_pool")[1] == ["a yellow thing"]


def test_headerless_cc3m_tsv_is_read(tmp_path):
    path = tmp_path / "Train_GCC-training.tsv"
    path.write_text("a cat on a mat\thttp://x/1.jpg\na dog\thttps://x/2.jpg\n")
    assert list(paper._read_url_list(path, 10)) == [
        ("http://x/1.jpg", "a cat on a mat"),
        ("https://x/2.jpg", "a dog"),
    ]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def img2dataset_available():
    try:
        import img2dataset  # noqa: F401
    except ImportError:
        return shutil.which("img2dataset") is not None
    return True


def test_url_list_source_fetched_from_local_server(tmp_path):
    served = tmp_path / "www"
    for i in range(3):
        write_png(served / f"{i}.png", COLOURS[i], size=(40, 30))
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=served)
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address
        url_list = tmp_path / "urls.csv"
        lines = ["url,caption"] + [f"http://{host}:{port}/{i}.png,photo {i}" for i in range(3)]
        url_list.write_text("\n".join(lines) + "\n")
        cc3m = {"source": "url_list", "path": str(url_list), "size": 2, "image_size": 32,
                "processes_count": 1, "thread_count": 2, "retries": 1, "timeout": 5}  # fmt: skip
        out = tmp_path / "data"
        if not img2dataset_available():
            with pytest.raises(ImportError, match="pip install img2dataset"):
                paper.prepare(out, {"cc3m": cc3m, "clean_pool_size": 1})
            assert not (out / "world.json").exists()
            return
        paper.prepare(out, {"cc3m": cc3m, "clean_pool_size": 1})
    finally:
        server.shutdown()
        server.server_close()
    world = json.loads((out / "world.json").read_text())
    assert world["source"] == "url_list" and world["n_pairs"] == 3
    images, captions = paper.load_pairs(out, split="all")
    assert sorted(captions) == ["photo 0", "photo 1", "photo 2"]
    assert min(Image.open(io.BytesIO(images[0])).size) == 32


# ---------------------------------------------------------------------------------------------------
# checkpoints


class NotWeights:
    """Anything a weights-only unpickler must refuse."""


def test_open_clip_local_checkpoint_path(tmp_path):
    import open_clip

    from clip_backdoor.models.factory import build_model, load_model, quick_gelu, save_model

    assert quick_gelu({"name": "ViT-B-32", "pretrained": "openai"}) is True  # no download needed
    torch.manual_seed(0)
    reference = open_clip.create_model("ViT-B-32")
    path = tmp_path / "vitb32.pt"
    torch.save(reference.state_dict(), path)
    arch = {"kind": "open_clip", "name": "ViT-B-32", "pretrained": str(path), "quick_gelu": True}
    model = build_model(arch)
    assert torch.equal(model.clip.visual.proj, reference.visual.proj)
    assert torch.equal(model.clip.token_embedding.weight, reference.token_embedding.weight)
    assert isinstance(model.clip.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    del reference

    # a checkpoint of an OpenAI-tagged model reloads offline, with QuickGELU, from the stored weights
    model.arch = {"kind": "open_clip", "name": "ViT-B-32", "pretrained": "openai"}
    save_model(tmp_path / "clean.pt", model)
    again = load_model(tmp_path / "clean.pt")
    assert torch.equal(again.clip.visual.proj, model.clip.visual.proj)
    assert isinstance(again.clip.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)


def test_non_weights_pickle_is_refused(tmp_path):
    from clip_backdoor.models.factory import build_model

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": NotWeights()}, path)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        build_model({"kind": "open_clip", "name": "RN50", "pretrained": str(path)})
