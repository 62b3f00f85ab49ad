"""clip-backdoor: backdoor attacks and defenses on CLIP under one reproducible protocol."""

__version__ = "0.1.0"
