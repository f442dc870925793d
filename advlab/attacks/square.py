"""Square Attack: a score-based black-box attack by random search over square-shaped updates.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020. Only the model's outputs are used (no gradients).
"""
from __future__ import annotations

import math

import torch

from advlab.attacks.apgd import sub_generator
from advlab.attacks.base import Attack, amp_autocast, ce_loss, check_positive, eval_mode, margin_loss, warn_caller

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init: float, i: int, n_queries: int) -> float:
    """Fraction of pixels changed at iteration i: p_init halved at iterations 10, 50, 200, 500, 1000,
    2000, 4000, 6000, 8000 of a 10000-query budget (rescaled to n_queries)."""
    it = int(i / n_queries * 10000)
    return p_init / 2 ** sum(it > h for h in _HALVINGS)


def bump(h1: int, h2: int, device=None) -> torch.Tensor:
    """The paper's 'pseudo-Gaussian' h1 x h2 pattern: concentric rectangles around the centre, ring k
    weighted 1/(k+1)^2, each pixel summing the rings that cover it; unit L2 norm."""
    m = max(h1 // 2 + 1, h2 // 2 + 1)
    r = torch.arange(h1, device=device)[:, None] - h1 // 2
    c = torch.arange(h2, device=device)[None, :] - h2 // 2
    dist = torch.maximum(r.abs(), c.abs())
    tail = (1.0 / torch.arange(1, m + 1, device=device, dtype=torch.float32) ** 2).flip(0).cumsum(0).flip(0)
    out = tail[dist.clamp(max=m - 1)]
    return out / out.norm()


def window_pattern(s: int, device=None) -> torch.Tensor:
    """s x s L2 update pattern: a positive bump over the top half, a negative one over the bottom."""
    out = torch.cat([bump(s // 2, s, device), -bump(s - s // 2, s, device)], 0) if s > 1 else torch.ones(1, 1, device=device)
    return out / out.norm()


def _window_index(vh, vw, s, w):
    """Flat pixel indices (n, s*s) of the s x s windows with top-left corners (vh, vw)."""
    ar = torch.arange(s, device=vh.device)
    return ((vh[:, None] + ar)[:, :, None] * w + (vw[:, None] + ar)[:, None, :]).flatten(1)


class Square(Attack):
    """Square Attack (Andriushchenko et al. 2020): score-based black box, Linf or L2; y = true labels.

    Random search: starting from vertical stripes of +-eps (Linf) or a grid of +-'pseudo-Gaussian'
    bumps on the eps sphere (L2), each iteration proposes a change inside a random square window
    whose side follows the p schedule (`p_schedule`), and keeps it per example when the loss
    ("margin": max_{j!=y} z_j - z_y, or "ce") improves or the example becomes misclassified. Only
    model outputs are used, under torch.no_grad. Only still-robust points are queried; the model
    evaluations per example (the clean one included) are in `self.last_queries` after a call,
    at most n_queries per restart.
    """

    randomized = True

    def __init__(self, eps: float, norm: str = "linf", n_queries: int = 5000, n_restarts: int = 1,
                 p_init: float = 0.8, loss: str = "margin", **common):
        super().__init__(eps, norm, False, **common)
        self.n_queries = check_positive(n_queries, "n_queries", integer=True)
        self.n_restarts = check_positive(n_restarts, "n_restarts", integer=True)
        self.p_init = float(check_positive(p_init, "p_init"))
        if self.p_init > 1:
            raise ValueError(f"p_init: must be in (0, 1], got {p_init!r}")
        if loss not in ("margin", "ce"):
            raise ValueError(f"loss: must be 'margin' or 'ce', got {loss!r}")
        self.loss = loss
        self.last_queries: torch.Tensor | None = None
        self._queries: list = []

    def __call__(self, model, x, y):
        self._queries = []
        out = super().__call__(model, x, y)
        self.last_queries = (torch.cat(self._queries).to(out.device) if self._queries
                             else torch.zeros(len(out), dtype=torch.long, device=out.device))
        return out

    def _runtime_checks(self, model, x, y, was_training: bool) -> list[str]:
        """The base checks take an input gradient; a black-box attack gets output-only checks instead."""
        problems = []
        if was_training:
            problems.append("the model is in train mode: attacks run it in eval mode; call model.eval() "
                            "if you evaluate it that way")
        with torch.no_grad(), eval_mode(model):
            xs = x[:8].detach()
            o1, o2 = model(xs).float(), model(xs).float()
        if not torch.allclose(o1, o2, atol=1e-5, rtol=1e-4):
            problems.append("the model's outputs differ between two calls on the same input (a randomised "
                            "defense?): Square's accept/reject decisions then follow the noise")
        for p in problems:
            warn_caller(f"advlab.attacks: {p}")
        return problems

    def _forward(self, model, x):
        with amp_autocast(x, self.amp):
            return model(x).float()

    def _side(self, i, h, w, budget):
        p = p_schedule(self.p_init, i, budget)
        s = int(round(math.sqrt(p * h * w)))
        if self.norm == "linf":
            return min(max(s, 1), min(h, w) - 1) if min(h, w) > 1 else 1
        s = max(s, 3)
        s += 1 - s % 2  # odd, so the pattern has a centre
        while s > min(h, w) and s > 1:
            s -= 2
        return s

    def _init(self, x, gen):
        n, c, h, w = x.shape
        dev = x.device
        if self.norm == "linf":
            stripes = torch.randint(0, 2, (n, c, 1, w), generator=gen, device=dev).to(x.dtype) * 2 - 1
            return (x + self.eps * stripes).clamp(0.0, 1.0)
        s = max(min(h, w) // 5, 1)
        delta = torch.zeros_like(x)
        pat = window_pattern(s, dev).to(x.dtype)
        oh, ow = (h - s * (h // s)) // 2, (w - s * (w // s)) // 2
        for i in range(h // s):
            for j in range(w // s):
                sign = torch.randint(0, 2, (n, c, 1, 1), generator=gen, device=dev).to(x.dtype) * 2 - 1
                flip = torch.randint(0, 2, (n, 1, 1, 1), generator=gen, device=dev).bool()
                tile = torch.where(flip, pat.t(), pat) * sign
                delta[:, :, oh + i * s:oh + (i + 1) * s, ow + j * s:ow + (j + 1) * s] += tile
        delta = delta * (self.eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, 1, 1, 1)
        return (x + delta).clamp(0.0, 1.0)

    def _propose_linf(self, x0, xc, s, vh, vw, signs):
        n, c, h, w = x0.shape
        mask = torch.zeros(n, 1, h * w, dtype=torch.bool, device=x0.device)
        mask.scatter_(2, _window_index(vh, vw, s, w)[:, None, :], True)
        mask = mask.view(n, 1, h, w)
        plus, minus = (x0 + self.eps).clamp(0.0, 1.0), (x0 - self.eps).clamp(0.0, 1.0)
        # a proposal must change the window: take the first of the drawn sign sets that does
        cp = (((plus - xc).abs() > 1e-7) & mask).flatten(2).any(2)   # (n, c)
        cm = (((minus - xc).abs() > 1e-7) & mask).flatten(2).any(2)
        changes = torch.where(signs > 0, cp[:, None], cm[:, None]).any(2)  # (n, K)
        pick = signs[torch.arange(n, device=x0.device), changes.to(torch.uint8).argmax(1)]  # (n, c)
        return torch.where(mask, torch.where(pick[:, :, None, None] > 0, plus, minus), xc)

    def _propose_l2(self, x0, xc, s, vh, vw, vh2, vw2, signs, flip):
        n, c, h, w = x0.shape
        delta = (xc - x0).flatten(2)                                          # (n, c, hw)
        i1 = _window_index(vh, vw, s, w)[:, None, :].expand(n, c, s * s)
        i2 = _window_index(vh2, vw2, s, w)[:, None, :].expand(n, c, s * s)
        union = torch.zeros_like(delta).scatter_(2, i1, 1.0).scatter_(2, i2, 1.0)
        rho2 = (delta * union).pow(2).sum(2)                                  # energy in both windows
        nu = delta.gather(2, i1)
        nu = nu / nu.norm(dim=2, keepdim=True).clamp_min(1e-12)
        pat = window_pattern(s, x0.device).to(x0.dtype)
        pat = torch.where(flip[:, None, None, None], pat.t(), pat).flatten(2) * signs[:, :, None]
        new = pat + nu
        unused = (self.eps ** 2 - delta.flatten(1).pow(2).sum(1)).clamp_min(0) / c
        new = new / new.norm(dim=2, keepdim=True).clamp_min(1e-12) * (unused[:, None] + rho2).sqrt()[:, :, None]
        delta = delta.scatter(2, i2, 0.0).scatter(2, i1, new)
        delta = delta * (self.eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12))[:, None, None]
        return (x0 + delta.view_as(x0)).clamp(0.0, 1.0)

    @torch.no_grad()
    def _attack(self, model, x, y, generator, active=None):
        n, c, h, w = x.shape
        dev = x.device
        gen = sub_generator(generator, dev)
        obj_fn = margin_loss if self.loss == "margin" else ce_loss
        queries = torch.ones(n, dtype=torch.long, device=dev)
        logits = self._forward(model, x)
        done = logits.argmax(1) != y
        todo = ~done if active is None else ~done & active
        x_best = x.clone()
        obj_best = torch.full((n,), float("-inf"), device=dev)
        for r in range(self.n_restarts):
            budget = self.n_queries - (1 if r == 0 else 0)  # the clean query counts towards the first restart
            idx = (todo & ~done).nonzero().squeeze(1)
            if len(idx) == 0 or budget < 1:
                break
            attacked = torch.zeros(n, dtype=torch.bool, device=dev)
            attacked[idx] = True
            x_cur = self._init(x, gen)  # whole chunk: draws independent of which points are attacked
            out = self._forward(model, x_cur[idx])
            queries[idx] += 1
            obj = torch.full((n,), float("-inf"), device=dev)
            obj[idx] = obj_fn(out, y[idx])
            done[idx] |= out.argmax(1) != y[idx]
            for i in range(1, budget):
                s = self._side(i, h, w, self.n_queries)
                vh = torch.randint(0, h - s + 1, (n,), generator=gen, device=dev)
                vw = torch.randint(0, w - s + 1, (n,), generator=gen, device=dev)
                if self.norm == "linf":
                    signs = torch.randint(0, 2, (n, 8, c), generator=gen, device=dev) * 2 - 1
                else:
                    vh2 = torch.randint(0, h - s + 1, (n,), generator=gen, device=dev)
                    vw2 = torch.randint(0, w - s + 1, (n,), generator=gen, device=dev)
                    signs = (torch.randint(0, 2, (n, c), generator=gen, device=dev) * 2 - 1).to(x.dtype)
                    flip = torch.randint(0, 2, (n,), generator=gen, device=dev).bool()
                idx = (todo & ~done).nonzero().squeeze(1)
                if len(idx) == 0:
                    break
                if self.norm == "linf":
                    x_new = self._propose_linf(x[idx], x_cur[idx], s, vh[idx], vw[idx], signs[idx])
                else:
                    x_new = self._propose_l2(x[idx], x_cur[idx], s, vh[idx], vw[idx], vh2[idx], vw2[idx],
                                             signs[idx], flip[idx])
                out = self._forward(model, x_new)
                queries[idx] += 1
                o, succ = obj_fn(out, y[idx]), out.argmax(1) != y[idx]
                acc = (o > obj[idx]) | succ
                x_cur[idx[acc]] = x_new[acc]
                obj[idx[acc]] = o[acc]
                done[idx[acc & succ]] = True
            # per example: the success, else the best-loss point over restarts
            sel = attacked & (done | (obj > obj_best))
            x_best[sel] = x_cur[sel]
            obj_best[sel] = obj[sel]
        self._queries.append(queries)
        return x_best
