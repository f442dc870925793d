"""Training of the LQ-VAE (Algorithm 1 of the LQ-VAE paper; the model and the losses are described in
advlab.purifiers.lqvae.model's docstring).

    model, metrics = train_lqvae(LQVAEConfig(iters=2000))
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from advlab.generative.losses import kl_divergence
from advlab.purifiers.lqvae.model import (PENALTIES, RELAXATIONS, LQVAEModel, _check_number,
                                          gradient_norm)
from advlab.validate import check_int


@dataclass
class LQVAEConfig:
    dataset: str = "fashion_mnist"
    latent_dim: int = 64
    width: int = 32
    levels: int = 2               # H: sign(z), one bit per latent coordinate
    span: float = 1.0             # H's levels lie evenly in [-span, span]
    relax: str = "soft"           # H~: "soft" (softmax over levels) or "straight-through"
    temperature: float = 0.5      # of the soft H~ (two levels: tanh(2 z / temperature))
    lipschitz_k: float = 1.0      # K of the penalty (||grad_x mu(x)||_2 - K)^2
    lipschitz_weight: float = 1.0  # 0 switches the penalty (and its double backward) off
    penalty: str = "projection"   # "projection" (one random latent direction) or "jacobian" (Frobenius)
    kl_weight: float = 0.1        # the paper's is 1; see the module docstring for why 0.1
    iters: int = 46875            # 50 epochs of 60000 images at batch size 64 (as fmnist/vaegan)
    batch_size: int = 64
    lr: float = 1e-3
    n_train: int | None = None    # None: the whole training split
    seed: int = 0
    device: str = "auto"
    amp: bool = True              # bf16 autocast of the decoders on CUDA (the encoder and penalty stay float32)
    log_every: int = 100
    ckpt_every: int = 1000
    eval_n: int = 256             # test images of the final reconstruction metric


def check_config(cfg: LQVAEConfig) -> None:
    """ValueError naming the first field of the LQ-VAE config that is out of range."""
    for name in ("latent_dim", "width", "iters", "batch_size", "log_every", "ckpt_every", "eval_n"):
        check_int(getattr(cfg, name), name)
    check_int(cfg.levels, "levels", minimum=2)
    for name in ("span", "temperature", "lr"):
        _check_number(name, getattr(cfg, name), positive=True)
    for name in ("lipschitz_k", "lipschitz_weight", "kl_weight"):
        _check_number(name, getattr(cfg, name))
    if cfg.relax not in RELAXATIONS:
        raise ValueError(f"relax: must be one of {RELAXATIONS}, got {cfg.relax!r}")
    if cfg.penalty not in PENALTIES:
        raise ValueError(f"penalty: must be one of {PENALTIES}, got {cfg.penalty!r}")


def compute_losses(model: LQVAEModel, real: torch.Tensor, cfg: LQVAEConfig, generator: torch.Generator,
                   use_amp: bool = False) -> dict[str, torch.Tensor]:
    """Algorithm 1's losses on the batch `real` (N, C, 28, 28), each averaged over the batch:
    "h" = L_h, "g" = L_g (summed squared errors per image), "kl", "lip" (the penalty), "grad_norm"
    (its gradient norm, for the logs) and "f" = L_h + kl_weight * kl + lipschitz_weight * lip.

    Random draws, in this order from `generator`: the posterior noise (N, d), then the penalty's
    directions. The encoder runs in float32 (the penalty differentiates its gradient); the decoders
    under bf16 autocast when use_amp.
    """
    dev, n = real.device, len(real)
    penalised = cfg.lipschitz_weight > 0
    x = real.detach().float().requires_grad_(penalised)                     # reused by the penalty
    mu, logvar = model.encoder(x)                                           # (N, d) twice
    eps = torch.randn(n, model.latent_dim, generator=generator).to(dev)
    z = mu + (0.5 * logvar).exp() * eps                                     # (N, d) ~ N(mu, sigma^2)
    if penalised:
        norm = gradient_norm(mu, x, cfg.penalty, generator)                 # (N,)
        lip = (norm - cfg.lipschitz_k) ** 2
    else:
        norm = lip = torch.zeros(n, device=dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
        x1 = model.h(model.quantiser.relaxed(z)).float()                    # h(H~(z)): reaches the encoder
        x2 = model.g(model.quantiser.hard(z.detach())).float()              # g(H(z)): does not
    loss_h = (x1 - real).pow(2).flatten(1).sum(1).mean()
    loss_g = (x2 - real).pow(2).flatten(1).sum(1).mean()
    kl = kl_divergence(mu, logvar).mean()
    loss_f = loss_h + cfg.kl_weight * kl + cfg.lipschitz_weight * lip.mean()
    return {"f": loss_f, "h": loss_h, "g": loss_g, "kl": kl, "lip": lip.mean(), "grad_norm": norm.detach().mean()}


def train_step(model: LQVAEModel, opt: torch.optim.Optimizer, real: torch.Tensor, cfg: LQVAEConfig,
               generator: torch.Generator, use_amp: bool = False) -> dict[str, float]:
    """One step of Algorithm 1 on `real`; returns the losses as floats.

    One backward pass of L_f + L_g: theta (encoder) gets grad L_f, psi (h) grad L_h, phi (g) grad L_g,
    because the parameter sets are disjoint and L_g sees the encoder only through the detached H(z).
    """
    losses = compute_losses(model, real, cfg, generator, use_amp)
    opt.zero_grad(set_to_none=True)
    (losses["f"] + losses["g"]).backward()
    opt.step()
    return {k: v.item() for k, v in losses.items()}


def train_lqvae(cfg: LQVAEConfig, checkpoint: str | Path | None = None, progress: bool = True
                ) -> tuple[LQVAEModel, dict]:
    """Train the LQ-VAE with Algorithm 1; returns (model in eval mode, metrics).

    All random draws (batches, posterior noise, penalty directions) come from one CPU generator seeded
    by cfg.seed; a checkpoint (every cfg.ckpt_every iterations) stores it with the weights and the
    optimiser, so a resumed run continues exactly where it stopped. metrics["history"] holds the mean
    losses every cfg.log_every iterations; `reconstruction_metric` adds the test-set errors.
    """
    from advlab import data
    from advlab.training.loop import iteration_run, train_iterations
    check_config(cfg)
    device, use_amp, x_train, g = iteration_run(cfg)
    channels = data.info(cfg.dataset).shape[0]
    model = LQVAEModel(cfg.latent_dim, cfg.width, channels, cfg.levels, cfg.span, cfg.relax,
                       cfg.temperature).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()

    def step() -> dict:
        real = x_train[torch.randint(0, len(x_train), (cfg.batch_size,), generator=g).to(device)]
        return train_step(model, opt, real, cfg, g, use_amp)

    history, seconds = train_iterations(cfg, step, g, dict(model=model, opt=opt), checkpoint, "LQ-VAE",
                                        {"g": "{g:.2f}", "kl": "{kl:.1f}", "grad": "{grad_norm:.2f}"}, progress)
    model.eval()
    metrics = {"iters": cfg.iters, "train_seconds": round(seconds, 1)}
    metrics |= reconstruction_metric(model, cfg)
    metrics["history"] = history
    return model, metrics


def reconstruction_metric(model: LQVAEModel, cfg: LQVAEConfig) -> dict:
    """On cfg.eval_n test images: per-pixel squared error of the purifier's g(H(mu(x))) ("recon_mse") and
    of the training path h(H~(mu(x))) ("recon_mse_h"), and the mean projected gradient norm of mu
    ("grad_norm", to compare with K)."""
    from advlab import data
    x, _ = data.batch(cfg.dataset, "test", n=cfg.eval_n, seed=cfg.seed)
    x = x.to(next(model.parameters()).device).requires_grad_(True)
    mu = model.encode(x)[0]
    norm = gradient_norm(mu, x, "projection", torch.Generator().manual_seed(cfg.seed), create_graph=False)
    with torch.no_grad():
        x_g, x_h = model.g(model.quantiser.hard(mu)), model.h(model.quantiser.relaxed(mu))
        return {"recon_mse": round((x_g - x).pow(2).mean().item(), 6),
                "recon_mse_h": round((x_h - x).pow(2).mean().item(), 6),
                "grad_norm": round(norm.mean().item(), 4),
                "recon_setting": f"g(H(mu(x))) and h(H~(mu(x))) on {cfg.eval_n} test images"}


def train_zoo_entry(entry, args) -> int:
    """`advlab train fmnist/lqvae --profile quick|full [--out DIR]`: train and save the bundle.

    The checkpoint goes to DIR/checkpoints when --out is given, else build/checkpoints; it is keyed by
    the exact config, so a run only ever resumes itself.
    """
    from advlab.training.zoo_entry import train_and_save
    return train_and_save(entry, args, LQVAEConfig,
                          lambda cfg, checkpoint: train_lqvae(cfg, checkpoint=checkpoint),
                          summary=("recon_mse", "recon_mse_h", "grad_norm", "recon_setting"))
