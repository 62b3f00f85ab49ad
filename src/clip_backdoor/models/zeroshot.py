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


@torch.no_grad()
def encode_images(model, images, device="cpu", batch_size=512, transform=None, encoder=None):
    """Normalised image features of float images [N,3,H,W] in [0,1], batch by batch.

    `transform(batch, start)` (e.g. a trigger) is applied to each batch first; `encoder` replaces
    model.encode_image (e.g. a prompted encoder).
    """
    model.eval()
    encoder = encoder or model.encode_image
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        if transform is not None:
            batch = transform(batch, start)
        out.append(encoder(batch).float().cpu())
    return torch.cat(out)


def predict(features, head):
    return (features @ head.t().to(features.device)).argmax(dim=1)
