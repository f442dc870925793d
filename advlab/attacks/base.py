"""What every attack shares: argument checks, the threat-model projections, losses, and the
`Attack.__call__` contract.

Contract of `atk(model, x, y) -> x_adv` (tests/test_attack_contract.py checks it for every attack):
  * x_adv lies in the eps ball around x (for the attack's norm) and in [0, 1];
  * x is never modified; x_adv has x's shape, dtype and device;
  * every module's train/eval flag is restored exactly; the attack runs the model in eval mode,
    so BatchNorm running statistics are untouched; parameter .grad fields are untouched;
  * inputs are processed in chunks of `chunk_size` to bound memory;
  * the same seed gives the same x_adv; with no randomness, a batch equals its parts;
  * bad settings or inputs raise ValueError naming the argument; inputs are checked against the
    model once (`validate.check_fit`: channels, size, labels below the model's number of outputs)
    with the documented conversions (x to the model's device, integer labels to int64, float64 or
    float16 images into a float32 model); x_adv still comes back in x's dtype and on x's device;
  * attacks may be called inside torch.no_grad() or torch.inference_mode(): `__call__` re-enables
    the gradients it needs, once, for every attack;
  * bfloat16 / float16 inputs are attacked in float32 and the result is projected again in the
    input's dtype after the final cast, so the eps ball and [0, 1] hold exactly in that dtype and
    in float32 (`fit_to_threat_model`).
When targeted=True, y holds the *target* classes (see `target_labels`).

The options every attack shares are keyword-only and handled here once: `seed` (all randomness of
a call comes from it), `chunk_size` (examples attacked at a time), `checks` (AutoAttack-style
sanity checks of the model, see `runtime_checks`) and `amp` (bf16 autocast of the model on CUDA).
A subclass takes `**common` and passes it on. eps=None means the Fashion-MNIST threat model of
`advlab.data.threat_model` for the attack's norm (`default_eps`); standard settings of the course
are in `advlab.attacks.presets`.
"""
from __future__ import annotations

import inspect
import math
import os
import sys
import warnings
from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F

from advlab.validate import (NORMS, check_eps, check_fit, check_images, check_labels,  # noqa: F401 (re-exported)
                             check_norm, check_positive, eval_mode)

DEFAULT_DATASET = "fashion_mnist"  # the dataset whose threat model gives eps=None its value


def default_eps(norm: str = "linf", dataset: str = DEFAULT_DATASET) -> float:
    """The default radius of the threat model: `advlab.data.threat_model(dataset)[norm]`
    (Fashion-MNIST: 0.1 in Linf, 1.5 in L2)."""
    from advlab.data import threat_model
    return float(threat_model(dataset)[check_norm(norm)])


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
    if not torch.is_tensor(eps):  # a number: no tensor is made from it (on CUDA that would be a host sync)
        return delta.clamp(-eps, eps)
    e = _bcast(eps.to(delta.dtype), delta)
    return torch.maximum(torch.minimum(delta, e), -e)


def project_l2(delta: torch.Tensor, eps) -> torch.Tensor:
    """Closest point of the L2 ball of radius eps: rescale only the deltas that are too long."""
    norms = flat_norm(delta, "l2")
    # a number becomes a filled tensor (a kernel, not a host-to-device copy); `number / tensor` would
    # compute reciprocal * number, which rounds differently
    eps_t = eps.to(delta.dtype) if torch.is_tensor(eps) else torch.full_like(norms, eps)
    factor = torch.clamp(eps_t / (norms + 1e-12), max=1.0)
    return delta * _bcast(factor, delta)


def project(delta: torch.Tensor, eps, norm: str) -> torch.Tensor:
    """Closest point of the `norm` ball of radius eps to delta (per example); dispatches to project_linf / project_l2."""
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
    """Per-example cross-entropy (N,), computed in float32 (bf16/fp16 logits are upcast)."""
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


def amp_autocast(x: torch.Tensor, amp: bool):
    """bf16 autocast around a model's forward pass when `amp` is on and x is on CUDA; otherwise
    nothing, so that a caller's own torch.autocast still applies inside the attack."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if amp and x.device.type == "cuda" else nullcontext()


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn=ce_loss, eot_iter: int = 1,
               amp: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient of sum(loss_fn(model(x), y)) w.r.t. x, averaged over eot_iter forward passes.

    Returns (grad, per-example loss, logits of the last pass); loss and logits are detached.
    Only the input gradient is computed (torch.autograd.grad), parameter .grad stays untouched.
    One forward and one backward per pass and nothing else: no accumulator when eot_iter == 1, no
    host synchronisation (this is the inner step of PGD and APGD).
    """
    grad = loss_sum = None
    for _ in range(eot_iter):
        xr = x.detach().requires_grad_(True)
        with amp_autocast(x, amp):
            logits = model(xr)
        loss = loss_fn(logits, y)
        g, = torch.autograd.grad(loss.sum(), xr)
        if eot_iter == 1:
            return g, loss.detach(), logits.detach().float()
        grad = g if grad is None else grad.add_(g)
        loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
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
    with eval_mode(model), torch.enable_grad():
        g, _, _ = input_grad(model, xs, ys.clamp(0, o1.shape[1] - 1))
    if bool((g.flatten(1).abs().amax(1) == 0).all()):
        problems.append("the input gradient is zero on every checked example: the model may be "
                        "non-differentiable (use BPDA) or its loss saturated")
    for p in problems:
        warn_caller(f"advlab.attacks: {p}")
    return problems


def warn_caller(message: str, category=RuntimeWarning) -> None:
    """warnings.warn attributed to the first frame outside advlab/attacks: the user's call, however
    deep inside the attack the problem was found."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here + os.sep):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


# ---------------------------------------------------------------------------------------------
# dtypes: half-precision inputs are attacked in float32 and projected again in their own dtype

HALF = (torch.float16, torch.bfloat16)


class _CastInput(nn.Module):
    """model(x.to(dtype)): lets an attack keep its iterates in float32 for a bf16/fp16 (or float64)
    model; the gradient flows back through the cast."""

    def __init__(self, model, dtype: torch.dtype):
        super().__init__()
        self.model, self.input_dtype = model, dtype

    def forward(self, x):
        return self.model(x.to(self.input_dtype))


def _model_dtype(model) -> torch.dtype | None:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype
    return None


def _toward(a: torch.Tensor, b: torch.Tensor, k: int = 0) -> torch.Tensor:
    """a moved towards b by 2**k units in the last place of their dtype, stopping at b (a, b >= 0:
    the bit patterns of non-negative floats are ordered as their values)."""
    ibits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    ai, bi = (a + 0.0).view(ibits).long(), (b + 0.0).view(ibits).long()  # + 0.0: no -0.0
    step = 2 ** min(k, 8 * a.element_size() - 2)
    moved = torch.where(bi > ai, torch.minimum(ai + step, bi), torch.maximum(ai - step, bi))
    return moved.to(ibits).view(a.dtype)


def _largest_below(eps: float, dt: torch.dtype) -> float:
    """The largest number of dtype dt (and of float32, for half dtypes) that is <= eps."""
    t = torch.tensor(eps, dtype=torch.float64).to(dt)
    if float(t) > eps:
        t = _toward(t, torch.zeros_like(t))
    return float(t)


def _round_inward(v: torch.Tensor, dt: torch.dtype, up: bool) -> torch.Tensor:
    """v (float64, in [0, 1]) rounded to dt: the smallest dt number >= v (up) or the largest <= v."""
    r = v.to(dt)
    off = r.double() < v if up else r.double() > v
    to = torch.full_like(r, 1.0 if up else 0.0)
    try:
        nxt = torch.nextafter(r, to)
    except (RuntimeError, NotImplementedError):  # no nextafter kernel for this dtype and device
        nxt = _toward(r, to)
    return torch.where(off, nxt, r)


def _violations(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Elements (Linf) or rows (L2) outside the ball when the perturbation is computed in x's dtype,
    in float32 (for half dtypes) or exactly (float64); all compared with eps as a Python float."""
    dts = [x.dtype] + [torch.float32] * (x.dtype in HALF) + [torch.float64] * (x.dtype != torch.float64)
    bad = None
    for dt in dts:
        d = x_adv.to(dt) - x.to(dt)
        size = d.abs() if norm == "linf" else flat_norm(d, "l2")
        v = size.double() > eps
        bad = v if bad is None else bad | v
    return bad


def fit_to_threat_model(x_adv: torch.Tensor, x: torch.Tensor, eps: float | None, norm: str,
                        max_rounds: int = 64) -> torch.Tensor:
    """x_adv cast to x's dtype, projected onto the eps ball around x and [0, 1], so that the
    threat model holds *exactly* in x's dtype: ||x_adv - x|| <= eps when computed in that dtype, in
    float32 and exactly (float64), with eps as given (a Python float).

    A projection followed by a cast to a half dtype rounds to nearest and can leave the ball by one
    unit in the last place (bf16, eps 0.0314: 0.0332), and so can x + eps in float32 (eps=0.1 is
    not a float32 number). Linf: with e the largest number of x's dtype <= eps, x_adv is clamped
    to the bounds of [x - e, x + e] & [0, 1] rounded inwards to x's dtype, so |x_adv - x| <= e
    exactly and, rounding being monotonic, also when computed in x's dtype or in float32 (the
    clamp runs in float32 for half dtypes; its rounding cannot leave representable bounds); a
    difference that is exact in x's dtype (x_adv within a factor 2 of x: most pixels) loses
    nothing to e < eps. L2: the projection runs in
    float32 for half dtypes (x's own dtype otherwise). Then the perturbation is checked as a user
    would compute it (`_violations`); the elements still outside (a difference that rounds up in
    x's dtype) move towards x by 1, 2, 4, ... ulps (Linf), the rows still outside are shrunk (L2),
    until none is; elements inside the ball are never touched. [0, 1] holds exactly: its
    bounds are representable and moving towards x in [0, 1] never leaves it.
    """
    dt = x.dtype
    if eps is None:  # unbounded minimal-perturbation attack: only the image box applies
        return x_adv.to(dt).clamp(0.0, 1.0)
    work = torch.float32 if dt in HALF else dt
    if norm == "linf":  # clamp to the representable bounds inside the box [x - e, x + e] & [0, 1]
        e = _largest_below(eps, dt)
        x64 = x.double()
        lo = _round_inward((x64 - e).clamp_(min=0.0), dt, up=True).to(work)
        hi = _round_inward((x64 + e).clamp_(max=1.0), dt, up=False).to(work)
        out = torch.minimum(torch.maximum(x_adv.to(work), lo), hi).to(dt)  # rounding stays in [lo, hi]
    else:
        xw = x.to(work)
        out = (xw + project(x_adv.to(work) - xw, eps, norm)).clamp_(0.0, 1.0).to(dt)
    for i in range(max_rounds):
        bad = _violations(out, x, eps, norm)
        if not bool(bad.any()):  # a host sync per round and chunk, never per step
            return out
        if norm == "linf":  # 1, 2, 4, ... ulps towards x (a few rounds even where x_adv is tiny)
            out = torch.where(bad, _toward(out, x, i), out)
        else:  # shrink the offending rows by a margin that doubles each round
            shrink = max(1.0 - torch.finfo(dt).eps * 2 ** (i + 1), 0.0)
            d = out.double() - x.double()
            d = project_l2(d, eps * shrink)
            new = (x.double() + d).clamp(0.0, 1.0).to(dt)
            out = torch.where(_bcast(bad, out), new, out)
    raise RuntimeError(f"fit_to_threat_model: could not fit x_adv into the {norm} ball of radius {eps} "
                       f"in {dt} after {max_rounds} rounds")  # pragma: no cover - not reachable in practice


# ---------------------------------------------------------------------------------------------
# the base class


class Attack:
    """Base class. Subclasses set `norms` and implement `_attack(model, x, y, generator) -> x_adv`
    on one chunk; `__call__` does the checks, the dtype and device handling, chunking, seeding,
    gradient and train/eval mode handling, and the final projection, once for every attack.

    A subclass's constructor takes its own settings and `**common`, the keyword-only options every
    attack shares (seed, chunk_size, checks, amp), and passes them on to `Attack.__init__`:

        def __init__(self, eps=None, steps=10, norm="linf", **common):
            super().__init__(eps, norm, **common)
    """

    norms: tuple = NORMS
    randomized: bool = False  # True when the result depends on the seed
    unbounded: bool = False   # True for minimal-perturbation attacks, where eps=None means no eps ball

    def __init__(self, eps: float | None = None, norm: str = "linf", targeted: bool = False, *, seed: int = 0,
                 chunk_size: int = 1000, checks: bool = True, amp: bool = False):
        norm = check_norm(norm, self.norms)
        if eps is None and not self.unbounded:
            eps = default_eps(norm)
        self.eps = check_eps(eps, allow_none=self.unbounded)
        self.norm = norm
        self.targeted = bool(targeted)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: must be an int, got {seed!r}")
        self.seed = seed
        self.chunk_size = check_positive(chunk_size, "chunk_size", integer=True)
        for name, v in (("checks", checks), ("amp", amp)):
            if not isinstance(v, bool):
                raise ValueError(f"{name}: must be True or False, got {v!r}")
        self.checks = checks
        self.amp = amp
        self.last_checks: list[str] = []

    def __init_subclass__(cls, **kwargs):
        """Show the shared keyword-only options in a subclass's signature (help(), Jupyter's
        shift-tab, inspect.signature) although its constructor only says **common."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        sig = inspect.signature(init)
        own = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        if len(own) == len(sig.parameters):
            return
        shared = [p for p in inspect.signature(Attack.__init__).parameters.values()
                  if p.kind is p.KEYWORD_ONLY and p.name not in sig.parameters]
        init.__signature__ = sig.replace(parameters=own + shared)

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
        if not callable(model):
            raise ValueError(f"model: expected an nn.Module mapping images to logits, got {type(model).__name__}")
        xm, ym = check_fit(model, x, y)  # ValueError naming x or y; x on the model's device, labels int64
        if len(xm) == 0:
            return x.clone()
        if torch.is_inference_mode_enabled() or xm.is_inference() or ym.is_inference():
            with torch.inference_mode(False):  # autograd cannot use inference tensors: normal copies
                xm, ym = xm.clone(), ym.clone()
                return self._call(model, x, xm, ym)
        return self._call(model, x, xm, ym)

    def _call(self, model, x, xm, y):
        is_module = isinstance(model, nn.Module)
        was_training = is_module and any(m.training for m in model.modules())
        work = torch.float32 if xm.dtype in HALF else xm.dtype      # iterates in float32 for half inputs
        fwd = _model_dtype(model) or xm.dtype                        # what the model's first layer takes
        net = model
        if fwd != work:
            net = _CastInput(model, fwd)
            net.training = False  # the wrapper's own flag only: eval_mode below handles the model's
        xw = xm.detach().to(work)
        ref = x.detach().to(xm.device)  # the input in its own dtype: the final projection is in it
        with torch.enable_grad(), eval_mode(model) if is_module else nullcontext():
            # attacks may be called inside torch.no_grad(); every one needs input gradients
            with torch.no_grad():
                logits = net(xw[:1])
            if not torch.is_tensor(logits) or logits.dim() != 2:
                shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
                raise ValueError(f"model: expected logits of shape (N, num_classes), got {shape}")
            check_labels(y, len(xw), logits.shape[1], "y")
            if self.checks and is_module:
                self.last_checks = self._runtime_checks(net, xw, y, was_training)
            g = torch.Generator().manual_seed(self.seed)
            out = []
            for i in range(0, len(xw), self.chunk_size):
                xc, yc = xw[i:i + self.chunk_size], y[i:i + self.chunk_size]
                xa = self._attack(net, xc.clone(), yc, g).detach()
                with torch.autocast(xa.device.type, enabled=False):  # the projection is exact, never autocast
                    out.append(self._finalize(xa, ref[i:i + self.chunk_size]))
        return torch.cat(out).to(x.device)

    def _runtime_checks(self, model, x, y, was_training: bool) -> list[str]:
        """The sanity checks of `runtime_checks` (a black-box attack overrides them)."""
        return runtime_checks(model, x, y, getattr(self, "eot_iter", 1), was_training)

    def _finalize(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x_adv in x's dtype, projected into the eps ball and [0, 1] once more, so that the threat
        model holds exactly (see `fit_to_threat_model`)."""
        return fit_to_threat_model(x_adv, x, self.eps, self.norm)

    def _attack(self, model, x, y, generator):  # pragma: no cover - abstract
        raise NotImplementedError
