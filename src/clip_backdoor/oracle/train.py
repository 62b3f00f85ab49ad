"""train_oracle stage: the oracle's segmenter record at `out` (see `clip_backdoor.oracle`).

kind trained: a TinyUNet trained on the `oracle_train` split's instance masks, with copy-paste
augmentation (a rectangle cut from another image becomes one more instance), so that the network
segments any compact foreign region rather than only the world's shapes.
kind fastsam: no training; the record names the FastSAM weights file and its inference settings.
"""

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from clip_backdoor.data.embedded import load_split
from clip_backdoor.oracle.fastsam import check_trusted
from clip_backdoor.oracle.segmenter import BOUNDARY, NetSegmenter, TinyUNet, targets_from_instances
from clip_backdoor.runtime.device import torch_device
from clip_backdoor.runtime.io import load_checkpoint, save_checkpoint, write_json
from clip_backdoor.runtime.seeding import seed_everything

PASTED = 255


def copy_paste(images, instances, prob, size_range, noise_prob, gen):
    """Paste a rectangle onto each image with probability `prob`: a piece of another image of the batch,
    or (with probability `noise_prob`) per-pixel noise of random mean and spread."""
    images, instances = images.clone(), instances.clone()
    b, _, h, w = images.shape
    for i in (torch.rand(b, generator=gen) < prob).nonzero().flatten().tolist():
        sh, sw = (int(v) for v in torch.randint(size_range[0], size_range[1] + 1, (2,), generator=gen))
        y0, x0, y1, x1 = (int(torch.randint(0, lim, (1,), generator=gen)) for lim in (h - sh, w - sw) * 2)
        if float(torch.rand(1, generator=gen)) < noise_prob:
            mean, spread = torch.rand(3, 1, 1, generator=gen), torch.rand(1, generator=gen)
            piece = (mean + spread * (torch.rand(3, sh, sw, generator=gen) - 0.5)).clamp(0, 1)
        else:
            piece = images[int(torch.randint(b, (1,), generator=gen)), :, y0 : y0 + sh, x0 : x0 + sw]
        images[i, :, y1 : y1 + sh, x1 : x1 + sw] = piece
        instances[i, y1 : y1 + sh, x1 : x1 + sw] = PASTED
    return images, instances


def train_net(images, instances, params, device, state_path=None):
    """A TinyUNet fitted to uint8 images [N,H,W,3] and instance maps [N,H,W]; returns (net, loss curve)."""
    gen = torch.Generator().manual_seed(params["seed"])
    net = TinyUNet(params["width"]).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    start, curve = 0, []
    if state_path and Path(state_path).exists():
        state = load_checkpoint(state_path, map_location=device)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["optimizer"])
        start, curve = int(state["epoch"]), list(state["curve"])
        gen.set_state(state["generator"])
    x_all = torch.as_tensor(images).permute(0, 3, 1, 2).float().div(255)
    inst_all = torch.as_tensor(instances).long()
    weight = torch.tensor([1.0, 1.0, params["boundary_weight"]], device=device)
    n, batch = len(x_all), min(params["batch_size"], len(x_all))
    steps = n // batch
    for epoch in tqdm(range(start, params["epochs"]), desc="train_oracle", unit="epoch", mininterval=5):
        net.train()
        order, total = torch.randperm(n, generator=gen), 0.0
        for s in range(steps):
            idx = order[s * batch : (s + 1) * batch]
            x, inst = copy_paste(
                x_all[idx],
                inst_all[idx],
                params["paste_prob"],
                params["paste_size"],
                params["paste_noise"],
                gen,
            )
            target = targets_from_instances(inst).to(device)
            loss = F.cross_entropy(net(x.to(device)), target, weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        curve.append(total / steps)
        if state_path:
            save_checkpoint(
                state_path,
                {
                    "net": net.state_dict(),
                    "optimizer": opt.state_dict(),
                    "epoch": epoch + 1,
                    "curve": curve,
                    "generator": gen.get_state(),
                },
            )
    return net.eval(), curve


@torch.no_grad()
def mask_recall(segmenter, images, instances, iou=0.5):
    """Fraction of ground-truth instances matched by a predicted mask with IoU ≥ `iou`."""
    found = total = 0
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div(255)
    for masks, inst in zip(segmenter.segment(x), torch.as_tensor(instances).long(), strict=True):
        for k in inst.unique().tolist():
            if k == 0:
                continue
            gt = inst == k
            total += 1
            found += any(((m & gt).sum() / (m | gt).sum()).item() >= iou for m in masks)
    return found / max(total, 1)


def run(params, data, out, log, state):
    """params: kind (trained|fastsam), seed, trained: {...}, fastsam: {...}."""
    started = time.time()
    kind = params["kind"]
    if kind == "fastsam":
        hp = {"sha256": None, **params["fastsam"]}
        check_trusted(hp["weights"], hp["sha256"])
        save_checkpoint(out, {"kind": "fastsam", **hp})
        write_json(log, {"kind": kind, "params": hp, "seconds": round(time.time() - started, 2)})
        return
    if kind != "trained":
        raise ValueError(f"oracle.kind: unknown kind {kind!r} (known: trained, fastsam)")
    hp = {**params["trained"], "seed": params["seed"]}
    seed_everything(hp["seed"])
    device = torch_device()
    split = load_split(data, "oracle_train")
    held = max(1, int(len(split["images"]) * hp["holdout"]))
    net, curve = train_net(split["images"][:-held], split["instances"][:-held], hp, device, state)
    record = {
        "kind": "trained",
        "width": hp["width"],
        "min_area": hp["min_area"],
        "weights": {k: v.detach().cpu() for k, v in net.state_dict().items()},
    }
    recall = mask_recall(
        NetSegmenter(net, hp["min_area"], device), split["images"][-held:], split["instances"][-held:]
    )
    save_checkpoint(out, record)
    write_json(
        log,
        {
            "kind": kind,
            "params": hp,
            "curve": curve,
            "holdout_mask_recall": recall,
            "holdout_images": held,
            "boundary_class": BOUNDARY,
            "seconds": round(time.time() - started, 2),
        },
    )
    Path(state).unlink(missing_ok=True)
