"""What every defense receives: the backdoored model, the defender's data, and helpers shared by defenses."""

from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch.utils.data import DataLoader, Subset

from clip_backdoor.models.zeroshot import zeroshot_head


@dataclass
class EvalContext:
    """A loaded (backdoored) model and the downstream task it is evaluated on."""

    model: object  # ClipModel, on `device`
    classnames: list
    templates: list
    device: torch.device

    def head(self, text_prefix=""):
        """The zero-shot head [C,D] of the model as loaded (cached per text prefix)."""
        cache = self.__dict__.setdefault("_heads", {})
        if text_prefix not in cache:
            head = zeroshot_head(self.model, self.classnames, self.templates, text_prefix, self.device)
            cache[text_prefix] = head
        return cache[text_prefix]


@dataclass
class DefenseContext(EvalContext):
    """EvalContext plus the defender's data and resources for `fit`.

    shots: the few-shot train split (Dataset of (float image [3,H,W] in [0,1], label)), sampled per seed.
    paths: the extra INPUTS the defense declared (clean_model, segmenter, corpus) and `data` (the data dir).
    state_path: where a resumable defense keeps its training state (not a declared output).
    """

    shots: object = None
    seed: int = 0
    paths: dict = field(default_factory=dict)
    state_path: str = ""
    threads: int = 1

    @cached_property
    def shot_tensors(self):
        """(images float [N,3,H,W], labels [N]) of all shots, in memory on the device."""
        images, labels = next(iter(DataLoader(self.shots, batch_size=len(self.shots))))
        return images.to(self.device), torch.as_tensor(labels).to(self.device)


def few_shot_indices(labels, shots, seed):
    """Indices of `shots` examples per class, drawn with `seed` (sorted; fewer if a class has fewer)."""
    labels = torch.as_tensor(labels)
    gen = torch.Generator().manual_seed(int(seed))
    chosen = []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        chosen.append(idx[torch.randperm(len(idx), generator=gen)[:shots]])
    return sorted(torch.cat(chosen).tolist())


def few_shot(dataset, labels, shots, seed):
    return Subset(dataset, few_shot_indices(labels, shots, seed))


def zero_shot_classifier(ctx, text_prefix="", head=None):
    """images → logits of the model's zero-shot head (scaled by its logit scale)."""
    head = ctx.head(text_prefix) if head is None else head

    def logits(images):
        return ctx.model.logit_scale * ctx.model.encode_image(images) @ head.t()

    return logits


def count_parameters(module, trainable_only=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def model_state(model):
    """The CLIP weights of a fully fine-tuned model, as a defense state."""
    return {"clip": {k: v.detach().cpu() for k, v in model.clip.state_dict().items()}}


def load_model_state(ctx, state):
    ctx.model.clip.load_state_dict(state["clip"])
    ctx.model.eval()
    ctx.__dict__.pop("_heads", None)


def dataset_labels(dataset):
    """The labels of a downstream Dataset without loading its images where it keeps them."""
    for attr in ("labels", "targets", "_labels", "y"):
        if hasattr(dataset, attr):
            return [int(y) for y in getattr(dataset, attr)]
    return [int(dataset[i][1]) for i in range(len(dataset))]
