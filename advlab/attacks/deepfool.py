"""DeepFool (Moosavi-Dezfooli et al. 2016): walk to the closest linearised decision boundary."""
from __future__ import annotations

import torch

from advlab.attacks.base import Attack, _bcast, amp_autocast, check_positive, flat_norm


class DeepFool(Attack):
    """DeepFool, white box, untargeted, minimal perturbation in the L2 or Linf norm.

    Per example and step: linearise the logit differences f_k = Z_k - Z_y around the current
    point (one backward pass per candidate class), step to the closest linearised boundary,
        L2:   r = (|f_l| + 1e-4) / ||w_l||_2^2 * w_l,      l = argmin_k |f_k| / ||w_k||_2
        Linf: r = (|f_l| + 1e-4) / ||w_l||_1 * sign(w_l),  l = argmin_k |f_k| / ||w_k||_1
    (w_k the gradient of f_k; the Linf version uses the dual L1 norm), accumulate r_total and move
    to x + (1 + overshoot) * r_total, clipped to [0, 1]. An example stops as soon as it is
    misclassified; one still correct after `steps` steps returns its last iterate.
    num_classes: only the true class and the num_classes - 1 classes with the highest clean logits
    are candidates (None: all). eps=None (default) is unbounded; with eps set the result is
    projected onto the eps ball.
    """

    unbounded = True  # eps=None: no eps ball

    def __init__(self, steps: int = 50, overshoot: float = 0.02, norm: str = "l2", eps: float | None = None,
                 num_classes: int | None = None, **common):
        super().__init__(eps, norm, False, **common)
        self.steps = check_positive(steps, "steps", integer=True, minimum=1, strict=False)
        self.overshoot = float(check_positive(overshoot, "overshoot", strict=False))
        if num_classes is not None:
            check_positive(num_classes, "num_classes", integer=True, minimum=2, strict=False)
        self.num_classes = num_classes

    def _candidates(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(N, m) class indices: column 0 the true class, then the other candidates."""
        k = logits.shape[1]
        m = k if self.num_classes is None else min(self.num_classes, k)
        others = logits.float().scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)[:, :m - 1]
        return torch.cat([y[:, None], others], 1)

    def _attack(self, model, x, y, generator):
        x_adv, r_tot = x.clone(), torch.zeros_like(x)
        active = torch.arange(len(x), device=x.device)
        cands = None
        for _ in range(self.steps):
            xa = x_adv[active].requires_grad_(True)
            with amp_autocast(x, self.amp):
                logits = model(xa)
            logits = logits.float()
            if cands is None:
                cands = self._candidates(logits.detach(), y)
            keep = logits.detach().argmax(1) == y[active]
            if not bool(keep.any()):
                break
            grads = self._class_grads(logits, xa, cands[active])      # (m, na, ...)
            idx, grads, logits = active[keep], grads[:, keep], logits.detach()[keep]
            c = cands[idx]
            z = logits.gather(1, c)                                  # (na, m)
            f = (z[:, 1:] - z[:, :1]).abs()                          # |f_k|, k = 1..m-1
            w = grads[1:] - grads[:1]                                # (m-1, na, ...)
            dual = "l1" if self.norm == "linf" else "l2"
            wn = torch.stack([_norm(wk, dual) for wk in w], 1)       # (na, m-1)
            l = (f / (wn + 1e-12)).argmin(1)
            ar = torch.arange(len(idx), device=x.device)
            w_l, f_l, wn_l = w[l, ar], f[ar, l], wn[ar, l]
            if self.norm == "l2":
                r = w_l * _bcast((f_l + 1e-4) / (wn_l ** 2 + 1e-12), w_l)
            else:
                r = w_l.sign() * _bcast((f_l + 1e-4) / (wn_l + 1e-12), w_l)
            r_tot[idx] += r.to(x.dtype)
            x_adv[idx] = (x[idx] + (1 + self.overshoot) * r_tot[idx]).clamp(0.0, 1.0)
            active = idx
        return x_adv

    @staticmethod
    def _class_grads(logits: torch.Tensor, xa: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        """Gradients of logits[i, cands[i, j]] w.r.t. xa[i], for every j: shape (m, na, ...)."""
        out = []
        m = cands.shape[1]
        for j in range(m):
            go = torch.zeros_like(logits).scatter_(1, cands[:, j:j + 1], 1.0)
            g, = torch.autograd.grad(logits, xa, go, retain_graph=j < m - 1)
            out.append(g)
        return torch.stack(out)


def _norm(v: torch.Tensor, p: str) -> torch.Tensor:
    return v.flatten(1).abs().sum(1) if p == "l1" else flat_norm(v, "l2")
