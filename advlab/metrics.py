"""Predictions, accuracy and robust accuracy: the measurements every other module builds on.

A robust accuracy is never reported without the attack that produced it: `robust_accuracy`
returns a float, `robust_report` a dict that names the attack and its settings.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from advlab.validate import check_images, check_labels


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted labels of x, computed in chunks of batch_size."""
    check_images(x)
    out = [model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=x.device)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Fraction of x classified as y (model put in eval mode for the call, then restored)."""
    check_labels(y, len(x))
    was_training = model.training
    model.eval()
    try:
        return (predict(model, x, batch_size) == y.to(x.device)).float().mean().item()
    finally:
        model.train(was_training)


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack, batch_size: int = 500) -> float:
    """Accuracy of model on attack(model, x, y)."""
    return accuracy(model, attack(model, x, y), y, batch_size)


def robust_report(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack, batch_size: int = 500) -> dict:
    """Clean and robust accuracy together with the attack's name and settings."""
    x_adv = attack(model, x, y)
    return {"attack": repr(attack), "n": len(x), "clean_acc": accuracy(model, x, y, batch_size),
            "robust_acc": accuracy(model, x_adv, y, batch_size)}
