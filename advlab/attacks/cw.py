"""Carlini & Wagner (2017) L2 attack: a minimal-perturbation attack solved with Adam in tanh space."""
from __future__ import annotations

import torch

from advlab.attacks.base import Attack, _bcast, amp_autocast, check_positive


class CW(Attack):
    """Carlini-Wagner L2, white box, minimal perturbation.

    Minimises ||x' - x||_2^2 + c * f(x') over x' = (tanh(w) + 1) / 2 (so x' stays in [0, 1]) with
    Adam (`lr`, `steps` per binary-search step), where
        untargeted: f = max(Z_y - max_{j != y} Z_j, -kappa)
        targeted (y holds the targets): f = max(max_{j != y} Z_j - Z_y, -kappa).
    Each example returns its smallest-L2 successful iterate (misclassified, resp. classified as the
    target, with a logit margin of at least kappa); an example never successful returns x unchanged.
    binary_search_steps > 1 adapts c per example: c * 10 after a failure while no success has
    been seen, bisection between the largest failing and smallest succeeding c afterwards.

    eps=None (default) is unbounded: x' only stays in [0, 1]. With eps set, only successes with
    ||x' - x||_2 <= eps count, so the attack is a valid L2 eps-ball attack.
    """

    norms = ("l2",)
    unbounded = True  # eps=None: no eps ball

    def __init__(self, c: float = 1.0, kappa: float = 0.0, steps: int = 100, lr: float = 0.01,
                 binary_search_steps: int = 1, targeted: bool = False, eps: float | None = None,
                 norm: str = "l2", **common):
        super().__init__(eps, norm, targeted, **common)
        self.c = float(check_positive(c, "c"))
        self.kappa = float(check_positive(kappa, "kappa", strict=False))
        self.steps = check_positive(steps, "steps", integer=True, minimum=1, strict=False)
        self.lr = float(check_positive(lr, "lr"))
        self.binary_search_steps = check_positive(binary_search_steps, "binary_search_steps", integer=True,
                                                  minimum=1, strict=False)

    def _margin(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Z_y - max_{j != y} Z_j, sign flipped when targeted: f before the clamp at -kappa."""
        z_y = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        return other - z_y if self.targeted else z_y - other

    def _attack(self, model, x, y, generator):
        n, dev = len(x), x.device
        w0 = torch.atanh((2 * x - 1) * (1 - 1e-6))  # as Carlini's code: keeps tanh away from +-1
        c = torch.full((n,), self.c, dtype=x.dtype, device=dev)
        lower, upper = torch.zeros_like(c), torch.full_like(c, 1e10)
        best, best_l2 = x.clone(), torch.full((n,), float("inf"), dtype=x.dtype, device=dev)
        for _ in range(self.binary_search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            succeeded = torch.zeros(n, dtype=torch.bool, device=dev)
            for _ in range(self.steps):
                x_adv = (torch.tanh(w) + 1) / 2
                with amp_autocast(x, self.amp):
                    logits = model(x_adv)
                margin = self._margin(logits.float(), y)
                l2sq = (x_adv - x).flatten(1).pow(2).sum(1)
                loss = (l2sq + c * margin.clamp(min=-self.kappa)).sum()
                w.grad, = torch.autograd.grad(loss, w)
                opt.step()
                with torch.no_grad():  # success of x_adv, the iterate before this step
                    l2 = l2sq.detach().sqrt()
                    success = margin.detach() < -self.kappa
                    if self.eps is not None:
                        success &= l2 <= self.eps
                    better = success & (l2 < best_l2)
                    best = torch.where(_bcast(better, x), x_adv.detach(), best)
                    best_l2 = torch.where(better, l2, best_l2)
                    succeeded |= success
            # binary search over c, per example
            upper = torch.where(succeeded, torch.minimum(upper, c), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, c))
            c = torch.where(upper < 1e9, (lower + upper) / 2, c * 10)
        return best
