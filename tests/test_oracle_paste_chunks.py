"""The oracle's paste test in bounded chunks gives exactly the unchunked result."""

import torch

from clip_backdoor.defenses.oracle import transplant as oracle


def test_chunked_paste_test_equals_one_pass():
    gen = torch.Generator().manual_seed(0)
    image, donors = torch.rand(3, 16, 16, generator=gen), torch.rand(3, 3, 16, 16, generator=gen)
    regions = oracle.windows(16, 4, 3)  # 25 regions × 3 donors = 75 pasted images
    weight, batch, seen = torch.randn(3 * 16 * 16, 5, generator=gen), 4, []

    def probs(x):
        seen.append(len(x))
        return torch.cat([(chunk.flatten(1) @ weight).softmax(-1) for chunk in x.split(batch)])

    whole = oracle.paste_localise(image, regions, donors, 2, probs, batch, max_bytes=2**40)
    assert seen == [75]
    image_bytes = image.numel() * image.element_size()
    chunked = oracle.paste_localise(image, regions, donors, 2, probs, batch, max_bytes=9 * image_bytes)
    assert seen[1:] == [8] * 9 + [3]  # chunks of a multiple of the batch, at most 9 images' bytes
    assert chunked == whole
    # the reference: all pasted images at once, as before the chunking
    pasted = torch.where(regions[:, None, None], image[None, None], donors[None]).flatten(0, 1)
    mean = probs(pasted)[:, 2].view(len(regions), len(donors)).mean(1)
    assert whole == (int(mean.argmax()), float(mean.max()))
