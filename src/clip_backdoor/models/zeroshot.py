"""Zero-shot classification heads: class prompts from templates, L2-normalised mean per class."""

import torch
import torch.nn.functional as F


@torch.no_grad()
def zeroshot_head(model, classnames, templates, text_prefix="", device="cpu", batch_size=256):
    """[C, D] matrix of normalised class embeddings (mean over templates, renormalised)."""
    model.eval()
    heads = []
    for name in classnames:
        texts = [text_prefix + t.format(name) for t in templates]
        feats = []
        for i in range(0, len(texts), batch_size):
            feats.append(model.encode_text(model.tokenize(texts[i : i + batch_size]).to(device)))
        heads.append(F.normalize(torch.cat(feats).mean(0), dim=-1))
    return torch.stack(heads)
