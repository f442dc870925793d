"""Training of Defense-GAN's generator with WGAN-GP (a DCGAN-style generator and critic, 28x28 grey images).

    G, D, metrics = train_wgan_gp(WGANConfig(iters=20000))
    x = G(torch.randn(16, 128) / 128 ** 0.5)       # (16, 1, 28, 28) in [0, 1]

WGAN-GP (Gulrajani et al. 2017) trains the critic D to estimate the Wasserstein-1 distance between
the data and G's samples, max_D E[D(x_real)] - E[D(G(z))], keeping D 1-Lipschitz softly with the
gradient penalty lambda * E[(||grad_x D(x_hat)||_2 - 1)^2] at random interpolates x_hat of real and
fake images; G minimises -E[D(G(z))]. The critic takes n_critic steps per generator step. Paper
settings, used here: lambda = 10, n_critic = 5, Adam(lr 1e-4, betas (0.5, 0.9)). The critic has
no batch normalisation (the penalty is per example); the generator does.

Defense-GAN (advlab.purifiers.defense_gan) projects inputs on the range of this generator; its
zoo entry `fmnist/wgan-gp` stores the generator only. Train it with
`advlab train fmnist/wgan-gp --profile full` (GPU recommended; `--profile quick` is a smoke run).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from advlab.generative.losses import gradient_penalty
from advlab.purifiers.defense_gan.model import Critic, Generator


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
    """ValueError naming the first field of the WGAN-GP config that is out of range."""
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
    from advlab.training.loop import iteration_run, train_iterations
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
    from advlab.generative.latent_search import SEARCH_LR, latent_search
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
    from advlab.training.zoo_entry import train_and_save
    return train_and_save(entry, args, WGANConfig,
                          lambda cfg, checkpoint: train_wgan_gp(cfg, checkpoint=checkpoint)[::2],
                          summary=("w_dist", "recon_mse", "recon_setting"))
