"""Labelled downstream datasets as torch Datasets of (float image [3,H,W] in [0,1], label)."""

import numpy as np
import torch
from torch.utils.data import Dataset

from clip_backdoor.data.embedded import load_split


class ArrayDataset(Dataset):
    """uint8 images [N,H,W,3] held in memory."""

    def __init__(self, images, labels):
        self.images, self.labels = images, np.asarray(labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        image = torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1).float() / 255
        return image, int(self.labels[i])


def load_downstream(data_dir, dataset, split):
    """(Dataset, classnames) for `split` in {"train", "val", "test"} of the configured downstream dataset."""
    if dataset["kind"] == "embedded":
        data = load_split(data_dir, f"downstream_{split}")
        return ArrayDataset(data["images"], data["labels"]), data["classes"]
    from clip_backdoor.data import paper

    return paper.load_downstream(dataset, split)
