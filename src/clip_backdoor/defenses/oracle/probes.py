"""The probes: images drawn from the defender's poisoned corpus, and how the poisoned CLIP's labels are
read on them (`label_prompts`: the evaluation templates, or the corpus's own captions naming each label,
which also reaches a backdoor keyed to caption words such as TrojVQA's "remember")."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clip_backdoor.data.corpus import ArrayPool, is_paper_corpus, poisoned_dataset
from clip_backdoor.data.embedded import split_file
from clip_backdoor.defenses.oracle.algorithm2 import pick
from clip_backdoor.models.zeroshot import zeroshot_head
from clip_backdoor.runtime.io import read_json


@dataclass
class Probes:
    """pixels: uint8 [N,3,H,W] (a view of the corpus's HWC arrays); corpus_index: their corpus indices;
    captions: the corpus's captions (all); vocab: the label names; label_texts: per label the captions its
    head is read with (None: the templates)."""

    pixels: torch.Tensor
    corpus_index: list
    captions: list
    vocab: list
    label_texts: list | None

    def caption(self, probe):
        return self.captions[self.corpus_index[probe]]


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


def label_captions(captions, vocab, n, gen):
    """Per label, up to `n` of the corpus captions that name it (a random sample, drawn with `gen`)."""
    out = []
    for name in vocab:
        pattern = re.compile(rf"\b{re.escape(name.lower())}\b")
        out.append(pick([c for c in captions if pattern.search(c.lower())], n, gen))
    return out


def draw_probes(ctx, params, gen):
    corpus, captions, vocab = load_corpus(ctx.paths["corpus"], ctx.model.image_size)
    vocab = vocab or list(ctx.classnames)
    label_texts = None
    if params["label_prompts"] == "corpus":
        label_texts = label_captions(captions, vocab, params["label_captions"], gen)
    index = sorted(torch.randperm(len(corpus), generator=gen)[: params["probes"]].tolist())
    pixels = torch.as_tensor(np.asarray(corpus.load(index))).permute(0, 3, 1, 2)
    return Probes(pixels, index, captions, vocab, label_texts)


@torch.no_grad()
def corpus_head(model, label_texts, vocab, templates, device):
    """A zero-shot head [V,D] from the corpus's own captions: per label the normalised mean of the
    features of its captions (of its templates when the corpus never names it)."""
    rows = []
    for name, texts in zip(vocab, label_texts, strict=True):
        texts = texts or [t.format(name) for t in templates]
        rows.append(F.normalize(model.encode_text(model.tokenize(texts).to(device)).mean(0), dim=-1))
    return torch.stack(rows)


def label_head(model, probes, ctx):
    """How `model`'s labels are read: the corpus head, or the evaluation templates'."""
    if probes.label_texts is None:
        return zeroshot_head(model, probes.vocab, ctx.templates, device=ctx.device)
    return corpus_head(model, probes.label_texts, probes.vocab, ctx.templates, ctx.device)
