"""Metrics and the evaluation stage."""
