"""Argument checks shared by the whole library, and the one context manager that runs a model
in eval mode.

Every public function of advlab validates its inputs here, so that bad input raises one clear
`ValueError` naming the argument instead of a deep torch traceback. This module imports nothing
from advlab: every other module may import it.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn as nn

NORMS = ("linf", "l2")


def check_eps(eps, name: str = "eps", allow_none: bool = False) -> float | None:
    """eps must be finite and >= 0; minimal-perturbation attacks (CW, DeepFool) allow None = unbounded."""
    if eps is None and allow_none:
        return None
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or math.isnan(eps) or math.isinf(eps) or eps < 0:
        raise ValueError(f"{name}: must be a finite number >= 0, got {eps!r}")
    return float(eps)


def check_positive(v, name: str, integer: bool = False, minimum: float = 0.0, strict: bool = True):
    kind = int if integer else (int, float)
    if isinstance(v, bool) or not isinstance(v, kind) or (not integer and (math.isnan(v) or math.isinf(v))):
        raise ValueError(f"{name}: must be a{'n integer' if integer else ' finite number'}, got {v!r}")
    if (v <= minimum) if strict else (v < minimum):
        raise ValueError(f"{name}: must be {'>' if strict else '>='} {minimum}, got {v!r}")
    return v


def check_norm(norm, allowed=NORMS) -> str:
    if norm not in allowed:
        raise ValueError(f"norm: must be one of {allowed}, got {norm!r}")
    return norm


def check_images(x, name: str = "x", shape: tuple | None = None) -> None:
    """Raise ValueError (naming the argument) unless x is a float image batch in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name}: expected a batch of images of shape (N, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor in [0, 1], got dtype {x.dtype}")
    if x.numel() and bool(torch.isnan(x).any()):
        raise ValueError(f"{name}: contains NaN")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name}: images must lie in [0, 1]; got range "
                         f"[{x.min().item():.4g}, {x.max().item():.4g}]")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name}: expected images of shape {tuple(shape)}, got {tuple(x.shape[1:])}")


def check_labels(y, n: int, num_classes: int | None = None, name: str = "y") -> None:
    """Raise ValueError unless y holds n integer labels in [0, num_classes)."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of labels, got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name}: expected {n} labels of shape ({n},), got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"{name}: labels must be integers, got dtype {y.dtype}")
    if n and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        raise ValueError(f"{name}: labels must lie in [0, {num_classes}), got range "
                         f"[{y.min().item()}, {y.max().item()}]")


@contextmanager
def eval_mode(model: nn.Module):
    """Run the model in eval mode and restore every module's own train flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, f in flags:
            m.training = f
