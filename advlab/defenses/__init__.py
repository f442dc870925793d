"""Defenses: adversarial training (lecture 03) and, from lecture 04 on, purifiers.

Every purifier is an nn.Module from images in [0, 1] to logits with .purify(x), .classifier,
.stochastic and Name.from_zoo(dataset, classifier=None) (DESIGN.md section 3).
"""
from __future__ import annotations

import importlib

_SUBMODULES = ("adversarial_training",)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"advlab.defenses.{name}")
    raise AttributeError(f"module 'advlab.defenses' has no attribute {name!r}")
