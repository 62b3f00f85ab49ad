"""The oracle's cost at 224 px: forwards, wall time and peak memory per probe (Algorithm 1) and per victim
(the paste test and transplants), extrapolated to the papers' profile (5,000 probes).

A fabricated 224 px corpus, randomly initialised ViT-B/32s (open_clip's architecture, pretrained=None: no
download) as the poisoned CLIP and the clean matcher, and a stand-in segmenter with a fixed number of masks
per image (FastSAM's count varies; `--masks`). The cost does not depend on the weights. Each phase runs in a
fresh interpreter so that its peak resident memory is its own (above the models').

Run by hand:  python benchmarks/oracle_scale.py [--probes 4] [--victims 1] [--masks 32] [--threads 2]
Writes benchmarks/oracle_scale.md and prints it.
"""

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from clip_backdoor.config.schema import declared_defaults
from clip_backdoor.defenses.oracle import algorithm1 as a1
from clip_backdoor.defenses.oracle import transplant as tp
from clip_backdoor.defenses.oracle.evidence import Askers, probabilities
from clip_backdoor.models.factory import build_model

BATCH = declared_defaults("defenses.methods.oracle.params")["batch"]
SIZE, VOCAB, PAPER_PROBES = 224, [f"label {i}" for i in range(10)], 5000
EXTENSIONS = {"localise_window": 0.375, "localise_stride": 0.0625, "null_ratio": 2.0}


class BoxSegmenter:
    """`n` masks per image: a quarter large boxes (4-30% of the image), the rest compact (≤ 2%)."""

    def __init__(self, n):
        self.n = n

    def segment(self, images):
        gen = torch.Generator().manual_seed(0)
        return [[self.box(gen, k < self.n // 4) for k in range(self.n)] for _ in images]

    def box(self, gen, large):
        side = (
            int(torch.randint(45, 122, (1,), generator=gen))
            if large
            else int(torch.randint(12, 31, (1,), generator=gen))
        )
        y, x = torch.randint(0, SIZE - side, (2,), generator=gen).tolist()
        mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        mask[y : y + side, x : x + side] = True
        return mask


def counted(model):
    """The model with a counter of the images it encodes (model.encoded)."""
    model.encoded, encode = 0, model.encode_image

    def encode_image(images, normalize=True):
        model.encoded += len(images)
        return encode(images, normalize)

    model.encode_image = encode_image
    return model


def setup(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = [counted(build_model({"kind": "open_clip", "name": "ViT-B-32", "pretrained": None}).eval())]
    models.append(counted(build_model({"kind": "open_clip", "name": "ViT-B-32", "pretrained": None}).eval()))
    with torch.no_grad():
        heads = [torch.nn.functional.normalize(torch.randn(len(VOCAB), 512), dim=-1) for _ in range(3)]
    params = {**declared_defaults("defenses.methods.oracle.params"), **EXTENSIONS}
    n = max(args.probes, args.victims + params["localise_donors"] + params["transplants"])
    pixels = torch.randint(0, 256, (n, SIZE, SIZE, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    return models, Askers(models[0], heads[0], models[1], heads[1], heads[2]), params, pixels


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_probes(args):
    models, askers, params, pixels = setup(args)
    base, start = rss_mb(), time.time()
    a1.find_candidate_triggers(pixels[: args.probes], BoxSegmenter(args.masks), askers, params, "cpu")
    seconds, forwards = time.time() - start, sum(m.encoded for m in models)
    return {"per": args.probes, "forwards": forwards, "seconds": seconds, "peak_mb": rss_mb() - base}


def phase_victims(args):
    models, askers, params, pixels = setup(args)
    masks = BoxSegmenter(args.masks).segment(pixels[:1])[0]
    areas = torch.tensor([float(m.float().mean()) for m in masks])
    probe = lambda i, top1, grounded, flagged: a1.Probe(  # noqa: E731
        i, top1, a1.Finding(set(), grounded, {top1} if flagged >= 0 else set(), flagged),
        torch.full((len(masks),), 0.9), torch.zeros(len(masks), dtype=torch.long), areas, masks,
    )  # fmt: skip
    victims = [probe(i, 0, set(), len(masks) - 1) for i in range(args.victims)]
    donors = [probe(i, 1, {1}, -1) for i in range(args.victims, len(pixels))]
    th, gen = a1.Thresholds.of(params), torch.Generator().manual_seed(0)
    poisoned = lambda x: probabilities(models[0], askers.head, x, params["batch"])  # noqa: E731
    base, start = rss_mb(), time.time()
    tp.transplant(pixels, victims + donors, victims, {0}, poisoned, params, th, gen)
    seconds = time.time() - start
    regions = len(tp.paste_grid(params, SIZE)) + int((areas <= params["compact_area"]).sum())
    out = {"per": args.victims, "forwards": models[0].encoded, "seconds": seconds, "peak_mb": rss_mb() - base}
    return {**out, "regions": regions}


def report(args, probes, victims):
    per_probe = {k: probes[k] / probes["per"] for k in ("forwards", "seconds")}
    per_victim = {k: victims[k] / victims["per"] for k in ("forwards", "seconds")}
    chunk, held = tp.PASTE_BYTES // (3 * SIZE * SIZE * 4), PAPER_PROBES * 3 * SIZE * SIZE / 2**20
    lines = [
        "# Oracle cost at 224 px (benchmarks/oracle_scale.py)",
        "",
        f"Command: `python benchmarks/oracle_scale.py --probes {args.probes} --victims {args.victims} "
        f"--masks {args.masks} --threads {args.threads}`; CPU: {cpu_name()}, {args.threads} threads. "
        "Randomly initialised ViT-B/32 (open_clip, pretrained=None) as both CLIPs, a stand-in segmenter with "
        f"{args.masks} masks per image ({args.masks - args.masks // 4} compact), the schema defaults plus "
        f"the paste test and the null test ({EXTENSIONS}). Zero-shot heads (one-off text forwards) are not "
        "counted.",
        "",
        "| phase | forwards each | seconds each | peak memory above the models (MiB) |",
        "|---|---|---|---|",
        f"| Algorithm 1, per probe (batch {BATCH}) | "
        f"{per_probe['forwards']:.0f} | {per_probe['seconds']:.2f} | {probes['peak_mb']:.0f} "
        f"(for {probes['per']} probes) |",
        f"| paste test and transplants, per victim ({victims['regions']} regions × 2 donors) | "
        f"{per_victim['forwards']:.0f} | {per_victim['seconds']:.2f} | {victims['peak_mb']:.0f} |",
        "",
        f"Papers' profile, {PAPER_PROBES} probes: {per_probe['forwards'] * PAPER_PROBES / 1e3:.0f}K image "
        f"forwards, {per_probe['seconds'] * PAPER_PROBES / 3600:.1f} h on this CPU for Algorithm 1; each "
        f"victim adds {per_victim['forwards']:.0f} forwards ({per_victim['seconds']:.1f} s), so 15 victims "
        f"(0.3% of the probes, the attacks' poisoning rate) add {per_victim['seconds'] * 15 / 60:.1f} min. "
        f"The probes are held as uint8: {held:.0f} MiB for 5,000. Memory per step is bounded by the "
        "batch, not the probe count: crops and occluded images are built one encoder batch at "
        f"a time, and the paste test pastes at most {chunk} images ({tp.PASTE_BYTES / 2**20:.0f} MiB, plus "
        "as much for the gathered donors) at once, under 2 GB at any window grid.",
    ]
    return "\n".join(lines) + "\n"


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--probes", type=int, default=4)
    parser.add_argument("--victims", type=int, default=1)
    parser.add_argument("--masks", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--phase", choices=["probes", "victims"])
    args = parser.parse_args()
    if args.phase:
        print(json.dumps((phase_probes if args.phase == "probes" else phase_victims)(args)))
        return
    results = []
    for phase in ("probes", "victims"):
        cmd = [sys.executable, __file__, "--phase", phase] + sys.argv[1:]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    text = report(args, *results)
    Path(__file__).with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
