"""Building blocks that several generative purifiers share.

  Generator   the DCGAN-layout decoder z (N, latent_dim) -> images (N, C, 28, 28) in [0, 1]: Defense-GAN's
              generator, the VAE-GAN's decoder and both LQ-VAE decoders are instances of it.
  make_ema    an exponential moving average of a model's weights (torch's AveragedModel): the HVAE and the
              consistency model save it.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


class Generator(nn.Module):
    """z (N, latent_dim) -> images (N, C, 28, 28) in [0, 1] (sigmoid output).

    Linear -> (2w, 7, 7) -> transposed conv -> (w, 14, 14) -> transposed conv -> (C, 28, 28),
    batch norm and ReLU in between (the DCGAN layout). w = width; ~1.3M parameters at w = 64.
    Latents are drawn as N(0, I / latent_dim) by Defense-GAN (see `sample_latents`).
    """

    def __init__(self, latent_dim: int = 128, width: int = 64, channels: int = 1):
        super().__init__()
        for name, v in (("latent_dim", latent_dim), ("width", width), ("channels", channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: must be a positive int, got {v!r}")
        self.latent_dim, self.width, self.channels = latent_dim, width, channels
        self.fc = nn.Sequential(nn.Linear(latent_dim, 2 * width * 7 * 7, bias=False),
                                nn.BatchNorm1d(2 * width * 7 * 7), nn.ReLU(inplace=True))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False),   # (w, 14, 14)
            nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1),                # (C, 28, 28)
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z: expected latents of shape (N, {self.latent_dim}), got {tuple(z.shape)}")
        h = self.fc(z).view(len(z), 2 * self.width, 7, 7)
        return self.net(h)

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n latents from N(0, I / latent_dim) (Defense-GAN's prior), on the generator's device."""
        dev = next(self.parameters()).device
        return (torch.randn(n, self.latent_dim, generator=generator) / math.sqrt(self.latent_dim)).to(dev)


def make_ema(model: nn.Module, decay: float):
    """An exponential moving average of `model`'s weights and buffers (torch's AveragedModel)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
