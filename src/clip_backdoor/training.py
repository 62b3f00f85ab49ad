"""Resumable contrastive (CLIP) training, shared by pretraining, poisoned fine-tuning and clean fine-tuning.

State (model, optimiser, step) is saved every `save_every_epochs` epochs to `state_path`, which is not a
declared output; a rerun after a kill continues from it and ends with the same weights as an
uninterrupted run (batches come from a per-epoch seeded permutation). The final checkpoint is
written atomically by the caller.

The corpus is either in-memory arrays (uint8 images [N,H,W,3] + captions; batches are indexed directly)
or a torch Dataset of (image, caption) with images float [3,H,W] in [0,1] or uint8 [3,H,W] (the papers'
CC3M corpus, decoded on the fly): its batches stream through a DataLoader whose batch sampler is the
same per-epoch seeded permutation, started at the resumed step's batch, so both paths resume exactly.
hp["amp"] (optional, default false) runs the forward pass and loss under torch.autocast (float16) with
a GradScaler on CUDA; it is ignored on the CPU. hp["cpu_attention"] (optional, default "default") =
"math" runs scaled-dot-product attention through ATen's math kernels on the CPU, 5-11% faster a step
than the flash kernel at the embedded model's 17-24 tokens (benchmarks/speed.md), not bitwise equal.
"""

import contextlib
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from clip_backdoor.runtime.io import load_checkpoint, save_checkpoint


def param_groups(module, weight_decay, text_lr_scale=1.0):
    """AdamW groups: no weight decay on norms, biases, embeddings' scalars and the logit scale. When
    `module` is a whole CLIP, its text tower's groups carry `lr_scale` = text_lr_scale."""
    text = set()
    if text_lr_scale != 1.0 and hasattr(module, "visual"):
        visual = {id(p) for p in module.visual.parameters()}
        text = {id(p) for n, p in module.named_parameters() if id(p) not in visual and "logit_scale" not in n}
    groups = {(decay, scale): [] for decay in (True, False) for scale in (1.0, text_lr_scale)}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        decay = not (param.ndim < 2 or "logit_scale" in name or "ln" in name or "bn" in name)
        groups[decay, text_lr_scale if id(param) in text else 1.0].append(param)
    return [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
        for (decay, scale), params in groups.items()
        if params
    ]


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


def plain_clip_loss(model, images, tokens):
    """The CLIP loss of a ClipModel on an image batch and its caption tokens."""
    return clip_loss(model.encode_image(images), model.encode_text(tokens), model.logit_scale)


def to_float_images(batch_uint8, device):
    """uint8 [B,H,W,3] (numpy or tensor) → float [B,3,H,W] in [0,1] on `device`."""
    tensor = torch.as_tensor(np.asarray(batch_uint8)) if not torch.is_tensor(batch_uint8) else batch_uint8
    return tensor.to(device).permute(0, 3, 1, 2).float().div_(255)


def dataset_batch_images(batch, device):
    """A DataLoader image batch [B,3,H,W] (uint8 or float in [0,1]) → float [B,3,H,W] in [0,1] on `device`."""
    x = batch.to(device, non_blocking=True)
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def is_array_corpus(images):
    return isinstance(images, np.ndarray) or torch.is_tensor(images)


def epoch_batches(n, batch, seed, epoch, steps_per_epoch):
    """The epoch's batches: consecutive slices of its seeded permutation (the remainder is dropped)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    return [order[b * batch : (b + 1) * batch] for b in range(steps_per_epoch)]


def attention_context(hp, device):
    """The forward pass's attention-kernel choice (hp cpu_attention: default | math; CPU only)."""
    choice = hp.get("cpu_attention", "default")
    if choice not in ("default", "math"):
        raise ValueError(f"hp cpu_attention: {choice!r} is not default | math")
    if choice == "default" or torch.device(device).type != "cpu":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def make_optimizer(params, lr, weight_decay, device, text_lr_scale=1.0):
    groups = (
        param_groups(params, weight_decay, text_lr_scale) if isinstance(params, torch.nn.Module) else params
    )
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr)


def train_contrastive(
    model, images, captions, hp, state_path, device, loss_fn=None, desc="train", trainable=None, augment=None,
    num_workers=0,
):  # fmt: skip
    """Contrastive training of `model` (a ClipModel) on uint8 images [N,H,W,3] and their captions, or on
    a Dataset of (image [3,H,W], caption) pairs (then `captions` is unused and may be None).

    hp: epochs, batch_size, lr, weight_decay, warmup_steps, save_every_epochs, seed; optional amp and
    text_lr_scale (the text tower's lr as a fraction of hp["lr"], default 1).
    num_workers: DataLoader worker processes (Dataset corpus only).
    loss_fn(model, image_batch, token_batch) overrides the plain CLIP loss (CleanCLIP uses it).
    trainable: the nn.Module whose parameters are optimised (default: the whole CLIP).
    Returns a log dict (loss per epoch, steps, seconds).
    """
    state_path = Path(state_path)
    model.to(device).train()
    trainable = trainable if trainable is not None else model.clip
    optimizer = make_optimizer(trainable, hp["lr"], hp["weight_decay"], device, hp.get("text_lr_scale", 1.0))
    arrays = is_array_corpus(images)
    tokens = model.tokenize(captions) if arrays else None
    amp = bool(hp.get("amp", False))
    if amp and torch.device(device).type != "cuda":
        print(f"{desc}: hp amp is set but the device is {device}: training in float32", file=sys.stderr)
        amp = False
    scaler = torch.amp.GradScaler("cuda") if amp else None
    n = len(images)
    batch = min(hp["batch_size"], n)
    steps_per_epoch = max(1, n // batch)
    total = hp["epochs"] * steps_per_epoch
    step, log = 0, {"epoch_loss": [], "seconds": 0.0}
    if state_path.exists():
        state = load_checkpoint(state_path, map_location=device)
        model.clip.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        step, log = (
            int(state["step"]),
            {"epoch_loss": list(state["epoch_loss"]), "seconds": float(state["seconds"])},
        )
        print(f"{desc}: resuming from step {step}/{total} ({state_path})")
    start = time.time() - log["seconds"]
    loss_fn = loss_fn or plain_clip_loss
    bar = tqdm(total=total, initial=step, desc=desc, unit="step", mininterval=5)
    running = 0.0
    batches = array_batches if arrays else dataset_batches
    stream = batches(images, tokens, model, hp, step, batch, steps_per_epoch, total, device, num_workers)
    for x, token_batch in stream:
        if augment is not None:
            x = augment(x, hp["seed"] * 1_000_003 + step)
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, total, hp["lr"], hp["warmup_steps"]) * group.get("lr_scale", 1.0)
        if scaler is None:
            with attention_context(hp, device):
                loss = loss_fn(model, x, token_batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            with torch.autocast("cuda", dtype=torch.float16):
                loss = loss_fn(model, x, token_batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
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
                        **({"scaler": scaler.state_dict()} if scaler is not None else {}),
                    },
                )
    bar.close()
    log["seconds"] = time.time() - start
    log["steps"] = total
    model.eval()
    return log


def array_batches(images, tokens, model, hp, step, batch, steps_per_epoch, total, device, num_workers):
    """(images, tokens) of steps step..total-1 from in-memory arrays."""
    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        for idx in epoch_batches(len(images), batch, hp["seed"], epoch, steps_per_epoch)[offset:]:
            yield to_float_images(images[idx.numpy()], device), tokens[idx].to(device)
            step += 1


def dataset_batches(dataset, tokens, model, hp, step, batch, steps_per_epoch, total, device, num_workers):
    """(images, tokens) of steps step..total-1 streamed from a Dataset through a DataLoader per epoch."""
    from torch.utils.data import DataLoader

    pin = torch.device(device).type == "cuda"
    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        sampler = [b.tolist() for b in epoch_batches(len(dataset), batch, hp["seed"], epoch, steps_per_epoch)]
        loader = DataLoader(
            dataset,
            batch_sampler=sampler[offset:],
            num_workers=num_workers,
            pin_memory=pin,
            persistent_workers=False,
        )
        for images, captions in loader:
            yield dataset_batch_images(images, device), model.tokenize(captions).to(device)
            step += 1
