"""The VAE-GAN of paper 002 (Agarwal et al.), after Larsen et al. 2016, for 28x28 grey images.

    model, metrics = train_vaegan(VAEGANConfig(iters=2000))
    mu, logvar = model.encode(x)                 # (N, 1, 28, 28) -> (N, latent_dim) twice
    x_rec = model.decode(mu)                     # (N, latent_dim) -> (N, 1, 28, 28) in [0, 1]
    score = model.discriminator(x_rec)           # (N,) logits of "real"

Three networks (Larsen et al. 2016, "Autoencoding beyond pixels using a learned similarity metric"):
  encoder        x -> q(z|x) = N(mu, diag(exp(logvar)))
  decoder        z -> x~ (the GAN generator; `advlab.generative.wgan.Generator`'s DCGAN layout)
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

Threat-model relevance. The purifier (advlab.defenses.vaegan) encodes and decodes an input, then
climbs the discriminator's "real" score: every part is differentiable, so an adaptive attacker
attacks it end to end (no BPDA needed), which is what paper 002 did not evaluate.
Train it with `advlab train fmnist/vaegan --profile full` (GPU recommended).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from advlab.generative.wgan import Generator


def _check_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name}: must be a positive int, got {v!r}")
    return v


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
            _check_int(name, v)
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


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per example, (N,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


@dataclass
class VAEGANConfig:
    dataset: str = "fashion_mnist"
    latent_dim: int = 128
    width: int = 32
    iters: int = 46875            # paper 002: 50 epochs of 60000 images at batch size 64
    batch_size: int = 64
    gamma: float = 100.0          # decoder: gamma * reconstruction + GAN
    kl_weight: float = 1.0
    pixel_weight: float = 1.0     # our addition (0: Larsen et al.'s objective)
    lr: float = 3e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_train: int | None = None    # None: the whole training split
    seed: int = 0
    device: str = "auto"
    amp: bool = True              # bf16 autocast on CUDA; ignored on CPU
    log_every: int = 100
    ckpt_every: int = 1000
    eval_n: int = 256             # test images of the final reconstruction metric


def check_config(cfg: VAEGANConfig) -> None:
    for name in ("latent_dim", "width", "iters", "batch_size", "log_every", "ckpt_every", "eval_n"):
        _check_int(name, getattr(cfg, name))
    for name in ("gamma", "kl_weight", "pixel_weight", "lr"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name}: must be a finite number >= 0, got {v!r}")


def make_optimizers(model: VAEGAN, cfg: VAEGANConfig) -> dict[str, torch.optim.Optimizer]:
    """One Adam per network: {"enc", "dec", "dis"}."""
    betas = (cfg.beta1, cfg.beta2)
    return {"enc": torch.optim.Adam(model.encoder.parameters(), lr=cfg.lr, betas=betas),
            "dec": torch.optim.Adam(model.decoder.parameters(), lr=cfg.lr, betas=betas),
            "dis": torch.optim.Adam(model.discriminator.parameters(), lr=cfg.lr, betas=betas)}


def train_step(model: VAEGAN, opts: dict, real: torch.Tensor, cfg: VAEGANConfig, generator: torch.Generator,
               use_amp: bool = False) -> dict[str, float]:
    """One step of the three networks on the batch `real` (N, C, 28, 28); returns the losses as floats.

    The discriminator steps first; encoder and decoder then see its updated features. Each network
    is updated with the gradient of its own loss only (torch.autograd.grad on its parameters).
    """
    E, Dec, D = model.encoder, model.decoder, model.discriminator
    dev, n = real.device, len(real)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp)
    eps = torch.randn(n, model.latent_dim, generator=generator).to(dev)
    z_p = torch.randn(n, model.latent_dim, generator=generator).to(dev)
    ones, zeros = torch.ones(n, device=dev), torch.zeros(n, device=dev)
    with autocast:
        mu, logvar = E(real)
        mu, logvar = mu.float(), logvar.float()
        x_rec = Dec(mu + (0.5 * logvar).exp() * eps)                                    # (N, C, 28, 28)
        x_p = Dec(z_p)
        # discriminator: real vs reconstructions and prior samples
        loss_dis = (F.binary_cross_entropy_with_logits(D(real).float(), ones)
                    + 0.5 * F.binary_cross_entropy_with_logits(D(x_rec.detach()).float(), zeros)
                    + 0.5 * F.binary_cross_entropy_with_logits(D(x_p.detach()).float(), zeros))
    opts["dis"].zero_grad(set_to_none=True)
    loss_dis.backward()
    opts["dis"].step()
    with autocast:
        f_real = D.features(real).float().detach()                                      # (N, 2w, 7, 7)
        llike = 0.5 * (D.features(x_rec).float() - f_real).pow(2).mean()
        pixel = (x_rec.float() - real).pow(2).mean()
        kl = kl_divergence(mu, logvar).mean() / real[0].numel()
        gan_dec = 0.5 * (F.binary_cross_entropy_with_logits(D(x_rec).float(), ones)
                         + F.binary_cross_entropy_with_logits(D(x_p).float(), ones))
    rec = llike + cfg.pixel_weight * pixel
    loss_enc = cfg.kl_weight * kl + rec
    loss_dec = cfg.gamma * rec + gan_dec
    enc_params, dec_params = list(E.parameters()), list(Dec.parameters())
    g_enc = torch.autograd.grad(loss_enc, enc_params, retain_graph=True)
    g_dec = torch.autograd.grad(loss_dec, dec_params)
    for params, grads, key in ((enc_params, g_enc, "enc"), (dec_params, g_dec, "dec")):
        opts[key].zero_grad(set_to_none=True)
        for p, g in zip(params, grads):
            p.grad = g
        opts[key].step()
    return {"dis": loss_dis.item(), "llike": llike.item(), "pixel": pixel.item(), "kl": kl.item(),
            "gan_dec": gan_dec.item(), "enc": loss_enc.item(), "dec": loss_dec.item()}


def train_vaegan(cfg: VAEGANConfig, checkpoint: str | Path | None = None, progress: bool = True
                 ) -> tuple[VAEGAN, dict]:
    """Train the VAE-GAN; returns (model in eval mode, metrics).

    All random draws (batches, posterior and prior noise) come from one CPU generator seeded by
    cfg.seed; a checkpoint (every cfg.ckpt_every iterations) stores it with the weights and the three
    optimisers, so a resumed run continues exactly where it stopped. metrics["history"] holds the
    mean losses every cfg.log_every iterations; metrics["recon_mse"] is the per-pixel squared error of
    Dec(mu(x)) on cfg.eval_n test images.
    """
    from advlab import data
    from advlab.train import iteration_run, train_iterations
    check_config(cfg)
    device, use_amp, x_train, g = iteration_run(cfg)
    channels = data.info(cfg.dataset).shape[0]
    model = VAEGAN(cfg.latent_dim, cfg.width, channels).to(device)
    opts = make_optimizers(model, cfg)
    model.train()

    def step() -> dict:
        real = x_train[torch.randint(0, len(x_train), (cfg.batch_size,), generator=g).to(device)]
        return train_step(model, opts, real, cfg, g, use_amp)

    states = dict(model=model) | {f"opt_{k}": o for k, o in opts.items()}
    history, seconds = train_iterations(cfg, step, g, states, checkpoint, "VAE-GAN",
                                        {"rec": "{pixel:.4f}", "dis": "{dis:.3f}"}, progress)
    model.eval()
    metrics = {"iters": cfg.iters, "train_seconds": round(seconds, 1)}
    metrics |= reconstruction_metric(model, cfg)
    metrics["history"] = history
    return model, metrics


@torch.no_grad()
def reconstruction_metric(model: VAEGAN, cfg: VAEGANConfig) -> dict:
    """Per-pixel squared error of Dec(mu(x)) and the mean "real" probability on cfg.eval_n test images."""
    from advlab import data
    x, _ = data.batch(cfg.dataset, "test", n=cfg.eval_n, seed=cfg.seed)
    x = x.to(next(model.parameters()).device)
    x_rec = model(x)
    return {"recon_mse": round((x_rec - x).pow(2).mean().item(), 6),
            "d_real_prob": round(torch.sigmoid(model.discriminator(x)).mean().item(), 4),
            "recon_setting": f"Dec(mu(x)) on {cfg.eval_n} test images"}


def train_zoo_entry(entry, args) -> int:
    """`advlab train fmnist/vaegan --profile quick|full [--out DIR]`: train and save the bundle.

    The checkpoint goes to DIR/checkpoints when --out is given, else build/checkpoints; it is keyed by
    the exact config, so a run only ever resumes itself.
    """
    from advlab.cli import train_and_save
    return train_and_save(entry, args, VAEGANConfig,
                          lambda cfg, checkpoint: train_vaegan(cfg, checkpoint=checkpoint),
                          summary=("recon_mse", "d_real_prob", "recon_setting"))
