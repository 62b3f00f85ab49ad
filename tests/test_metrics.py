import pytest
import torch

from clip_backdoor.evaluation.metrics import attack_success_rate, clean_accuracy, poisoned_accuracy


def test_clean_accuracy():
    assert clean_accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75


def test_asr_excludes_target_class_images():
    labels = torch.tensor([0, 1, 2, 3, 3])
    pred = torch.tensor([3, 3, 2, 3, 3])
    # target 3: the two target-class images are excluded; 2 of the 3 others go to the target
    assert attack_success_rate(pred, labels, 3) == pytest.approx(2 / 3)
    assert poisoned_accuracy(pred, labels, 3) == pytest.approx(1 / 3)


def test_metrics_refuse_empty_inputs():
    with pytest.raises(ValueError):
        clean_accuracy([], [])
    with pytest.raises(ValueError):
        attack_success_rate([1, 1], [1, 1], 1)
