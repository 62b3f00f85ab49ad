"""ISSBA (Li et al. 2021): a sample-specific invisible residual from a steganographic encoder.

The encoder hides a fixed secret in each image; it is trained here (`train_stega`) jointly with a
decoder, StegaStamp-style, and stored as an artefact that the trigger takes. Seeds are unused.
"""

import hashlib
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from clip_backdoor.attacks.patching import check_batch

DEFAULT_SECRET = "Stega!!"


def secret_to_bits(secret=DEFAULT_SECRET, n_bits=32):
    """A fixed float tensor of n_bits 0/1 values derived from the secret string by hashing."""
    digest = hashlib.shake_256(secret.encode()).digest((n_bits + 7) // 8)
    bits = [(byte >> (7 - i)) & 1 for byte in digest for i in range(8)]
    return torch.tensor(bits[:n_bits], dtype=torch.float32)


class StegaEncoder(nn.Module):
    """(images [B,3,H,W], secret [B,n_bits]) -> residual [B,3,H,W] bounded by max_residual."""

    def __init__(self, n_bits, image_size, max_residual=8 / 255, width=32):
        super().__init__()
        self.n_bits, self.image_size, self.max_residual = n_bits, image_size, max_residual
        # as in StegaStamp the secret is projected to a coarse map, then upsampled over the image
        self.coarse = max(1, image_size // 8)
        self.project = nn.Linear(n_bits, 3 * self.coarse * self.coarse)
        self.net = nn.Sequential(
            nn.Conv2d(6, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 3, 1),
        )  # fmt: skip

    def forward(self, images, secret):
        s = self.project(secret).view(-1, 3, self.coarse, self.coarse)
        s = F.interpolate(s, size=images.shape[-2:], mode="nearest")
        return torch.tanh(self.net(torch.cat([images - 0.5, s], dim=1))) * self.max_residual


class StegaDecoder(nn.Module):
    """images [B,3,H,W] -> secret bit logits [B,n_bits]."""

    def __init__(self, n_bits, image_size, width=32):
        super().__init__()
        self.n_bits, self.image_size = n_bits, image_size
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(width * 16, n_bits),
        )  # fmt: skip

    def forward(self, images):
        return self.net(images - 0.5)


def _as_float_images(images):
    images = torch.as_tensor(images)
    if images.shape[1] != 3 and images.shape[-1] == 3:  # NHWC, as the embedded benchmark stores them
        images = images.permute(0, 3, 1, 2)
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def train_stega(
    images, n_bits=32, steps=1000, lr=1e-3, seed=0, batch_size=32, max_residual=8 / 255,
    device="cpu", residual_weight=1.0,
):  # fmt: skip
    """Train encoder and decoder jointly; return (encoder, decoder, bit accuracy) with both on the CPU.

    Each batch hides fresh random secrets (a single fixed secret would let the decoder ignore its input);
    the loss is BCE on the decoded bits plus residual_weight * mean squared residual. The accuracy is
    measured after training on up to 256 of the images with random secrets.
    """
    images = _as_float_images(images)
    n, _, h, w = images.shape
    if h != w:
        raise ValueError(f"issba: train_stega needs square images, got {h}x{w}")
    g = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        encoder = StegaEncoder(n_bits, h, max_residual).to(device)
        decoder = StegaDecoder(n_bits, h).to(device)
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=lr)
    # On CPU, oneDNN's AVX-512 convolutions left this training at chance (bit accuracy 0.50, seeds 0 and 1)
    # where its AVX2 ones and ATen's own reach 0.99 (benchmarks/issba_encoder_isa.md): ATen's are used.
    with warnings.catch_warnings():  # the flags warn about TF32 on Intel GPUs, untouched here
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        with torch.backends.mkldnn.flags(enabled=False):
            for _ in tqdm(range(steps), desc="issba encoder", unit="step", mininterval=5):
                x = images[torch.randint(0, n, (batch_size,), generator=g)].to(device)
                secret = torch.randint(0, 2, (batch_size, n_bits), generator=g).float().to(device)
                residual = encoder(x, secret)
                logits = decoder((x + residual).clamp(0, 1))
                penalty = residual_weight * residual.pow(2).mean()
                loss = F.binary_cross_entropy_with_logits(logits, secret) + penalty
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    encoder.eval()
    decoder.eval()
    with torch.no_grad():
        x = images[:256].to(device)
        secret = torch.randint(0, 2, (len(x), n_bits), generator=g).float().to(device)
        decoded = decoder((x + encoder(x, secret)).clamp(0, 1)) > 0
        accuracy = (decoded.float() == secret).float().mean().item()
    return encoder.cpu(), decoder.cpu(), accuracy


def make_trigger(image_size, *, secret_bits, scale, secret, encoder=None):
    """`secret_bits` overrides the bits derived from `secret`. The encoder is moved to the images' device."""
    if encoder is None:
        raise ValueError("issba: the issba encoder artefact is required (param 'encoder')")
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"issba: param 'encoder' must be an nn.Module, got {type(encoder).__name__}")
    n_bits = getattr(encoder, "n_bits", None)
    if n_bits is None and secret_bits is None:
        raise ValueError("issba: param 'secret_bits' is required for an encoder without an n_bits attribute")
    bits = secret_to_bits(secret, n_bits) if secret_bits is None else torch.as_tensor(secret_bits).float()
    if bits.ndim != 1 or (n_bits is not None and len(bits) != n_bits):
        raise ValueError(f"issba: param 'secret_bits' must be {n_bits} bits, got shape {tuple(bits.shape)}")
    encoder.eval()

    def trigger(images, seeds):
        check_batch("issba", images, seeds, image_size)
        encoder.to(images.device)
        with torch.no_grad():
            x = images.float()
            residual = encoder(x, bits.to(x).expand(len(x), -1))
        return (images + scale * residual.to(images.dtype)).clamp(0, 1)

    return trigger
