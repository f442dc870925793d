"""A defense that masks its gradient, for lecture 10: bit-depth reduction in front of a classifier.

Bit-depth reduction ("feature squeezing", Xu, Evans & Qi 2018) rounds every pixel to one of 2**bits
levels. Rounding is piecewise constant, so autograd returns a gradient of exactly zero almost
everywhere: a gradient attack run on `squeezed_classifier(clf)` makes no progress and the defense
looks robust. It is not. Square (gradient-free) finds adversarial images, and BPDA with the identity
backward (`attacks.bpda_model(squeeze, clf)`, Athalye, Carlini & Wagner 2018) breaks it as easily
as the undefended classifier. `input_gradient_stats` is the check that gives the masking away.

    from advlab.evaluation.masking import BitDepthSqueeze, squeezed_classifier, input_gradient_stats
    masked = squeezed_classifier(zoo.load("fmnist/cnn"), bits=3)      # images -> logits
    input_gradient_stats(masked, x, y)["zero"]                        # every image: gradient 0
"""
from __future__ import annotations

import torch
import torch.nn as nn


class BitDepthSqueeze(nn.Module):
    """x -> round(x * (2**bits - 1)) / (2**bits - 1): images in [0, 1] to 2**bits grey levels.

    Non-differentiable in effect: its autograd gradient is zero wherever it is defined."""

    def __init__(self, bits: int = 3):
        super().__init__()
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
            raise ValueError(f"bits: must be an integer in 1..8, got {bits!r}")
        self.bits = bits
        self.training = False   # no train-time behaviour

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = 2 ** self.bits - 1
        return torch.round(x * levels) / levels      # same shape and dtype as x

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


def squeezed_classifier(classifier: nn.Module, bits: int = 3) -> nn.Sequential:
    """nn.Sequential(BitDepthSqueeze(bits), classifier), in eval mode: the masked defense of lecture 10."""
    if not isinstance(classifier, nn.Module):
        raise ValueError(f"classifier: must be an nn.Module mapping images to logits, got {type(classifier).__name__}")
    return nn.Sequential(BitDepthSqueeze(bits), classifier).eval()


def input_gradient_stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Per-image input gradients of the cross-entropy at x (N images): how many are exactly zero,
    non-finite or exploding (L2 norm > 1e4; a non-finite one counts too), and the median and largest
    finite L2 norms. Zero gradients on most images, with accuracy that does not fall under attack, is
    the signature of gradient masking."""
    from advlab.attacks.base import input_grad
    with torch.enable_grad():
        g, _, _ = input_grad(model, x, y)
    g = g.flatten(1).double()                        # (N, D)
    finite = torch.isfinite(g).all(1)
    norms = g.norm(dim=1)
    return {"n": len(x), "zero": int((g.abs().amax(1) == 0).sum()), "nonfinite": int((~finite).sum()),
            "exploding": int((norms[finite] > 1e4).sum()) + int((~finite).sum()),
            "median_l2": float(norms[finite].median()) if bool(finite.any()) else float("nan"),
            "max_l2": float(norms[finite].max()) if bool(finite.any()) else float("nan")}
