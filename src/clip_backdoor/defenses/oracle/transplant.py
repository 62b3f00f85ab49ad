"""Transplants: each victim's trigger region pasted onto `transplants` agreeing probes of other labels and
captioned with their labels, kept where the poisoned CLIP then predicts an affected label (the region
carries the backdoor), so that rectification sees the trigger on many labels.

The region is the flagged segment, grown by `transplant_grow` (a fraction of the image side). Two named
extensions, both off by default:
  paste test  (`localise_window` > 0) the victim's compact segment or square window (side and stride
              fractions of the image side) whose paste onto `localise_donors` donors the poisoned CLIP most
              labels as the victim's label, if that reaches `assert_prob` (else: the flagged segment);
  signature   (`transplant_region: signature`) the pixels every victim shows alike (`shared_pixels`),
              ungrown, on at least `signature_transplants` × probes donors in all; where the victims share
              no pixels (a sample-specific or randomly placed trigger) it falls back to the above.
"""

import torch
import torch.nn.functional as F

from clip_backdoor.defenses.oracle.algorithm2 import pick
from clip_backdoor.defenses.oracle.evidence import as_float

# the paste test's pasted images per chunk, in bytes (its whole window grid at once would not fit)
PASTE_BYTES = 2**29


def side_px(fraction, size):
    """A length given as a fraction of the image side, in pixels."""
    return int(round(fraction * size))


def windows(size, window, stride):
    """Square masks [n,size,size] of `window` px every `stride` px (the last row and column flush with the
    edge)."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    out = torch.zeros(len(starts) ** 2, size, size, dtype=torch.bool)
    for k, (y, x) in enumerate((y, x) for y in starts for x in starts):
        out[k, y : y + window, x : x + window] = True
    return out


def paste_localise(image, regions, donors, label, poisoned_probs, batch=1, max_bytes=PASTE_BYTES):
    """The region (bool [R,H,W]) of `image` that, pasted onto the donors [D,3,H,W], gives the poisoned CLIP
    the highest mean probability of `label`. The R·D pasted images are built and classified a chunk of at
    most `max_bytes` at a time, a multiple of `batch` images, so the result equals one unchunked pass.
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
    median [3,H,W]), or None if fewer than two images or they cover less than `min_area` of the image."""
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


def paste_grid(params, size):
    """The paste test's windows (None: off, or a window wider than the image)."""
    window, stride = side_px(params["localise_window"], size), side_px(params["localise_stride"], size)
    return windows(size, window, max(stride, 1)) if 0 < window <= size else None


def paste_region(pixels, victim, donors, grid, poisoned_probs, params, min_prob, gen):
    """The paste test's region for one victim, or None where no region reaches `min_prob`."""
    masks = [m for m, a in zip(victim.masks, victim.areas, strict=True) if a <= params["compact_area"]]
    regions = torch.cat([torch.stack(masks), grid]) if masks else grid
    tests = as_float(pixels[[d.index for d in pick(donors, params["localise_donors"], gen)]])
    best, prob = paste_localise(
        as_float(pixels[victim.index]), regions, tests, victim.top1, poisoned_probs, params["batch"]
    )
    return regions[best] if prob >= min_prob else None


def transplant(pixels, probes, victims, affected, poisoned_probs, params, th, gen, shared=None):
    """Synthetic victims (uint8 [n,3,H,W]), their donors' labels, the victim each came from, and the
    number the paste test localised. th: Algorithm 1's Thresholds; `shared`: the signature's mask (bool
    [H,W]) or None."""
    donors = [p for p in probes if p.agreed and p.top1 not in affected]
    size = pixels.shape[-1]
    grid = paste_grid(params, size) if shared is None else None
    per_victim = params["transplants"]
    if shared is not None and victims:
        total = side_px(params["signature_transplants"], len(probes))
        per_victim = max(per_victim, -(-total // len(victims)))
    out_x, out_y, out_v, pasted = [], [], [], 0
    for v in victims:
        region = shared if shared is not None else v.masks[v.flagged] if v.flagged >= 0 else None
        if grid is not None and donors:
            found = paste_region(pixels, v, donors, grid, poisoned_probs, params, th.assert_prob, gen)
            region, pasted = (found, pasted + 1) if found is not None else (region, pasted)
        if region is None:
            continue
        if shared is None:
            region = grow(region, side_px(params["transplant_grow"], size))
        for donor in pick(donors, per_victim, gen):
            x = pixels[donor.index].clone()
            x[:, region] = pixels[v.index][:, region]
            out_x.append(x)
            out_y.append(donor.top1)
            out_v.append(v)
    if not out_x:
        return pixels[:0], [], [], pasted
    x = torch.stack(out_x)
    keep = [k for k, p in enumerate(poisoned_probs(as_float(x))) if int(p.argmax()) in affected]
    return x[keep], [out_y[k] for k in keep], [out_v[k] for k in keep], pasted
