"""Predictions, accuracy and robust accuracy: the measurements every other module builds on.

A robust accuracy is never reported without the attack that produced it: `robust_accuracy`
returns a float, `robust_report` a dict that names the attack and its settings.

Inputs are checked once against the model (`validate.check_fit`): images that do not fit it
(channels, size), labels that are not integers below the model's number of outputs, and an empty
batch (whose accuracy is undefined) raise ValueError naming the argument. Documented conversions:
integer labels of any dtype become int64, float64 images meet a float32 model, x moves to the
model's device.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn as nn

from advlab.validate import check_fit, check_model, check_positive, eval_mode


def _mode(model):
    """eval_mode for a module (every module's flag restored afterwards); nothing for a plain callable."""
    return eval_mode(model) if isinstance(model, nn.Module) else nullcontext()


def _logits(model, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not torch.is_tensor(out) or out.dim() != 2 or len(out) != len(x):
        raise ValueError(f"model: expected logits of shape ({len(x)}, num_classes) for {len(x)} images, got "
                         f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}")
    return out


def _check_label_range(y: torch.Tensor, num_classes: int) -> None:
    if len(y) and int(y.max()) >= num_classes:
        raise ValueError(f"y: labels must lie in [0, {num_classes}): the model has {num_classes} outputs, "
                         f"got labels up to {int(y.max())}")


def _prepare(model, x, y, batch_size):
    """The checks every accuracy shares; returns (x, y) converted for the model."""
    check_model(model)
    check_positive(batch_size, "batch_size", integer=True)
    x, y = check_fit(model, x, y)
    if len(x) == 0:
        raise ValueError("x: the batch is empty (0 images); an accuracy over no images is undefined")
    return x, y


def _check_attack(attack) -> None:
    if not callable(attack):
        raise ValueError(f"attack: expected an attack callable atk(model, x, y) -> x_adv, got "
                         f"{type(attack).__name__} {attack!r}")


def _adversarial(model, x, y, attack) -> torch.Tensor:
    """attack(model, x, y) after checking y against the model's outputs; its result must fit x."""
    with torch.no_grad(), _mode(model):
        _check_label_range(y, _logits(model, x[:1]).shape[1])
    x_adv = attack(model, x, y)
    if not torch.is_tensor(x_adv) or x_adv.shape != x.shape:
        raise ValueError(f"attack: {attack!r} returned "
                         f"{'shape ' + str(tuple(x_adv.shape)) if torch.is_tensor(x_adv) else type(x_adv).__name__}"
                         f" for x of shape {tuple(x.shape)}; an attack returns one image per input")
    return x_adv


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted labels of x, computed in chunks of batch_size (the model's train/eval mode is left as it is)."""
    check_model(model)
    check_positive(batch_size, "batch_size", integer=True)
    x, _ = check_fit(model, x)
    out = [_logits(model, x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=x.device)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Fraction of x classified as y, the model run in eval mode (every module's own train flag is
    restored afterwards). ValueError naming `x` for an empty batch, `y` for labels >= the model's
    number of outputs."""
    x, y = _prepare(model, x, y, batch_size)
    preds = []
    with torch.no_grad(), _mode(model):
        for i in range(0, len(x), batch_size):
            logits = _logits(model, x[i:i + batch_size])
            if i == 0:
                _check_label_range(y, logits.shape[1])
            preds.append(logits.argmax(1))
    return (torch.cat(preds) == y).float().mean().item()


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack, batch_size: int = 500) -> float:
    """Accuracy of model on attack(model, x, y)."""
    _check_attack(attack)
    x, y = _prepare(model, x, y, batch_size)
    return accuracy(model, _adversarial(model, x, y, attack), y, batch_size)


def robust_report(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack, batch_size: int = 500) -> dict:
    """Clean and robust accuracy together with the attack's name and settings."""
    _check_attack(attack)
    x, y = _prepare(model, x, y, batch_size)
    x_adv = _adversarial(model, x, y, attack)
    return {"attack": repr(attack), "n": len(x), "clean_acc": accuracy(model, x, y, batch_size),
            "robust_acc": accuracy(model, x_adv, y, batch_size)}


Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> list[float]:
    """Wilson score interval [lo, hi] of a proportion k / n (95% by default)."""
    import math
    if n == 0:
        return [0.0, 1.0]
    p, d = k / n, 1 + z * z / n
    c, h = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [round(max(0.0, c - h), 6), round(min(1.0, c + h), 6)]


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value for two models judged on the same images: under the null hypothesis
    that both are equally robust, each of the a_only + b_only discordant images (robust under one model only)
    is a fair coin, so the smaller count is Binomial(a_only + b_only, 1/2); the p-value doubles its tail.
    An unpaired comparison of two intervals wastes the pairing: the images both keep or both lose say nothing
    about which model is better."""
    import math
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
