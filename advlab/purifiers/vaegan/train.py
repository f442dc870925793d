"""Training of the VAE-GAN purifier's networks (Larsen et al.'s Algorithm 1; settings and losses in
advlab.purifiers.vaegan.model's docstring).

    model, metrics = train_vaegan(VAEGANConfig(iters=2000))
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from advlab.generative.losses import kl_divergence
from advlab.purifiers.vaegan.model import VAEGAN
from advlab.validate import check_int


@dataclass
class VAEGANConfig:
    dataset: str = "fashion_mnist"
    latent_dim: int = 128
    width: int = 32
    iters: int = 46875            # Agarwal et al.: 50 epochs of 60000 images at batch size 64
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
    """ValueError naming the first field of the VAE-GAN config that is out of range."""
    for name in ("latent_dim", "width", "iters", "batch_size", "log_every", "ckpt_every", "eval_n"):
        check_int(getattr(cfg, name), name)
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
    from advlab.training.loop import iteration_run, train_iterations
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
    from advlab.training.zoo_entry import train_and_save
    return train_and_save(entry, args, VAEGANConfig,
                          lambda cfg, checkpoint: train_vaegan(cfg, checkpoint=checkpoint),
                          summary=("recon_mse", "d_real_prob", "recon_setting"))
