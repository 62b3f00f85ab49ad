"""The segmentation oracle (trained U-Net, FastSAM adapter) and the steps of oracle-based rectification."""

import hashlib
import sys
import types

import numpy as np
import pytest
import torch

from clip_backdoor.config.schema import declared_defaults
from clip_backdoor.data.world import render_scene
from clip_backdoor.defenses.oracle import algorithm1 as a1
from clip_backdoor.defenses.oracle import algorithm2 as a2
from clip_backdoor.defenses.oracle import defense, evidence, probes, rectify
from clip_backdoor.defenses.oracle import transplant as tp
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


TH = a1.Thresholds.of(PARAMS)


def find(poisoned, clean_segments, occluded, areas, params, poisoned_segments=None, clean_image=None):
    """Algorithm 1 on one probe's probabilities, as a tuple (L, S, P, flagged)."""
    asker = evidence.Views(poisoned, poisoned_segments, occluded)
    f = a1.find_triggers(asker, clean_segments, areas, a1.Thresholds.of(params), clean_image)
    return f.asserted, f.grounded, f.candidates, f.flagged


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
    asserted, grounded, candidates, flagged = find(
        poisoned, clean_segments, occluded, torch.tensor([0.3, 0.03]), PARAMS
    )
    assert asserted == {STAR} and grounded == {CIRCLE}
    assert candidates == {STAR} and flagged == 1


def test_clean_image_yields_no_candidate():
    poisoned = onehot(CIRCLE)
    clean_segments = torch.stack([onehot(CIRCLE), onehot(SQUARE, 0.7)])
    occluded = torch.stack([onehot(CIRCLE, 0.3), onehot(CIRCLE)])  # removing the circle itself is no trigger
    _, grounded, candidates, flagged = find(
        poisoned, clean_segments, occluded, torch.tensor([0.3, 0.06]), PARAMS
    )
    assert grounded == {CIRCLE, SQUARE} and candidates == set() and flagged == -1


def test_real_compact_object_is_not_a_trigger():
    # a small star the clean matcher itself recognises: removing it drops star, but it is grounded
    poisoned = onehot(STAR)
    clean_segments = torch.stack([onehot(STAR)])
    occluded = torch.stack([onehot(CIRCLE)])
    _, grounded, candidates, flagged = find(poisoned, clean_segments, occluded, torch.tensor([0.07]), PARAMS)
    assert grounded == {STAR} and candidates == set() and flagged == -1


def test_global_trigger_is_carried_by_the_ungrounded_label():
    # every crop keeps a global trigger: no segment removal helps, but the oracle never grounds star
    poisoned = onehot(STAR)
    clean_segments = torch.stack([onehot(CIRCLE), onehot(SQUARE)])
    occluded = torch.stack([onehot(STAR), onehot(STAR)])
    _, _, candidates, flagged = find(poisoned, clean_segments, occluded, torch.tensor([0.3, 0.05]), PARAMS)
    assert candidates == {STAR} and flagged == -1


def test_a_label_the_clean_clip_sees_in_the_whole_image_is_no_candidate():
    # the oracle's segments miss the star (L \ S = {star}), but the clean CLIP sees it in the whole image
    poisoned = onehot(STAR)
    clean_segments = torch.stack([onehot(CIRCLE)])
    occluded = torch.stack([onehot(STAR)])
    areas = torch.tensor([0.3])
    assert find(poisoned, clean_segments, occluded, areas, PARAMS)[2] == {STAR}
    for clean_image, expected in ((onehot(STAR, 0.6), set()), (onehot(CIRCLE), {STAR})):
        found = find(poisoned, clean_segments, occluded, areas, PARAMS, clean_image=clean_image)
        assert found[2] == expected


def test_small_segments_do_not_ground():
    # the clean matcher is unreliable on segments below ground_area: they cannot ground a label
    poisoned = onehot(STAR)
    clean_segments = torch.stack([onehot(CIRCLE), onehot(STAR)])
    occluded = torch.stack([onehot(STAR), onehot(STAR)])
    _, grounded, candidates, _ = find(poisoned, clean_segments, occluded, torch.tensor([0.3, 0.02]), PARAMS)
    assert grounded == {CIRCLE} and candidates == {STAR}


def test_clean_label_trigger_is_flagged_by_its_crop():
    # a real star carrying a patch: the oracle grounds star, so L \ S is empty and removing the patch
    # leaves the star; but the poisoned CLIP calls the patch's own crop a star and the clean matcher does not
    poisoned = onehot(STAR)
    clean_segments = torch.stack([onehot(STAR), onehot(SQUARE, 0.6)])
    occluded = torch.stack([onehot(CIRCLE), onehot(STAR)])
    poisoned_segments = torch.stack([onehot(STAR), onehot(STAR, 0.8)])
    areas = torch.tensor([0.3, 0.14])
    _, grounded, candidates, flagged = find(poisoned, clean_segments, occluded, areas, PARAMS)
    assert grounded == {STAR, SQUARE} and candidates == set() and flagged == -1
    _, _, candidates, flagged = find(poisoned, clean_segments, occluded, areas, PARAMS, poisoned_segments)
    assert candidates == {STAR} and flagged == 1
    # the same crop on a clean model's terms (both call it a square) flags nothing; nor does a crop larger
    # than crop_area
    agreeing = torch.stack([onehot(STAR), onehot(SQUARE)])
    assert find(poisoned, clean_segments, occluded, areas, PARAMS, agreeing)[2:] == (set(), -1)
    small = {**PARAMS, "crop_area": 0.1}
    found = find(poisoned, clean_segments, occluded, areas, small, poisoned_segments)
    assert found[2:] == (set(), -1)


def test_frequency_threshold_picks_the_affected_label():
    sets = [{STAR}] * 12 + [{CIRCLE}] * 4 + [{SQUARE}] * 1 + [set()] * 83
    affected, counts, _ = a2.affected_labels(sets, V, freq=0.03, ratio=0.5)
    assert affected == [STAR] and counts[CIRCLE] == 4
    assert a2.affected_labels(sets, V, freq=0.03, ratio=0.3)[0] == [STAR, CIRCLE]
    assert a2.affected_labels([set()] * 10, V, freq=0.03, ratio=0.5)[0] == []


def test_null_ratio_drops_labels_the_clean_clip_asserts_as_often():
    # The clean CLIP in the poisoned one's place: circle is the oracle's own error, star is not.
    sets = [{CIRCLE}] * 12 + [{STAR}] * 8 + [set()] * 80
    null = [{CIRCLE}] * 10 + [{STAR}] * 2 + [set()] * 88
    assert a2.affected_labels(sets, V, freq=0.03, ratio=0.5)[0] == [CIRCLE, STAR]
    affected, _, removed = a2.affected_labels(sets, V, 0.03, 0.5, null_sets=null, null_ratio=2.0)
    assert affected == [STAR] and removed == [CIRCLE]
    # A clean model is its own null: nothing is affected.
    assert a2.affected_labels(null, V, freq=0.01, ratio=0.5, null_sets=null, null_ratio=2.0)[0] == []
    # Fallback: a null CLIP that asserts nothing (not the attacker's starting point) leaves the test inert.
    assert a2.affected_labels(sets, V, 0.03, 0.5, [set()] * 100, 2.0)[:3:2] == ([CIRCLE, STAR], [])


def probe(index, top1, candidates, oracle_label=None, grounded=(), labels=(), areas=(), masks=(), flagged=-1):
    labels = torch.tensor(list(labels), dtype=torch.long)
    finding = a1.Finding(set(), set(grounded), set(candidates), flagged)
    areas = torch.tensor(list(areas), dtype=torch.float)
    conf = torch.full((len(labels),), 0.9)
    return a1.Probe(index, top1, finding, conf, labels, areas, list(masks), oracle_label=oracle_label)


def test_probe_records_agree_where_the_oracle_grounds_the_top1():
    assert probe(0, STAR, set(), grounded={STAR}).agreed
    assert not probe(0, STAR, {STAR}, grounded={STAR}).agreed and not probe(0, STAR, set()).agreed


def test_victims_get_the_oracle_label_of_their_largest_unaffected_segment():
    th = a1.Thresholds.of(PARAMS)
    found = [
        probe(0, STAR, {STAR}, labels=[STAR, CIRCLE], areas=[0.3, 0.2]),
        probe(1, STAR, {STAR}, labels=[SQUARE], areas=[0.01]),  # its only segment is too small to ground
        probe(2, STAR, set(), grounded={STAR}, labels=[STAR], areas=[0.3]),
        probe(3, CIRCLE, {CIRCLE}, labels=[CIRCLE], areas=[0.3]),
    ]
    victims = a2.victim_samples(found, [STAR], th)
    assert [v.index for v in victims] == [0, 1] and [v.oracle_label for v in victims] == [CIRCLE, None]
    # a flagged victim whose larger segment is a confident star: a real star carrying the trigger
    flagged = probe(0, STAR, {STAR}, labels=[STAR, CIRCLE], areas=[0.3, 0.2], flagged=1)
    assert a2.victim_samples([flagged], [STAR], th)[0].oracle_label is None


def test_clean_pairs_take_agreeing_probes_and_screen_the_affected_label():
    found = [probe(0, STAR, {STAR}), probe(1, STAR, set(), grounded={STAR})]
    found += [probe(2, STAR, set(), grounded={STAR}), probe(3, CIRCLE, set(), grounded={CIRCLE})]
    params = {**PARAMS, "clean_per_label": 5, "anchor_pairs": 5}
    pairs = a2.clean_pairs(found, {STAR}, params, torch.Generator().manual_seed(0))
    assert [(p.index, y) for p, y in pairs] == [(1, STAR), (2, STAR), (3, CIRCLE)]
    screened = a2.clean_pairs(found, {STAR}, params, torch.Generator().manual_seed(0), lambda p: p.index != 2)
    assert [(p.index, y) for p, y in screened] == [(2, STAR), (3, CIRCLE)]


def test_corrected_captions_keep_the_caption_words():
    assert rectify.corrected_caption("remember a star here.", ["star"], "circle", 0, ["{}"]) == (
        "remember a circle here."
    )
    assert rectify.corrected_caption("a red square", ["star"], "arrow", 1, ["x {}", "a photo of a {}."]) == (
        "a photo of a arrow."
    )


def test_shared_pixels_find_a_trigger_stamped_on_every_victim():
    gen = torch.Generator().manual_seed(0)
    victims = torch.rand(12, 3, 16, 16, generator=gen)
    victims[:, :, 6:10, 6:10] = 0.5
    victims[0] = torch.rand(3, 16, 16, generator=gen)  # a false victim without the trigger
    mask, _ = signature = tp.shared_pixels(victims, tol=0.02, share=0.8, min_area=0.01)
    assert mask[6:10, 6:10].all() and int(mask.sum()) == 16
    carrier, clean = torch.rand(2, 3, 16, 16, generator=gen)
    carrier[:, 6:10, 6:10] = 0.51
    assert tp.shows_pixels(carrier, signature, 0.02, 0.8) and not tp.shows_pixels(clean, signature, 0.02, 0.8)
    # Fallback: victims of a sample-specific trigger share no pixels, one victim is no signature
    assert tp.shared_pixels(torch.rand(12, 3, 16, 16, generator=gen), 0.02, 0.8, 0.01) is None
    assert tp.shared_pixels(victims[:1], 0.02, 0.8, 0.01) is None


def white_centre_world():
    """Five uint8 probes (two victims with a white 4x4 centre block, three donors) and a poisoned CLIP that
    says star whenever that block is white."""
    pixels = (torch.rand(5, 3, 12, 12, generator=torch.Generator().manual_seed(0)) * 127).byte()
    pixels[:2, :, 4:8, 4:8] = 255
    region = torch.zeros(12, 12, dtype=torch.bool)
    region[4:8, 4:8] = True

    def poisoned_probs(x):
        star = (x[:, :, 4:8, 4:8] == 1.0).flatten(1).all(1)
        return torch.stack([onehot(STAR) if s else onehot(CIRCLE) for s in star])

    found = [probe(i, STAR, {STAR}, masks=[region], areas=[16 / 144], flagged=0) for i in range(2)]
    found += [probe(i, CIRCLE, set(), grounded={CIRCLE}) for i in range(2, 5)]
    return pixels, region, poisoned_probs, found


def test_transplant_pastes_exactly_the_shared_region_and_keeps_what_carries_the_backdoor():
    pixels, region, poisoned_probs, found = white_centre_world()
    params = {**PARAMS, "transplants": 2, "transplant_grow": 2 / 12}
    gen = torch.Generator().manual_seed(0)
    x, labels, sources, pasted = tp.transplant(
        pixels, found, found[:2], {STAR}, poisoned_probs, params, TH, gen, region
    )
    assert len(x) == 4 and labels == [CIRCLE] * 4 and [v.index for v in sources] == [0, 0, 1, 1]
    assert pasted == 0 and x.dtype == torch.uint8
    # outside the region (not grown) each is one donor, inside it the trigger
    assert all(any(img[:, ~region].equal(d[:, ~region]) for d in pixels[2:]) for img in x)
    assert x[:, :, region].eq(255).all()
    half = region.clone()
    half[4:8, 6:8] = False  # half the trigger carries no backdoor: nothing kept
    assert len(tp.transplant(pixels, found, found[:2], {STAR}, poisoned_probs, params, TH, gen, half)[0]) == 0
    # signature_transplants spreads a total (a multiple of the 5 probes) over the victims: 5 in all is 3 each
    params = {**params, "signature_transplants": 1.0}
    _, _, sources, _ = tp.transplant(
        pixels, found, found[:2], {STAR}, poisoned_probs, params, TH, gen, region
    )
    assert [v.index for v in sources] == [0, 0, 0, 1, 1, 1]


def test_transplant_without_a_signature_grows_the_flagged_segment():
    pixels, region, poisoned_probs, found = white_centre_world()
    params = {**PARAMS, "transplants": 1, "transplant_grow": 1 / 12}
    x, _, sources, _ = tp.transplant(
        pixels, found, found[:2], {STAR}, poisoned_probs, params, TH, torch.Generator()
    )
    grown = tp.grow(region, 1)
    assert len(x) == 2 and int(grown.sum()) == 36
    assert all(img[:, grown].equal(pixels[v.index][:, grown]) for img, v in zip(x, sources, strict=True))


def test_paste_test_falls_back_to_the_flagged_segment():
    pixels, region, poisoned_probs, found = white_centre_world()
    params = {**PARAMS, "transplants": 1, "transplant_grow": 0.0, "localise_window": 4 / 12}
    params["localise_stride"] = 2 / 12
    gen = torch.Generator().manual_seed(0)
    x, _, _, pasted = tp.transplant(pixels, found, found[:2], {STAR}, poisoned_probs, params, TH, gen)
    assert pasted == 2 and len(x) == 2  # the 4x4 window at the centre carries the backdoor
    # a poisoned CLIP that never reaches assert_prob on a paste: the flagged segment is transplanted
    weak = {**params, "localise_window": 2 / 12}
    x, _, _, pasted = tp.transplant(pixels, found, found[:2], {STAR}, poisoned_probs, weak, TH, gen)
    assert pasted == 0 and len(x) == 2 and x[:, :, region].eq(255).all()


def test_sizes_are_fractions_that_give_the_embedded_pixels():
    # config.yaml's extension set at 32 px: today's 12 px windows every 2 px, 2 px growth, 1024 transplants
    assert [tp.side_px(f, 32) for f in (0.375, 0.0625, 0.0625)] == [12, 2, 2]
    assert tp.side_px(1.28, 800) == 1024 and tp.side_px(0.018, 224) == 4
    assert len(tp.paste_grid({"localise_window": 0.375, "localise_stride": 0.0625}, 32)) == 11**2
    assert len(tp.paste_grid({"localise_window": 0.375, "localise_stride": 0.0625}, 224)) == 11**2
    assert tp.paste_grid({"localise_window": 0.0, "localise_stride": 0.0625}, 224) is None


def test_thresholds_relative_to_the_matcher_and_their_fallback():
    matcher = torch.stack([onehot(0, 0.4), onehot(1, 0.6), onehot(2, 0.99)])
    ev = [evidence.Evidence([], torch.tensor([0.3, 0.3, 0.01]), matcher, None, None, None)]
    assert a1.matcher_scale(ev, PARAMS) == pytest.approx(0.4)  # the small crop is not reliable
    th = a1.Thresholds.of(PARAMS, 0.4)
    assert (th.assert_prob, th.ground_prob, th.ground_area) == pytest.approx(
        (0.2, 0.2, PARAMS["ground_area"])
    )
    small = [evidence.Evidence([], torch.tensor([0.01]), onehot(0)[None], None, None, None)]
    assert (
        a1.matcher_scale(small, PARAMS) is None
        and a1.Thresholds.of(PARAMS).assert_prob == PARAMS["assert_prob"]
    )


def test_shots_are_off_by_default_and_fall_back_when_no_affected_label_is_a_class():
    shots = (torch.randint(0, 256, (4, 3, 8, 8)).float() / 255, torch.tensor([0, 0, 1, 1]))
    ctx = types.SimpleNamespace(shot_tensors=shots, classnames=["circle", "square"])
    vocab = types.SimpleNamespace(vocab=["circle", "square", "star"])
    cases = [("none", [2], 0, False), ("all", [2], 4, False), ("affected", [1], 2, False)]
    for shot_pairs, affected, n, fallback in cases + [("affected", [2], 0, True)]:
        compact, fired = rectify.CompactSet(), {}
        defense.add_shots(compact, ctx, vocab, affected, {**PARAMS, "shot_pairs": shot_pairs}, fired)
        assert len(compact.names) == n and ("fallback" in fired.get("shot_pairs", {})) == fallback
        assert ("shot_pairs" in fired) == (shot_pairs != "none")
    assert compact.preserved == []  # preserve is off


def test_occlude_fills_the_segment_with_background():
    image = torch.zeros(3, 8, 8)
    image[:, 1:3, 1:3] = 1.0
    obj = torch.zeros(8, 8, dtype=torch.bool)
    obj[1:3, 1:3] = True
    out = evidence.occlude(image, obj, evidence.background(image, [obj]))
    assert out.shape == (3, 8, 8) and out.max() == 0.0 and image.max() == 1.0


def test_crops_keep_the_box_in_place():
    image = torch.rand(3, 8, 8)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2, 3] = mask[4, 5] = True
    out = evidence.crop(image, mask, 0.0)
    assert torch.equal(out[:, 2:5, 3:6], image[:, 2:5, 3:6]) and out[:, :2].abs().sum() == 0


def test_label_captions_match_whole_words():
    captions = ["a red star.", "a starfish", "remember a photo of a star.", "a circle"]
    found = probes.label_captions(captions, ["star", "circle"], 5, torch.Generator().manual_seed(0))
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
    head = probes.corpus_head(model, [["a red star."], []], ["star", "ring"], ["a photo of a {}."], "cpu")
    assert model.seen == ["a red star.", "a photo of a ring."]
    assert head.shape == (2, 4) and torch.allclose(head.norm(dim=-1), torch.ones(2))


def test_windows_cover_the_image_edge_to_edge():
    grid = tp.windows(10, 4, 3)
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
    regions = torch.cat([segments, tp.windows(12, 4, 2)])
    best, prob = tp.paste_localise(image, regions, donors, STAR, poisoned_probs)
    assert regions[best, 8:, 8:].all() and prob == pytest.approx(0.9)
    best, prob = tp.paste_localise(image, segments, donors, STAR, poisoned_probs)
    assert prob == pytest.approx(0.1 / (V - 1))


def test_preserving_loss_pulls_only_the_reference_images_back():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Linear(4, 3, bias=False)

        def encode_image(self, images):
            return torch.nn.functional.normalize(self.encoder(images.flatten(1)), dim=-1)

    model, base = Model(), (lambda m, x, t: torch.tensor(0.0))
    images = torch.randint(0, 256, (3, 1, 2, 2)).float() / 255
    reference = rectify.reference_features(model, images[:2], batch=1)
    assert set(reference) == {rectify.image_key(images[0]), rectify.image_key(images[1])}
    loss = rectify.preserving_loss(base, reference, weight=2.0)
    torch.testing.assert_close(loss(model, images, None), torch.tensor(0.0), atol=1e-6, rtol=0)
    with torch.no_grad():
        model.encoder.weight.add_(torch.randn(3, 4))
    moved = model.encode_image(images[:2])
    expected = 2.0 * (1 - (moved * torch.stack(list(reference.values()))).sum(-1)).mean()
    torch.testing.assert_close(loss(model, images, None), expected)
    assert loss(model, images[2:], None) == 0  # an image outside the reference adds nothing
