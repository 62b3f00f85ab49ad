"""The trained class-agnostic segmenter: a tiny U-Net predicting background / object / separating boundary.

Masks come at two granularities, as SAM-style segmenters return them: the connected components of the
object pixels once the boundary pixels between touching instances are removed (grown back over the
boundary), and the connected components of all foreground pixels where they differ from the former (a
region the network splits inside, e.g. a textured patch, is also returned whole). Components smaller
than `min_area` are dropped.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

BACKGROUND, OBJECT, BOUNDARY = 0, 1, 2


def block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyUNet(nn.Module):
    """Two-level U-Net: images [B,3,H,W] in [0,1] (H, W divisible by 4) → logits [B,3,H,W]."""

    def __init__(self, width=16):
        super().__init__()
        self.width = width
        self.enc1, self.enc2, self.mid = block(3, width), block(width, 2 * width), block(2 * width, 4 * width)
        self.dec2, self.dec1 = block(6 * width, 2 * width), block(3 * width, width)
        self.head = nn.Conv2d(width, 3, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(m, scale_factor=2), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2), e1], 1))
        return self.head(d1)


def targets_from_instances(instances):
    """uint8/long instance maps [B,H,W] (0 = background) → per-pixel classes [B,H,W]."""
    inst = instances.long()
    padded = F.pad(inst[:, None].float(), (1, 1, 1, 1), mode="replicate")
    hi = F.max_pool2d(padded, 3, stride=1)[:, 0].long()
    lo = -F.max_pool2d(-padded.masked_fill(padded == 0, 1e4), 3, stride=1)[:, 0].long()
    touching = (inst > 0) & ((hi != inst) | ((lo != inst) & (lo < 1e4)))
    target = (inst > 0).long() * OBJECT
    target[touching] = BOUNDARY
    return target


def connected_components(mask, max_iter=None):
    """8-connected components of bool masks [B,H,W] → int labels [B,H,W] (0 = off, ids not contiguous)."""
    b, h, w = mask.shape
    ids = torch.arange(1, h * w + 1, device=mask.device, dtype=torch.float32).view(1, h, w).expand(b, h, w)
    labels = torch.where(mask, ids, torch.zeros_like(ids))
    for _ in range(max_iter or h * w):
        grown = F.max_pool2d(labels[:, None], 3, stride=1, padding=1)[:, 0] * mask
        if torch.equal(grown, labels):
            break
        labels = grown
    return labels.long()


def grow_into(labels, region, steps):
    """Extend labelled components over unlabelled pixels of `region` (bool) by up to `steps` pixels."""
    for _ in range(steps):
        grown = F.max_pool2d(labels[:, None].float(), 3, stride=1, padding=1)[:, 0].long()
        labels = torch.where((labels == 0) & region, grown, labels)
    return labels


def components(labels, min_area):
    ids, counts = labels[labels > 0].unique(return_counts=True)
    return [labels == i for i, c in zip(ids.tolist(), counts.tolist(), strict=True) if c >= min_area]


def masks_from_classes(classes, min_area, grow_steps=2):
    """Per-pixel classes [B,H,W] → per image a list of distinct bool masks [H,W], largest first."""
    fine = grow_into(connected_components(classes == OBJECT), classes != BACKGROUND, grow_steps)
    coarse = connected_components(classes != BACKGROUND)
    out = []
    for fine_labels, coarse_labels in zip(fine, coarse, strict=True):
        masks = components(fine_labels, min_area)
        masks += [m for m in components(coarse_labels, min_area) if not any(torch.equal(m, f) for f in masks)]
        out.append(sorted(masks, key=lambda m: -int(m.sum())))
    return out


class NetSegmenter:
    """Segmenter backed by a TinyUNet: `segment(images)` → per image a list of bool masks [H,W]."""

    def __init__(self, net, min_area=4, device="cpu"):
        self.net, self.min_area, self.device = net.to(device).eval(), int(min_area), device

    @torch.no_grad()
    def segment(self, images, batch_size=256):
        """images float [B,3,H,W] (or one [3,H,W]) in [0,1] → list (per image) of bool masks [H,W]."""
        single = images.dim() == 3
        images = images[None] if single else images
        out = []
        for i in range(0, len(images), batch_size):
            classes = self.net(images[i : i + batch_size].to(self.device)).argmax(1)
            out += masks_from_classes(classes, self.min_area)
        return out[0] if single else out

    @classmethod
    def from_record(cls, record, device="cpu"):
        net = TinyUNet(record["width"])
        net.load_state_dict(record["weights"])
        return cls(net, record["min_area"], device)
