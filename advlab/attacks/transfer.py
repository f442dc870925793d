"""Transfer attack: craft on a substitute model, apply to the target (Papernot et al. 2017)."""
from __future__ import annotations

import torch
import torch.nn as nn

from advlab.validate import check_fit


class Transfer:
    """Black-box transfer attack: x_adv = attack(substitute, x, y); the target model is never queried.

    The threat model (eps, norm, targeted semantics) is that of the inner `attack`, which is a
    white-box attack on the `substitute` (e.g. a model trained on the same data).
    """

    def __init__(self, attack, substitute: nn.Module):
        if not callable(attack):
            raise ValueError(f"attack: must be an attack callable atk(model, x, y), got {type(attack).__name__}")
        if not callable(substitute):
            raise ValueError(f"substitute: must be a model mapping images to logits, got {type(substitute).__name__}")
        self.attack, self.substitute = attack, substitute

    eps = property(lambda self: getattr(self.attack, "eps", None))
    norm = property(lambda self: getattr(self.attack, "norm", None))
    targeted = property(lambda self: getattr(self.attack, "targeted", False))
    randomized = property(lambda self: getattr(self.attack, "randomized", False))

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not callable(model):
            raise ValueError(f"model: expected an nn.Module mapping images to logits, got {type(model).__name__}")
        check_fit(model, x, y)  # x must fit the target too (channels, size), although it is never queried
        return self.attack(self.substitute, x, y)

    def __repr__(self) -> str:
        sub = getattr(self.substitute, "name", None) or type(self.substitute).__name__
        return f"Transfer(attack={self.attack!r}, substitute={sub})"
