"""PGD (Madry et al. 2018) and BIM (Kurakin et al. 2017): iterated steepest-ascent steps, each
followed by a projection onto the eps ball and the image box [0, 1]."""
from __future__ import annotations

import torch

from advlab.attacks.base import (LOSSES, Attack, _bcast, amp_autocast, check_positive, input_grad, normalize_l2,
                                 project_l2, random_in_ball)


class PGD(Attack):
    """Projected Gradient Descent, white box, `steps` gradients.

    Threat model: ||x_adv - x|| <= eps in the Linf or L2 norm, x_adv in [0, 1]. Each step moves
    alpha along sign(g) (Linf) or g/||g||_2 (L2), g the input gradient of `loss` ("ce", "margin"
    or "dlr"; averaged over `eot_iter` passes for a randomised model), then projects.
    random_start=True starts from a random point of the ball (drawn from `seed`; see _random_start).
    targeted=True: y holds target classes and each step descends the loss towards them.

    Returns the last iterate (standard PGD, as torchattacks). keep_best=True returns, per example,
    the first iterate that is misclassified (reaches the target when targeted), else the iterate
    with the highest loss; it costs one extra forward pass in total, not per step.
    """

    def __init__(self, eps: float | None = None, alpha: float = 0.01, steps: int = 10, random_start: bool = True,
                 norm: str = "linf", targeted: bool = False, eot_iter: int = 1, loss: str = "ce",
                 keep_best: bool = False, **common):
        super().__init__(eps, norm, targeted, **common)
        self.alpha = float(check_positive(alpha, "alpha"))
        self.steps = check_positive(steps, "steps", integer=True, minimum=1, strict=False)
        self.random_start = bool(random_start)
        self.eot_iter = check_positive(eot_iter, "eot_iter", integer=True)
        if loss not in LOSSES:
            raise ValueError(f"loss: must be one of {tuple(LOSSES)}, got {loss!r}")
        self.loss = loss
        self.keep_best = bool(keep_best)

    @property
    def randomized(self) -> bool:  # the result depends on the seed only through the random start
        return self.random_start

    def _attack(self, model, x, y, generator):
        loss_fn, sign = LOSSES[self.loss], self._loss_sign()
        if self.random_start:
            x_adv = (x + self._random_start(x, generator)).clamp_(0.0, 1.0)
        else:
            x_adv = x.clone()
        if self.norm == "linf":  # the eps ball and [0, 1] intersect in a box: one clamp projects on both
            lo, hi = (x - self.eps).clamp_(min=0.0), (x + self.eps).clamp_(max=1.0)
        if self.keep_best:
            best, best_loss = x_adv.clone(), torch.full((len(x),), -float("inf"), device=x.device)
            done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.steps):  # one forward + backward per step, nothing else of the model's
            grad, loss, logits = input_grad(model, x_adv, y, loss_fn, self.eot_iter, self.amp)
            if self.keep_best:  # loss and logits belong to x_adv, the iterate before this step
                self._update_best(best, best_loss, done, x_adv, sign * loss, logits, y)
            if self.norm == "linf":
                x_adv.add_(grad.sign_(), alpha=sign * self.alpha).clamp_(lo, hi)  # x_adv is ours: in place
            else:
                x_adv = torch.add(x_adv, normalize_l2(grad), alpha=sign * self.alpha)
                x_adv = (x + project_l2(x_adv - x, self.eps)).clamp_(0.0, 1.0)
        if self.keep_best:
            with torch.no_grad(), amp_autocast(x, self.amp):
                logits = model(x_adv).float()
            self._update_best(best, best_loss, done, x_adv, sign * loss_fn(logits, y), logits, y)
            x_adv = best
        return x_adv

    def _random_start(self, x, generator):
        """Linf: uniform in the cube. L2: a uniform direction at a radius uniform in [0, eps] (as
        torchattacks); a uniform point of the L2 ball sits almost surely at its surface in high
        dimension, which measurably weakens PGD-L2 (about 2 points on Fashion-MNIST, eps 1.5)."""
        if self.norm == "linf":
            return random_in_ball(x, self.eps, "linf", generator)
        direction = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)
        radius = torch.rand(len(x), generator=generator).to(x.device, x.dtype) * self.eps
        return normalize_l2(direction) * _bcast(radius, x)

    def _update_best(self, best, best_loss, done, x_adv, loss, logits, y):
        """In place: keep the first successful iterate, else the one with the highest (signed) loss."""
        pred = logits.argmax(1)
        success = (pred == y) if self.targeted else (pred != y)
        take = ~done & (success | (loss > best_loss))
        best.copy_(torch.where(_bcast(take, best), x_adv, best))
        best_loss.copy_(torch.where(take, loss, best_loss))
        done |= success


class BIM(PGD):
    """Basic Iterative Method: PGD without the random start (starts at x), white box.

    Threat model and targeted semantics as PGD; Linf by default.
    """

    def __init__(self, eps: float | None = None, alpha: float = 0.01, steps: int = 10, norm: str = "linf",
                 targeted: bool = False, eot_iter: int = 1, loss: str = "ce", keep_best: bool = False, **common):
        super().__init__(eps, alpha, steps, False, norm, targeted, eot_iter, loss, keep_best, **common)
