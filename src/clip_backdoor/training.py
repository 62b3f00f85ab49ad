"""Resumable contrastive (CLIP) training, shared by pretraining, poisoned fine-tuning and clean fine-tuning.

State (model, optimiser, step) is saved every `save_every_epochs` epochs to `state_path`, which is not a
declared output; a rerun after a kill continues from it and ends with the same weights as an
uninterrupted run (batches come from a per-epoch seeded permutation). The final checkpoint is
written atomically by the caller.
"""

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from clip_backdoor.runtime.io import load_checkpoint, save_checkpoint


def param_groups(module, weight_decay):
    """AdamW groups: no weight decay on norms, biases, embeddings' scalars and the logit scale."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "logit_scale" in name or "ln" in name or "bn" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def cosine_lr(step, total, base_lr, warmup):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(1.0, progress)))


def clip_loss(image_features, text_features, logit_scale):
    """Symmetric InfoNCE over a batch of normalised features."""
    logits = logit_scale * image_features @ text_features.t()
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def to_float_images(batch_uint8, device):
    """uint8 [B,H,W,3] (numpy or tensor) → float [B,3,H,W] in [0,1] on `device`."""
    tensor = torch.as_tensor(np.asarray(batch_uint8)) if not torch.is_tensor(batch_uint8) else batch_uint8
    return tensor.to(device).permute(0, 3, 1, 2).float().div_(255)


def make_optimizer(params, lr, weight_decay, device):
    groups = param_groups(params, weight_decay) if isinstance(params, torch.nn.Module) else params
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr)


def train_contrastive(
    model, images, captions, hp, state_path, device, loss_fn=None, desc="train", trainable=None, augment=None
):
    """Contrastive training of `model` (a ClipModel) on uint8 images [N,H,W,3] and their captions.

    hp: epochs, batch_size, lr, weight_decay, warmup_steps, save_every_epochs, seed.
    loss_fn(model, image_batch, token_batch) overrides the plain CLIP loss (CleanCLIP uses it).
    trainable: the nn.Module whose parameters are optimised (default: the whole CLIP).
    Returns a log dict (loss per epoch, steps, seconds).
    """
    state_path = Path(state_path)
    model.to(device).train()
    trainable = trainable if trainable is not None else model.clip
    optimizer = make_optimizer(trainable, hp["lr"], hp["weight_decay"], device)
    tokens = model.tokenize(captions)
    n = len(images)
    batch = min(hp["batch_size"], n)
    steps_per_epoch = max(1, n // batch)
    total = hp["epochs"] * steps_per_epoch
    step, log = 0, {"epoch_loss": [], "seconds": 0.0}
    if state_path.exists():
        state = load_checkpoint(state_path, map_location=device)
        model.clip.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, log = (
            int(state["step"]),
            {"epoch_loss": list(state["epoch_loss"]), "seconds": float(state["seconds"])},
        )
        print(f"{desc}: resuming from step {step}/{total} ({state_path})")
    start = time.time() - log["seconds"]
    loss_fn = loss_fn or (lambda m, x, t: clip_loss(m.encode_image(x), m.encode_text(t), m.logit_scale))
    bar = tqdm(total=total, initial=step, desc=desc, unit="step", mininterval=5)
    running = 0.0
    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(hp["seed"] * 1000 + epoch))
        idx = order[offset * batch : (offset + 1) * batch]
        x = to_float_images(images[idx.numpy()], device)
        if augment is not None:
            x = augment(x, hp["seed"] * 1_000_003 + step)
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, total, hp["lr"], hp["warmup_steps"])
        loss = loss_fn(model, x, tokens[idx].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.clip.logit_scale.clamp_(0, math.log(100))
        step += 1
        running += loss.item()
        bar.update(1)
        if step % steps_per_epoch == 0:
            log["epoch_loss"].append(running / steps_per_epoch)
            bar.set_postfix(loss=f"{log['epoch_loss'][-1]:.3f}")
            running = 0.0
            if len(log["epoch_loss"]) % hp["save_every_epochs"] == 0 and step < total:
                log["seconds"] = time.time() - start
                save_checkpoint(
                    state_path,
                    {
                        "model": model.clip.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "step": step,
                        "epoch_loss": log["epoch_loss"],
                        "seconds": log["seconds"],
                    },
                )
    bar.close()
    log["seconds"] = time.time() - start
    log["steps"] = total
    model.eval()
    return log
