"""FGSM (Goodfellow et al. 2015): one step of size eps along the steepest-ascent direction."""
from __future__ import annotations

import torch

from advlab.attacks.base import Attack, ce_loss, check_positive, input_grad, steepest_step


class FGSM(Attack):
    """Fast Gradient Sign Method, white box, one gradient.

    Threat model: ||x_adv - x|| <= eps in the Linf norm (x + eps * sign(g)) or the L2 norm
    (x + eps * g / ||g||_2), g the input gradient of the cross-entropy, averaged over `eot_iter`
    passes for a randomised model. targeted=True: y holds target classes and the step descends
    the cross-entropy towards them.
    """

    def __init__(self, eps: float | None = None, norm: str = "linf", targeted: bool = False, eot_iter: int = 1,
                 **common):
        super().__init__(eps, norm, targeted, **common)
        self.eot_iter = check_positive(eot_iter, "eot_iter", integer=True)

    def _attack(self, model, x, y, generator):
        grad, _, _ = input_grad(model, x, y, ce_loss, self.eot_iter, self.amp)
        step = steepest_step(grad * self._loss_sign(), self.norm)
        return (x + self.eps * step).clamp_(0.0, 1.0)
