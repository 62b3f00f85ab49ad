"""The defense: Algorithm 1 over the probes, Algorithm 2, the compact set, rectification."""

import time

import torch

from clip_backdoor.defenses.interface import load_model_state, model_state, zero_shot_classifier
from clip_backdoor.defenses.oracle.algorithm1 import find_candidate_triggers
from clip_backdoor.defenses.oracle.algorithm2 import (
    affected_labels,
    candidate_counts,
    clean_pairs,
    victim_samples,
)
from clip_backdoor.defenses.oracle.evidence import Askers, as_float, probabilities
from clip_backdoor.defenses.oracle.probes import draw_probes, label_head
from clip_backdoor.defenses.oracle.rectify import CompactSet, caption, corrected_caption, rectify
from clip_backdoor.defenses.oracle.transplant import shared_pixels, shows_pixels, transplant
from clip_backdoor.models.factory import load_model
from clip_backdoor.models.zeroshot import zeroshot_head
from clip_backdoor.oracle import load_segmenter


def fit(ctx, params):
    started, fired = time.time(), {}
    gen = torch.Generator().manual_seed(ctx.seed)
    probes = draw_probes(ctx, params, gen)
    found, th, head = algorithm1(ctx, params, probes, fired)
    affected, counts, nulled = affected_labels(
        [p.candidates for p in found], len(probes.vocab), params["affected_freq"], params["affected_ratio"],
        null_sets(found), params["null_ratio"],
    )  # fmt: skip
    if params["null_ratio"] > 0:
        fired["null_ratio"] = {"removed": [probes.vocab[i] for i in nulled]}
    victims = victim_samples(found, affected, th)
    signature = victim_signature(probes, victims, params, fired)
    compact = CompactSet()
    add_corrected_pairs(compact, probes, found, affected, victims, params, signature, gen, fired)
    transplanted, pasted = add_transplants(
        compact, ctx, probes, found, victims, affected, head, th, gen, params, signature
    )
    add_shots(compact, ctx, probes, affected, params, fired)
    log = fit_log(probes, found, affected, counts, victims, compact, transplanted, pasted, signature)
    log.update(extensions=fired, oracle_seconds=round(time.time() - started, 2))
    state = {"report": {"examples": examples(found, probes, victims, params["examples"])}}
    if not compact.names:
        log.update(curve=[], trainable_params=0)
        return {**model_state(ctx.model), **state}, log
    curve, trainable, preserved = rectify(ctx, compact, params)
    if params["preserve"] > 0:
        fired["preserve"] = {"images": preserved}
        log["preserved_images"] = preserved
    log.update(curve=curve, trainable_params=trainable)
    return {**model_state(ctx.model), **state}, log


def algorithm1(ctx, params, probes, fired):
    """Loads the oracle (segmenter and clean matcher) and runs Algorithm 1; frees the clean model.
    Returns (probes' records, Thresholds, the poisoned CLIP's head)."""
    clean = load_model(ctx.paths["clean_model"], map_location=ctx.device).eval()
    head = label_head(ctx.model, probes, ctx)
    null_head = label_head(clean, probes, ctx) if params["null_ratio"] > 0 else None
    matcher_head = zeroshot_head(clean, probes.vocab, ctx.templates, device=ctx.device)
    askers = Askers(ctx.model, head, clean, matcher_head, null_head)
    segmenter = load_segmenter(ctx.paths["segmenter"], ctx.device)
    found, th = find_candidate_triggers(probes.pixels, segmenter, askers, params, ctx.device)
    if params["thresholds"] == "matcher":
        fired["thresholds"] = {"scale": th.scale, "assert": th.assert_prob, "ground": th.ground_prob}
        if th.scale == 1.0:
            fired["thresholds"]["fallback"] = "no reliable crop in the first batch: absolute thresholds"
    return found, th, head


def null_sets(found):
    return None if not found or found[0].null_candidates is None else [p.null_candidates for p in found]


def victim_signature(probes, victims, params, fired):
    """The pixels all victims share (screen_clean or transplant_region: signature), or None."""
    if not (params["screen_clean"] or params["transplant_region"] == "signature"):
        return None
    signature = shared_pixels(
        as_float(probes.pixels[[v.index for v in victims]]),
        params["screen_tol"], params["screen_share"], params["screen_area"],
    )  # fmt: skip
    fired["shared_pixels"] = (
        {"pixels": int(signature[0].sum())}
        if signature is not None
        else {"fallback": f"the {len(victims)} victims share no pixels: no screen, localised transplants"}
    )
    return signature


def add_corrected_pairs(compact, probes, found, affected, victims, params, signature, gen, fired):
    """Victims with corrected captions, then the clean pairs (screened with `screen_clean`)."""
    screen, screened = None, []
    if signature is not None and params["screen_clean"]:

        def screen(p):
            screened.append(shows_pixels(as_float(probes.pixels[p.index]), signature, *screen_knobs(params)))
            return screened[-1]

    pairs = [(v, v.oracle_label) for v in victims if v.oracle_label is not None]
    n_victims = len(pairs)
    pairs += clean_pairs(found, set(affected), params, gen, screen)
    if screen is not None:
        fired["screen_clean"] = {"screened_out": sum(screened), "of": len(screened)}
    wrong, templates = [probes.vocab[i] for i in affected], params["caption_templates"]
    captions = [
        corrected_caption(probes.caption(p.index), wrong, probes.vocab[label], k, templates)
        if k < n_victims
        else caption(probes.vocab[label], k, templates)
        for k, (p, label) in enumerate(pairs)
    ]
    compact.add(probes.pixels[[p.index for p, _ in pairs]], [probes.vocab[y] for _, y in pairs], captions)
    if params["preserve"] > 0:
        kept = [p.index for k, (p, label) in enumerate(pairs) if k >= n_victims and label not in affected]
        compact.preserved.append(as_float(probes.pixels[kept]))


def screen_knobs(params):
    return params["screen_tol"], params["screen_share"]


def add_transplants(compact, ctx, probes, found, victims, affected, head, th, gen, params, signature):
    shared = signature[0] if signature is not None and params["transplant_region"] == "signature" else None
    poisoned_probs = lambda x: probabilities(ctx.model, head, x, params["batch"])  # noqa: E731
    x, labels, _, pasted = transplant(
        probes.pixels, found, victims, set(affected), poisoned_probs, params, th, gen, shared
    )
    names = [probes.vocab[y] for y in labels]
    compact.add(x, names, [caption(n, k, params["caption_templates"]) for k, n in enumerate(names)])
    return len(labels), pasted


def add_shots(compact, ctx, probes, affected, params, fired):
    """The few-shot examples (`shot_pairs`: none, the affected labels' or every class's)."""
    shot_x, shot_y = (t.cpu() for t in ctx.shot_tensors)
    if params["preserve"] > 0:
        compact.preserved.append(shot_x)
    if params["shot_pairs"] == "none":
        return
    names = [probes.vocab[label] for label in affected]
    classes = (
        range(len(ctx.classnames))
        if params["shot_pairs"] == "all"
        else [ctx.classnames.index(n) for n in names if n in ctx.classnames]
    )
    before = len(compact.names)
    for c in classes:
        keep, name = shot_y == c, ctx.classnames[c]
        n = int(keep.sum())
        pixels = (shot_x[keep] * 255).round().byte()
        compact.add(pixels, [name] * n, [caption(name, k, params["caption_templates"]) for k in range(n)])
    fired["shot_pairs"] = {"shots": len(compact.names) - before}
    if not classes:
        fired["shot_pairs"]["fallback"] = "no affected label is a downstream class: no shots"


def fit_log(probes, found, affected, counts, victims, compact, transplanted, pasted, signature):
    vocab = probes.vocab
    null = null_sets(found)
    return {
        "affected_labels": [vocab[i] for i in affected],
        "victims": [probes.corpus_index[v.index] for v in victims],
        "victim_labels": [None if v.oracle_label is None else vocab[v.oracle_label] for v in victims],
        "candidate_counts": {vocab[i]: int(c) for i, c in enumerate(counts) if c},
        "null_candidate_counts": None
        if null is None
        else {vocab[i]: int(c) for i, c in enumerate(candidate_counts(null, len(vocab))) if c},
        "probed": probes.corpus_index,
        "compact_set": len(compact.names),
        "transplanted": transplanted,
        "paste_localised": pasted,
        "flagged_segments": sum(p.flagged >= 0 for p in found),
        "trigger_signature_pixels": 0 if signature is None else int(signature[0].sum()),
    }


def examples(found, probes, victims, n):
    """Localisation examples for the report: victims with a flagged segment first, then other victims,
    then a probe without candidates."""
    order = sorted(victims, key=lambda p: p.flagged < 0)[: max(n - 1, 0)]
    order += [p for p in found if not p.candidates and p.masks][:1]
    size = probes.pixels.shape[-2:]
    return [
        {
            "image": probes.pixels[p.index].permute(1, 2, 0).clone(),
            "masks": torch.stack(p.masks) if p.masks else torch.zeros(0, *size, dtype=torch.bool),
            "flagged": p.flagged,
            "poisoned_label": probes.vocab[p.top1],
            "oracle_label": "" if p.oracle_label is None else probes.vocab[p.oracle_label],
        }
        for p in order
    ]


def classifier(ctx, state, text_prefix):
    load_model_state(ctx, state)
    return zero_shot_classifier(ctx, text_prefix)
