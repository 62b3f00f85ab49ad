"""Algorithm 1 (FindAdversarialTrigger): per probe, the labels the poisoned CLIP asserts that the oracle
cannot ground are its candidate triggers.

  L  asserted: the poisoned CLIP's top `top_k` labels with probability ≥ `assert_prob`;
  S  grounded: the clean matcher's top-1 label on each segment crop of area ≥ `ground_area` (smaller crops
     are unreliable) with probability ≥ `ground_prob`;
  P  candidates: L \\ S (less C, the labels the clean matcher asserts on the whole image, with
     `clean_image`: a label both CLIPs see is the oracle's miss), plus
     - the occlusion test: ℓ ∈ L for a compact segment (area ≤ `compact_area`) whose removal drops the
       poisoned CLIP's ℓ below `assert_prob`, unless the clean matcher sees ℓ in that segment itself;
     - the crop test (R_i, `crop_area` > 0): ℓ ∈ L for a segment of area in [`ground_area`, `crop_area`]
       whose crop the poisoned CLIP labels ℓ while the clean matcher labels it otherwise: a clean-label
       trigger, on an image that does show ℓ.
     The segment of the largest drop (occlusion), else of the largest gap (crop test), is flagged: the
     trigger's localisation. A global trigger (Blended, SIG, WaNet, ISSBA) is in every crop and is carried
     by L \\ S alone.
"""

from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from clip_backdoor.defenses.oracle.evidence import as_float, gather


@dataclass(frozen=True)
class Thresholds:
    """Algorithm 1's thresholds; `scale` multiplies the probability ones (thresholds: matcher)."""

    top_k: int
    assert_prob: float
    ground_prob: float
    ground_area: float
    compact_area: float
    crop_area: float
    scale: float = 1.0

    @classmethod
    def of(cls, params, scale=1.0):
        keys = ("top_k", "ground_area", "compact_area", "crop_area")
        probs = {k: params[k] * scale if scale != 1.0 else params[k] for k in ("assert_prob", "ground_prob")}
        return cls(**{k: params[k] for k in keys}, **probs, scale=scale)


@dataclass
class Finding:
    """Algorithm 1 on one probe: L, S, P and the flagged segment (-1: none)."""

    asserted: set
    grounded: set
    candidates: set
    flagged: int


@dataclass
class Probe:
    """One probe image: its position among the probes, the poisoned CLIP's top-1, the finding (and the
    null test's candidates), the clean matcher's top-1 per segment, the areas, and the masks (kept only
    where the later steps or the report need them). `oracle_label` is set by Algorithm 2."""

    index: int
    top1: int
    finding: Finding
    segment_prob: torch.Tensor
    segment_label: torch.Tensor
    areas: torch.Tensor
    masks: list = field(default_factory=list)
    null_candidates: set | None = None
    oracle_label: int | None = None

    @property
    def candidates(self):
        return self.finding.candidates

    @property
    def flagged(self):
        return self.finding.flagged

    @property
    def agreed(self):
        """The oracle grounds the poisoned CLIP's top-1 and it is no candidate: a clean pair."""
        return self.top1 in self.finding.grounded and self.top1 not in self.finding.candidates


def asserted_labels(probs, top_k, min_prob):
    top = probs.topk(min(top_k, len(probs)))
    return {i for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True) if p >= min_prob}


def find_triggers(asker, matcher, areas, th, matcher_image=None):
    """Algorithm 1 on one probe: asker (evidence.Views) is the poisoned CLIP's (or the null test's) view;
    matcher [K,V] the clean matcher's crops; areas [K]; th Thresholds; matcher_image [V] or None (no C)."""
    asserted = asserted_labels(asker.image, th.top_k, th.assert_prob)
    conf, label = matcher.max(-1) if len(areas) else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
    reliable = [bool(areas[j] >= th.ground_area) for j in range(len(areas))]
    grounded = {int(label[j]) for j in range(len(areas)) if reliable[j] and conf[j] >= th.ground_prob}
    candidates = asserted - grounded
    if matcher_image is not None:
        candidates -= asserted_labels(matcher_image, th.top_k, th.assert_prob)
    flagged = occlusion_test(asker, label, areas, reliable, asserted, candidates, th)
    if asker.crops is not None:
        flagged = crop_test(asker, matcher, label, areas, asserted, candidates, th, flagged)
    return Finding(asserted, grounded, candidates, flagged)


def occlusion_test(asker, label, areas, reliable, asserted, candidates, th):
    """Adds to `candidates` the labels a compact segment's removal suppresses; the segment of the largest
    drop, or -1."""
    flagged, best = -1, 0.0
    for j in range(len(areas)):
        if areas[j] > th.compact_area:
            continue
        for ell in asserted:
            if reliable[j] and int(label[j]) == ell:
                continue  # the clean matcher sees ℓ in this segment itself: a real object, not a trigger
            drop = float(asker.image[ell] - asker.occluded[j, ell])
            if asker.occluded[j, ell] < th.assert_prob and drop > best:
                flagged, best = j, drop
                candidates.add(ell)
    return flagged


def crop_test(asker, matcher, label, areas, asserted, candidates, th, flagged):
    """Adds to `candidates` the labels the asker alone sees in a mid-sized crop; keeps an occlusion flag,
    else flags the crop of the largest probability gap."""
    occlusion_flagged, best = flagged >= 0, 0.0
    for j in range(len(areas)):
        if not th.ground_area <= areas[j] <= th.crop_area:
            continue
        p, ell = asker.crops[j].max(-1)
        ell = int(ell)
        if ell in asserted and p >= th.assert_prob and int(label[j]) != ell:
            candidates.add(ell)
            if not occlusion_flagged and float(p - matcher[j, ell]) > best:
                flagged, best = j, float(p - matcher[j, ell])
    return flagged


def matcher_scale(evidence, params):
    """thresholds: matcher — the clean matcher's median top-1 probability on the reliable crops of the
    first probe batch, so that the probability thresholds read as shares of the oracle's own confidence
    (10 or 1,000 labels alike). None where there is no reliable crop (the thresholds stay absolute)."""
    confs = [e.matcher.max(-1).values[e.areas >= params["ground_area"]] for e in evidence if len(e.areas)]
    confs = torch.cat(confs) if confs else torch.zeros(0)
    return float(confs.median()) if len(confs) else None


def find_candidate_triggers(pixels, segmenter, askers, params, device):
    """Algorithm 1 over the probes (uint8 [N,3,H,W] on the CPU), `batch` at a time. Masks are kept for
    probes with candidates and the first `examples` without. Returns (probes, Thresholds)."""
    probes, kept_clean, batch, th = [], 0, params["batch"], None
    for first in tqdm(range(0, len(pixels), batch), desc="oracle probes", unit="batch", mininterval=5):
        chunk = as_float(pixels[first : first + batch]).to(device)
        evidence = gather(chunk, segmenter, askers, params)
        if th is None:
            scale = matcher_scale(evidence, params) if params["thresholds"] == "matcher" else None
            th = Thresholds.of(params, scale if scale is not None else 1.0)
        for i, ev in enumerate(evidence):
            finding = find_triggers(ev.poisoned, ev.matcher, ev.areas, th, ev.matcher_image)
            null = None
            if ev.null is not None:
                null = find_triggers(ev.null, ev.matcher, ev.areas, th, ev.matcher_image).candidates
            keep = bool(finding.candidates) or kept_clean < params["examples"]
            kept_clean += not finding.candidates and keep
            conf, label = ev.matcher.max(-1) if len(ev.areas) else (torch.zeros(0), torch.zeros(0).long())
            top1 = int(ev.poisoned.image.argmax())
            masks = [m.cpu() for m in ev.masks] if keep else []
            probes.append(Probe(first + i, top1, finding, conf, label, ev.areas, masks, null))
    return probes, th or Thresholds.of(params)
