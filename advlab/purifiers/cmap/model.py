"""A small consistency model for 28x28 grey images: the one-step generator whose latents CMAP purification
(Zhang, Yang, Luo, Chen, Wang, Liu, Han & Tan, "Adversarial Purification by Consistency-aware Latent Space
Optimization on Data Manifolds") optimises. Trained here from scratch by consistency training
(Song, Dhariwal, Chen & Sutskever; the improved recipe of Song & Dhariwal: advlab.purifiers.cmap.train;
zoo `fmnist/consistency`).

    model = ConsistencyModel()                       # UNet of about 1.5M parameters (width 32)
    z = model.draw_latents(16, generator=g)          # (16, 1, 28, 28) ~ N(0, T^2 I), T = SIGMA_MAX = 80
    x = model.generate(z)                            # one step: (16, 1, 28, 28) in [0, 1]
    x = model.sample(16, sigmas=(80.0, 0.8), generator=g)   # two steps

The consistency function (EDM parameterisation, Karras et al. 2022; Song et al. 2023), on images scaled
to [-1, 1]:
    f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))
    c_skip = s_d^2 / ((sigma - sigma_min)^2 + s_d^2)      c_out = (sigma - sigma_min) s_d / sqrt(sigma^2 + s_d^2)
    c_in = 1 / sqrt(sigma^2 + s_d^2)                       c_noise = ln(sigma) / 4
with s_d = SIGMA_DATA = 0.5 and sigma in [SIGMA_MIN, SIGMA_MAX] = [0.002, 80], so f(x, sigma_min) = x
exactly (the boundary condition). F is a UNet (shapes for width w):
    x (N, 1, 28, 28) -> conv (w, 28, 28) -> ResBlock -> down (2w, 14, 14) -> ResBlock -> down (2w, 7, 7)
    -> ResBlock x 2 -> up with skips -> (w, 28, 28) -> GroupNorm, SiLU, conv (zero-initialised) -> (1, 28, 28)
every ResBlock taking the noise embedding (sinusoidal features of c_noise, then an MLP).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from advlab.validate import check_int

SIGMA_MIN, SIGMA_MAX, SIGMA_DATA, RHO = 0.002, 80.0, 0.5, 7.0


def karras_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO) -> torch.Tensor:
    """The n noise levels of Karras et al., ascending: (sigma_min^(1/rho) + i/(n-1) (sigma_max^(1/rho) -
    sigma_min^(1/rho)))^rho for i = 0..n-1, float64 (n,)."""
    check_int(n, "n", minimum=2)
    i = torch.arange(n, dtype=torch.float64) / (n - 1)
    return (sigma_min ** (1 / rho) + i * (sigma_max ** (1 / rho) - sigma_min ** (1 / rho))) ** rho


def scalings(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in) of the consistency function at sigma (any shape)."""
    c_skip = SIGMA_DATA ** 2 / ((sigma - SIGMA_MIN) ** 2 + SIGMA_DATA ** 2)
    c_out = (sigma - SIGMA_MIN) * SIGMA_DATA / torch.sqrt(sigma ** 2 + SIGMA_DATA ** 2)
    c_in = 1 / torch.sqrt(sigma ** 2 + SIGMA_DATA ** 2)
    return c_skip, c_out, c_in


class ResBlock(nn.Module):
    """GroupNorm, SiLU, conv; + the embedding's projection; GroupNorm, SiLU, dropout, conv (zero-initialised);
    a 1x1 conv on the skip when the channels change."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(min(8, c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(min(8, c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class UNet(nn.Module):
    """F of the consistency function: (x (N, C, 28, 28), c_noise (N,)) -> (N, C, 28, 28)."""

    def __init__(self, channels: int = 1, width: int = 32, emb_dim: int = 128, dropout: float = 0.0):
        super().__init__()
        w, w2 = width, 2 * width
        self.freqs = nn.Parameter(torch.exp(-math.log(1e4) * torch.arange(emb_dim // 2) / (emb_dim // 2)),
                                  requires_grad=False)
        self.mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(channels, w, 3, padding=1)
        self.enc28 = ResBlock(w, w, emb_dim, dropout)                         # (w, 28, 28)
        self.down14 = nn.Conv2d(w, w, 3, stride=2, padding=1)
        self.enc14 = ResBlock(w, w2, emb_dim, dropout)                        # (2w, 14, 14)
        self.down7 = nn.Conv2d(w2, w2, 3, stride=2, padding=1)
        self.enc7 = ResBlock(w2, w2, emb_dim, dropout)                        # (2w, 7, 7)
        self.mid = nn.ModuleList([ResBlock(w2, w2, emb_dim, dropout) for _ in range(2)])
        self.dec7 = ResBlock(2 * w2, w2, emb_dim, dropout)                    # cat skip: (4w, 7, 7)
        self.dec14 = ResBlock(2 * w2, w2, emb_dim, dropout)                   # (4w, 14, 14)
        self.dec28 = ResBlock(w2 + w, w, emb_dim, dropout)                    # (3w, 28, 28)
        self.out = nn.Sequential(nn.GroupNorm(min(8, w), w), nn.SiLU(), nn.Conv2d(w, channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        a = c_noise.float()[:, None] * self.freqs[None] * 1000 / 4             # (N, emb/2)
        emb = self.mlp(torch.cat([a.sin(), a.cos()], 1))                        # (N, emb)
        h28 = self.enc28(self.conv_in(x), emb)
        h14 = self.enc14(self.down14(h28), emb)
        h = h7 = self.enc7(self.down7(h14), emb)
        for block in self.mid:
            h = block(h, emb)
        h = self.dec7(torch.cat([h, h7], 1), emb)
        h = self.dec14(torch.cat([F.interpolate(h, size=h14.shape[-2:], mode="nearest"), h14], 1), emb)
        h = self.dec28(torch.cat([F.interpolate(h, size=h28.shape[-2:], mode="nearest"), h28], 1), emb)
        return self.out(h)


class ConsistencyModel(nn.Module):
    """The consistency function f(x, sigma) of the module docstring, on images in [-1, 1]; generate/sample
    map latents to images in [0, 1]."""

    def __init__(self, channels: int = 1, width: int = 32, emb_dim: int = 128, dropout: float = 0.0):
        super().__init__()
        check_int(channels, "channels")
        check_int(width, "width", minimum=8)
        check_int(emb_dim, "emb_dim", minimum=4)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout: must be a number in [0, 1), got {dropout!r}")
        self.channels, self.width, self.emb_dim, self.dropout = channels, width, emb_dim, float(dropout)
        self.net = UNet(channels, width, emb_dim, dropout)
        self.latent_shape = (channels, 28, 28)
        self.sigma_max = SIGMA_MAX

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """f(x, sigma): x (N, C, 28, 28) noisy images in [-1, 1]-scale units, sigma a number or (N,) -> (N, C, 28, 28)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.dim() == 0:
            sigma = sigma.expand(len(x))
        c_skip, c_out, c_in = (c.view(-1, 1, 1, 1) for c in scalings(sigma))
        return c_skip * x + c_out * self.net(c_in * x, torch.log(sigma) / 4)

    def draw_latents(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """n latents z ~ N(0, T^2 I), T = sigma_max: (n, C, 28, 28), drawn on the CPU from `generator`."""
        check_int(n, "n")
        return (torch.randn(n, *self.latent_shape, generator=generator) * self.sigma_max).to(
            device or next(self.parameters()).device)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """The one-step generator G(z) = (f(z, T) + 1) / 2 clamped to [0, 1]; differentiable in z."""
        return ((self(z, self.sigma_max) + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def sample(self, n: int, sigmas=(SIGMA_MAX,), generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples by multistep consistency sampling over the descending noise levels `sigmas` (the first
        is T): x = f(T z, T); then for each next sigma, x = f(x + sqrt(sigma^2 - sigma_min^2) eps, sigma).
        Returns (n, C, 28, 28) in [0, 1]."""
        sigmas = [float(s) for s in sigmas]
        if not sigmas or sigmas[0] != self.sigma_max or any(b >= a for a, b in zip(sigmas, sigmas[1:])) \
                or sigmas[-1] <= SIGMA_MIN:
            raise ValueError(f"sigmas: expected descending noise levels starting at {self.sigma_max} and above "
                             f"{SIGMA_MIN}, got {sigmas}")
        x = self(self.draw_latents(n, generator), sigmas[0])
        for s in sigmas[1:]:
            eps = torch.randn(x.shape, generator=generator).to(x)
            x = self(x + math.sqrt(s ** 2 - SIGMA_MIN ** 2) * eps, s)
        return ((x + 1) / 2).clamp(0, 1)

    def extra_repr(self) -> str:
        return f"width={self.width}, emb_dim={self.emb_dim}, dropout={self.dropout}"


def build_consistency(channels: int = 1, width: int = 32, emb_dim: int = 128, dropout: float = 0.0) -> ConsistencyModel:
    """The zoo builder of `fmnist/consistency` (advlab.zoo.build calls it with the entry's arch_kwargs)."""
    return ConsistencyModel(channels, width, emb_dim, dropout)
