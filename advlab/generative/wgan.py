"""A DCGAN-style generator and critic for 28x28 grey images, trained with WGAN-GP.

    G, D, metrics = train_wgan_gp(WGANConfig(iters=20000))
    x = G(torch.randn(16, 128) / 128 ** 0.5)       # (16, 1, 28, 28) in [0, 1]

WGAN-GP (Gulrajani et al. 2017) trains the critic D to estimate the Wasserstein-1 distance between
the data and G's samples, max_D E[D(x_real)] - E[D(G(z))], keeping D 1-Lipschitz softly with the
gradient penalty lambda * E[(||grad_x D(x_hat)||_2 - 1)^2] at random interpolates x_hat of real and
fake images; G minimises -E[D(G(z))]. The critic takes n_critic steps per generator step. Paper
settings, used here: lambda = 10, n_critic = 5, Adam(lr 1e-4, betas (0.5, 0.9)). The critic has
no batch normalisation (the penalty is per example); the generator does.

Defense-GAN (advlab.defenses.defense_gan) projects inputs on the range of this generator; its
zoo entry `fmnist/wgan-gp` stores the generator only. Train it with
`advlab train fmnist/wgan-gp --profile full` (GPU recommended; `--profile quick` is a smoke run).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

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


@dataclass
class WGANConfig:
    dataset: str = "fashion_mnist"
    latent_dim: int = 128
    width: int = 64
    iters: int = 20000            # generator steps (each after n_critic critic steps)
    batch_size: int = 64
    n_critic: int = 5
    gp_lambda: float = 10.0
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.9
    n_train: int | None = None    # None: the whole training split
    seed: int = 0
    device: str = "auto"
    amp: bool = True              # bf16 autocast on CUDA (the penalty stays float32); ignored on CPU
    log_every: int = 100          # iterations between history records
    ckpt_every: int = 500         # iterations between checkpoints
    eval_n: int = 256             # test images for the final reconstruction metric
    eval_steps: int = 100         # latent-search steps of that metric
    eval_restarts: int = 4        # restarts of that metric


def check_config(cfg: WGANConfig) -> None:
    for name in ("latent_dim", "width", "iters", "batch_size", "n_critic", "log_every", "ckpt_every",
                 "eval_n", "eval_steps", "eval_restarts"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: must be a positive int, got {v!r}")
    for name in ("lr", "gp_lambda"):
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name}: must be a finite number >= 0, got {v!r}")


def train_wgan_gp(cfg: WGANConfig, checkpoint: str | Path | None = None, progress: bool = True
                  ) -> tuple[Generator, Critic, dict]:
    """Train a generator and critic with WGAN-GP; returns (G, D, metrics), both in eval mode.

    All random draws (batches, latents, interpolation weights) come from one CPU generator seeded
    by cfg.seed; a checkpoint (every cfg.ckpt_every iterations) stores it with the weights and both
    optimisers, so a resumed run continues exactly where it stopped. metrics["history"] holds the
    critic's Wasserstein estimate E[D(real)] - E[D(fake)] and the penalty every cfg.log_every steps;
    metrics["recon_mse"] is the mean squared error per pixel of the best of cfg.eval_restarts
    latent searches (cfg.eval_steps steps) on cfg.eval_n test images: how well G's range covers them.
    """
    from advlab import data
    from advlab.train import iteration_run, train_iterations
    check_config(cfg)
    device, use_amp, x_train, g = iteration_run(cfg)
    channels = data.info(cfg.dataset).shape[0]
    G = Generator(cfg.latent_dim, cfg.width, channels).to(device)
    D = Critic(cfg.width, channels).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp)  # noqa: E731
    G.train(), D.train()

    def latents() -> torch.Tensor:
        return torch.randn(cfg.batch_size, cfg.latent_dim, generator=g).to(device) / math.sqrt(cfg.latent_dim)

    def step() -> dict:
        for _ in range(cfg.n_critic):                                  # critic: max E[D(real)] - E[D(fake)]
            real = x_train[torch.randint(0, len(x_train), (cfg.batch_size,), generator=g).to(device)]
            z = latents()
            with torch.no_grad(), autocast():
                fake = G(z)
            with autocast():
                w_est = D(real).float().mean() - D(fake).float().mean()
            gp = gradient_penalty(D, real, fake, g)
            loss_d = -w_est + cfg.gp_lambda * gp
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        z = latents()
        with autocast():                                               # generator: min -E[D(G(z))]
            loss_g = -D(G(z)).float().mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        return {"w_dist": w_est.item(), "gp": gp.item(), "g_loss": loss_g.item()}

    history, seconds = train_iterations(cfg, step, g, dict(G=G, D=D, opt_g=opt_g, opt_d=opt_d), checkpoint,
                                        "WGAN-GP", {"w": "{w_dist:.3f}", "gp": "{gp:.3f}"}, progress)
    G.eval(), D.eval()
    metrics = {"iters": cfg.iters, "w_dist": history[-1]["w_dist"] if history else None,
               "train_seconds": round(seconds, 1)}
    metrics |= reconstruction_metric(G, cfg)
    metrics["history"] = history
    return G, D, metrics


@torch.no_grad()
def reconstruction_metric(G: Generator, cfg: WGANConfig) -> dict:
    """Mean per-pixel squared error of Defense-GAN's projection of cfg.eval_n test images on G's range."""
    from advlab import data
    from advlab.defenses.defense_gan import SEARCH_LR, latent_search
    x, _ = data.batch(cfg.dataset, "test", n=cfg.eval_n, seed=cfg.seed)
    dev = next(G.parameters()).device
    res = latent_search(G, x.to(dev), steps=cfg.eval_steps, restarts=cfg.eval_restarts,
                        generator=torch.Generator().manual_seed(cfg.seed))
    return {"recon_mse": round(res.err.mean().item(), 6),
            "recon_setting": f"latent search L={cfg.eval_steps}, R={cfg.eval_restarts}, lr={SEARCH_LR} on "
                             f"{cfg.eval_n} test images"}


def train_zoo_entry(entry, args) -> int:
    """`advlab train fmnist/wgan-gp --profile quick|full [--out DIR]`: train and save the generator.

    The checkpoint goes to DIR/checkpoints when --out is given, else build/checkpoints; it is keyed by
    the exact config, so a run only ever resumes itself.
    """
    from advlab.cli import train_and_save
    return train_and_save(entry, args, WGANConfig,
                          lambda cfg, checkpoint: train_wgan_gp(cfg, checkpoint=checkpoint)[::2],
                          summary=("w_dist", "recon_mse", "recon_setting"))
