"""The VAE-GAN of Agarwal, Verma & Momin, "Enhancing Adversarial Robustness through a Purification Network", after Larsen et al. 2016, for 28x28 grey images.

    model, metrics = train_vaegan(VAEGANConfig(iters=2000))
    mu, logvar = model.encode(x)                 # (N, 1, 28, 28) -> (N, latent_dim) twice
    x_rec = model.decode(mu)                     # (N, latent_dim) -> (N, 1, 28, 28) in [0, 1]
    score = model.discriminator(x_rec)           # (N,) logits of "real"

Three networks (Larsen et al. 2016, "Autoencoding beyond pixels using a learned similarity metric"):
  encoder        x -> q(z|x) = N(mu, diag(exp(logvar)))
  decoder        z -> x~ (the GAN generator; `advlab.generative.blocks.Generator`'s DCGAN layout)
  discriminator  x -> logit of "real"; its intermediate features Dis_l(x) give the reconstruction
                 loss, a learned similarity instead of a pixel-wise error.
Losses, per batch (x real, x~ = Dec(z), z ~ q(z|x), x_p = Dec(z_p), z_p ~ N(0, I)):
  L_prior   = KL(q(z|x) || N(0, I)) = 0.5 * sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j)
  L_llike   = 0.5 * mean (Dis_l(x~) - Dis_l(x))^2      (Gaussian log-likelihood in feature space)
  L_GAN     = BCE(Dis(x), real) + (BCE(Dis(x~), fake) + BCE(Dis(x_p), fake)) / 2
  encoder:       kl_weight * L_prior / (C*H*W) + L_llike + pixel_weight * L_pixel
  decoder:       gamma * (L_llike + pixel_weight * L_pixel) + L_GAN^dec  (non-saturating)
  discriminator: L_GAN
each with its own Adam optimiser, as in Larsen et al.'s Algorithm 1.

Settings. Paper 002 gives no architecture or loss weights; its only training number is "50 epochs"
(the full profile: 50 * 60000 / 64 = 46875 iterations at batch size 64). Our choices where it is
silent: latent size 128 (Larsen et al.'s and Defense-GAN's), width 32 (a small zoo file, fast CPU
purification), gamma = 100 (our losses are per-element means, so reconstruction errors are ~1e-2
while the GAN's cross-entropies are ~1; gamma = 100 puts them on the same scale and keeps
reconstruction first in the decoder's loss: the purifier must keep the class; with gamma = 10 a
short run's pixel error rose again once the discriminator got strong), kl_weight = 1 on the per-pixel scale, Adam lr 3e-4 (Larsen et al.'s RMSProp rate) with
betas (0.5, 0.999); and one addition to Larsen et al.: a pixel-wise mean squared error
(pixel_weight = 1) next to the feature loss, which stabilises the short trainings that fit our
budget (set pixel_weight = 0 for the pure VAE/GAN objective). All means are per element.

Threat-model relevance. The purifier (advlab.purifiers.vaegan) encodes and decodes an input, then
climbs the discriminator's "real" score: every part is differentiable, so an adaptive attacker
attacks it end to end (no BPDA needed), which the paper did not evaluate.
Train it with `advlab train fmnist/vaegan --profile full` (GPU recommended).
"""
from __future__ import annotations


import torch
import torch.nn as nn

from advlab.generative.blocks import Generator
from advlab.validate import check_int


class Encoder(nn.Module):
    """images (N, C, 28, 28) in [0, 1] -> (mu, logvar), each (N, latent_dim).

    Two strided convs (w, 14, 14) -> (2w, 7, 7) with batch norm and LeakyReLU, then a linear layer.
    """

    def __init__(self, latent_dim: int = 128, width: int = 32, channels: int = 1):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1, bias=False),              # (w, 14, 14)
            nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1, bias=False),             # (2w, 7, 7)
            nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, 2 * latent_dim),                 # (2 * latent_dim,)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(2 * x - 1)
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)


class Discriminator(nn.Module):
    """images (N, C, 28, 28) in [0, 1] -> logits of "real" (N,); `features(x)` is Dis_l(x) (N, 2w, 7, 7).

    No batch norm, so a score depends on its own image only (train and eval modes agree).
    """

    def __init__(self, width: int = 32, channels: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),       # (w, 14, 14)
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),      # (2w, 7, 7) = Dis_l
        )
        self.head = nn.Sequential(
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),  # (4w, 4, 4)
            nn.Flatten(), nn.Linear(4 * width * 4 * 4, 1),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(2 * x - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


class VAEGAN(nn.Module):
    """Encoder, decoder and discriminator in one module (the zoo stores one state_dict)."""

    def __init__(self, latent_dim: int = 128, width: int = 32, channels: int = 1):
        super().__init__()
        for name, v in (("latent_dim", latent_dim), ("width", width), ("channels", channels)):
            check_int(v, name)
        self.latent_dim, self.width, self.channels = latent_dim, width, channels
        self.encoder = Encoder(latent_dim, width, channels)
        self.decoder = Generator(latent_dim, width, channels)
        self.discriminator = Discriminator(width, channels)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction Dec(mu(x)), (N, C, 28, 28) in [0, 1]."""
        return self.decode(self.encode(x)[0])


def build_vaegan(latent_dim: int = 128, width: int = 32, channels: int = 1) -> VAEGAN:
    """The zoo builder of `fmnist/vaegan`."""
    return VAEGAN(latent_dim, width, channels)


from advlab.generative.losses import kl_divergence  # noqa: E402,F401 (part of the model's API)
