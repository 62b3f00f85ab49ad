"""Trigger fidelity at the papers' 224 px: each trigger with configs/paper.yaml's attacks.methods params,
measured on the trigger's output, next to the figures issue 31 quotes for the reference code
(CleanCLIP's backdoor/utils.py apply_trigger, nishadsinghi/CleanCLIP; the same function in
LiangSiyuan21/BadCLIP and nmndeep/PerturbAndRecover).

Run by hand from the repository root (~40 s on one CPU):  python benchmarks/trigger_fidelity.py
(from a git worktree other than the installed checkout: PYTHONPATH=src python benchmarks/trigger_fidelity.py)
Writes benchmarks/trigger_fidelity.md and prints it.

Images: 200 smooth random 224 px images (bicubic-upsampled 8x8 noise), image i with trigger seed i.
Grey levels are x*255 rounded. TrojVQA/BadCLIP take a random stand-in for their optimised patch (the
real one needs the clean model), so only their placement is measured; ISSBA is not measured (its
encoder is trained per run by make_trigger; no reference figures). Perturb and Recover's structured
triggers (badnet_rs, blended_rs) are compared with PAR's code (nmndeep/PerturbAndRecover).
"""

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from clip_backdoor.attacks import badnet, get_trigger, trojvqa, wanet

SIZE, N = 224, 200
OUT = Path("benchmarks/trigger_fidelity.md")
PAPER = yaml.safe_load(Path("configs/paper.yaml").read_text())["attacks"]["methods"]
REF = "CleanCLIP backdoor/utils.py apply_trigger, as measured in issue 31"
BADCLIP_REF = "BadCLIP's SIG (60/255 sin(2 pi j 6/224)), issue 31"


def paper_params(name):
    return dict(PAPER.get(name, {}).get("trigger", {}))


def smooth_images(n=N, seed=0):
    low = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(low, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0, 1)


def apply(trigger, images, seeds):
    return torch.cat([trigger(images[i : i + 50], seeds[i : i + 50]) for i in range(0, len(images), 50)])


def psnr(out, images):
    mse = ((out - images) ** 2).flatten(1).mean(1)
    return float((10 * torch.log10(1 / mse)).mean())


def grey(x):
    return (x * 255).round()


def value_summary(levels):
    q = np.percentile(levels, [5, 25, 50, 75, 95])
    hist = np.histogram(levels, bins=8, range=(0, 256))[0] / len(levels) * 100
    return (
        f"mean {levels.mean():.1f}, sd {levels.std():.1f}; at 0: {100 * (levels == 0).mean():.1f}%, "
        f"at 255: {100 * (levels == 255).mean():.1f}%; 5/25/50/75/95%: {'/'.join(f'{v:.0f}' for v in q)}; "
        f"8-bin histogram (%): {' '.join(f'{h:.0f}' for h in hist)}"
    )


def mean_pair_corr(rows):
    """Mean Pearson correlation between consecutive rows (different images, different seeds)."""
    rows = rows.double()
    rows = rows - rows.mean(1, keepdim=True)
    rows = rows / rows.norm(dim=1, keepdim=True)
    return float((rows[:-1] * rows[1:]).sum(1).mean())


def patch_stats(name, **params):
    """Values, placement, cross-image correlation and PSNR of a patch trigger's output."""
    images, seeds = smooth_images(), list(range(N))
    out = apply(get_trigger(name, SIZE, **params), images, seeds)
    changed = (out != images).any(1)
    tops, lefts, patches = [], [], []
    p = params.get("patch_size") or params["patch"].shape[-1]
    for i in range(N):
        rows, cols = changed[i].any(1).nonzero()[:, 0], changed[i].any(0).nonzero()[:, 0]
        top, left = int(rows.min()), int(cols.min())
        assert int(rows.max()) - top < p and int(cols.max()) - left < p, "change outside one patch"
        if name in ("trojvqa", "badclip") or params.get("location") == "center":
            top = left = (SIZE - p) // 2
        else:
            top, left = badnet.patch_location(seeds[i], SIZE, p)
        tops.append(top)
        lefts.append(left)
        patches.append(out[i, :, top : top + p, left : left + p].flatten())
    levels = grey(torch.cat(patches)).numpy()
    tops, lefts = np.array(tops), np.array(lefts)
    distinct = len(set(zip(tops, lefts, strict=True)))
    if distinct == 1:
        place = f"rows {tops[0]}-{tops[0] + p - 1}, cols {lefts[0]}-{lefts[0] + p - 1} on every image"
    else:
        place = (
            f"top {tops.min()}-{tops.max()} (mean {tops.mean():.0f}, sd {tops.std():.0f}), "
            f"left {lefts.min()}-{lefts.max()} (mean {lefts.mean():.0f}, sd {lefts.std():.0f}), "
            f"{distinct} distinct of {N} (uniform over 0-{SIZE - p}: mean {(SIZE - p) / 2:.0f}, "
            f"sd {math.sqrt(((SIZE - p + 1) ** 2 - 1) / 12):.0f})"
        )
    return {
        "values": value_summary(levels),
        "place": place,
        "corr": mean_pair_corr(torch.stack(patches)),
        "psnr": psnr(out, images),
    }


def blended_stats(**params):
    images, seeds = smooth_images(), list(range(N))
    trigger = get_trigger("blended", SIZE, **params)
    alpha = params.get("alpha", 0.2)
    out = apply(trigger, images, seeds)
    pattern = ((out - (1 - alpha) * images) / alpha).flatten(1)
    again = trigger(smooth_images(2, seed=5), [seeds[0], seeds[0]])
    again = ((again - (1 - alpha) * smooth_images(2, seed=5)) / alpha).flatten(1)
    return {
        "values": value_summary(grey(pattern.flatten()).numpy()),
        "corr": mean_pair_corr(pattern),
        "same_seed": float((again[0] - again[1]).abs().max()),
        "psnr": psnr(out, images),
    }


def sig_stats(**params):
    flat = torch.full((1, 3, SIZE, SIZE), 0.5)
    residual = get_trigger("sig", SIZE, **params)(flat, [0])[0] - 0.5
    down, across = float(residual.std(1).max()), float(residual.std(2).mean())
    profile = residual[0, 0].double()
    spectrum = torch.fft.rfft(profile).abs()
    k = int(spectrum[1:].argmax()) + 1
    j = torch.arange(SIZE, dtype=torch.float64)
    reference = 60 / 255 * torch.sin(2 * math.pi * j * 6 / SIZE)
    return {
        "orientation": "vertical stripes (varies across columns only)" if down < 1e-6 < across else "other",
        "period": SIZE / k,
        "amplitude": float(grey(profile.abs().max())),
        "vs_ref": float(((profile - reference).abs().max()) * 255),
    }


def wanet_stats(**params):
    k, strength = params.get("k", 4), params.get("strength", 0.5)
    grid = wanet.make_warp_grid(SIZE, k=k, strength=strength, seed=params.get("grid_seed", 0))
    displacement = (grid - wanet.identity_grid(SIZE))[0] * (SIZE - 1) / 2  # in pixels
    magnitude = displacement.norm(dim=-1)
    noise = torch.rand(1, 2, k, k, generator=torch.Generator().manual_seed(0))
    upsampled = F.interpolate(noise, size=(SIZE, SIZE), mode="bicubic", align_corners=True)
    return {
        "mean": float(magnitude.mean()),
        "max": float(magnitude.max()),
        "identity_upsample": k == SIZE and torch.allclose(upsampled, noise, atol=1e-5),
    }


def rows():
    """(trigger, variant, measured, reference figure, source, verdict) rows."""
    table = []
    bn = paper_params("badnet")
    ref = patch_stats("badnet", **bn)
    table.append((
        "badnet", f"paper: {bn} (noise: wrap)",
        f"values {ref['values']}; placement {ref['place']}; patch corr across images {ref['corr']:+.3f}; "
        f"PSNR {ref['psnr']:.1f} dB",
        "near uniform over 0-255: 0.5% at 0, 0.4% at 255, sd 74; location uniform over the image "
        "(random.randint(0, 223 - 16): 0-207); noise redrawn per image; PSNR 31.7 dB", REF,
        "equivalent up to randomness (per-image seeds; locations 0-208 here vs 0-207)",
    ))  # fmt: skip
    clamp = patch_stats("badnet", **{**bn, "noise": "clamp"})
    table.append((
        "badnet", "noise: clamp (embedded default)", f"values {clamp['values']}; PSNR {clamp['psnr']:.1f} dB",
        "issue 31's figures for this variant: 33% at 0, 29% at 255, sd 110, PSNR 29.3 dB", REF,
        "declared deviation (embedded default only)",
    ))  # fmt: skip
    bl = paper_params("blended")
    b = blended_stats(**bl)
    table.append((
        "blended", f"paper: {bl} (pattern: per_image)",
        f"pattern {b['values']}; pattern corr across images {b['corr']:+.3f}; same seed max diff "
        f"{b['same_seed']:.1e}; PSNR {b['psnr']:.1f} dB",
        "fresh torch.rand(3,224,224) per image, alpha 0.2; pattern corr between images +0.003", REF,
        "equivalent up to randomness (pattern drawn from the image's seed)",
    ))  # fmt: skip
    fixed = blended_stats(**{**bl, "pattern": "fixed"})
    table.append((
        "blended", "pattern: fixed (embedded default)", f"pattern corr across images {fixed['corr']:+.3f}",
        "ours before this change: corr 1.000", REF, "declared deviation (embedded default only)",
    ))  # fmt: skip
    s = sig_stats(**paper_params("sig"))
    table.append((
        "sig", f"paper: {paper_params('sig')}",
        f"{s['orientation']}; period {s['period']:.2f} px; amplitude {s['amplitude']:.0f} grey levels; "
        f"max diff from BadCLIP's formula {s['vs_ref']:.2f} grey levels",
        "vertical stripes, period 37.33 px, within one grey level of BadCLIP's", BADCLIP_REF, "same",
    ))  # fmt: skip
    w = wanet_stats(**paper_params("wanet"))
    table.append((
        "wanet", f"paper: {paper_params('wanet')}",
        f"displacement mean {w['mean']:.2f} px, max {w['max']:.2f} px; bicubic {SIZE}->{SIZE} upsampling "
        f"is the identity: {w['identity_upsample']}",
        "per-pixel jitter 0.76 px mean, 1.40 px max; fed the reference's stored grid our code reproduces its "
        "output exactly", REF, "equivalent up to randomness (grid drawn from grid_seed)",
    ))  # fmt: skip
    table.append((
        "issba", f"paper: artefact {PAPER['issba'].get('artefact', {})}", "not measured",
        "none quoted", "-", "declared deviation (StegaStamp-style encoder trained per run, attacks/issba.py)",
    ))  # fmt: skip
    stand_in = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    for name in ("trojvqa", "badclip"):
        params = {k: v for k, v in paper_params(name).items() if k != "patch_size"}
        t = patch_stats(name, patch=stand_in, **params)
        key = f"; text key {trojvqa.TEXT_KEY!r}" if name == "trojvqa" else ""
        table.append((
            name, f"paper: {paper_params(name)} (random stand-in patch)", f"placement {t['place']}{key}",
            "rows/cols 104-119" + ("; text key 'remember '" if name == "trojvqa" else ""), REF, "same",
        ))  # fmt: skip
    lc = paper_params("badnet_lc")
    t = patch_stats("badnet_lc", **lc)
    table.append((
        "badnet_lc", f"paper: {lc} (noise: wrap, random location)",
        f"values {t['values']}; placement {t['place']}; patch corr {t['corr']:+.3f}; poisons only pairs "
        "whose caption names the target, captions kept (attacks/poison.py)",
        "BadNet's random noise patch on pairs whose caption contains the target, captions kept; no harden",
        "CleanCLIP backdoor/create_backdoor_data.py --label_consistent; issue 31",
        "equivalent up to randomness (as badnet; the paper profile must set no harden)",
    ))  # fmt: skip
    board = patch_stats("badnet_lc", patch_size=12, location="center", pattern="checkerboard")
    table.append((
        "badnet_lc", "patch_size 12, location: center, pattern: checkerboard (embedded default)",
        f"values {board['values']}; placement {board['place']}; patch corr {board['corr']:+.3f}",
        "-", "config.yaml", "declared deviation (embedded default only, with harden eps 64/255)",
    ))  # fmt: skip
    par = "nmndeep/PerturbAndRecover backdoor/utils.py get_init_patch, eval/validate.py"
    rs = patch_stats("badnet_rs", patch_size=16)
    table.append((
        "badnet_rs", "defaults: patch_size 16 (not in configs/paper.yaml)",
        f"values {rs['values']}; placement {rs['place']}; patch corr across images {rs['corr']:+.3f}",
        "patch 16, random location; per-channel sign per column, ToPILImage: grey levels 1 and 255 only; "
        "redrawn per image", par, "equivalent up to randomness (per-image seeds)",
    ))  # fmt: skip
    flat = torch.full((N, 3, SIZE, SIZE), 0.5)
    out = apply(get_trigger("blended_rs", SIZE), flat, list(range(N)))
    noise = ((out - 0.97 * 0.5) / 0.03).flatten(1)
    vertical = bool(torch.equal(out, out[:, :, :1].expand_as(out)))
    table.append((
        "blended_rs", "defaults: alpha 0.03, width 1 (not in configs/paper.yaml)",
        f"noise values {sorted({round(v) for v in noise.unique().tolist()})}; vertical stripes: {vertical}; "
        f"noise corr across images {mean_pair_corr(noise):+.3f}",
        "noise_coeff 0.03, width-1 stripes of per-channel signs +-1 over the whole image; redrawn per image",
        par, "equivalent up to randomness (per-image seeds)",
    ))  # fmt: skip
    return table


def geometry_rows():
    """(stage, here, reference, verdict) rows, with a 4:3 test image through both geometries."""
    from PIL import Image
    from torchvision import transforms

    from clip_backdoor.data import corpus, paper

    pixels = grey(smooth_images(1, seed=9)[0]).permute(1, 2, 0).byte().numpy()
    image = Image.fromarray(pixels).resize((300, 224))
    path = OUT.with_suffix(".tmp.png")
    image.save(path)
    try:
        ours = corpus.load_image(path, SIZE)
    finally:
        path.unlink()
    store = transforms.Compose(
        [
            transforms.Resize(SIZE, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(SIZE),
        ]
    )
    same_as_store = np.array_equal(ours, np.array(store(image)))
    evaluated = grey(paper.image_transform(SIZE)(image)).byte().permute(1, 2, 0).numpy()
    return [
        (
            "poisoning corpus",
            "RGB, bicubic Resize(224) of the shorter side + CenterCrop(224) (data/corpus.py `load_image`), "
            f"trigger on the cropped image; a 300x224 image gives CleanCLIP's stored pixels: {same_as_store}",
            "CC3M stored by utils/download.py as Resize(224, bicubic) + CenterCrop(224); apply_trigger's "
            "`resize((224, 224))` is then a no-op",
            "same" if same_as_store else "DIFFERENT",
        ),
        (
            "evaluation",
            "Resize(224, bicubic) + CenterCrop(224) (data/paper.py `image_transform`), trigger after the "
            "crop "
            f"(evaluation/evaluate.py); equal to the corpus geometry: {np.array_equal(ours, evaluated)}",
            "clean: the same crop; triggered: the raw image stretched to 224x224 by apply_trigger, "
            "triggered, then the crop does nothing",
            "declared deviation: clean and triggered test images share one geometry here",
        ),
    ]


def main():
    torch.set_num_threads(1)
    lines = [
        "# Trigger fidelity at 224 px (configs/paper.yaml params)",
        "",
        "Written by `python benchmarks/trigger_fidelity.py` (see its docstring for the images and seeds).",
        "",
        "| trigger | variant | measured here | reference | source | verdict |",
        "|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows()]
    lines += ["", "## Geometry", "", "| stage | here | reference | verdict |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in geometry_rows()]
    text = "\n".join(lines) + "\n"
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
