"""Algorithm 2: pinpoint the affected labels and the victim samples, and curate the compact set.

affected labels  candidates in ≥ `affected_freq` of the probes and ≥ `affected_ratio` times as often as
                 the most frequent such candidate (with the null test, `null_ratio` > 0, also ≥ that many
                 times as often as with the clean CLIP in the poisoned one's place);
victims          probes whose poisoned top-1 is an affected label and a candidate there;
corrected label  the clean matcher's label of the victim's largest reliable segment outside the affected
                 labels (none if the oracle grounds the affected label there: a real object carrying it);
compact set      the victims (trigger in place) with corrected captions, `clean_per_label` clean pairs of
                 each affected label (probes where the oracle grounds the poisoned top-1) and
                 `anchor_pairs` such pairs of other labels.
"""

import numpy as np
import torch


def candidate_counts(candidate_sets, n_labels):
    """Per label, the number of probes it is a candidate in."""
    counts = np.zeros(n_labels, np.int64)
    for cands in candidate_sets:
        for c in cands:
            counts[c] += 1
    return counts


def affected_labels(candidate_sets, n_labels, freq, ratio, null_sets=None, null_ratio=0.0):
    """(affected labels most frequent first, counts, labels the null test removed)."""
    counts = candidate_counts(candidate_sets, n_labels)
    keep = (counts / max(len(candidate_sets), 1) >= freq) & (counts > 0)
    nulled = np.zeros_like(keep)
    if null_sets is not None:
        nulled = keep & (counts < null_ratio * candidate_counts(null_sets, n_labels))
        keep &= ~nulled
    keep &= counts >= ratio * (counts[keep].max() if keep.any() else 0)
    order = np.argsort(-counts, kind="stable")
    return [int(i) for i in order if keep[i]], counts, [int(i) for i in order if nulled[i]]


def oracle_label(probe, min_area, exclude, min_prob=1.0):
    """The clean matcher's label of the probe's largest (first) unflagged segment of area ≥ `min_area`
    whose label is not in `exclude` (None if none, or if a larger such segment shows an excluded label
    with probability ≥ `min_prob`: a real object of that label)."""
    for j in range(len(probe.areas)):
        if j == probe.flagged or probe.areas[j] < min_area:
            continue
        if int(probe.segment_label[j]) not in exclude:
            return int(probe.segment_label[j])
        if probe.segment_prob[j] >= min_prob:
            return None
    return None


def victim_samples(probes, affected, th):
    """The victims, each with its corrected label set (`oracle_label`)."""
    for p in probes:
        min_prob = th.ground_prob if p.flagged >= 0 else 1.0
        p.oracle_label = oracle_label(p, th.ground_area, set(affected), min_prob)
    return [p for p in probes if p.top1 in affected and p.top1 in p.candidates]


def pick(items, n, gen):
    """A random sample of up to `n` items (drawn with `gen`), in their order."""
    order = torch.randperm(len(items), generator=gen)[:n].tolist()
    return [items[i] for i in sorted(order)]


def clean_pairs(probes, affected, params, gen, carries_trigger=None):
    """[(probe, label)]: `clean_per_label` agreeing probes per affected label (less those `carries_trigger`
    marks), then `anchor_pairs` agreeing probes of other labels."""
    pairs = []
    for label in sorted(affected):
        agree = [p for p in probes if p.agreed and p.top1 == label]
        if carries_trigger is not None:
            agree = [p for p in agree if not carries_trigger(p)]
        pairs += [(p, label) for p in pick(agree, params["clean_per_label"], gen)]
    others = [p for p in probes if p.agreed and p.top1 not in affected]
    return pairs + [(p, p.top1) for p in pick(others, params["anchor_pairs"], gen)]
