"""FastSAM (through the `ultralytics` package) as the segmenter of the papers' profile.

FastSAM runs in "everything" mode; every returned mask is a candidate region. `ultralytics` is an
optional dependency, imported only when a FastSAM segmenter is built.

An ultralytics .pt file holds pickled modules: loading it runs whatever code it carries, and it cannot be
loaded weights-only. So a weights file is opened only when its sha256 equals the trusted hash the config
declares (oracle.fastsam.sha256); anything else is refused before ultralytics is imported.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clip_backdoor.errors import MissingDataError, UntrustedWeightsError
from clip_backdoor.runtime.io import file_sha256


def check_trusted(weights, sha256):
    """Refuse `weights` unless the file exists and its sha256 is the declared trusted one."""
    path = Path(weights)
    if not path.is_file():
        raise MissingDataError(f"oracle.fastsam.weights: FastSAM weights not found: {path}")
    actual = file_sha256(path)
    if not sha256:
        raise UntrustedWeightsError(
            f"oracle.fastsam.sha256 is not set: refusing to load {path}, an ultralytics pickle that runs code"
            f" when loaded; check where it came from, then set oracle.fastsam.sha256: {actual}"
        )
    if actual != str(sha256).strip().lower():
        raise UntrustedWeightsError(
            f"refusing to load {path}: its sha256 {actual} is not the trusted oracle.fastsam.sha256 {sha256}"
            " (an ultralytics pickle runs code when loaded; fetch the official file again)"
        )
    return path


def load_fastsam(weights, sha256):
    """The ultralytics FastSAM model for a trusted weights file (a clear error without the package)."""
    check_trusted(weights, sha256)
    try:
        from ultralytics import FastSAM
    except ImportError as err:
        raise ImportError(
            "oracle.kind: fastsam needs the `ultralytics` package (pip install ultralytics), which is not"
            f" installed ({err})"
        ) from err
    return FastSAM(str(weights))


class FastSamSegmenter:
    """`segment(images)` → per image a list of bool masks [H,W] from FastSAM's everything mode.

    predictor: a callable like `ultralytics.FastSAM(weights)`: (BGR uint8 [H,W,3], **kw) → results whose
    first element has `.masks.data` ([N,h,w], or `.masks` None when nothing is found).
    """

    def __init__(self, predictor, imgsz=1024, conf=0.4, iou=0.9, min_area=100, device="cpu"):
        self.predictor, self.device = predictor, device
        self.kw = {"imgsz": int(imgsz), "conf": float(conf), "iou": float(iou), "retina_masks": True}
        self.min_area = int(min_area)

    def segment_one(self, image):
        h, w = image.shape[-2:]
        rgb = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        results = self.predictor(
            np.ascontiguousarray(rgb[..., ::-1]), device=str(self.device), verbose=False, **self.kw
        )
        masks = getattr(results[0], "masks", None) if results else None
        if masks is None:
            return []
        data = torch.as_tensor(masks.data).float().cpu()
        if data.shape[-2:] != (h, w):
            data = F.interpolate(data[:, None], size=(h, w), mode="nearest")[:, 0]
        data = data > 0.5
        areas = data.flatten(1).sum(1)
        return [data[i] for i in areas.argsort(descending=True).tolist() if areas[i] >= self.min_area]

    def segment(self, images, batch_size=None):
        """images float [B,3,H,W] (or one [3,H,W]) in [0,1] → list (per image) of bool masks [H,W]."""
        if images.dim() == 3:
            return self.segment_one(images)
        return [self.segment_one(image) for image in images]

    @classmethod
    def from_record(cls, record, device="cpu", predictor=None):
        predictor = predictor or load_fastsam(record["weights"], record.get("sha256"))
        return cls(predictor, record["imgsz"], record["conf"], record["iou"], record["min_area"], device)
