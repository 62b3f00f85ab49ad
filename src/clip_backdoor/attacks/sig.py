"""SIG (Barni et al. 2019): add a horizontal sinusoid, equal for all rows and channels. Seeds are unused."""

import math

import torch

from clip_backdoor.attacks.patching import check_batch


def make_trigger(image_size, *, amplitude, frequency):
    if amplitude < 0:
        raise ValueError(f"sig: param 'amplitude' must be >= 0, got {amplitude}")
    columns = torch.arange(image_size, dtype=torch.float64)
    signal = (amplitude * torch.sin(2 * math.pi * columns * frequency / image_size)).float()

    def trigger(images, seeds):
        check_batch("sig", images, seeds, image_size)
        return (images + signal.to(images)).clamp(0, 1)

    return trigger
