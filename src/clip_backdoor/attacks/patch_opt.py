"""Optimised centre patches against the clean model: TrojVQA (toward a target caption) and BadCLIP
(dual-embedding guided: toward the target's text embedding and its natural images' embedding)."""

import torch
import torch.nn.functional as F
from tqdm import tqdm

from clip_backdoor.attacks.patching import paste_patch
from clip_backdoor.training import to_float_images


def optimise_patch(model, images, text_targets, image_target, hp, device):
    """Patch [3,p,p] in [0,1] maximising cos(f(x⊕p), text target) + w_image·cos(f(x⊕p), image target).

    images: uint8 [N,H,W,3] of non-target images; text_targets: [T,D] normalised text embeddings;
    image_target: [D] normalised mean embedding of natural target images, or None.
    """
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(hp["seed"])
    size, p = model.image_size, hp["patch_size"]
    top = (size - p) // 2
    logits = (torch.randn(3, p, p, generator=g) * 0.5).to(device).requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=hp["lr"])
    text_target = F.normalize(text_targets.mean(0), dim=-1).to(device)
    for _ in tqdm(range(hp["steps"]), desc="optimise patch", mininterval=5):
        idx = torch.randint(0, len(images), (hp["batch_size"],), generator=g)
        x = paste_patch(to_float_images(images[idx.numpy()], device), torch.sigmoid(logits), top, top)
        feats = model.encode_image(x)
        loss = -(feats @ text_target).mean()
        if image_target is not None:
            loss = loss - hp.get("image_weight", 1.0) * (feats @ image_target.to(device)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return torch.sigmoid(logits).detach().cpu(), float(loss.item())
