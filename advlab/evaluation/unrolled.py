"""The full-gradient attack on a purifier with an inner optimisation (Defense-GAN): the latent search
unrolled and differentiated end to end, next to BPDA (evaluation.adaptive, `--full-gradient-n`).

BPDA replaces the search's gradient by an approximation; when the search is a fixed number of SGD
steps, the exact gradient exists (second-order terms included) and costs memory, which gradient
checkpointing trades for about one extra forward. It runs on a small subset because each APGD step
differentiates through L steps of R restarts.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn as nn


class UnrolledSearch(nn.Module):
    """classifier(G(z_L(x))) with the whole latent search of a Defense-GAN-like defense (attributes
    generator, classifier, steps, restarts, lr, momentum, decay_at, _generator) kept differentiable
    in x: the exact gradient through the L SGD steps (second-order terms included), the full-gradient
    attack next to BPDA. Memory: the steps run in segments of `segment` under torch.utils.checkpoint,
    so only the (z, v) at segment boundaries are stored; the cost is about 3x the defense's forward."""

    def __init__(self, defense, segment: int = 10):
        super().__init__()
        self.defense, self.segment = defense, segment

    def _steps(self, z, v, target, first, last):
        d, G = self.defense, self.defense.generator
        for step in range(first, last):
            err = (G(z) - target).pow(2).flatten(1).mean(1)                      # (R*n,)
            g, = torch.autograd.grad(err.sum(), z, create_graph=torch.is_grad_enabled() and target.requires_grad)
            v = d.momentum * v + g
            z = z - (d.lr if step < d.decay_at * d.steps else 0.1 * d.lr) * v
        return z, v

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint
        from advlab.validate import eval_mode
        d, G = self.defense, self.defense.generator
        n, R, dim = len(x), d.restarts, G.latent_dim
        z = (torch.randn(R, n, dim, generator=d._generator) / math.sqrt(dim)).reshape(R * n, dim).to(x)
        target = x.repeat(R, 1, 1, 1)                                              # (R*n, C, H, W)
        v = torch.zeros_like(z)
        with eval_mode(G), torch.enable_grad():
            z = z.requires_grad_(True)
            for s in range(0, d.steps, self.segment):
                last = min(s + self.segment, d.steps)
                if target.requires_grad:
                    z, v = checkpoint(self._steps, z, v, target, s, last, use_reentrant=False)
                else:
                    z, v = self._steps(z, v, target, s, last)
                    z, v = z.detach().requires_grad_(True), v.detach()
            rec = G(z)
        err = (rec - target).pow(2).flatten(1).mean(1).view(R, n)
        best = err.argmin(0)                                                       # (n,)
        x_rec = rec.view(R, n, *x.shape[1:])[best, torch.arange(n, device=x.device)].clamp(0, 1)
        return d.classifier(x_rec)


def full_gradient_attack(target, x, y, plan: dict, summary: dict) -> dict:
    """APGD-CE through `UnrolledSearch` on the first plan["full_gradient_n"] images, judged by the defense;
    with the ensemble's per-image results of those images, their worst case."""
    from advlab.attacks import presets
    from advlab.evaluation.adaptive import _rate, _seed, judge
    k = plan["full_gradient_n"]
    xs, ys = x[:k], y[:k]
    atk = presets.apgd_ce(plan["eps"], steps=plan["cfg"]["apgd_steps"], eot_iter=plan["eot_iter"],
                          seed=plan["seed"], checks=False)
    t0 = time.perf_counter()
    if hasattr(target, "reseed"):
        target.reseed(_seed(plan["seed"], "unrolled"))
    codes = judge(target, atk(UnrolledSearch(target), xs, ys), ys, plan["n_draws"], _seed(plan["seed"], "unrolled", 1))
    setting = next(iter(plan["specs"]))
    ens = torch.tensor([f is None for f in summary["settings"][setting]["vote"]["first_broken_by"][:k]])
    own = (codes & 1 > 0).cpu()
    return {"attack": repr(atk), "backward": "unrolled search (torch.utils.checkpoint)", "n": k,
            "seed": plan["seed"], "own": _rate(int(own.sum()), k), "ensemble_on_subset": _rate(int(ens.sum()), k),
            "worst_case_on_subset": _rate(int((own & ens).sum()), k), "seconds": round(time.perf_counter() - t0, 1)}
