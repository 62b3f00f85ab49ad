"""Model library: open_clip loading and safe checkpoints, zero-shot heads, prompts."""
