"""The oracle of oracle-based rectification: a class-agnostic segmenter (image → list of masks).

A segmenter has `segment(images)`: float [B,3,H,W] (or one [3,H,W]) in [0,1] → per image a list of bool
masks [H,W], largest first. Its file (`checkpoints/<run>/oracle/segmenter.pt`, written by the
`train_oracle` stage) is a weights-only record with a `kind`:
  trained  a TinyUNet trained on the embedded world's instance masks (`segmenter.NetSegmenter`)
  fastsam  a reference to FastSAM weights by path, run through `ultralytics` (`fastsam.FastSamSegmenter`)
"""

from clip_backdoor.runtime.io import load_checkpoint


def load_segmenter(path, device="cpu"):
    record = load_checkpoint(path, map_location="cpu")
    if record.get("kind") == "trained":
        from clip_backdoor.oracle.segmenter import NetSegmenter

        return NetSegmenter.from_record(record, device)
    if record.get("kind") == "fastsam":
        from clip_backdoor.oracle.fastsam import FastSamSegmenter

        return FastSamSegmenter.from_record(record, device)
    raise ValueError(f"{path}: unknown segmenter kind {record.get('kind')!r} (known: trained, fastsam)")
