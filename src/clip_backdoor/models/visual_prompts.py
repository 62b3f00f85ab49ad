"""Deep visual prompts (VPT-deep) for open_clip's VisionTransformer.

The first `depth` blocks run unprompted; each of the remaining L−depth blocks receives its own `tokens`
learnable prompt tokens, appended after the CLS and patch tokens and replaced before every prompted block
(the previous block's prompt outputs are dropped). Prompts carry no positional embedding. The wrapped
encoder is frozen (requires_grad off); only the prompts are parameters of this module.

The forward pass re-implements open_clip 3.3.0's `VisionTransformer.forward` (conv1 → flatten → class
embedding → positional embedding → patch dropout → ln_pre → blocks → pool → ln_post → proj), so any
`visual.conv1` works: the embedded models' convolutional stem as well as a plain patch embedding. Its
blocks are batch-first (open_clip 3.3.0's default, which VisionTransformer keeps) and run without an
attention mask, as open_clip runs them.
"""

import torch
from torch import nn


class PromptedVisual(nn.Module):
    def __init__(self, visual, depth, tokens, init_std=0.02, generator=None):
        super().__init__()
        if getattr(visual, "attn_pool", None) is not None or not visual.transformer.batch_first:
            raise ValueError("visual prompts: attentional pooling and sequence-first blocks are unsupported")
        layers = len(visual.transformer.resblocks)
        if not 0 <= depth <= layers:
            raise ValueError(f"visual prompts: depth {depth} is outside 0..{layers} (the number of blocks)")
        self.depth, self.tokens = depth, tokens
        self.__dict__["visual"] = visual.requires_grad_(False)  # not a submodule: parameters() = prompts
        width = visual.transformer.width
        prompts = torch.randn(layers - depth, tokens, width, generator=generator) * init_std
        self.prompts = nn.Parameter(prompts.to(visual.class_embedding.device))

    @property
    def layers(self):
        """Indices (0-based) of the prompted blocks."""
        return list(range(self.depth, len(self.visual.transformer.resblocks)))

    def embed(self, x):
        """Normalised images [B,3,H,W] → the token sequence entering the first block [B,1+M,W]."""
        v = self.visual
        x = v.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        return v.ln_pre(v.patch_dropout(x))

    def run_blocks(self, x, start=0, prompts=True, every_block=False):
        """Blocks `start`..L−1 on [B,N,W] tokens; returns (final tokens without prompts, CLS after each
        prompted block, or after every block with every_block). prompts=False runs the frozen encoder
        (still collecting the same blocks' CLS)."""
        blocks = self.visual.transformer.resblocks
        n, cls = x.shape[1], []
        for i in range(start, len(blocks)):
            if i >= self.depth and prompts and self.tokens:
                p = self.prompts[i - self.depth].to(x.dtype)
                x = torch.cat([x[:, :n], p.unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
            x = blocks[i](x, attn_mask=None)
            if every_block or i >= self.depth:
                cls.append(x[:, 0])
        return x[:, :n], cls

    def project(self, x):
        """Final tokens [B,1+M,W] → image feature [B,E] (open_clip's pooling, ln_post and projection)."""
        v = self.visual
        if v.final_ln_after_pool:
            pooled = self._global_pool(x)
            pooled = v.ln_post(pooled)
        else:
            pooled = self._global_pool(v.ln_post(x))
        return pooled @ v.proj if v.proj is not None else pooled

    def _global_pool(self, x):
        pool = self.visual.pool_type
        return x[:, 1:].mean(dim=1) if pool == "avg" else x[:, 0] if pool == "tok" else x

    def forward(self, x, prompts=True):
        """Normalised images → (image feature [B,E], list of CLS tokens [B,W] after each prompted block)."""
        tokens, cls = self.run_blocks(self.embed(x), prompts=prompts)
        return self.project(tokens), cls

    def cls_per_block(self, x, prompts=True):
        """Normalised images → CLS token after every block (all L, prompted or not) [L,B,W]."""
        return torch.stack(self.run_blocks(self.embed(x), prompts=prompts, every_block=True)[1])

    def split(self, x):
        """Tokens after the unprompted blocks, shared by the prompted and the frozen pass."""
        x = self.embed(x)
        for blk in self.visual.transformer.resblocks[: self.depth]:
            x = blk(x, attn_mask=None)
        return x


def count_prompt_parameters(prompted):
    return sum(p.numel() for p in prompted.parameters() if p.requires_grad)
