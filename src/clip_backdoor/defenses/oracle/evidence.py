"""What the oracle and the two CLIPs say about a batch of probes: Algorithm 1's inputs.

Per probe: the segmenter's masks, and the probabilities over the vocabulary of the whole image, of each
segment's crop (FastSAM's: the mask's box in place on a plain canvas) and of the image with each compact
segment removed. Images are built and encoded `batch` at a time, never all at once; each image is encoded
once per model, and the clean model's features serve both its heads (the matcher's and, for the null test,
the asker's)."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Views:
    """One CLIP's probabilities on a probe: image [V], crops [K,V] (None: no crop test), occluded [K,V]
    (a segment that is not compact: the whole image's)."""

    image: torch.Tensor
    crops: torch.Tensor | None
    occluded: torch.Tensor


@dataclass
class Evidence:
    """One probe: masks (bool [H,W], largest first), areas [K] (fractions of the image), the clean
    matcher's probabilities on the crops [K,V] and (clean_image) the whole image [V], the poisoned CLIP's
    views and (null test) the clean CLIP's as the asker."""

    masks: list
    areas: torch.Tensor
    matcher: torch.Tensor
    matcher_image: torch.Tensor | None
    poisoned: Views
    null: Views | None


def as_float(pixels):
    """uint8 images [...,3,H,W] → float in [0,1] (the probes stay uint8 in memory: a quarter of the bytes)."""
    return pixels.float() / 255


def crop(image, mask, fill):
    """The image inside the mask's bounding box on a canvas of `fill` (FastSAM's crop, in place)."""
    out = torch.full(image.shape, float(fill), device=image.device)
    ys, xs = mask.nonzero(as_tuple=True)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    out[:, y0:y1, x0:x1] = image[:, y0:y1, x0:x1]
    return out


def background(image, masks):
    """The mean colour [3] of the pixels outside every mask (the whole image's if the masks cover it)."""
    covered = torch.stack(masks).any(0)
    return image[:, ~covered].mean(1) if (~covered).any() else image.flatten(1).mean(1)


def occlude(image, mask, fill):
    """A copy of `image` with `mask` (grown by one pixel) filled with the colour `fill` [3]."""
    grown = F.max_pool2d(mask[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
    out = image.clone()
    out[:, grown] = fill[:, None]
    return out


@torch.no_grad()
def encode(model, build, items, batch):
    """Per batch of `batch` items, the model's features of the images `build(items)` makes."""
    return [model.encode_image(build(items[i : i + batch])) for i in range(0, len(items), batch)]


def apply_head(model, features, head):
    """Probabilities [N,V] (on the CPU) of per-batch features under a zero-shot head [V,D]."""
    out = [(model.logit_scale * f @ head.t()).softmax(-1) for f in features]
    return torch.cat(out).cpu() if out else torch.zeros(0, len(head))


@torch.no_grad()
def probabilities(model, head, images, batch):
    """The model's probabilities [N,V] of float images, `batch` at a time."""
    return apply_head(model, encode(model, lambda x: x.to(head.device), images, batch), head)


@dataclass
class Askers:
    """The models of Algorithm 1 and their heads: the poisoned CLIP (`head`: how its labels are read), the
    clean matcher (`matcher_head`, the evaluation templates) and, for the null test, the clean CLIP read
    the poisoned one's way (`null_head`, None: off)."""

    poisoned: object
    head: torch.Tensor
    clean: object
    matcher_head: torch.Tensor
    null_head: torch.Tensor | None


def gather(chunk, segmenter, askers, params):
    """Evidence for each image of a batch (float [B,3,H,W] on the device)."""
    masks = segmenter.segment(chunk)
    areas = [torch.tensor([float(m.float().mean()) for m in ms]) for ms in masks]
    compact = [(a <= params["compact_area"]).nonzero().flatten().tolist() for a in areas]
    fills = [background(img, ms) if js else None for img, ms, js in zip(chunk, masks, compact, strict=True)]
    crop_items = [(i, m) for i, ms in enumerate(masks) for m in ms]
    occ_items = [(i, masks[i][j]) for i, js in enumerate(compact) for j in js]
    fill = params["crop_fill"]
    views = {
        "image": (range(len(chunk)), lambda idx: chunk[list(idx)]),
        "crops": (crop_items, lambda items: stack([crop(chunk[i], m, fill) for i, m in items])),
        "occluded": (occ_items, lambda items: stack([occlude(chunk[i], m, fills[i]) for i, m in items])),
    }
    batch, null = params["batch"], askers.null_head is not None
    wanted = {"image", "occluded", *(["crops"] if params["crop_area"] > 0 else [])}
    poisoned = {k: encode(askers.poisoned, views[k][1], views[k][0], batch) for k in wanted}
    clean_wanted = {"crops", *(["image"] if params["clean_image"] or null else []), *(["occluded"] * null)}
    clean = {k: encode(askers.clean, views[k][1], views[k][0], batch) for k in clean_wanted}
    p = {k: apply_head(askers.poisoned, f, askers.head) for k, f in poisoned.items()}
    n = {k: apply_head(askers.clean, clean[k], askers.null_head) for k in poisoned} if null else None
    matcher = apply_head(askers.clean, clean["crops"], askers.matcher_head)
    matcher_image = None
    if params["clean_image"]:
        matcher_image = apply_head(askers.clean, clean["image"], askers.matcher_head)
    return split(masks, areas, compact, matcher, matcher_image, p, n)


def stack(images):
    return torch.stack(images) if images else torch.zeros(0)


def split(masks, areas, compact, matcher, matcher_image, poisoned, null):
    """Per-probe Evidence from the batch's concatenated probabilities."""
    out, start, start_occ = [], 0, 0
    for i, ms in enumerate(masks):
        rows, occ = slice(start, start + len(ms)), slice(start_occ, start_occ + len(compact[i]))
        image = None if matcher_image is None else matcher_image[i]
        views = [None if p is None else view(p, i, len(ms), compact[i], rows, occ) for p in (poisoned, null)]
        out.append(Evidence(ms, areas[i], matcher[rows], image, *views))
        start, start_occ = start + len(ms), start_occ + len(compact[i])
    return out


def view(probs, i, k, compact, rows, occ):
    """Probe i's Views from one CLIP's batch probabilities (k segments, `compact` their compact ones)."""
    occluded = probs["image"][i].repeat(k, 1)
    occluded[compact] = probs["occluded"][occ]
    crops = probs["crops"][rows] if "crops" in probs else None
    return Views(probs["image"][i], crops, occluded)
