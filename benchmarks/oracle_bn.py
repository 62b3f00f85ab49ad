"""The oracle with its BatchNorm layers (the conv stem) in eval mode during rectification, running
statistics kept (research variant for the sweep: PYTHONPATH=benchmarks python benchmarks/defense_sweep.py
oracle --module oracle_bn). It did not lift CA (benchmarks/defense_tuning/README.md, session 10)."""

import torch

from clip_backdoor.defenses import oracle as base
from clip_backdoor.defenses.oracle import INPUTS, PARAMS, classifier, fit  # noqa: F401

_orig = base.train_contrastive


def _patched(model, *args, **kwargs):
    cls_train = type(model).train

    def train(self, mode=True):
        cls_train(self, mode)
        if mode:
            for m in self.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    model.train = train.__get__(model)
    try:
        return _orig(model, *args, **kwargs)
    finally:
        del model.train


base.train_contrastive = _patched
