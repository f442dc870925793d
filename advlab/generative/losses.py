"""Losses that several generative models share.

  kl_divergence     KL(N(mu, diag exp(logvar)) || N(0, I)) per example (the VAE prior term)
  gradient_penalty  WGAN-GP's (||grad D(x_hat)|| - 1)^2 at random interpolates (Gulrajani et al. 2017)
"""
from __future__ import annotations

import torch
import torch.nn as nn


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per example, (N,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """E[(||grad D(x_hat)||_2 - 1)^2], x_hat = t * real + (1 - t) * fake, t ~ U[0, 1] per example.

    Computed in float32 (outside any autocast): the penalty differentiates a gradient norm.
    """
    t = torch.rand(len(real), 1, 1, 1, generator=generator).to(real.device)
    x_hat = (t * real.float() + (1 - t) * fake.float()).requires_grad_(True)
    with torch.autocast(real.device.type, enabled=False):
        score = critic(x_hat).float()
    grad, = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
