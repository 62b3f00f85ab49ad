"""Build, save and load CLIP models.

Two kinds of architecture spec, both plain dicts stored inside every checkpoint:
  {"kind": "embedded", "config": "tiny-convvit"}   a small open_clip CLIP from a JSON config shipped here,
                                                   with a convolutional stem in place of the patch embedding
  {"kind": "open_clip", "name": "ViT-B-32", "pretrained": "openai" | "/path/to/weights", "quick_gelu": bool}
                                                   quick_gelu defaults to the pretrained tag's (true for
                                                   openai); set it true for a local copy of OpenAI weights
A checkpoint is {"arch": spec, "state_dict": ...}, loaded weights-only.
"""

import importlib
import json
import pickle
import sys
import zipfile
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from clip_backdoor.errors import ConfigError
from clip_backdoor.runtime.io import CheckpointError, load_checkpoint, save_checkpoint

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def embedded_config(name):
    path = resources.files("clip_backdoor.models") / "configs" / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"model.arch: no embedded architecture config named {name!r}")
    return json.loads(path.read_text())


def conv_stem(layers_cfg, width):
    """3x3 convolutions ([channels, stride] per layer) + BN + GELU that replace the patch embedding."""
    layers, in_ch = [], 3
    for out_ch, stride in layers_cfg:
        layers += [
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.GELU(),
        ]
        in_ch = out_ch
    layers.append(nn.Conv2d(in_ch, width, 1))
    return nn.Sequential(*layers)


class ClipModel(nn.Module):
    """An open_clip CLIP plus its pixel normalisation and tokenizer; images enter in [0,1]."""

    def __init__(self, clip, tokenizer, mean, std, arch):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.arch = arch
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def image_size(self):
        size = self.clip.visual.image_size
        return size[0] if isinstance(size, tuple | list) else size

    @property
    def logit_scale(self):
        return self.clip.logit_scale.exp()

    def normalize(self, images):
        return (images - self.mean) / self.std

    def encode_image(self, images, normalize=True):
        return self.clip.encode_image(self.normalize(images), normalize=normalize)

    def encode_text(self, tokens, normalize=True):
        return self.clip.encode_text(tokens, normalize=normalize)

    def tokenize(self, texts):
        return self.tokenizer(list(texts))


def import_open_clip(without_timm):
    """open_clip, imported without timm when `without_timm` and nothing has imported either yet.

    open_clip imports timm only for its timm-backed towers (and carries on without it); importing it
    costs about 0.6 s of every job's start. The embedded model has no timm tower; an open_clip arch
    gets open_clip with timm (its timm module re-run if an embedded model came first).
    """
    if not without_timm or "open_clip" in sys.modules or "timm" in sys.modules:
        import open_clip

        if not without_timm and open_clip.timm_model.timm is None:
            importlib.reload(open_clip.timm_model)
        return open_clip
    sys.modules["timm"] = None  # makes `import timm` raise ImportError inside open_clip
    try:
        import open_clip
    finally:
        del sys.modules["timm"]
    return open_clip


def build_model(arch):
    """Instantiate the architecture `arch` (pretrained weights only for open_clip `pretrained`)."""
    open_clip = import_open_clip(without_timm=arch["kind"] == "embedded")
    if arch["kind"] == "embedded":
        cfg = embedded_config(arch["config"])
        clip = open_clip.model.CLIP(
            embed_dim=cfg["embed_dim"],
            vision_cfg=open_clip.model.CLIPVisionCfg(**cfg["vision_cfg"]),
            text_cfg=open_clip.model.CLIPTextCfg(**cfg["text_cfg"]),
        )
        clip.visual.conv1 = conv_stem(cfg["conv_stem"], cfg["vision_cfg"]["width"])
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
        return ClipModel(clip, tokenizer, cfg["image_mean"], cfg["image_std"], arch)
    if arch["kind"] == "open_clip":
        pretrained = arch.get("pretrained")
        if pretrained and Path(pretrained).is_file() and Path(pretrained).stat().st_size == 0:
            raise CheckpointError(
                f"model.arch.pretrained: {pretrained} is an empty file (an interrupted download?):"
                " fetch it again"
            )
        try:
            clip = open_clip.create_model(
                arch["name"],
                pretrained=pretrained,
                load_weights=True,
                weights_only=True,
                force_quick_gelu=quick_gelu(arch),
            )
        except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as err:
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            name = arch["name"]
            message = f"model.arch.pretrained: cannot load {pretrained!r} for {name}: {detail}"
            raise CheckpointError(message) from err
        tokenizer = open_clip.get_tokenizer(arch["name"])
        mean = getattr(clip.visual, "image_mean", None) or OPENAI_MEAN
        std = getattr(clip.visual, "image_std", None) or OPENAI_STD
        return ClipModel(clip, tokenizer, mean, std, arch)
    raise ConfigError(f"model.kind: unknown architecture kind {arch['kind']!r} (embedded | open_clip)")


def quick_gelu(arch):
    """Whether an open_clip arch needs QuickGELU: explicit `quick_gelu`, else its pretrained tag's setting.

    open_clip 3 builds "ViT-B-32" with nn.GELU even for pretrained="openai" (it only warns), but the
    OpenAI weights were trained with QuickGELU.
    """
    open_clip = import_open_clip(without_timm=False)
    if arch.get("quick_gelu") is not None:
        return bool(arch["quick_gelu"])
    tag = arch.get("pretrained")
    return bool(tag and open_clip.get_pretrained_cfg(arch["name"], tag).get("quick_gelu", False))


def save_model(path, model, extra=None):
    save_checkpoint(path, {"arch": model.arch, "state_dict": model.clip.state_dict(), **(extra or {})})


def load_model(path, map_location="cpu"):
    """Rebuild a model from a checkpoint written by `save_model` (weights-only)."""
    ckpt = load_checkpoint(path, map_location=map_location)
    if not isinstance(ckpt, dict) or "arch" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a clip_backdoor model checkpoint (no 'arch'/'state_dict')")
    arch = dict(ckpt["arch"])
    if arch["kind"] == "open_clip":
        arch["quick_gelu"] = quick_gelu(arch)
        arch["pretrained"] = None
    model = build_model(arch)
    model.arch = ckpt["arch"]
    try:
        model.clip.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not match architecture {ckpt['arch']}: {err}") from err
    return model.to(map_location)
