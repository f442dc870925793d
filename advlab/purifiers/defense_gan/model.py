"""Defense-GAN's networks: the generator (the shared DCGAN decoder of advlab.generative.blocks) and
the WGAN-GP critic that trains it.

    G = build_generator(latent_dim=128, width=32)    # the zoo builder of fmnist/wgan-gp
    x = G(G.sample_latents(16))                      # (16, 1, 28, 28) in [0, 1]
"""
from __future__ import annotations

import torch
import torch.nn as nn

from advlab.generative.blocks import Generator


class Critic(nn.Module):
    """images (N, C, 28, 28) in [0, 1] -> scores (N,). Strided convs + LeakyReLU, no batch norm."""

    def __init__(self, width: int = 64, channels: int = 1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),       # (w, 14, 14)
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),  # (2w, 7, 7)
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(2 * x - 1).squeeze(1)


def build_generator(latent_dim: int = 128, width: int = 64, channels: int = 1) -> Generator:
    """The zoo builder of `fmnist/wgan-gp` (advlab.zoo.build calls it with the entry's arch_kwargs)."""
    return Generator(latent_dim, width, channels)
