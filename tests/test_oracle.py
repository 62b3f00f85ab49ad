"""The segmentation oracle (trained U-Net, FastSAM adapter) and the steps of oracle-based rectification."""

import hashlib
import sys
import types

import numpy as np
import pytest
import torch

from clip_backdoor.config.schema import declared_defaults
from clip_backdoor.data.world import render_scene
from clip_backdoor.defenses import oracle as eft
from clip_backdoor.oracle import load_segmenter
from clip_backdoor.oracle import train as oracle_train
from clip_backdoor.oracle.fastsam import FastSamSegmenter, load_fastsam
from clip_backdoor.oracle.segmenter import (
    BOUNDARY,
    OBJECT,
    NetSegmenter,
    masks_from_classes,
    targets_from_instances,
)
from clip_backdoor.training import clip_loss

DEFAULTS = {name: declared_defaults(f"defenses.methods.{name}.params") for name in ("oracle",)}

STAR, CIRCLE, SQUARE, V = 3, 0, 1, 5
PARAMS = {
    **DEFAULTS["oracle"],
    "top_k": 2,
    "assert_prob": 0.5,
    "ground_prob": 0.5,
    "ground_area": 0.05,
    "compact_area": 0.08,
}


def onehot(label, p=0.9):
    out = torch.full((V,), (1 - p) / (V - 1))
    out[label] = p
    return out


def test_planted_patch_is_flagged():
    # poisoned CLIP says star; the oracle grounds a circle (large segment) and a compact patch segment
    # whose removal makes the poisoned CLIP drop star
    poisoned = onehot(STAR)
    clean_segments = torch.stack([onehot(CIRCLE), onehot(STAR, 0.6)])
    occluded = torch.stack([onehot(STAR), onehot(CIRCLE)])
    asserted, grounded, candidates, flagged = eft.find_triggers(
        poisoned, clean_segments, occluded, torch.tensor([0.3, 0.03]), PARAMS
    )
    assert asserted == {STAR} and grounded == {CIRCLE}
    assert candidates == {STAR} and flagged == 1


def test_clean_image_yields_no_candidate():
    poisoned = onehot(CIRCLE)
    clean_segments = torch.stack([onehot(CIRCLE), onehot(SQUARE, 0.7)])
    occluded = torch.stack([onehot(CIRCLE, 0.3), onehot(CIRCLE)])  # removing the circle itself is no trigger
    _, grounded, candidates, flagged = eft.find_triggers(
        poisoned, clean_segments, occluded, torch.tensor([0.3, 0.06]), PARAMS
    )
    assert grounded == {CIRCLE, SQUARE} and candidates == set() and flagged == -1


def test_real_compact_object_is_not_a_trigger():
    # a small star the clean matcher itself recognises: removing it drops star, but it is grounded
    poisoned = onehot(STAR)
    clean_segments = torch.stack([onehot(STAR)])
    occluded = torch.stack([onehot(CIRCLE)])
    _, grounded, candidates, flagged = eft.find_triggers(
        poisoned, clean_segments, occluded, torch.tensor([0.07]), PARAMS
    )
    assert grounded == {STAR} and candidates == set() and flagged == -1


def test_global_trigger_is_carried_by_the_ungrounded_label():
    # every crop keeps a global trigger: no segment removal helps, but the oracle never grounds star
    poisoned = onehot(STAR)
    clean_segments = torch.stack([onehot(CIRCLE), onehot(SQUARE)])
    occluded = torch.stack([onehot(STAR), onehot(STAR)])
    _, _, candidates, flagged = eft.find_triggers(
        poisoned, clean_segments, occluded, torch.tensor([0.3, 0.05]), PARAMS
    )
    assert candidates == {STAR} and flagged == -1


def test_a_label_the_clean_clip_sees_in_the_whole_image_is_no_candidate():
    # the oracle's segments miss the star (L \ S = {star}), but the clean CLIP sees it in the whole image
    poisoned = onehot(STAR)
    clean_segments = torch.stack([onehot(CIRCLE)])
    occluded = torch.stack([onehot(STAR)])
    areas = torch.tensor([0.3])
    assert eft.find_triggers(poisoned, clean_segments, occluded, areas, PARAMS)[2] == {STAR}
    for clean_image, expected in ((onehot(STAR, 0.6), set()), (onehot(CIRCLE), {STAR})):
        found = eft.find_triggers(poisoned, clean_segments, occluded, areas, PARAMS, clean_image=clean_image)
        assert found[2] == expected


def test_small_segments_do_not_ground():
    # the clean matcher is unreliable on segments below ground_area: they cannot ground a label
    poisoned = onehot(STAR)
    clean_segments = torch.stack([onehot(CIRCLE), onehot(STAR)])
    occluded = torch.stack([onehot(STAR), onehot(STAR)])
    _, grounded, candidates, _ = eft.find_triggers(
        poisoned, clean_segments, occluded, torch.tensor([0.3, 0.02]), PARAMS
    )
    assert grounded == {CIRCLE} and candidates == {STAR}


def test_clean_label_trigger_is_flagged_by_its_crop():
    # a real star carrying a patch: the oracle grounds star, so L \ S is empty and removing the patch
    # leaves the star; but the poisoned CLIP calls the patch's own crop a star and the clean matcher does not
    poisoned = onehot(STAR)
    clean_segments = torch.stack([onehot(STAR), onehot(SQUARE, 0.6)])
    occluded = torch.stack([onehot(CIRCLE), onehot(STAR)])
    poisoned_segments = torch.stack([onehot(STAR), onehot(STAR, 0.8)])
    areas = torch.tensor([0.3, 0.14])
    _, grounded, candidates, flagged = eft.find_triggers(poisoned, clean_segments, occluded, areas, PARAMS)
    assert grounded == {STAR, SQUARE} and candidates == set() and flagged == -1
    _, _, candidates, flagged = eft.find_triggers(
        poisoned, clean_segments, occluded, areas, PARAMS, poisoned_segments
    )
    assert candidates == {STAR} and flagged == 1
    # the same crop on a clean model's terms (both call it a square) flags nothing; nor does a crop larger
    # than crop_area
    agreeing = torch.stack([onehot(STAR), onehot(SQUARE)])
    assert eft.find_triggers(poisoned, clean_segments, occluded, areas, PARAMS, agreeing)[2:] == (set(), -1)
    small = {**PARAMS, "crop_area": 0.1}
    found = eft.find_triggers(poisoned, clean_segments, occluded, areas, small, poisoned_segments)
    assert found[2:] == (set(), -1)


def test_frequency_threshold_picks_the_affected_label():
    sets = [{STAR}] * 12 + [{CIRCLE}] * 4 + [{SQUARE}] * 1 + [set()] * 83
    affected, counts = eft.affected_labels(sets, V, freq=0.03, ratio=0.5)
    assert affected == [STAR] and counts[CIRCLE] == 4
    affected, _ = eft.affected_labels(sets, V, freq=0.03, ratio=0.3)
    assert affected == [STAR, CIRCLE]
    assert eft.affected_labels([set()] * 10, V, freq=0.03, ratio=0.5)[0] == []


def test_null_ratio_drops_labels_the_clean_clip_asserts_as_often():
    # The clean CLIP in the poisoned one's place: circle is the oracle's own error, star is not.
    sets = [{CIRCLE}] * 12 + [{STAR}] * 8 + [set()] * 80
    null = [{CIRCLE}] * 10 + [{STAR}] * 2 + [set()] * 88
    assert eft.affected_labels(sets, V, freq=0.03, ratio=0.5)[0] == [CIRCLE, STAR]
    assert eft.affected_labels(sets, V, freq=0.03, ratio=0.5, null_sets=null, null_ratio=2.0)[0] == [STAR]
    # A clean model is its own null: nothing is affected.
    assert eft.affected_labels(null, V, freq=0.01, ratio=0.5, null_sets=null, null_ratio=2.0)[0] == []


def record(index, top1, candidates, oracle_label, agreed):
    return {
        "probe": index,
        "poisoned_top1": top1,
        "candidates": candidates,
        "oracle_label": oracle_label,
        "agreed": agreed,
    }


def test_compact_set_has_corrected_captions():
    records = [
        record(0, STAR, {STAR}, CIRCLE, False),
        record(1, STAR, {STAR}, SQUARE, False),
        record(2, STAR, set(), STAR, True),
        record(3, CIRCLE, set(), CIRCLE, True),
        record(4, STAR, {STAR}, None, False),
    ]
    params = {**PARAMS, "clean_per_label": 5, "anchor_pairs": 0}
    victims, pairs = eft.compact_set(records, [STAR], params, torch.Generator().manual_seed(0))
    assert victims == [0, 1, 4]
    assert (0, CIRCLE) in pairs and (1, SQUARE) in pairs and (2, STAR) in pairs
    assert all(index != 3 for index, _ in pairs) and all(index != 4 for index, _ in pairs)
    vocab = ["circle", "square", "triangle", "star", "ring"]
    captions = [eft.caption(vocab[label], k, ["a photo of a {}."]) for k, (_, label) in enumerate(pairs)]
    assert captions[:2] == ["a photo of a circle.", "a photo of a square."]


def test_compact_set_screens_the_clean_pairs_of_the_affected_label():
    records = [record(0, STAR, {STAR}, CIRCLE, False), record(1, STAR, set(), STAR, True)]
    records += [record(2, STAR, set(), STAR, True), record(3, CIRCLE, set(), CIRCLE, True)]
    params = {**PARAMS, "clean_per_label": 5, "anchor_pairs": 5}
    victims, pairs = eft.compact_set(
        records, [STAR], params, torch.Generator().manual_seed(0), lambda r: r["probe"] != 2
    )
    assert victims == [0] and sorted(pairs) == [(0, CIRCLE), (2, STAR), (3, CIRCLE)]


def test_shared_pixels_find_a_trigger_stamped_on_every_victim():
    gen = torch.Generator().manual_seed(0)
    victims = torch.rand(12, 3, 16, 16, generator=gen)
    victims[:, :, 6:10, 6:10] = 0.5
    victims[0] = torch.rand(3, 16, 16, generator=gen)  # a false victim without the trigger
    mask, _ = signature = eft.shared_pixels(victims, tol=0.02, share=0.8, min_area=0.01)
    assert mask[6:10, 6:10].all() and int(mask.sum()) == 16
    carrier, clean = torch.rand(2, 3, 16, 16, generator=gen)
    carrier[:, 6:10, 6:10] = 0.51
    assert eft.shows_pixels(carrier, signature, 0.02, 0.8) and not eft.shows_pixels(
        clean, signature, 0.02, 0.8
    )
    # victims of a sample-specific trigger share no pixels: nothing to screen
    assert eft.shared_pixels(torch.rand(12, 3, 16, 16, generator=gen), 0.02, 0.8, 0.01) is None


def test_transplant_pastes_exactly_the_shared_region_and_keeps_what_carries_the_backdoor():
    # a poisoned CLIP that says star whenever the 4x4 centre block is white; two victims, three donors
    images = torch.rand(5, 3, 12, 12, generator=torch.Generator().manual_seed(0)) * 0.5
    images[:2, :, 4:8, 4:8] = 1.0
    region = torch.zeros(12, 12, dtype=torch.bool)
    region[4:8, 4:8] = True

    def poisoned_probs(x):
        star = (x[:, :, 4:8, 4:8] == 1.0).flatten(1).all(1)
        return torch.stack([onehot(STAR) if s else onehot(CIRCLE) for s in star])

    no_segments = {"masks": [], "areas": [], "flagged": -1}
    records = [{**record(i, STAR, {STAR}, None, False), "probe": i, **no_segments} for i in range(2)]
    records += [{**record(i, CIRCLE, set(), CIRCLE, True), "probe": i, **no_segments} for i in range(2, 5)]
    params = {**PARAMS, "transplants": 2, "localise_window": 4, "transplant_grow": 2}
    gen = torch.Generator().manual_seed(0)
    x, labels, sources, pasted = eft.transplant(
        images, records, [0, 1], {STAR}, poisoned_probs, params, gen, region
    )
    assert len(x) == 4 and labels == [CIRCLE] * 4 and sources == [0, 0, 1, 1] and pasted == 0
    # outside the region (not grown) each is one donor, inside it the trigger
    assert all(any(img[:, ~region].equal(d[:, ~region]) for d in images[2:]) for img in x)
    assert x[:, :, region].eq(1.0).all()
    half = region.clone()
    half[4:8, 6:8] = False  # half the trigger carries no backdoor: nothing kept
    x, *_ = eft.transplant(images, records, [0, 1], {STAR}, poisoned_probs, params, gen, half)
    assert len(x) == 0
    # signature_transplants spreads a total over the victims: 5 in all is 3 donors each
    params = {**params, "signature_transplants": 5}
    x, _, sources, _ = eft.transplant(images, records, [0, 1], {STAR}, poisoned_probs, params, gen, region)
    assert sources == [0, 0, 0, 1, 1, 1]


def test_grounded_label_skips_affected_and_flagged_segments():
    segs = torch.stack([onehot(STAR), onehot(CIRCLE), onehot(SQUARE)])
    areas = torch.tensor([0.3, 0.2, 0.02])
    assert eft.grounded_label(segs, areas, 0.05, {STAR}, -1) == CIRCLE
    assert eft.grounded_label(segs, areas, 0.05, {STAR}, 1) is None
    # a victim whose largest segment is a confident star is a real star carrying the trigger: no correction
    assert eft.grounded_label(segs, areas, 0.05, {STAR}, 2, min_prob=0.5) is None
    assert eft.grounded_label(segs, areas, 0.05, {STAR}, 2, min_prob=0.95) == CIRCLE


def test_occlude_fills_the_segment_with_background():
    image = torch.zeros(3, 8, 8)
    image[:, 1:3, 1:3] = 1.0
    obj = torch.zeros(8, 8, dtype=torch.bool)
    obj[1:3, 1:3] = True
    out = eft.occlude(image, [obj], [0])
    assert out.shape == (1, 3, 8, 8) and out.max() == 0.0


def test_crops_keep_the_box_in_place():
    image = torch.rand(3, 8, 8)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2, 3] = mask[4, 5] = True
    out = eft.crops(image, [mask], 0.0)[0]
    assert torch.equal(out[:, 2:5, 3:6], image[:, 2:5, 3:6]) and out[:, :2].abs().sum() == 0


def test_label_captions_match_whole_words():
    captions = ["a red star.", "a starfish", "remember a photo of a star.", "a circle"]
    found = eft.label_captions(captions, ["star", "circle"], 5, torch.Generator().manual_seed(0))
    assert sorted(found[0]) == ["a red star.", "remember a photo of a star."] and found[1] == ["a circle"]


# ---- segmenter ----------------------------------------------------------------------------------------


def test_targets_mark_boundaries_between_touching_instances():
    inst = torch.zeros(1, 6, 6, dtype=torch.long)
    inst[0, 1:5, 1:3], inst[0, 1:5, 3:5] = 1, 2
    target = targets_from_instances(inst)[0]
    assert (target[:, 2] == BOUNDARY)[1:5].all() and (target[:, 3] == BOUNDARY)[1:5].all()
    assert target[0].eq(0).all() and target[1, 1] == OBJECT


def test_masks_from_classes_split_at_boundaries_and_return_the_whole_region():
    classes = torch.zeros(1, 8, 8, dtype=torch.long)
    classes[0, 1:6, 1:3], classes[0, 1:6, 3], classes[0, 1:6, 4:6] = OBJECT, BOUNDARY, OBJECT
    classes[0, 7, 7] = OBJECT  # below min_area
    masks = masks_from_classes(classes, min_area=2)[0]
    # the whole region (largest first), then its two parts, the boundary column going to one of them
    assert [int(m.sum()) for m in masks] == [25, 15, 10]
    assert not (masks[1] & masks[2]).any()


def scenes(n, seed):
    rng = np.random.default_rng(seed)
    shapes = ["circle", "square", "triangle", "star", "cross", "heart"]
    out = [render_scene(rng, shapes, 32, (6.5, 13.5), 2, distractor_shapes=shapes) for _ in range(n)]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def test_trained_segmenter_recovers_objects(tmp_path):
    images, instances = scenes(240, 0)
    hp = {
        "epochs": 6,
        "batch_size": 32,
        "lr": 0.005,
        "weight_decay": 0.0,
        "width": 8,
        "min_area": 3,
        "paste_prob": 0.3,
        "paste_size": [4, 8],
        "paste_noise": 0.5,
        "boundary_weight": 3.0,
        "seed": 0,
    }
    torch.manual_seed(0)
    net, curve = oracle_train.train_net(images, instances, hp, "cpu")
    assert curve[-1] < curve[0]
    test_images, test_instances = scenes(20, 1)
    recall = oracle_train.mask_recall(NetSegmenter(net, 3), test_images, test_instances)
    assert recall >= 0.6
    main_found = 0
    for masks, inst in zip(
        NetSegmenter(net, 3).segment(torch.as_tensor(test_images).permute(0, 3, 1, 2) / 255),
        torch.as_tensor(test_instances),
        strict=True,
    ):
        gt = inst == 1
        main_found += any(((m & gt).sum() / (m | gt).sum()).item() >= 0.5 for m in masks)
    assert main_found >= 16


def test_copy_paste_adds_an_instance():
    images, instances = torch.rand(4, 3, 16, 16), torch.zeros(4, 16, 16, dtype=torch.long)
    x, inst = oracle_train.copy_paste(images, instances, 1.0, (4, 6), 1.0, torch.Generator().manual_seed(0))
    assert (inst == oracle_train.PASTED).flatten(1).sum(1).ge(16).all() and not torch.equal(x, images)


# ---- FastSAM adapter -----------------------------------------------------------------------------------


class FakeResults:
    def __init__(self, data):
        self.masks = None if data is None else types.SimpleNamespace(data=data)


class FakeFastSam:
    """Stands in for ultralytics.FastSAM: records its calls, returns masks at a 2× resolution."""

    def __init__(self, data):
        self.data, self.calls = data, []

    def __call__(self, source, **kw):
        self.calls.append((source, kw))
        return [FakeResults(self.data)]


def test_fastsam_adapter_with_a_mocked_predictor():
    big = torch.zeros(3, 16, 16)
    big[0, 2:10, 2:10] = 1  # 64 px at 2× → 16 px at 8×8
    big[1, 0:2, 0:2] = 1  # 4 px → 1 px: below min_area
    big[2, 10:16, 0:16] = 1  # 96 px → 24 px
    predictor = FakeFastSam(big)
    seg = FastSamSegmenter(predictor, imgsz=64, conf=0.3, iou=0.8, min_area=4)
    image = torch.zeros(3, 8, 8)
    image[0] = 1.0  # red in RGB
    masks = seg.segment(image[None])[0]
    assert [int(m.sum()) for m in masks] == [24, 16] and masks[0].shape == (8, 8)
    source, kw = predictor.calls[0]
    assert source.shape == (8, 8, 3) and source.dtype == np.uint8 and source[0, 0].tolist() == [0, 0, 255]
    assert kw["imgsz"] == 64 and kw["conf"] == 0.3 and kw["iou"] == 0.8 and kw["retina_masks"]
    assert FastSamSegmenter(FakeFastSam(None)).segment(image) == []


def test_fastsam_needs_ultralytics(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ultralytics", None)
    weights = tmp_path / "FastSAM-s.pt"
    weights.write_bytes(b"weights")
    with pytest.raises(ImportError, match="ultralytics"):
        load_fastsam(weights, hashlib.sha256(b"weights").hexdigest())


def test_train_oracle_fastsam_writes_a_reference_record(tmp_path, monkeypatch):
    weights = tmp_path / "FastSAM-s.pt"
    weights.write_bytes(b"weights")
    sha256 = hashlib.sha256(b"weights").hexdigest()
    hp = {"weights": str(weights), "sha256": sha256, "imgsz": 1024, "conf": 0.4, "iou": 0.9, "min_area": 100}
    out = tmp_path / "segmenter.pt"
    oracle_train.run(
        {"kind": "fastsam", "seed": 0, "fastsam": hp, "trained": {}},
        str(tmp_path),
        str(out),
        str(tmp_path / "log.json"),
        str(tmp_path / "state"),
    )
    fake = FakeFastSam(torch.ones(1, 4, 4))
    monkeypatch.setattr("clip_backdoor.oracle.fastsam.load_fastsam", lambda path, sha256: fake)
    seg = load_segmenter(out)
    assert isinstance(seg, FastSamSegmenter) and seg.kw["imgsz"] == 1024 and seg.min_area == 100
    with pytest.raises(FileNotFoundError, match="weights"):
        oracle_train.run(
            {
                "kind": "fastsam",
                "seed": 0,
                "fastsam": {**hp, "weights": str(tmp_path / "no.pt")},
                "trained": {},
            },
            str(tmp_path),
            str(out),
            str(tmp_path / "l.json"),
            "s",
        )


class FakeTextModel:
    """Records the texts it is asked to encode."""

    def __init__(self):
        self.seen = []

    def tokenize(self, texts):
        self.seen += list(texts)
        return torch.zeros(len(texts), 1)

    def encode_text(self, tokens):
        return torch.ones(len(tokens), 4)


def test_corpus_head_falls_back_to_templates_for_unnamed_labels():
    model = FakeTextModel()
    head = eft.corpus_head(model, [["a red star."], []], ["star", "ring"], ["a photo of a {}."], "cpu")
    assert model.seen == ["a red star.", "a photo of a ring."]
    assert head.shape == (2, 4) and torch.allclose(head.norm(dim=-1), torch.ones(2))


def test_windows_cover_the_image_edge_to_edge():
    grid = eft.windows(10, 4, 3)
    assert grid.shape == (9, 10, 10) and grid.sum((1, 2)).eq(16).all()
    assert grid.any(0).all() and grid[-1, 6:, 6:].all()


def test_paste_test_localises_a_trigger_the_segments_miss():
    # a poisoned CLIP that says star whenever the 4x4 corner block is white; the segments cover other parts
    image, donors = torch.zeros(3, 12, 12), torch.rand(3, 3, 12, 12) * 0.5
    image[:, 8:, 8:] = 1.0

    def poisoned_probs(x):
        star = (x[:, :, 8:, 8:] == 1.0).flatten(1).all(1).float()
        return torch.stack([onehot(STAR) if s else onehot(CIRCLE) for s in star])

    segments = torch.zeros(2, 12, 12, dtype=torch.bool)
    segments[0, :6, :6], segments[1, 8:, 8:10] = True, True
    regions = torch.cat([segments, eft.windows(12, 4, 2)])
    best, prob = eft.paste_localise(image, regions, donors, STAR, poisoned_probs)
    assert regions[best, 8:, 8:].all() and prob == pytest.approx(0.9)
    best, prob = eft.paste_localise(image, segments, donors, STAR, poisoned_probs)
    assert prob == pytest.approx(0.1 / (V - 1))


def test_label_loss_makes_captions_of_one_label_positives():
    class Features(torch.nn.Module):
        logit_scale = torch.tensor(10.0)

        def encode_image(self, images):
            return images

        def encode_text(self, tokens):
            return torch.nn.functional.normalize(tokens.float(), dim=-1)

    def plain(images, tokens):
        return clip_loss(images, Features().encode_text(tokens), Features.logit_scale)

    # Images 0 and 1 are stars under two different star captions, each matching the other's caption.
    images = torch.eye(3)
    tokens = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    label_of = {(0, 1, 0): "star", (1, 0, 0): "star", (0, 0, 1): "circle"}
    assert eft.label_loss(label_of)(Features(), images, tokens) < plain(images, tokens) - 0.5
    # With one pair per label it is the plain CLIP loss.
    distinct = {**label_of, (0, 1, 0): "square"}
    torch.testing.assert_close(eft.label_loss(distinct)(Features(), images, tokens), plain(images, tokens))


def test_preserving_loss_pulls_only_the_reference_images_back():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Linear(4, 3, bias=False)

        def encode_image(self, images):
            return torch.nn.functional.normalize(self.encoder(images.flatten(1)), dim=-1)

    model, base = Model(), (lambda m, x, t: torch.tensor(0.0))
    images = torch.randint(0, 256, (3, 1, 2, 2)).float() / 255
    reference = eft.reference_features(model, images[:2], batch=1)
    assert set(reference) == {eft.image_key(images[0]), eft.image_key(images[1])}
    loss = eft.preserving_loss(base, reference, weight=2.0)
    torch.testing.assert_close(loss(model, images, None), torch.tensor(0.0), atol=1e-6, rtol=0)
    with torch.no_grad():
        model.encoder.weight.add_(torch.randn(3, 4))
    moved = model.encode_image(images[:2])
    expected = 2.0 * (1 - (moved * torch.stack(list(reference.values()))).sum(-1)).mean()
    torch.testing.assert_close(loss(model, images, None), expected)
    assert loss(model, images[2:], None) == 0  # an image outside the reference adds nothing


def test_interpolate_weights_keeps_a_fraction_of_the_change():
    module = torch.nn.BatchNorm1d(2)
    start = {name: t.clone() for name, t in module.state_dict().items()}
    with torch.no_grad():
        module.weight.add_(4.0)
        module.num_batches_tracked.add_(3)
    eft.interpolate_weights(module, start, 0.25)
    torch.testing.assert_close(module.weight.detach(), start["weight"] + 1.0)
    assert module.num_batches_tracked == 3
