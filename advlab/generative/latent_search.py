"""Projection on a generator's range by latent search: gradient descent on z from R random starts.

Defense-GAN (Samangouei, Kabkab & Chellappa, ICLR 2018) purifies with it; any purifier that
optimises latents of a generator to match its input can reuse it.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn as nn

from advlab.validate import check_positive, eval_mode


class LatentSearch(NamedTuple):
    z: torch.Tensor        # (N, latent_dim) the best latent per image
    x_rec: torch.Tensor    # (N, C, H, W) G(z), the purified images
    err: torch.Tensor      # (N,) mean squared error per pixel of the best restart
    all_err: torch.Tensor  # (N, R) final error of every restart
    best: torch.Tensor     # (N,) index of the chosen restart


SEARCH_LR = 0.1   # on our loss scale; see DefenseGAN's docstring for the measurements behind it


def latent_search(G: nn.Module, x: torch.Tensor, steps: int = 200, restarts: int = 10, lr: float = SEARCH_LR,
                  momentum: float = 0.7, decay_at: float = 0.8, generator: torch.Generator | None = None,
                  batch_size: int = 128, callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None
                  ) -> LatentSearch:
    """Defense-GAN's projection of x (N, C, H, W) on the range of G, with R restarts of L steps.

    Minimises the per-image mean squared error mean_pixels (G(z) - x)^2 by SGD with momentum
    (v <- momentum * v + grad; z <- z - lr * v), lr * 0.1 from step decay_at * steps on. Initial
    latents (R, N, latent_dim) are drawn from N(0, I / latent_dim) with `generator` before any
    computation, restart-major, so restart 0 is the same for every R and every batch_size.
    batch_size images (R * batch_size rows) are optimised at a time; G runs in eval mode and its
    parameters' .grad is untouched. callback(step, z, err) is called after every step of the current
    chunk (for animations) with z = z_{step+1} (R * n, latent_dim), the latents after the update, and
    err = the (R * n,) errors of z_step, the latents the step's gradient was taken at: one step
    behind z, because measuring z_{step+1} would cost another forward pass (the final errors are
    in the result's all_err).
    """
    steps = check_positive(steps, "steps", integer=True, minimum=0, strict=False)
    restarts = check_positive(restarts, "restarts", integer=True, minimum=1, strict=False)
    check_positive(lr, "lr", minimum=0, strict=False)
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum: must lie in [0, 1), got {momentum!r}")
    if not 0 <= decay_at <= 1:
        raise ValueError(f"decay_at: must lie in [0, 1], got {decay_at!r}")
    batch_size = check_positive(batch_size, "batch_size", integer=True)
    latent_dim = G.latent_dim
    x = x.detach()
    n = len(x)
    z0 = torch.randn(restarts, n, latent_dim, generator=generator) / math.sqrt(latent_dim)  # (R, N, d), CPU
    zs, recs, errs = [], [], []
    with eval_mode(G), torch.enable_grad():
        for i in range(0, n, batch_size):
            xc = x[i:i + batch_size]                                             # (n, C, H, W)
            m = len(xc)
            z = z0[:, i:i + m].reshape(restarts * m, latent_dim).to(x.device, x.dtype)  # (R*n, d)
            target = xc.repeat(restarts, 1, 1, 1)                                # (R*n, C, H, W)
            v = torch.zeros_like(z)
            for step in range(steps):
                z.requires_grad_(True)
                err = (G(z) - target).pow(2).flatten(1).mean(1)                  # (R*n,)
                grad, = torch.autograd.grad(err.sum(), z)
                rate = lr if step < decay_at * steps else 0.1 * lr
                with torch.no_grad():
                    v = momentum * v + grad
                    z = z.detach() - rate * v
                if callback is not None:
                    callback(step, z, err.detach())
            with torch.no_grad():
                rec = G(z.detach())
                err = (rec - target).pow(2).flatten(1).mean(1)
            zs.append(z.detach().view(restarts, m, latent_dim))
            recs.append(rec.view(restarts, m, *xc.shape[1:]))
            errs.append(err.view(restarts, m))
    z_all, rec_all, err_all = torch.cat(zs, 1), torch.cat(recs, 1), torch.cat(errs, 1)   # (R, N, ...)
    best = err_all.argmin(0)                                                             # (N,)
    idx = torch.arange(n, device=x.device)
    return LatentSearch(z_all[best, idx], rec_all[best, idx].clamp(0, 1).to(x.dtype), err_all[best, idx],
                        err_all.t().contiguous(), best)
