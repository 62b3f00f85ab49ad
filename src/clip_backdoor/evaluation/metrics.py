"""CA / ASR / PA. ASR and PA exclude images whose true class is the target (CleanCLIP's convention)."""

import torch


def _as_tensor(x):
    return torch.as_tensor(x).long().flatten()


def clean_accuracy(pred, labels) -> float:
    pred, labels = _as_tensor(pred), _as_tensor(labels)
    if len(labels) == 0:
        raise ValueError("clean_accuracy: no samples")
    return (pred == labels).float().mean().item()


def _non_target(labels, target):
    keep = labels != int(target)
    if not keep.any():
        raise ValueError("no test image outside the target class")
    return keep


def attack_success_rate(pred, labels, target) -> float:
    """Share of triggered non-target-class images predicted as the target."""
    pred, labels = _as_tensor(pred), _as_tensor(labels)
    keep = _non_target(labels, target)
    return (pred[keep] == int(target)).float().mean().item()


def poisoned_accuracy(pred, labels, target) -> float:
    """Accuracy on triggered non-target-class images against their true labels."""
    pred, labels = _as_tensor(pred), _as_tensor(labels)
    keep = _non_target(labels, target)
    return (pred[keep] == labels[keep]).float().mean().item()
