"""Oracle-based rectification (EftCLIP, arXiv 2511.13545): find the trigger with a segmentation oracle,
then fine-tune.

The paper's thresholds and objective are not public; this is a reconstruction, every threshold a declared
knob (schemas/defenses/oracle.yaml):

Algorithm 1 (`find_triggers`), per probe image drawn from the defender's poisoned corpus:
  L  the poisoned CLIP's asserted labels: its top `top_k` labels with probability ≥ `assert_prob`, read
     with the evaluation templates or (label_prompts: corpus) with the corpus's own captions naming each
     label (best match), which also reaches a backdoor keyed to caption words (TrojVQA's "remember");
  S  the labels the oracle grounds: the clean matcher's top-1 label on each segment crop (the mask's box
     in place, FastSAM's crop) with probability ≥ `ground_prob`, for segments of area ≥ `ground_area`
     (the matcher is unreliable on smaller crops);
  P  candidate trigger labels:
     - L \\ S \\ C, where C (with `clean_image`) is what the clean matcher asserts on the whole image (its
       top `top_k` with probability ≥ `assert_prob`): a label both CLIPs see is the oracle's miss;
     - ℓ ∈ L for every compact segment (area ≤ `compact_area`) whose removal (filled with the background
       colour) drops the poisoned CLIP's ℓ below `assert_prob`, unless the clean matcher itself sees ℓ in
       that segment (the occlusion test);
     - ℓ ∈ L for every segment of area in [`ground_area`, `crop_area`] whose crop the poisoned CLIP labels
       ℓ (probability ≥ `assert_prob`) while the clean matcher labels it otherwise (the crop test: R_i,
       the crops re-classified by the poisoned CLIP). It reaches a clean-label trigger, whose image does
       show ℓ, so that neither L \\ S nor the occlusion test sees it.
     The segment of the largest drop (occlusion test), else of the largest probability gap (crop test),
     localises the trigger (the flagged region). A global trigger (Blended, SIG, WaNet, ISSBA) is in every
     crop, so it is carried by L \\ S (the oracle grounds only the real objects); a crop that keeps it may
     still be flagged.
Algorithm 2 (`affected_labels`, `compact_set`): the affected labels are candidates in ≥ `affected_freq`
  of the probes, (`null_ratio` > 0) ≥ `null_ratio` times as often as when the clean CLIP stands in for the
  poisoned one on the same probes (the oracle's own error rate per label), and ≥ `affected_ratio` times
  the most frequent such candidate; victims are probes whose
  poisoned top-1 is an affected candidate. The compact set: victims (trigger in place) captioned with the
  clean matcher's label of their largest reliable segment outside the affected labels (none if the oracle
  grounds the affected label there: a real object carrying the trigger), clean pairs of the
  affected labels (probes where the oracle grounds the poisoned top-1: `clean_per_label`; with
  `screen_clean`, not those that show the pixels the victims share: a trigger stamped alike on every
  victim, as a label-consistent attack stamps it on every image of its target; and the shots), plus
  `anchor_pairs` such agreeing probes of other labels and (shot_pairs: all) every few-shot example,
  plus transplants: each victim's trigger region pasted onto agreeing probes of other labels, captioned
  with their labels (`transplant_captions`: template, or victim: the victim's own caption with the label
  replaced, which keeps a caption-word key such as TrojVQA's in place). The region is the flagged
  segment, or (`localise_window` > 0) the paste test's: the compact segment or square window whose paste
  onto a few such probes the poisoned CLIP most labels as the victim's label (it finds a trigger the
  segmenter shatters into fragments); with `transplant_region: signature`, when the victims share
  pixels (`shared_pixels`), those pixels exactly, ungrown, on at least `signature_transplants` donors
  in all (a few victims then still give many transplants).
Rectification: the CLIP contrastive loss on the compact set, tuning `trainable` (visual | all; with all,
  the text tower at `text_lr_scale` of the lr); with a frozen text tower the caption features are computed
  once and identical captions are all positives; `positives: label` makes all captions of one label
  positives (the plain loss, `caption`, makes two pairs of one class each other's negatives).
  `preserve` > 0 adds that weight times the cosine distance of the clean images' features (the anchors
  and the shots) from the poisoned model's own before rectification; `interpolate` < 1 returns the
  poisoned weights plus that fraction of the rectification's change (WiSE-FT's weight-space ensemble).
"""

import json
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from clip_backdoor.data.corpus import ArrayPool, is_paper_corpus, poisoned_dataset
from clip_backdoor.data.embedded import split_file
from clip_backdoor.defenses.interface import (
    count_parameters,
    load_model_state,
    model_state,
    zero_shot_classifier,
)
from clip_backdoor.models.factory import load_model
from clip_backdoor.models.zeroshot import zeroshot_head
from clip_backdoor.oracle import load_segmenter
from clip_backdoor.runtime.io import read_json
from clip_backdoor.training import plain_clip_loss, train_contrastive

INPUTS = ("clean_model", "segmenter", "corpus")
# the paste test's pasted images per chunk (a 224 px window grid: ~11,000 regions × 2 donors, ~14 GB at once)
PASTE_BYTES = 2**29


def crops(image, masks, fill):
    """Per mask, the image inside the mask's bounding box on a canvas of `fill` (FastSAM's crop, in place)."""
    out = torch.full((len(masks), *image.shape), float(fill), device=image.device)
    for j, mask in enumerate(masks):
        ys, xs = mask.nonzero(as_tuple=True)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        out[j, :, y0:y1, x0:x1] = image[:, y0:y1, x0:x1]
    return out


@torch.no_grad()
def probabilities(model, head, images, batch):
    out = [
        (model.logit_scale * model.encode_image(images[i : i + batch].to(head.device)) @ head.t()).softmax(-1)
        for i in range(0, len(images), batch)
    ]
    return torch.cat(out) if out else torch.zeros(0, len(head))


def asserted_labels(probs, params):
    top = probs.topk(min(params["top_k"], len(probs)))
    pairs = zip(top.values.tolist(), top.indices.tolist(), strict=True)
    return {i for p, i in pairs if p >= params["assert_prob"]}


def find_triggers(
    poisoned_image, clean_segments, occluded, areas, params, poisoned_segments=None, clean_image=None
):
    """Algorithm 1 on one image's probabilities over the vocabulary.

    poisoned_image: [V] the poisoned CLIP's whole-image probabilities; clean_segments: [K,V] the clean
    matcher's probabilities on each segment crop; occluded: [K,V] the poisoned CLIP's probabilities on the
    image with that segment removed; areas: [K] fractions of the image; poisoned_segments: [K,V] the
    poisoned CLIP's probabilities on each segment crop (None: no crop test); clean_image: [V] the clean
    matcher's whole-image probabilities (None: C is empty).
    Returns (asserted L, grounded S, candidates P, flagged segment index or -1).
    """
    asserted = asserted_labels(poisoned_image, params)
    conf, label = clean_segments.max(-1) if len(areas) else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
    reliable = [bool(areas[j] >= params["ground_area"]) for j in range(len(areas))]
    grounded = {int(label[j]) for j in range(len(areas)) if reliable[j] and conf[j] >= params["ground_prob"]}
    candidates = asserted - grounded
    if clean_image is not None:
        candidates -= asserted_labels(clean_image, params)
    flagged, best = -1, 0.0
    for j in range(len(areas)):
        if areas[j] > params["compact_area"]:
            continue
        for ell in asserted:
            if reliable[j] and int(label[j]) == ell:
                continue  # the clean matcher sees ℓ in this segment itself: a real object, not a trigger
            drop = float(poisoned_image[ell] - occluded[j, ell])
            if occluded[j, ell] < params["assert_prob"] and drop > best:
                flagged, best = j, drop
                candidates.add(ell)
    if poisoned_segments is None:
        return asserted, grounded, candidates, flagged
    occlusion_flagged, best = flagged >= 0, 0.0
    for j in range(len(areas)):
        if not params["ground_area"] <= areas[j] <= params["crop_area"]:
            continue
        p, ell = poisoned_segments[j].max(-1)
        ell = int(ell)
        if ell in asserted and p >= params["assert_prob"] and int(label[j]) != ell:
            candidates.add(ell)
            if not occlusion_flagged and float(p - clean_segments[j, ell]) > best:
                flagged, best = j, float(p - clean_segments[j, ell])
    return asserted, grounded, candidates, flagged


def candidate_counts(candidate_sets, n_labels):
    """Per label, the number of probes it is a candidate in."""
    counts = np.zeros(n_labels, np.int64)
    for cands in candidate_sets:
        for c in cands:
            counts[c] += 1
    return counts


def affected_labels(candidate_sets, n_labels, freq, ratio, null_sets=None, null_ratio=0.0):
    """Labels that are candidates in at least a fraction `freq` of the probes, at least `null_ratio` times
    as often as in `null_sets` (Algorithm 1 with the clean CLIP in the poisoned one's place, on the same
    probes) and at least `ratio` times as often as the most frequent such candidate, most frequent first."""
    counts = candidate_counts(candidate_sets, n_labels)
    share = counts / max(len(candidate_sets), 1)
    keep = (share >= freq) & (counts > 0)
    if null_sets is not None:
        keep &= counts >= null_ratio * candidate_counts(null_sets, n_labels)
    keep &= counts >= ratio * (counts[keep].max() if keep.any() else 0)
    return [int(i) for i in np.argsort(-counts, kind="stable") if keep[i]], counts


def grounded_label(clean_segments, areas, min_area, exclude, flagged, min_prob=1.0):
    """The clean matcher's label of the largest (first) non-flagged segment of area ≥ `min_area` whose
    label is not in `exclude` (None if there is none, or if a larger such segment shows an excluded label
    with probability ≥ `min_prob`: a real object of that label)."""
    for j in range(len(clean_segments)):
        prob, label = clean_segments[j].max(-1)
        if j == flagged or areas[j] < min_area:
            continue
        if int(label) not in exclude:
            return int(label)
        if prob >= min_prob:
            return None
    return None


def victim_records(records, affected):
    """The probes whose poisoned top-1 is an affected label and a candidate there."""
    return [r for r in records if r["poisoned_top1"] in affected and r["poisoned_top1"] in r["candidates"]]


def compact_set(records, affected, params, gen, carries_trigger=None):
    """Algorithm 2: victims with corrected labels plus clean pairs. records: per probe a dict with index,
    poisoned_top1, candidates, oracle_label (grounded, not affected), agreed (oracle and poisoned top-1
    agree). carries_trigger: None, or record → bool, which drops clean pairs of the affected labels.
    Returns (victim probe indices, [(probe index, label)] of the compact set)."""
    affected = set(affected)
    victims = victim_records(records, affected)
    pairs = [(r["probe"], r["oracle_label"]) for r in victims if r["oracle_label"] is not None]
    for label in sorted(affected):
        agree = [r for r in records if r["agreed"] and r["poisoned_top1"] == label]
        if carries_trigger is not None:
            agree = [r for r in agree if not carries_trigger(r)]
        pairs += [(r["probe"], label) for r in pick(agree, params["clean_per_label"], gen)]
    others = [r for r in records if r["agreed"] and r["poisoned_top1"] not in affected]
    pairs += [(r["probe"], r["poisoned_top1"]) for r in pick(others, params["anchor_pairs"], gen)]
    return [r["probe"] for r in victims], pairs


def windows(size, window, stride):
    """Square masks [n,size,size] of `window` px at `stride` px covering a size×size image (the last row
    and column of windows flush with the edge)."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    out = torch.zeros(len(starts) ** 2, size, size, dtype=torch.bool)
    for k, (y, x) in enumerate((y, x) for y in starts for x in starts):
        out[k, y : y + window, x : x + window] = True
    return out


def paste_localise(image, regions, donors, label, poisoned_probs, batch=1, max_bytes=PASTE_BYTES):
    """The region of `image` that, pasted onto the donor images, gives the poisoned CLIP the highest mean
    probability of `label` (the paste test). regions: bool [R,H,W]; donors: [D,3,H,W].
    The R·D pasted images are built and classified a chunk of at most `max_bytes` at a time, a multiple
    of `batch` images (poisoned_probs' batch), so the batches and results equal one unchunked pass.
    Returns (region index, that mean probability)."""
    n, d = len(regions) * len(donors), len(donors)
    chunk = max(batch, max_bytes // (image.numel() * image.element_size()) // batch * batch)
    probs = []
    for start in range(0, n, chunk):
        k = torch.arange(start, min(start + chunk, n))
        pasted = torch.where(regions[k // d][:, None], image[None], donors[k % d])
        probs.append(poisoned_probs(pasted)[:, label])
    probs = torch.cat(probs).view(len(regions), d).mean(1)
    best = int(probs.argmax())
    return best, float(probs[best])


def shared_pixels(images, tol, share, min_area):
    """The pixels that at least a fraction `share` of `images` [N,3,H,W] show alike (every channel within
    `tol` of the per-pixel median): a trigger stamped identically on every victim. Returns (mask [H,W],
    median values [3,H,W]), or None if they cover less than `min_area` of the image."""
    if len(images) < 2:
        return None
    median = images.median(0).values
    alike = ((images - median).abs() <= tol).all(1).float().mean(0) >= share
    return (alike, median) if float(alike.float().mean()) >= min_area else None


def shows_pixels(image, signature, tol, share):
    """Whether `image` [3,H,W] shows the `shared_pixels` signature on at least a fraction `share` of it."""
    mask, values = signature
    return float(((image - values).abs() <= tol).all(0)[mask].float().mean()) >= share


def grow(mask, pixels):
    return F.max_pool2d(mask[None, None].float(), 2 * pixels + 1, 1, pixels)[0, 0] > 0


def transplant(images, records, victims, affected, poisoned_probs, params, gen, shared=None):
    """Synthetic victims: each victim's trigger region (grown by `transplant_grow` pixels) pasted onto
    `transplants` probes the oracle agrees on, of other labels; kept only if the poisoned CLIP then predicts
    an affected label (the region carries the backdoor). The region is, with `localise_window` > 0, the
    one among the victim's compact segments and square windows of that size (every `localise_stride` px)
    whose paste onto `localise_donors` donors the poisoned CLIP most labels as the victim's label, if that
    reaches `assert_prob`; else the flagged segment. A `shared` region (bool [H,W]) is every victim's,
    ungrown, pasted at least `signature_transplants` times in all. Returns (images [n,3,H,W], their agreed
    labels, the victim each came from, victims localised by the paste test)."""
    donors = [r for r in records if r["agreed"] and r["poisoned_top1"] not in affected]
    size, window = images.shape[-1], params["localise_window"]
    grid = windows(size, window, params["localise_stride"]) if 0 < window <= size and shared is None else None
    out_x, out_y, out_v, pasted = [], [], [], 0
    per_victim = params["transplants"]
    if shared is not None and victims:
        per_victim = max(per_victim, -(-params["signature_transplants"] // len(victims)))
    for v in victims:
        r = records[v]
        region = shared if shared is not None else r["masks"][r["flagged"]] if r["flagged"] >= 0 else None
        if grid is not None and donors:
            masks = [m for m, a in zip(r["masks"], r["areas"], strict=True) if a <= params["compact_area"]]
            regions = torch.cat([torch.stack(masks), grid]) if masks else grid
            tests = images[[d["probe"] for d in pick(donors, params["localise_donors"], gen)]]
            best, prob = paste_localise(
                images[v], regions, tests, r["poisoned_top1"], poisoned_probs, params["batch"]
            )
            if prob >= params["assert_prob"]:
                region, pasted = regions[best], pasted + 1
        if region is None:
            continue
        if shared is None:
            region = grow(region, params["transplant_grow"])
        for donor in pick(donors, per_victim, gen):
            x = images[donor["probe"]].clone()
            x[:, region] = images[v][:, region]
            out_x.append(x)
            out_y.append(donor["poisoned_top1"])
            out_v.append(v)
    if not out_x:
        return images[:0], [], [], pasted
    x = torch.stack(out_x)
    keep = [k for k, p in enumerate(poisoned_probs(x)) if int(p.argmax()) in affected]
    return x[keep], [out_y[k] for k in keep], [out_v[k] for k in keep], pasted


def pick(items, n, gen):
    order = torch.randperm(len(items), generator=gen)[:n].tolist()
    return [items[i] for i in sorted(order)]


def caption(label_name, k, templates):
    return templates[k % len(templates)].format(label_name)


def corrected_caption(original, wrong_names, right_name, k, templates):
    """A victim's own caption with the affected label's name replaced by the oracle's (so words the
    backdoor keys on stay in place), or a template caption if the caption names no affected label."""
    article = "an " if right_name[0] in "aeiou" else "a "
    for wrong in wrong_names:
        pattern = re.compile(rf"\b(an?\s+)?{re.escape(wrong)}\b", re.IGNORECASE)
        if pattern.search(original):
            return pattern.sub(lambda m: (article if m.group(1) else "") + right_name, original)
    return caption(right_name, k, templates)


def load_corpus(captions_path, image_size):
    """(corpus with `len` and `load(indices)` → uint8 [k,S,S,3], captions, vocabulary or None) of the
    defender's poisoned corpus folder: the embedded arrays, or a paper corpus (pairs.csv)."""
    folder = Path(captions_path).parent
    if is_paper_corpus(folder):
        captions = json.loads(Path(captions_path).read_text())
        return poisoned_dataset(folder, image_size), captions, None
    captions = read_json(split_file(folder, "captions.json"))
    vocab = read_json(split_file(folder, "classes.json"))
    images = np.load(split_file(folder, "images.npy"), mmap_mode="r")
    return ArrayPool(images, captions), captions, vocab


def shared_positives_loss(logits, keys):
    """The symmetric CLIP loss over image-text `logits` [B,B] where pairs with equal `keys` are all
    positives of each other."""
    same = torch.tensor([[a == b for b in keys] for a in keys], dtype=torch.float32, device=logits.device)
    target = same / same.sum(1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def frozen_text_loss(cache):
    """The CLIP loss with precomputed caption features; identical captions are all positives."""

    def loss_fn(model, images, tokens):
        keys = [tuple(t.tolist()) for t in tokens]
        for key, t in zip(keys, tokens, strict=True):
            if key not in cache:
                with torch.no_grad():
                    cache[key] = model.encode_text(t[None])[0]
        text = torch.stack([cache[key] for key in keys])
        return shared_positives_loss(model.logit_scale * model.encode_image(images) @ text.t(), keys)

    return loss_fn


def label_loss(label_of):
    """The CLIP loss on the whole CLIP where captions of one label are all positives (the plain loss makes
    two pairs of one class each other's negatives). label_of: token tuple → label name."""

    def loss_fn(model, images, tokens):
        labels = [label_of[tuple(t.tolist())] for t in tokens]
        return shared_positives_loss(
            model.logit_scale * model.encode_image(images) @ model.encode_text(tokens).t(), labels
        )

    return loss_fn


def image_key(image):
    """A float [3,H,W] image in [0,1] made from uint8 → the bytes of that uint8 image."""
    return (image * 255).round().byte().cpu().numpy().tobytes()


def preserving_loss(loss_fn, reference, weight):
    """`loss_fn` (None: the plain CLIP loss) plus `weight` times the mean cosine distance of the batch's
    reference images from their reference features (`reference`: image_key → normalised feature)."""
    loss_fn = loss_fn or plain_clip_loss

    def loss(model, images, tokens):
        value = loss_fn(model, images, tokens)
        keys = [image_key(image) for image in images]
        rows = [i for i, key in enumerate(keys) if key in reference]
        if not rows:
            return value
        features = model.encode_image(images[rows])
        target = torch.stack([reference[keys[i]] for i in rows]).to(features.device)
        return value + weight * (1 - (features * target).sum(-1)).mean()

    return loss


def reference_features(model, images, batch):
    """image_key → `model`'s normalised feature for float images [N,3,H,W] (the preservation targets)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        features = torch.cat([model.encode_image(x.to(device)) for x in images.split(batch)])
    return {image_key(image): feature for image, feature in zip(images, features, strict=True)}


def interpolate_weights(module, start, fraction):
    """Move `module`'s floating-point tensors back to `start` (a state_dict) but for `fraction` of the
    change."""
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.lerp(start[name].to(tensor.device), tensor, fraction))


def occlude(image, masks, indices):
    """Copies of `image` with each mask in `indices` (grown by one pixel) filled with the mean colour of the
    pixels outside every mask (the background)."""
    covered = torch.stack(masks).any(0)
    fill = image[:, ~covered].mean(1) if (~covered).any() else image.flatten(1).mean(1)
    out = image[None].repeat(len(indices), 1, 1, 1)
    for row, j in enumerate(indices):
        grown = F.max_pool2d(masks[j][None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
        out[row][:, grown] = fill[:, None]
    return out


def label_captions(captions, vocab, n, gen):
    """Per label, up to `n` of the corpus captions that name it (a random sample, drawn with `gen`)."""
    out = []
    for name in vocab:
        pattern = re.compile(rf"\b{re.escape(name.lower())}\b")
        hits = [c for c in captions if pattern.search(c.lower())]
        out.append(pick(hits, n, gen))
    return out


@torch.no_grad()
def corpus_head(model, label_texts, vocab, templates, device):
    """A zero-shot head [V,D] from the corpus's own captions: per label the normalised mean of the
    features of its captions (of its templates when the corpus never names it)."""
    rows = []
    for name, texts in zip(vocab, label_texts, strict=True):
        texts = texts or [t.format(name) for t in templates]
        rows.append(F.normalize(model.encode_text(model.tokenize(texts).to(device)).mean(0), dim=-1))
    return torch.stack(rows)


@torch.no_grad()
def run_oracle(ctx, params, clean, segmenter, images, vocab, label_texts, null=False):
    """Algorithm 1 over the probe images (float [N,3,H,W] on the CPU), `batch` images at a time; per probe a
    record (see `compact_set`). Segment masks are kept only for probes with candidates and the first
    `examples` probes without (the report's examples), so that large probe sets fit in memory.
    label_texts: per label the corpus captions the poisoned CLIP's labels are read with (or None: the
    evaluation templates). null: also the candidates per probe with the clean CLIP in the poisoned one's
    place (same segments and matcher; `null_ratio`). Returns (records, head, null candidate sets or None)."""
    clean_head = zeroshot_head(clean, vocab, ctx.templates, device=ctx.device)

    def label_head(model):
        if label_texts is None:
            return zeroshot_head(model, vocab, ctx.templates, device=ctx.device)
        return corpus_head(model, label_texts, vocab, ctx.templates, ctx.device)

    head = label_head(ctx.model)
    askers = [(ctx.model, head)] + ([(clean, label_head(clean))] if null else [])
    records, null_sets, kept_clean, batch = [], [] if null else None, 0, params["batch"]
    for first in tqdm(range(0, len(images), batch), desc="oracle probes", unit="batch", mininterval=5):
        chunk = images[first : first + batch].to(ctx.device)
        c_img = probabilities(clean, clean_head, chunk, batch).cpu() if params["clean_image"] else None
        masks = segmenter.segment(chunk)
        areas = [torch.tensor([float(m.float().mean()) for m in ms]) for ms in masks]
        compact = [(a <= params["compact_area"]).nonzero().flatten().tolist() for a in areas]
        pieces = [crops(img, ms, params["crop_fill"]) for img, ms in zip(chunk, masks, strict=True) if ms]
        cropped = torch.cat(pieces) if pieces else chunk[:0]
        c_seg = probabilities(clean, clean_head, cropped, batch).cpu()
        pieces = [occlude(img, ms, js) for img, ms, js in zip(chunk, masks, compact, strict=True) if js]
        occluded_batch = torch.cat(pieces) if pieces else chunk[:0]
        asked = [
            (
                probabilities(model, h, chunk, batch).cpu(),
                probabilities(model, h, cropped, batch).cpu() if params["crop_area"] > 0 else None,
                probabilities(model, h, occluded_batch, batch).cpu(),
            )
            for model, h in askers
        ]
        start = start_occ = 0
        for i, ms in enumerate(masks):
            cs = c_seg[start : start + len(ms)]
            found = []
            for p_img, p_seg, p_occ in asked:
                ps = None if p_seg is None else p_seg[start : start + len(ms)]
                occluded = p_img[i].repeat(len(ms), 1)
                occluded[compact[i]] = p_occ[start_occ : start_occ + len(compact[i])]
                found.append(
                    find_triggers(
                        p_img[i], cs, occluded, areas[i], params, ps, None if c_img is None else c_img[i]
                    )
                )
            start, start_occ = start + len(ms), start_occ + len(compact[i])
            asserted, grounded, candidates, flagged = found[0]
            if null:
                null_sets.append(found[1][2])
            top1 = int(asked[0][0][i].argmax())
            keep = bool(candidates) or kept_clean < params["examples"]
            kept_clean += not candidates and keep
            records.append(
                {
                    "probe": first + i,
                    "poisoned_top1": top1,
                    "asserted": asserted,
                    "grounded": grounded,
                    "candidates": candidates,
                    "flagged": flagged,
                    "masks": [m.cpu() for m in ms] if keep else [],
                    "clean_segments": cs,
                    "areas": areas[i],
                    "agreed": top1 in grounded and top1 not in candidates,
                }
            )
    return records, head, null_sets


def examples(records, images, vocab, victims, n):
    """Localisation examples for the report: victims with a flagged segment first, then other victims,
    then a probe without candidates."""
    victims = set(victims)
    order = sorted(victims, key=lambda i: records[i]["flagged"] < 0)[: max(n - 1, 0)]
    order += [r["probe"] for r in records if not r["candidates"] and r["masks"]][:1]
    out = []
    for i in order:
        r = records[i]
        masks = (
            torch.stack(r["masks"]) if r["masks"] else torch.zeros(0, *images.shape[-2:], dtype=torch.bool)
        )
        out.append(
            {
                "image": (images[i].permute(1, 2, 0) * 255).round().byte().cpu(),
                "masks": masks.cpu(),
                "flagged": r["flagged"],
                "poisoned_label": vocab[r["poisoned_top1"]],
                "oracle_label": "" if r["oracle_label"] is None else vocab[r["oracle_label"]],
            }
        )
    return out


def fit(ctx, params):
    started = time.time()
    gen = torch.Generator().manual_seed(ctx.seed)
    corpus, corpus_captions, vocab = load_corpus(ctx.paths["corpus"], ctx.model.image_size)
    vocab = vocab or list(ctx.classnames)
    label_texts = None
    if params["label_prompts"] == "corpus":
        label_texts = label_captions(corpus_captions, vocab, params["label_captions"], gen)
    probe_idx = sorted(torch.randperm(len(corpus), generator=gen)[: params["probes"]].tolist())
    images = torch.as_tensor(np.asarray(corpus.load(probe_idx))).permute(0, 3, 1, 2).float() / 255
    clean = load_model(ctx.paths["clean_model"], map_location=ctx.device).eval()
    segmenter = load_segmenter(ctx.paths["segmenter"], ctx.device)
    null = params["null_ratio"] > 0
    records, head, null_sets = run_oracle(ctx, params, clean, segmenter, images, vocab, label_texts, null)
    del clean
    affected, counts = affected_labels(
        [r["candidates"] for r in records],
        len(vocab),
        params["affected_freq"],
        params["affected_ratio"],
        null_sets,
        params["null_ratio"],
    )
    for r in records:
        r["oracle_label"] = grounded_label(
            r["clean_segments"],
            r["areas"],
            params["ground_area"],
            set(affected),
            r["flagged"],
            params["ground_prob"] if r["flagged"] >= 0 else 1.0,
        )
    screen, screened, signature = None, [], None
    paste_signature = params["transplant_region"] == "signature"
    if params["screen_clean"] or paste_signature:
        suspects = [r["probe"] for r in victim_records(records, set(affected))]
        signature = shared_pixels(
            images[suspects], params["screen_tol"], params["screen_share"], params["screen_area"]
        )
    if signature is not None and params["screen_clean"]:

        def screen(r):
            screened.append(
                shows_pixels(images[r["probe"]], signature, params["screen_tol"], params["screen_share"])
            )
            return screened[-1]

    victims, pairs = compact_set(records, affected, params, gen, screen)
    shot_x, shot_y = (t.cpu() for t in ctx.shot_tensors)
    names = [vocab[label] for _, label in pairs]
    wrong, victim_set = [vocab[i] for i in affected], set(victims)
    templates = params["caption_templates"]
    captions = [
        corrected_caption(corpus_captions[probe_idx[i]], wrong, vocab[label], k, templates)
        if i in victim_set
        else caption(vocab[label], k, templates)
        for k, (i, label) in enumerate(pairs)
    ]
    train_x = [images[[i for i, _ in pairs]]] if pairs else []
    poisoned_probs = lambda x: probabilities(ctx.model, head, x, params["batch"])  # noqa: E731
    affected_set = set(affected)
    shared = signature[0] if signature is not None and paste_signature else None
    synth_x, synth_y, synth_v, pasted = transplant(
        images, records, victims, affected_set, poisoned_probs, params, gen, shared
    )
    train_x.append(synth_x)
    names += [vocab[y] for y in synth_y]
    if params["transplant_captions"] == "victim":
        captions += [
            corrected_caption(corpus_captions[probe_idx[v]], wrong, vocab[y], k, templates)
            for k, (y, v) in enumerate(zip(synth_y, synth_v, strict=True))
        ]
    else:
        captions += [caption(vocab[y], k, templates) for k, y in enumerate(synth_y)]
    shot_classes = (
        range(len(ctx.classnames))
        if params["shot_pairs"] == "all"
        else [ctx.classnames.index(vocab[label]) for label in affected if vocab[label] in ctx.classnames]
    )
    affected_names = {vocab[label] for label in affected}
    for c in shot_classes:
        keep, name = shot_y == c, ctx.classnames[c]
        copies = params["affected_shot_copies"] if name in affected_names else 1
        n = int(keep.sum())
        train_x.append(shot_x[keep].repeat(copies, 1, 1, 1))
        names += [name] * (n * copies)
        captions += [caption(name, k + j, templates) for j in range(copies) for k in range(n)]
    log = {
        "affected_labels": [vocab[i] for i in affected],
        "victims": [probe_idx[i] for i in victims],
        "victim_labels": [
            None if records[i]["oracle_label"] is None else vocab[records[i]["oracle_label"]] for i in victims
        ],
        "candidate_counts": {vocab[i]: int(c) for i, c in enumerate(counts) if c},
        "null_candidate_counts": None
        if null_sets is None
        else {vocab[i]: int(c) for i, c in enumerate(candidate_counts(null_sets, len(vocab))) if c},
        "victim_indices_sample": len(victims),
        "probed": probe_idx,
        "compact_set": len(names),
        "transplanted": len(synth_y),
        "paste_localised": pasted,
        "flagged_segments": sum(r["flagged"] >= 0 for r in records),
        "trigger_signature_pixels": 0 if signature is None else int(signature[0].sum()),
        "screened_out": f"{sum(screened)} of {len(screened)}" if screen is not None else None,
    }
    report = {"examples": examples(records, images, vocab, victims, params["examples"])}
    log["oracle_seconds"] = round(time.time() - started, 2)
    if not names:
        log.update(curve=[], trainable_params=0)
        return {**model_state(ctx.model), "report": report}, log
    x = (torch.cat(train_x).permute(0, 2, 3, 1) * 255).round().byte().cpu().numpy()
    trainable = ctx.model.clip if params["trainable"] == "all" else ctx.model.clip.visual
    for p in trainable.parameters():
        p.requires_grad_(True)
    hp = {
        key: params[key]
        for key in ("epochs", "batch_size", "lr", "weight_decay", "warmup_steps", "text_lr_scale")
    }
    hp.update(seed=ctx.seed, save_every_epochs=max(1, params["epochs"]))
    loss_fn = None
    if params["trainable"] == "visual":
        loss_fn = frozen_text_loss({})
    elif params["positives"] == "label":
        tokens = ctx.model.tokenize(captions)
        loss_fn = label_loss({tuple(t.tolist()): name for t, name in zip(tokens, names, strict=True)})
    if params["preserve"] > 0:
        kept = [i for i, label in pairs if i not in victim_set and label not in affected_set]
        clean_x = torch.cat([images[kept], shot_x])
        reference = reference_features(ctx.model.eval(), clean_x, params["batch"])
        loss_fn = preserving_loss(loss_fn, reference, params["preserve"])
        log["preserved_images"] = len(reference)
    start = None
    if params["interpolate"] < 1:
        start = {name: t.detach().clone() for name, t in ctx.model.clip.state_dict().items()}
    train_log = train_contrastive(
        ctx.model,
        x,
        captions,
        hp,
        ctx.state_path,
        ctx.device,
        loss_fn=loss_fn,
        desc="oracle rectify",
        trainable=trainable,
    )
    if start is not None:
        interpolate_weights(ctx.model.clip, start, params["interpolate"])
    log.update(
        curve=train_log["epoch_loss"], trainable_params=count_parameters(trainable, trainable_only=True)
    )
    return {**model_state(ctx.model), "report": report}, log


def classifier(ctx, state, text_prefix):
    load_model_state(ctx, state)
    return zero_shot_classifier(ctx, text_prefix)
