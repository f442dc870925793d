"""What every attack shares: argument checks, the threat-model projections, losses, and the
`Attack.__call__` contract.

Contract of `atk(model, x, y) -> x_adv` (tests/test_attack_contract.py checks it for every attack):
  * x_adv lies in the eps ball around x (for the attack's norm) and in [0, 1];
  * x is never modified; x_adv has x's shape, dtype and device;
  * every module's train/eval flag is restored exactly; the attack runs the model in eval mode,
    so BatchNorm running statistics are untouched; parameter .grad fields are untouched;
  * inputs are processed in chunks of `chunk_size` to bound memory;
  * the same seed gives the same x_adv; with no randomness, a batch equals its parts;
  * bad settings or inputs raise ValueError naming the argument.
When targeted=True, y holds the *target* classes (see `target_labels`).
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from advlab.validate import (NORMS, check_eps, check_images, check_labels, check_norm,  # noqa: F401 (re-exported)
                             check_positive, eval_mode)


# ---------------------------------------------------------------------------------------------
# threat-model geometry; all act per example on (N, ...) tensors


def flat_norm(v: torch.Tensor, p: str = "l2") -> torch.Tensor:
    """Per-example norm of v, shape (N,)."""
    v = v.flatten(1)
    return v.abs().amax(1) if p == "linf" else v.norm(dim=1)


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


def project_linf(delta: torch.Tensor, eps) -> torch.Tensor:
    """Closest point of the Linf ball of radius eps (scalar or per-example (N,))."""
    eps = eps if not torch.is_tensor(eps) else _bcast(eps, delta)
    return torch.maximum(torch.minimum(delta, torch.as_tensor(eps, dtype=delta.dtype, device=delta.device)),
                         -torch.as_tensor(eps, dtype=delta.dtype, device=delta.device))


def project_l2(delta: torch.Tensor, eps) -> torch.Tensor:
    """Closest point of the L2 ball of radius eps: rescale only the deltas that are too long."""
    norms = flat_norm(delta, "l2")
    eps_t = torch.as_tensor(eps, dtype=delta.dtype, device=delta.device)
    factor = torch.clamp(eps_t / (norms + 1e-12), max=1.0)
    return delta * _bcast(factor, delta)


def project(delta: torch.Tensor, eps, norm: str) -> torch.Tensor:
    return project_linf(delta, eps) if norm == "linf" else project_l2(delta, eps)


def normalize_l2(g: torch.Tensor) -> torch.Tensor:
    """g / ||g||_2 per example (zero stays zero)."""
    return g / _bcast(flat_norm(g, "l2") + 1e-12, g)


def steepest_step(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit-norm steepest-ascent direction for the norm: sign(g) for Linf, g/||g|| for L2."""
    return grad.sign() if norm == "linf" else normalize_l2(grad)


def random_in_ball(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniform random delta in the ball (Linf: uniform cube; L2: uniform in the ball)."""
    shape, dev = x.shape, x.device
    if norm == "linf":
        u = torch.rand(shape, generator=generator, device="cpu", dtype=torch.float32).to(dev, x.dtype)
        return (2 * u - 1) * eps
    d = x[0].numel()
    g = torch.randn(shape, generator=generator, device="cpu", dtype=torch.float32).to(dev, x.dtype)
    r = torch.rand(shape[0], generator=generator, device="cpu").to(dev, x.dtype) ** (1.0 / d)
    return normalize_l2(g) * _bcast(r * eps, g)


# ---------------------------------------------------------------------------------------------
# losses (per example, shape (N,))


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j != y} z_j - z_y: positive exactly when the example is misclassified."""
    logits = logits.float()
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return other - z_y


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020): -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3)."""
    logits = logits.float()
    z_sorted = logits.sort(1, descending=True).values
    return margin_loss(logits, y) / (z_sorted[:, 0] - z_sorted[:, 2] + 1e-12)


def dlr_loss_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)."""
    logits = logits.float()
    z_sorted = logits.sort(1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (z_sorted[:, 0] - 0.5 * (z_sorted[:, 2] + z_sorted[:, 3]) + 1e-12)


LOSSES = {"ce": ce_loss, "dlr": dlr_loss, "margin": margin_loss}


def target_labels(logits_or_y: torch.Tensor, mode: str = "random", num_classes: int | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Target classes for a targeted attack.

    mode "random": a uniformly random class != y (pass labels y and num_classes);
    "next": (y + 1) mod num_classes; "least_likely": argmin of the logits (pass logits).
    """
    if mode == "least_likely":
        return logits_or_y.argmin(1)
    y = logits_or_y
    if num_classes is None:
        raise ValueError("num_classes: required for mode 'random' and 'next'")
    if mode == "next":
        return (y + 1) % num_classes
    if mode == "random":
        off = torch.randint(1, num_classes, y.shape, generator=generator, device="cpu").to(y.device)
        return (y + off) % num_classes
    raise ValueError(f"mode: must be 'random', 'next' or 'least_likely', got {mode!r}")


# ---------------------------------------------------------------------------------------------
# model handling


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn=ce_loss, eot_iter: int = 1,
               amp: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient of sum(loss_fn(model(x), y)) w.r.t. x, averaged over eot_iter forward passes.

    Returns (grad, per-example loss, logits of the last pass); loss and logits are detached.
    Only the input gradient is computed (torch.autograd.grad), parameter .grad stays untouched.
    """
    grad = torch.zeros_like(x)
    loss_sum = torch.zeros(len(x), device=x.device)
    for _ in range(eot_iter):
        xr = x.detach().requires_grad_(True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp and x.device.type == "cuda"):
            logits = model(xr)
        loss = loss_fn(logits, y)
        g, = torch.autograd.grad(loss.sum(), xr)
        grad += g
        loss_sum += loss.detach()
    return grad / eot_iter, loss_sum / eot_iter, logits.detach().float()


def runtime_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eot_iter: int = 1,
                   was_training: bool | None = None) -> list[str]:
    """AutoAttack-style sanity checks on a few examples; returns (and warns) the problems found.

    was_training: the caller's train flag before an attack switched to eval mode (None: read it now).
    """
    problems = []
    if was_training if was_training is not None else any(m.training for m in model.modules()):
        problems.append("the model is in train mode: attacks run it in eval mode; call model.eval() "
                        "if you evaluate it that way")
    xs, ys = x[:8], y[:8]
    with torch.no_grad(), eval_mode(model):
        o1, o2 = model(xs).float(), model(xs).float()
    if not torch.allclose(o1, o2, atol=1e-5, rtol=1e-4) and eot_iter == 1:
        problems.append("the model's outputs differ between two calls on the same input (a randomised "
                        "defense?): use eot_iter > 1 or AutoAttack(version='rand')")
    if o1.min() >= 0 and o1.max() <= 1 and torch.allclose(o1.sum(1), torch.ones_like(o1[:, 0]), atol=1e-3):
        problems.append("the model's outputs look like probabilities (rows in [0,1] summing to 1): attacks "
                        "expect logits; softmax outputs saturate the loss and hide gradients")
    with eval_mode(model):
        g, _, _ = input_grad(model, xs, ys.clamp(0, o1.shape[1] - 1))
    if bool((g.flatten(1).abs().amax(1) == 0).all()):
        problems.append("the input gradient is zero on every checked example: the model may be "
                        "non-differentiable (use BPDA) or its loss saturated")
    for p in problems:
        warnings.warn(f"advlab.attacks: {p}", RuntimeWarning, stacklevel=3)
    return problems


class Attack:
    """Base class. Subclasses set `norms` and implement `_attack(model, x, y, generator) -> x_adv`
    on one chunk; `__call__` does the checks, chunking, seeding and mode handling.
    """

    norms: tuple = NORMS
    randomized: bool = False  # True when the result depends on the seed

    def __init__(self, eps: float, norm: str = "linf", targeted: bool = False, seed: int = 0,
                 chunk_size: int = 1000, checks: bool = True, amp: bool = False):
        self.eps = check_eps(eps)
        self.norm = check_norm(norm, self.norms)
        self.targeted = bool(targeted)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: must be an int, got {seed!r}")
        self.seed = seed
        self.chunk_size = check_positive(chunk_size, "chunk_size", integer=True)
        self.checks = checks
        self.amp = amp
        self.last_checks: list[str] = []

    # settings shown by repr(): every robust-accuracy number carries the attack that produced it
    def _settings(self) -> dict:
        skip = {"checks", "chunk_size", "last_checks", "amp"}
        return {k: v for k, v in vars(self).items() if not k.startswith(("_", "last_")) and k not in skip
                and isinstance(v, (int, float, str, bool, type(None)))}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in self._settings().items())
        return f"{type(self).__name__}({args})"

    def _loss_sign(self) -> float:
        """+1 to ascend the loss of the true class; -1 to descend towards a target class."""
        return -1.0 if self.targeted else 1.0

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not isinstance(model, nn.Module) and not callable(model):
            raise ValueError(f"model: expected an nn.Module mapping images to logits, got {type(model).__name__}")
        check_images(x, "x")
        check_labels(y, len(x), None, "y")
        if len(x) == 0:
            return x.clone()
        y = y.to(x.device)
        is_module = isinstance(model, nn.Module)
        was_training = is_module and any(m.training for m in model.modules())
        with eval_mode(model) if is_module else _null():
            with torch.no_grad():
                num_classes = model(x[:1]).shape[1]
            check_labels(y, len(x), num_classes, "y")
            if self.checks and is_module:
                with torch.enable_grad():  # attacks may be called inside torch.no_grad()
                    self.last_checks = runtime_checks(model, x, y, getattr(self, "eot_iter", 1), was_training)
            g = torch.Generator().manual_seed(self.seed)
            out = []
            for i in range(0, len(x), self.chunk_size):
                xc, yc = x[i:i + self.chunk_size].detach(), y[i:i + self.chunk_size]
                xa = self._attack(model, xc.clone(), yc, g)
                out.append(self._finalize(xa.detach(), xc))
        return torch.cat(out).to(dtype=x.dtype)

    def _finalize(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Project into the eps ball and [0, 1] once more, so the threat model holds exactly."""
        if self.eps is None:  # unbounded minimal-perturbation attack: only the image box applies
            return x_adv.clamp(0.0, 1.0)
        delta = project(x_adv - x, self.eps, self.norm)
        return (x + delta).clamp_(0.0, 1.0)

    def _attack(self, model, x, y, generator):  # pragma: no cover - abstract
        raise NotImplementedError


@contextmanager
def _null():
    yield
