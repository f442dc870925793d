"""FAB: the Fast Adaptive Boundary attack, a minimal-perturbation white-box attack.

Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack",
ICML 2020. Linearise the decision boundary at the current iterate, project both the iterate and the
original point onto the linearised boundary (inside the [0, 1] box), take a step biased towards
the original point, and step back towards it once the iterate is adversarial.
"""
from __future__ import annotations

import torch

from advlab.attacks.apgd import still_robust, sub_generator
from advlab.attacks.base import Attack, amp_autocast, check_positive, flat_norm, random_in_ball


def hyperplane_box_projection(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, norm: str) -> torch.Tensor:
    """Per row: the delta of minimal Linf or L2 norm with <w, delta> = r and x + delta in [0, 1].

    x, w: (n, d); r: (n,). Where the box makes the hyperplane unreachable, returns the box corner
    that gets closest to it. Exact, batched, O(d log d): the optimum is
    delta_i = sign(w_i r) * min(t * b_i, cap_i) (b = 1 for Linf, |w| for L2; cap = room left in the
    box along that sign), and <w, delta(t)> is piecewise linear and increasing in t, so t is found
    by sorting the breakpoints cap_i / b_i.
    """
    d = x.shape[1]
    ws = w * torch.sign(r)[:, None]
    sgn = torch.sign(ws)
    cap = torch.where(ws > 0, 1 - x, x).clamp_min(0)
    a = ws.abs()
    b = torch.ones_like(a) if norm == "linf" else a
    big = torch.finfo(x.dtype).max ** 0.5
    tau = torch.where(b > 0, cap / b.clamp_min(torch.finfo(x.dtype).tiny), torch.full_like(a, big)).clamp(max=big)
    tau_s, order = tau.sort(1)
    a_s, b_s, cap_s = a.gather(1, order), b.gather(1, order), cap.gather(1, order)
    sat = (a_s * cap_s).cumsum(1) - a_s * cap_s        # contribution of the coordinates already at their cap
    lin = (a_s * b_s).flip(1).cumsum(1).flip(1)        # slope of the coordinates not yet at their cap
    need = r.abs()[:, None]
    k = ((sat + tau_s * lin) < need).sum(1, keepdim=True)  # first breakpoint where <w, delta> reaches |r|
    feasible = k < d
    kc = k.clamp(max=d - 1)
    t = (need - sat.gather(1, kc)) / lin.gather(1, kc).clamp_min(torch.finfo(x.dtype).tiny)
    step = torch.where(feasible, torch.minimum(t * b, cap), cap)
    return sgn * step


class FAB(Attack):
    """Fast Adaptive Boundary attack (Croce & Hein 2020), white box, Linf or L2; y = true labels.

    Each step linearises f_l - f_y at the iterate x_i, for the closest other class l (or, with
    multi_targeted=True, AutoAttack's FAB-T, a fixed target: the classes with the 2nd..
    (n_target_classes+1)-th largest clean logits in turn), projects x_i and x_orig onto that
    hyperplane inside the [0, 1] box (deltas d_i, d_o), and moves to
    (1 - a)(x_i + eta d_i) + a(x_orig + eta d_o) with a = min(|d_i| / (|d_i| + |d_o|), alpha_max);
    an adversarial iterate is recorded and pulled back to (1 - beta) x_orig + beta x_i. Restarts
    after the first start at random points around x_orig. Returns the smallest adversarial point
    found when its norm is <= eps, else x unchanged.
    """

    def __init__(self, eps: float, norm: str = "linf", steps: int = 100, n_restarts: int = 1,
                 alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, multi_targeted: bool = False,
                 n_target_classes: int = 9, **common):
        super().__init__(eps, norm, False, **common)
        self.steps = check_positive(steps, "steps", integer=True)
        self.n_restarts = check_positive(n_restarts, "n_restarts", integer=True)
        self.alpha_max = float(check_positive(alpha_max, "alpha_max", strict=False))
        if self.alpha_max > 1:
            raise ValueError(f"alpha_max: must be in [0, 1], got {alpha_max!r}")
        self.eta = float(check_positive(eta, "eta", minimum=1.0, strict=False))
        self.beta = float(check_positive(beta, "beta"))
        if self.beta > 1:
            raise ValueError(f"beta: must be in (0, 1], got {beta!r}")
        if not isinstance(multi_targeted, bool):
            raise ValueError(f"multi_targeted: must be a bool, got {multi_targeted!r}")
        self.multi_targeted = multi_targeted
        self.n_target_classes = check_positive(n_target_classes, "n_target_classes", integer=True)

    @property
    def randomized(self) -> bool:  # only the restarts after the first are random
        return self.n_restarts > 1

    def _linearize(self, model, x, y, t):
        """(w, f): the gradient and value of f_l - f_y at x, l = t or the closest other class."""
        xr = x.detach().requires_grad_(True)
        with amp_autocast(x, self.amp):
            logits = model(xr)
        logits = logits.float()
        if t is not None:
            diff = logits.gather(1, t[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)
            g, = torch.autograd.grad(diff.sum(), xr)
            return g.flatten(1), diff.detach()
        n_cls = logits.shape[1]
        grads = torch.stack([torch.autograd.grad(logits[:, c].sum(), xr, retain_graph=c < n_cls - 1)[0].flatten(1)
                             for c in range(n_cls)], 1)                               # (n, K, d)
        rows = torch.arange(len(x), device=x.device)
        w = grads - grads[rows, y][:, None]
        f = (logits - logits.gather(1, y[:, None])).detach()
        dual = w.abs().sum(2) if self.norm == "linf" else w.norm(dim=2)
        dist = f.abs() / (dual + 1e-12)
        dist[rows, y] = float("inf")
        l_star = dist.argmin(1)
        return w[rows, l_star], f[rows, l_star]

    def _predict(self, model, x):
        with torch.no_grad(), amp_autocast(x, self.amp):
            return model(x).float().argmax(1)

    def _run(self, model, x, x_start, y, t):
        """One FAB run; returns (smallest adversarial point found or x, its norm or inf)."""
        shape, p = x.shape, self.norm
        xo, xi = x.flatten(1), x_start.flatten(1)
        best = xo.clone()
        best_norm = torch.full((len(x),), float("inf"), device=x.device, dtype=x.dtype)
        for _ in range(self.steps):
            w, f = self._linearize(model, xi.view(shape), y, t)
            d_i = hyperplane_box_projection(xi, w, -f, p)
            d_o = hyperplane_box_projection(xo, w, -(f + ((xo - xi) * w).sum(1)), p)
            n_i, n_o = flat_norm(d_i, p), flat_norm(d_o, p)
            alpha = (n_i / (n_i + n_o).clamp_min(1e-12)).clamp(0.0, self.alpha_max)[:, None]
            x_new = ((1 - alpha) * (xi + self.eta * d_i) + alpha * (xo + self.eta * d_o)).clamp(0.0, 1.0)
            succ = self._predict(model, x_new.view(shape)) != y
            nrm = flat_norm(x_new - xo, p)
            better = succ & (nrm < best_norm)
            best = torch.where(better[:, None], x_new, best)
            best_norm = torch.where(better, nrm, best_norm)
            xi = torch.where(succ[:, None], (1 - self.beta) * xo + self.beta * x_new, x_new)
        return best.view(shape), best_norm

    def _attack(self, model, x, y, generator, active=None):
        gen = sub_generator(generator)
        logits, todo = still_robust(model, x, y, active)
        if self.multi_targeted:
            order = logits.argsort(1, descending=True)
            targets = [order[:, k] for k in range(1, min(self.n_target_classes, logits.shape[1] - 1) + 1)]
        else:
            targets = [None]
        best = x.clone()
        best_norm = torch.full((len(x),), float("inf"), device=x.device, dtype=x.dtype)
        view = (-1,) + (1,) * (x.dim() - 1)
        for t in targets:
            for r in range(self.n_restarts):
                idx = (todo & (best_norm > self.eps)).nonzero().squeeze(1)
                if len(idx) == 0:
                    break
                if r == 0:
                    start = x[idx]
                else:  # a random point at half the smaller of eps and the best norm so far
                    u = random_in_ball(x, 1.0, self.norm, gen)[idx]
                    rad = 0.5 * torch.clamp(best_norm[idx], max=self.eps)
                    start = (x[idx] + u * rad.view(view)).clamp(0.0, 1.0)
                xa, na = self._run(model, x[idx], start, y[idx], None if t is None else t[idx])
                better = na < best_norm[idx]
                best[idx[better]] = xa[better]
                best_norm[idx[better]] = na[better]
        return torch.where((best_norm <= self.eps).view(view), best, x)
