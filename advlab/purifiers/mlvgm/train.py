"""Training of the hierarchical VAE of advlab.purifiers.mlvgm.model (zoo `fmnist/hvae`): the ELBO with a
Bernoulli likelihood, KL warm-up and free bits, Adam with a cosine learning rate, an optional EMA of the
weights (torch.optim.swa_utils.AveragedModel), resumable through advlab.training.loop.train_iterations.

    model, metrics = train_hvae(HVAEConfig(iters=2000))

Loss per batch (nats per image, averaged over the batch):
    recon + beta(t) * sum_levels sum_channels max(free_bits * H_i * W_i, mean_batch KL_channel)
  recon      sum over pixels of the Bernoulli negative log-likelihood of x under sigmoid(logits)
  beta(t)    KL warm-up: linear from 0 to 1 over the first `kl_warmup` iterations
  free bits  (Kingma et al. 2016) per latent channel of each level: a channel whose batch-mean KL is
             below free_bits nats per coordinate pays the constant floor instead (no gradient pushing it
             to 0): keeps every level, the coarse one in particular, from collapsing onto the prior.
Learning rate: linear warm-up over `lr_warmup` iterations, then cosine from lr to lr * lr_final.
Gradients are clipped to `grad_clip` (global norm); a step whose loss is not finite is skipped.

Metrics (on `eval_n` test images, the EMA weights when ema_decay > 0): recon_mse (per pixel, decoder mean
from posterior means), elbo_bpd (negative ELBO in bits/dim, one posterior sample), kl_per_level (nats per
image) and the mean KL per coordinate per level.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from advlab.purifiers.mlvgm.model import LOG2, HVAEModel, _check_int


@dataclass
class HVAEConfig:
    dataset: str = "fashion_mnist"
    width: int = 64
    z_channels: list = field(default_factory=lambda: [8, 4, 2])
    iters: int = 7000
    batch_size: int = 64
    lr: float = 2e-3
    lr_warmup: int = 200          # iterations of linear lr warm-up
    lr_final: float = 0.05        # the cosine ends at lr * lr_final
    kl_warmup: int = 1500         # iterations of KL warm-up (beta 0 -> 1); 0: beta = 1 throughout
    free_bits: float = 0.05       # nats per latent coordinate, applied per channel of each level
    grad_clip: float = 300.0
    ema_decay: float = 0.999      # 0: no EMA
    n_train: int | None = None    # None: the whole training split
    seed: int = 0
    device: str = "auto"
    amp: bool = True              # bf16 autocast on CUDA (the losses in float32)
    log_every: int = 100
    ckpt_every: int = 500
    eval_n: int = 1000            # test images of the final metrics


def check_config(cfg: HVAEConfig) -> None:
    for name in ("width", "iters", "batch_size", "log_every", "ckpt_every", "eval_n"):
        _check_int(name, getattr(cfg, name))
    for name in ("lr_warmup", "kl_warmup"):
        _check_int(name, getattr(cfg, name), minimum=0)
    if not isinstance(cfg.z_channels, (list, tuple)) or len(cfg.z_channels) != 3:
        raise ValueError(f"z_channels: expected 3 ints (coarsest level first), got {cfg.z_channels!r}")
    for name, lo, hi in (("lr", 0, math.inf), ("lr_final", 0, 1), ("free_bits", 0, math.inf),
                         ("grad_clip", 0, math.inf), ("ema_decay", 0, 1)):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi \
                or (name in ("lr", "grad_clip") and v == 0) or (name == "ema_decay" and v == 1):
            raise ValueError(f"{name}: must be a finite number in [{lo}, {hi}]{' (not 0)' if name in ('lr', 'grad_clip') else ''}"
                             f"{' (not 1)' if name == 'ema_decay' else ''}, got {v!r}")


def beta_at(it: int, cfg: HVAEConfig) -> float:
    """KL weight at iteration `it` (0-based): linear 0 -> 1 over cfg.kl_warmup iterations, then 1."""
    return 1.0 if cfg.kl_warmup == 0 else min(1.0, (it + 1) / cfg.kl_warmup)


def lr_factor(it: int, cfg: HVAEConfig) -> float:
    """Multiplier of cfg.lr at iteration `it`: linear warm-up, then cosine down to cfg.lr_final."""
    if it < cfg.lr_warmup:
        return (it + 1) / cfg.lr_warmup
    span = max(1, cfg.iters - cfg.lr_warmup)
    t = min(1.0, (it - cfg.lr_warmup) / span)
    return cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * t))


def free_bits_kl(kl: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The KL term of one level with free bits: kl (N, k, H, W) elementwise -> a scalar,
    sum over channels of max(free_bits * H * W, batch-mean KL of the channel)."""
    per_channel = kl.sum((2, 3)).mean(0)                                  # (k,)
    return torch.clamp(per_channel, min=free_bits * kl.shape[2] * kl.shape[3]).sum()


def compute_losses(model: HVAEModel, x: torch.Tensor, beta: float, cfg: HVAEConfig,
                   generator: torch.Generator, use_amp: bool = False) -> dict[str, torch.Tensor]:
    """The training loss on the batch x (N, C, 28, 28) and its parts (nats per image, batch means):
    "loss", "recon", "kl" (total, without free bits), "kl1".."kl3" (per level), "bpd" (negative ELBO
    in bits/dim, beta 1, no free bits)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
        recon, kls, _ = model.loss_terms(x, generator)
    recon = recon.float()
    kls = [k.float() for k in kls]
    kl_levels = [k.flatten(1).sum(1).mean() for k in kls]
    kl_total = sum(kl_levels)
    kl_term = sum(free_bits_kl(k, cfg.free_bits) for k in kls)
    loss = recon.mean() + beta * kl_term
    out = {"loss": loss, "recon": recon.mean(), "kl": kl_total,
           "bpd": (recon.mean() + kl_total) / (x[0].numel() * LOG2)}
    out |= {f"kl{i + 1}": v for i, v in enumerate(kl_levels)}
    return out


def make_ema(model: nn.Module, decay: float):
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train_hvae(cfg: HVAEConfig, checkpoint: str | Path | None = None, progress: bool = True
               ) -> tuple[HVAEModel, dict]:
    """Train the hierarchical VAE; returns (model in eval mode, metrics). The returned model holds the
    EMA weights when cfg.ema_decay > 0.

    All random draws (batches, posterior noise) come from one CPU generator seeded by cfg.seed; a
    checkpoint every cfg.ckpt_every iterations stores it with the model, EMA, optimiser and iteration,
    so a resumed run continues exactly where it stopped.
    """
    from advlab import data
    from advlab.training.loop import iteration_run, train_iterations
    check_config(cfg)
    device, use_amp, x_train, g = iteration_run(cfg)
    channels = data.info(cfg.dataset).shape[0]
    model = HVAEModel(cfg.width, tuple(cfg.z_channels), channels).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, cfg))   # last_epoch = iteration
    states = dict(model=model, opt=opt, sched=sched)
    ema = None
    if cfg.ema_decay > 0:
        ema = make_ema(model, cfg.ema_decay)
        states["ema"] = ema
    model.train()

    def step() -> dict:
        it = sched.last_epoch
        real = x_train[torch.randint(0, len(x_train), (cfg.batch_size,), generator=g).to(device)]
        losses = compute_losses(model, real, beta_at(it, cfg), cfg, g, use_amp)
        opt.zero_grad(set_to_none=True)
        out = {k: v.item() for k, v in losses.items()}
        if math.isfinite(out["loss"]):
            losses["loss"].backward()
            norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            out["grad_norm"] = norm.item()
            if math.isfinite(out["grad_norm"]):
                opt.step()
                if ema is not None:
                    ema.update_parameters(model)
            out["skipped"] = float(not math.isfinite(out["grad_norm"]))
        else:
            out |= {"grad_norm": float("nan"), "skipped": 1.0}
        sched.step()
        out["beta"] = beta_at(it, cfg)
        return out

    history, seconds = train_iterations(cfg, step, g, states, checkpoint, "HVAE",
                                        {"bpd": "{bpd:.3f}", "kl": "{kl:.1f}", "beta": "{beta:.2f}"}, progress)
    final = model
    if ema is not None:
        final = HVAEModel(cfg.width, tuple(cfg.z_channels), channels).to(device)
        final.load_state_dict(ema.module.state_dict())
    final.eval()
    metrics = {"iters": cfg.iters, "train_seconds": round(seconds, 1),
               "params": sum(p.numel() for p in final.parameters()), "weights": "ema" if ema is not None else "last"}
    metrics |= evaluation_metrics(final, cfg)
    metrics["history"] = history
    return final, metrics


@torch.no_grad()
def evaluation_metrics(model: HVAEModel, cfg: HVAEConfig, chunk: int = 250) -> dict:
    """recon_mse, elbo_bpd, kl per level (nats per image and per coordinate) on cfg.eval_n test images."""
    from advlab import data
    dev = next(model.parameters()).device
    x, _ = data.batch(cfg.dataset, "test", n=cfg.eval_n, seed=cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    mse, bpd, kls = 0.0, 0.0, torch.zeros(model.n_levels)
    for i in range(0, len(x), chunk):
        xc = x[i:i + chunk].to(dev)
        mse += (model.reconstruct(xc) - xc).pow(2).mean((1, 2, 3)).sum().item()
        recon, kl, _ = model.loss_terms(xc, g)
        kl_img = torch.stack([k.flatten(1).sum(1) for k in kl], 1)                    # (n, levels)
        bpd += ((recon + kl_img.sum(1)) / (xc[0].numel() * LOG2)).sum().item()
        kls += kl_img.sum(0).cpu()
    n = len(x)
    dims = [k * h * w for k, h, w in model.latent_shapes()]
    return {"recon_mse": round(mse / n, 6), "elbo_bpd": round(bpd / n, 4),
            "kl_per_level": [round(v / n, 2) for v in kls.tolist()],
            "kl_per_dim": [round(v / n / d, 4) for v, d in zip(kls.tolist(), dims)],
            "eval_setting": f"{n} test images (seed {cfg.seed}); recon from posterior means; ELBO with one "
                            f"posterior sample (Bernoulli likelihood, bits/dim)"}


def train_zoo_entry(entry, args) -> int:
    """`advlab train fmnist/hvae --profile quick|full [--out DIR] [--threads 1]`: train and save the
    model (the checkpoint goes to DIR/checkpoints with --out, else build/checkpoints; keyed by the config)."""
    from advlab.training.zoo_entry import train_and_save
    return train_and_save(entry, args, HVAEConfig,
                          lambda cfg, checkpoint: train_hvae(cfg, checkpoint=checkpoint),
                          summary=("recon_mse", "elbo_bpd", "kl_per_level", "train_seconds"))
