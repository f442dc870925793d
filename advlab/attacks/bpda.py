"""BPDA, Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner 2018).

A defense whose forward pass is not differentiable (quantisation, a latent search, a sampler) hides
its gradient; BPDA runs the real forward pass but backpropagates through a surrogate: the identity
(the purifier's output is close to its input) or a differentiable approximation `backward_fn`.

    purified = BPDA(defense.purify)                  # identity backward
    model = bpda_model(defense.purify, defense.classifier)
    x_adv = PGD(eps=0.1, alpha=0.01, steps=40)(model, x, y)   # any attack, end to end
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn


class _Substitute(torch.autograd.Function):
    """Returns `value` exactly; its gradient goes to `surrogate` unchanged (straight-through)."""

    @staticmethod
    def forward(ctx, surrogate: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class BPDA(nn.Module):
    """forward(x) = forward_fn(x); backward = identity, or the gradient of backward_fn at x.

    forward_fn runs without building a graph (it may be non-differentiable). With backward_fn,
    backward_fn(x) is evaluated with autograd and the upstream gradient flows through it
    (straight-through: the output equals forward_fn(x) exactly, its gradient is backward_fn's).
    Modules among forward_fn / backward_fn (or owning them, for bound methods such as
    `defense.purify`) are registered as submodules, so .eval()/.train()/.to() reach them.
    """

    def __init__(self, forward_fn: Callable[[torch.Tensor], torch.Tensor],
                 backward_fn: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        if not callable(forward_fn):
            raise ValueError(f"forward_fn: must be callable (a module or function), got {type(forward_fn).__name__}")
        if backward_fn is not None and not callable(backward_fn):
            raise ValueError(f"backward_fn: must be callable or None, got {type(backward_fn).__name__}")
        self.forward_fn, self.backward_fn = forward_fn, backward_fn
        for name, fn in (("forward_owner", forward_fn), ("backward_owner", backward_fn)):
            owner = getattr(fn, "__self__", None)  # a bound method of a module
            if isinstance(owner, nn.Module) and not isinstance(fn, nn.Module):
                self.add_module(name, owner)
        self.training = False   # the wrapper itself behaves the same in both modes; the modules it wraps keep theirs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            value = self.forward_fn(x)
        if not torch.is_grad_enabled() or not x.requires_grad:
            return value
        surrogate = x if self.backward_fn is None else self.backward_fn(x)
        if surrogate.shape != value.shape:
            which = "forward_fn" if self.backward_fn is None else "backward_fn"
            raise ValueError(f"{which}: the identity/approximation has shape {tuple(surrogate.shape)} but "
                             f"forward_fn returns {tuple(value.shape)}; "
                             + ("pass a backward_fn with forward_fn's output shape" if self.backward_fn is None
                                else "backward_fn must return forward_fn's shape"))
        return _Substitute.apply(surrogate, value.to(surrogate.dtype))

    def extra_repr(self) -> str:
        name = lambda f: getattr(f, "__qualname__", type(f).__name__)  # noqa: E731
        return f"forward_fn={name(self.forward_fn)}, backward_fn={'identity' if self.backward_fn is None else name(self.backward_fn)}"


def bpda_model(purify: Callable[[torch.Tensor], torch.Tensor], classifier: nn.Module,
               backward_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> nn.Sequential:
    """nn.Sequential(BPDA(purify, backward_fn), classifier): images -> logits, attackable end to end."""
    if not callable(classifier):
        raise ValueError(f"classifier: must be a module mapping images to logits, got {type(classifier).__name__}")
    if not isinstance(classifier, nn.Module):
        classifier = _Lambda(classifier)
    model = nn.Sequential(BPDA(purify, backward_fn), classifier)
    model.training = False   # a container: its own flag only; the purifier and the classifier keep theirs
    return model


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.training = False

    def forward(self, x):
        return self.fn(x)
