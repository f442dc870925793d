"""The full-gradient attack on a purifier with an inner optimisation (Defense-GAN, CMAP): the latent search
unrolled and differentiated end to end, next to BPDA (evaluation.adaptive, `--full-gradient-n`).

BPDA replaces the search's gradient by an approximation; when the search is a fixed number of SGD
steps, the exact gradient exists (second-order terms included) and costs memory, which gradient
checkpointing trades for about one extra forward. It runs on a small subset because each APGD step
differentiates through L steps of R restarts.

Checkpointing (`_Segment`): the forward runs each segment of steps with first-order gradients only and keeps
the state at the segment's start; the backward recomputes that one segment with create_graph=True and
differentiates it. torch.utils.checkpoint does not bound this case: the graph that the inner
autograd.grad(create_graph=True) builds escapes its saved-tensor hooks, so the memory grew with every step
(about 175 MiB per step for 4 latents of 2 images with the zoo's consistency UNet, measured on a CPU).
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn as nn

from advlab.purifiers.voting import aggregate


class _Segment(torch.autograd.Function):
    """steps(*state, target, first, last, create) -> new state, checkpointed by hand (module docstring).
    Only the segment's inputs are saved; gradients flow to target and to every state tensor."""

    @staticmethod
    def forward(ctx, steps, first, last, target, *state):
        ctx.steps, ctx.first, ctx.last = steps, first, last
        ctx.save_for_backward(target, *state)
        with torch.enable_grad():
            out = steps(*(t.detach() for t in state), target.detach(), first, last, False)
        return tuple(o.detach() for o in out)

    @staticmethod
    def backward(ctx, *grads):
        target, *state = (t.detach().requires_grad_(True) for t in ctx.saved_tensors)
        with torch.enable_grad():
            out = ctx.steps(*state, target, ctx.first, ctx.last, True)
        got = torch.autograd.grad(out, [target, *state], grads, allow_unused=True)
        return (None, None, None, *got)


def _run_segments(steps, state: tuple, target: torch.Tensor, total: int, segment: int) -> tuple:
    """The `total` steps in segments: through _Segment when target needs a gradient, else first-order only."""
    for s in range(0, total, segment):
        last = min(s + segment, total)
        if target.requires_grad:
            state = _Segment.apply(steps, s, last, target, *state)
        else:
            state = tuple(t.detach() for t in steps(*state, target, s, last, False))
    return state


class UnrolledSearch(nn.Module):
    """classifier(G(z_L(x))) with the whole latent search of a Defense-GAN-like defense (attributes
    generator, classifier, steps, restarts, lr, momentum, decay_at, _generator) kept differentiable
    in x: the exact gradient through the L SGD steps (second-order terms included), the full-gradient
    attack next to BPDA. Memory: the steps run in segments of `segment`, checkpointed (_Segment),
    so only the (z, v) at segment boundaries are stored; the cost is about 3x the defense's forward."""

    def __init__(self, defense, segment: int = 10):
        super().__init__()
        self.defense, self.segment = defense, segment

    def _steps(self, z, v, target, first, last, create):
        d, G = self.defense, self.defense.generator
        for step in range(first, last):
            if not create:                                   # first order: no graph across the steps
                z = z.detach().requires_grad_(True)
            err = (G(z) - target).pow(2).flatten(1).mean(1)                      # (R*n,)
            g, = torch.autograd.grad(err.sum(), z, create_graph=create)
            v = d.momentum * v + g
            z = z - (d.lr if step < d.decay_at * d.steps else 0.1 * d.lr) * v
        return z, v

    def forward(self, x):
        from advlab.validate import eval_mode
        d, G = self.defense, self.defense.generator
        n, R, dim = len(x), d.restarts, G.latent_dim
        z = (torch.randn(R, n, dim, generator=d._generator) / math.sqrt(dim)).reshape(R * n, dim).to(x)
        target = x.repeat(R, 1, 1, 1)                                              # (R*n, C, H, W)
        v = torch.zeros_like(z)
        with eval_mode(G), torch.enable_grad():
            z, v = _run_segments(self._steps, (z, v), target, d.steps, self.segment)
            rec = G(z)
        err = (rec - target).pow(2).flatten(1).mean(1).view(R, n)
        best = err.argmin(0)                                                       # (n,)
        x_rec = rec.view(R, n, *x.shape[1:])[best, torch.arange(n, device=x.device)].clamp(0, 1)
        return d.classifier(x_rec)



class UnrolledCMAP(nn.Module):
    """The log of the mean softmax of the classifier over CMAP's K images, with the whole latent search
    kept differentiable in x: Adam (bias-corrected, the defense's lr, betas (0.9, 0.999)) written out so
    that autograd follows every step, second-order terms included. The defense's own draw of the initial
    latents (its generator stream), the defense's lam, beta, k and iters; the values are those of the
    defense's search up to round-off. Memory as UnrolledSearch: segments of `segment` steps under
    _Segment."""

    def __init__(self, defense, segment: int = 10):
        super().__init__()
        self.defense, self.segment = defense, segment

    def _steps(self, u, m, v, target, first, last, create):
        from advlab.purifiers.cmap.purifier import distribution_penalty, reconstruction_loss
        d, G = self.defense, self.defense.generator
        k, t, b1, b2 = u.shape[0], float(G.sigma_max), 0.9, 0.999
        for i in range(first, last):
            if not create:                                   # first order: no graph across the steps
                u = u.detach().requires_grad_(True)
            images = G.generate(t * u.flatten(0, 1))                                  # (K*n, C, H, W)
            obj = reconstruction_loss(images, target, d.lam).view(k, -1).mean(0)      # (n,)
            if d.beta:
                obj = obj + d.beta * distribution_penalty(u)
            g, = torch.autograd.grad(obj.sum(), u, create_graph=create)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1 ** (i + 1)), v / (1 - b2 ** (i + 1))
            u = u - d.lr * m_hat / ((v_hat + 1e-30).sqrt() + 1e-8)   # 1e-30: a finite derivative of sqrt at 0
        return u, m, v

    def forward(self, x):
        from advlab.validate import eval_mode
        d, G = self.defense, self.defense.generator
        n, k = len(x), d.k
        u = torch.randn(k, n, *G.latent_shape, generator=d._generator).to(x)       # as CMAP.search draws them
        target = x.repeat(k, 1, 1, 1)                                              # (K*n, C, H, W)
        m, v = torch.zeros_like(u), torch.zeros_like(u)
        with eval_mode(G), torch.enable_grad():
            u, m, v = _run_segments(self._steps, (u, m, v), target, d.iters, self.segment)
            images = G.generate(float(G.sigma_max) * u.flatten(0, 1))
        logits = d.classifier(images).view(k, n, -1)
        return aggregate(logits, "mean_probs")                       # log of the mean softmax over the K draws


def full_gradient_attack(target, x, y, plan: dict, summary: dict) -> dict:
    """APGD-CE through `UnrolledSearch` (UnrolledCMAP for CMAP) on the first plan["full_gradient_n"] images, judged by the defense;
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
    unrolled = UnrolledCMAP(target) if hasattr(target, "iters") else UnrolledSearch(target)
    codes = judge(target, atk(unrolled, xs, ys), ys, plan["n_draws"], _seed(plan["seed"], "unrolled", 1))
    setting = next(iter(plan["specs"]))
    ens = torch.tensor([f is None for f in summary["settings"][setting]["vote"]["first_broken_by"][:k]])
    own = (codes & 1 > 0).cpu()
    return {"attack": repr(atk), "backward": "unrolled search (checkpointed segments)", "n": k,
            "seed": plan["seed"], "own": _rate(int(own.sum()), k), "ensemble_on_subset": _rate(int(ens.sum()), k),
            "worst_case_on_subset": _rate(int((own & ens).sum()), k), "seconds": round(time.perf_counter() - t0, 1)}


def gradient_comparison(defense, x: torch.Tensor, y: torch.Tensor, iters=(0, 10, 25, 50, 100), seed: int = 0) -> list:
    """What the attacker's gradient looks like through CMAP's search as it gets longer: for each count t in
    iters, a copy of `defense` with iters = t and the same initial latents (reseeded at `seed`) gives the
    cross-entropy's input gradient at x (N images) of the unrolled search (UnrolledCMAP: exact, second order
    included) and of BPDA (the defense's "identity" backward). Per t: the median L2 norm of each over the
    images, the same of the classifier alone at x, the median cosine between unrolled and BPDA, and the share
    of pixels where their signs agree (what an Linf step uses). A full gradient that shrinks towards zero as t
    grows while BPDA's does not is why the ensemble carries BPDA; unrolled_zero and unrolled_nonfinite count
    the images whose unrolled gradient is exactly zero or not finite. Costs about 4 defense forwards per t."""
    import copy

    from advlab.attacks.base import input_grad

    def med(v):
        return float(v.median())

    g_clf = input_grad(defense.classifier, x, y)[0].flatten(1)
    rows = []
    for t in iters:
        d = copy.copy(defense)                        # shares the generator and classifier; its own iters
        d.iters = int(t)
        d.reseed(seed)
        if t == 0:      # no step: the images G(T u0) do not depend on x at all
            g_u = torch.zeros_like(x).flatten(1)
        else:
            g_u = input_grad(UnrolledCMAP(d), x, y)[0].flatten(1)                    # (N, D)
        d.reseed(seed)
        g_b = input_grad(d.adaptive_model("identity"), x, y)[0].flatten(1)
        cos = nn.functional.cosine_similarity(g_u.double(), g_b.double(), dim=1)
        both = (g_u != 0) & (g_b != 0)
        agree = ((g_u.sign() == g_b.sign()) & both).sum(1) / both.sum(1).clamp(min=1)
        rows.append({"iters": int(t), "unrolled_l2": med(g_u.norm(dim=1)), "bpda_l2": med(g_b.norm(dim=1)),
                     "classifier_l2": med(g_clf.norm(dim=1)), "cosine": med(cos), "sign_agreement": med(agree),
                     "unrolled_zero": int((g_u.abs().amax(1) == 0).sum()),
                     "unrolled_nonfinite": int((~torch.isfinite(g_u).all(1)).sum()), "n": len(x)})
    return rows
