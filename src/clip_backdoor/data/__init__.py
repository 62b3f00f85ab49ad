"""Datasets: the embedded procedural world and the papers' dataset adapters."""
