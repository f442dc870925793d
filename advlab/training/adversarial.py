"""Adversarial training (lecture 03): PGD-AT (Madry et al. 2018), TRADES (Zhang et al. 2019) and
fast FGSM-AT with a random start (Wong et al. 2020), on the course's one training loop.

    cfg = ATConfig(method="pgd", eps=0.1, steps=5, epochs=10)
    model, metrics = adversarial_train(cfg)

Training solves min_theta E[max_{||delta|| <= eps} loss(f(x + delta), y)]. The inner max is
approximated by an attack run in eval mode (BN statistics and dropout are left alone); by
Danskin's theorem the gradient of the outer objective at the attack's maximiser is the gradient
of the loss there, so the outer step is an ordinary SGD step on the adversarial batch.

Multi-GPU: run the same code under `torchrun --nproc_per_node N` (see `advlab.train.train`).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from advlab.attacks.base import input_grad
from advlab.training import loop as _train
from advlab.validate import eval_mode

METHODS = ("pgd", "trades", "fgsm")


@dataclass
class ATConfig(_train.TrainConfig):
    method: str = "pgd"           # "pgd" (Madry), "trades" or "fgsm" (fast AT, random start)
    eps: float = 0.1              # Linf radius of the training threat model
    alpha: float | None = None    # step size; None: 2.5 * eps / steps (pgd, trades), 1.25 * eps (fgsm)
    steps: int = 7                # attack steps of the inner maximisation (pgd, trades)
    beta: float = 6.0             # TRADES: weight of the robustness (KL) term
    random_init: bool = True      # fgsm: start from a uniform point of the eps ball
    monitor_every: int = 0        # optimiser steps between catastrophic-overfitting checks (0: each epoch)
    monitor_n: int = 512          # size of the held-out batch those checks use (test split, seed 1); 0: no checks
    monitor_pgd_steps: int = 10   # steps of the PGD those checks run (step 2.5 eps / steps, random start)
    stop_on_overfit: bool = False  # stop and restore the best checked weights when overfitting is seen


def _step_size(cfg: ATConfig) -> float:
    if cfg.alpha is not None:
        return cfg.alpha
    return 1.25 * cfg.eps if cfg.method == "fgsm" else 2.5 * cfg.eps / cfg.steps


def _unwrap(model: nn.Module) -> nn.Module:
    # attacks run on the plain module: a DistributedDataParallel forward without its backward
    # would leave the gradient reducer waiting
    return getattr(model, "module", model)


def _generator(device: torch.device) -> torch.Generator:
    # drawn from the global RNG, which training checkpoints save, so a resumed run is identical
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
             random_start: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """The inner maximisation of PGD-AT: `steps` signed-gradient ascent steps on the cross-entropy
    from a uniform random start in the Linf ball, each projected on the ball and on [0, 1].
    Runs the model in eval mode; returns x_adv detached."""
    with eval_mode(model), torch.enable_grad():
        delta = torch.zeros_like(x)
        if random_start:
            delta = (torch.rand(x.shape, generator=generator) * 2 - 1).to(x) * eps
        x_adv = (x + delta).clamp(0, 1)
        lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
        for _ in range(steps):
            grad, _, _ = input_grad(model, x_adv, y)
            x_adv = torch.max(torch.min(x_adv + alpha * grad.sign(), hi), lo)
    return x_adv.detach()


def pgd_at_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Madry's PGD-AT: the cross-entropy at the PGD maximiser of the cross-entropy."""
    x_adv = pgd_linf(_unwrap(model), x, y, eps, alpha, steps, True, generator)
    return F.cross_entropy(model(x_adv), y)


def fgsm_at_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
                 random_init: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fast FGSM-AT (Wong et al. 2020): one signed step of size alpha (1.25 eps in the paper) from
    a random start in the ball, then projection. Without the random start it is Goodfellow's
    FGSM-AT, the one that overfits catastrophically."""
    x_adv = pgd_linf(_unwrap(model), x, y, eps, alpha, 1, random_init, generator)
    return F.cross_entropy(model(x_adv), y)


def trades_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
                beta: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """TRADES: CE(f(x), y) + beta * KL(p(x) || p(x_adv)), x_adv maximising that KL in the Linf ball
    (signed steps from x + 0.001 * N(0, I), as the paper's code). Clean and adversarial images go
    through one forward pass together, so BatchNorm sees both, and DDP sees one forward."""
    plain = _unwrap(model)
    with eval_mode(plain), torch.enable_grad():
        with torch.no_grad():
            p_clean = F.softmax(plain(x).float(), 1)
        noise = torch.randn(x.shape, generator=generator).to(x) * 1e-3
        x_adv = (x + noise).clamp(0, 1)
        lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
        kl = lambda logits, _: F.kl_div(F.log_softmax(logits.float(), 1), p_clean, reduction="none").sum(1)
        for _ in range(steps):
            grad, _, _ = input_grad(plain, x_adv, y, kl)
            x_adv = torch.max(torch.min(x_adv + alpha * grad.sign(), hi), lo)
    logits = model(torch.cat([x, x_adv.detach()])).float()
    logits_clean, logits_adv = logits[:len(x)], logits[len(x):]
    robust = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits_clean, 1), reduction="batchmean")
    return F.cross_entropy(logits_clean, y) + beta * robust


def make_loss(cfg: ATConfig):
    """The loss_fn(model, x, y) that `advlab.train.train` calls for cfg.method."""
    check_config(cfg)
    alpha = _step_size(cfg)
    if cfg.method == "pgd":
        return lambda m, x, y: pgd_at_loss(m, x, y, cfg.eps, alpha, cfg.steps, _generator(x.device))
    if cfg.method == "trades":
        return lambda m, x, y: trades_loss(m, x, y, cfg.eps, alpha, cfg.steps, cfg.beta, _generator(x.device))
    return lambda m, x, y: fgsm_at_loss(m, x, y, cfg.eps, alpha, cfg.random_init, _generator(x.device))


def check_config(cfg: ATConfig) -> None:
    """ValueError naming the first field of an ATConfig that is out of range."""
    if cfg.method not in METHODS:
        raise ValueError(f"method: must be one of {METHODS}, got {cfg.method!r}")
    if not (isinstance(cfg.eps, (int, float)) and math.isfinite(cfg.eps) and cfg.eps > 0):
        raise ValueError(f"eps: must be a positive number, got {cfg.eps!r}")
    if cfg.alpha is not None and not cfg.alpha > 0:
        raise ValueError(f"alpha: must be positive or None, got {cfg.alpha!r}")
    if not (isinstance(cfg.steps, int) and cfg.steps >= 1):
        raise ValueError(f"steps: must be an int >= 1, got {cfg.steps!r}")
    if not (isinstance(cfg.monitor_n, int) and cfg.monitor_n >= 0):
        raise ValueError(f"monitor_n: must be an int >= 0, got {cfg.monitor_n!r}")
    if not cfg.beta >= 0:
        raise ValueError(f"beta: must be >= 0, got {cfg.beta!r}")


class OverfitMonitor:
    """Catastrophic-overfitting detector: FGSM and PGD accuracy on a fixed held-out batch.

    Catastrophic overfitting (Wong et al. 2020) is the sudden collapse of PGD accuracy while FGSM
    accuracy keeps rising: the model has learnt to mask the one gradient step it is trained on.
    The monitor flags it when PGD accuracy has fallen to less than half its best so far, by at least
    `min_drop` (so that noise on a small batch does not count), while FGSM accuracy is at least what
    it was at that best check. With stop=True it asks training to stop and restores the weights of
    the best PGD check.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, eps: float, min_drop: float = 0.1, stop: bool = False,
                 pgd_steps: int = 10):
        self.x, self.y, self.eps, self.min_drop, self.stop, self.pgd_steps = x, y, eps, min_drop, stop, pgd_steps
        self.best_pgd, self.fgsm_at_best, self.best_state, self.flagged = -1.0, 0.0, None, None

    @torch.no_grad()
    def _acc(self, model, x) -> float:
        return (model(x).argmax(1) == self.y).float().mean().item()

    def __call__(self, model: nn.Module, step: int) -> dict:
        model = _unwrap(model)
        dev = next(model.parameters()).device
        self.x, self.y = self.x.to(dev), self.y.to(dev)
        g = torch.Generator().manual_seed(0)
        x_fgsm = pgd_linf(model, self.x, self.y, self.eps, self.eps, 1, False)
        x_pgd = pgd_linf(model, self.x, self.y, self.eps, 2.5 * self.eps / self.pgd_steps, self.pgd_steps, True, g)
        with eval_mode(model):
            clean, fgsm, pgd = self._acc(model, self.x), self._acc(model, x_fgsm), self._acc(model, x_pgd)
        out = {"clean_acc": clean, "fgsm_acc": fgsm, "pgd_acc": pgd}
        if pgd > self.best_pgd:
            self.best_pgd, self.fgsm_at_best = pgd, fgsm
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif (self.flagged is None and pgd < 0.5 * self.best_pgd and pgd <= self.best_pgd - self.min_drop
              and fgsm >= self.fgsm_at_best):
            self.flagged = step
            msg = (f"catastrophic overfitting at step {step}: PGD-{self.pgd_steps} accuracy {pgd:.1%} "
                   f"(best {self.best_pgd:.1%}) while FGSM accuracy is {fgsm:.1%}")
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            out |= {"catastrophic_overfitting": True, "message": msg}
            if self.stop:
                if self.best_state is not None:
                    model.load_state_dict(self.best_state)
                else:   # the best check was in an earlier (resumed) call, whose weights were not kept
                    out["message"] += "; the best check's weights belong to an earlier call: the current ones are kept"
                out["stop"] = True
        return out

    def restore(self, rows: list[dict]) -> None:
        """Go on from the checks of earlier calls of a resumed run (their rows as __call__ returned them,
        plus "step"): the best PGD accuracy, FGSM at that check and the flag. The best check's weights
        are not kept across calls."""
        for r in rows:
            if r["pgd_acc"] > self.best_pgd:
                self.best_pgd, self.fgsm_at_best = r["pgd_acc"], r["fgsm_acc"]
            if r.get("catastrophic_overfitting") and self.flagged is None:
                self.flagged = r["step"]


def adversarial_train(cfg: ATConfig, model: nn.Module | None = None, checkpoint=None,
                      progress: bool = True) -> tuple[nn.Module, dict]:
    """Adversarially train `model` (or a fresh cfg.arch) with cfg.method; returns (model, metrics).

    metrics has the training loop's entries plus "monitor": the held-out clean/FGSM/PGD accuracies
    at every check and, when it happened, "catastrophic_overfitting_step".
    """
    from advlab import data
    loss_fn = make_loss(cfg)
    monitor = None
    if cfg.monitor_n:
        xm, ym = data.batch(cfg.dataset, "test", n=cfg.monitor_n, seed=1)
        monitor = OverfitMonitor(xm, ym, cfg.eps, stop=cfg.stop_on_overfit, pgd_steps=cfg.monitor_pgd_steps)
    model, metrics = _train.train(cfg, model, loss_fn, checkpoint, progress, monitor, cfg.monitor_every)
    metrics["catastrophic_overfitting_step"] = monitor.flagged if monitor else None
    return model, metrics


def train_zoo_entry(entry, args) -> int:
    """`advlab train fmnist/pgd-at` and friends: the CLI hook for zoo entries built here."""
    from advlab.training.zoo_entry import train_and_save
    return train_and_save(entry, args, ATConfig, adversarial_train)
