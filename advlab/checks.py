"""Immediate, specific feedback for the exercise notebooks.

Each exercise blank is followed by a check cell:

    checks.check_linf_norm(linf_norm)

A check runs the student's function on fixed inputs, compares it with advlab's reference
implementation and either prints "✅ ..." (returns True) or raises AssertionError with a
specific diagnosis ("your FGSM leaves the [0,1] box at 37 pixels ..."). A blank that is still
`raise NotImplementedError` prints "⏳ not implemented yet — fill in the blank above" instead
(returns False), so exercise notebooks run top to bottom in CI.

Adding checks for a later lecture: write `check_<exercise>(student, ...)` decorated with
`@register`; its body raises `fail(...)` (an AssertionError) or returns the success message.
The assert_* helpers below give the standard diagnoses (threat model, box, in-place, shape).
`CHECKS` maps exercise names to their checks.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch

PENDING = "⏳ not implemented yet — fill in the blank above"
CHECKS: dict[str, Callable] = {}
RESULTS: dict[str, str] = {}   # exercise name -> "passed" | "pending" | "failed", for summary()


class _Pending(Exception):
    """The student's answer is still a blank."""


def fail(message: str) -> AssertionError:
    """The AssertionError a check raises: `raise fail("your ...")`."""
    return AssertionError(f"❌ {message}")


def register(check_fn: Callable) -> Callable:
    """Decorator for `check_<name>(student, ...)` functions.

    The wrapped check prints "✅ <message>" and returns True when the body returns <message>;
    prints PENDING and returns False when the answer is None or raises NotImplementedError;
    lets AssertionError (the diagnosis) propagate.
    """
    name = check_fn.__name__.removeprefix("check_")

    @functools.wraps(check_fn)
    def wrapper(student, *args, **kwargs):
        if student is None:
            RESULTS[name] = "pending"
            print(PENDING)
            return False
        try:
            message = check_fn(student, *args, **kwargs)
        except (NotImplementedError, _Pending):
            RESULTS[name] = "pending"
            print(PENDING)
            return False
        except AssertionError:
            RESULTS[name] = "failed"
            raise
        RESULTS[name] = "passed"
        print(f"✅ {message}" if message else f"✅ {name}: all checks passed")
        return True

    CHECKS[name] = wrapper
    return wrapper


def run_check(fn: Callable, *args, **kwargs):
    """Call fn(*args, **kwargs); if it is still a blank (raises NotImplementedError) print PENDING
    and return None instead of failing. Use it for cells that *use* a student's function:

        x_noisy = checks.run_check(random_linf_perturbation, x, 0.1)
        if x_noisy is not None: ...
    """
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        print(PENDING)
        return None


def summary(names=None) -> dict:
    """Print and return the status of the checks run so far in this session (or of `names`)."""
    names = list(RESULTS) if names is None else list(names)
    status = {n: RESULTS.get(n, "not run") for n in names}
    counts = {k: sum(v == k for v in status.values()) for k in ("passed", "pending", "failed", "not run")}
    print(f"{counts['passed']}/{len(status)} checks passed"
          + "".join(f", {v} {k}" for k, v in counts.items() if k != "passed" and v))
    for n, v in status.items():
        print(f"  {'✅' if v == 'passed' else '⏳' if v == 'pending' else '❌' if v == 'failed' else '·'} {n}")
    return status


# ---------------------------------------------------------------------------------------------
# standard diagnoses, for every lecture's checks


def fixed_images(n: int = 8, shape=(1, 28, 28), seed: int = 0) -> torch.Tensor:
    """Deterministic test images in [0, 1] with Fashion-MNIST-like saturated pixels (exact 0s
    and 1s, where clipping matters) and mid-grey ones."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=g)
    r = torch.rand((n, *shape), generator=g)
    x[r < 0.3] = 0.0
    x[r > 0.85] = 1.0
    return x


def call_student(fn: Callable, *args, what: str | None = None, **kwargs):
    """Call the student's function on clones of its tensor arguments and fail if it modified any
    of them in place. NotImplementedError propagates (the check reports the blank)."""
    if not callable(fn):
        raise fail(f"expected a function, got {type(fn).__name__}: pass the function itself, e.g. "
                   f"check(my_fn), not check(my_fn(...))")
    what = what or getattr(fn, "__name__", "your function")
    names = [f"argument {i + 1}" for i in range(len(args))]
    try:
        import inspect
        params = list(inspect.signature(fn).parameters)
        names = [params[i] if i < len(params) else names[i] for i in range(len(args))]
    except (TypeError, ValueError):
        pass
    copies = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    try:
        out = fn(*args, **kwargs)
    except (NotImplementedError, AssertionError):
        raise
    except Exception as e:  # noqa: BLE001 -- turned into a diagnosis, the original chained below
        shapes = ", ".join(f"{n}: shape {tuple(a.shape)}" for n, a in zip(names, args) if isinstance(a, torch.Tensor))
        raise fail(f"{what} raised {type(e).__name__}: {e}" + (f"  (inputs: {shapes})" if shapes else "")) from e
    for name, a, c in zip(names, args, copies):
        if isinstance(a, torch.Tensor) and not torch.equal(a, c):
            changed = int((a != c).sum())
            raise fail(f"{what} modified its input {name} in place ({changed} entries changed): work on a "
                       f"copy (e.g. x = x.clone(), or out-of-place ops like x + d instead of x += d)")
    return out


def assert_tensor(out, what: str, shape=None, dtype=None, like: torch.Tensor | None = None) -> torch.Tensor:
    """`out` must be a tensor of the given shape and dtype (or of the shape/dtype of `like`)."""
    if like is not None:
        shape, dtype = tuple(like.shape) if shape is None else shape, like.dtype if dtype is None else dtype
    if not isinstance(out, torch.Tensor):
        raise fail(f"{what} returned a {type(out).__name__}; expected a torch.Tensor"
                   + (f" of shape {tuple(shape)}" if shape is not None else ""))
    if shape is not None and tuple(out.shape) != tuple(shape):
        hint = ""
        if out.numel() == 1 and len(shape) == 1:
            hint = (" — a single number for the whole batch; it should give one value per example "
                    "(hint: reduce over dim=1 of x.flatten(1), not over everything)")
        raise fail(f"{what} returned shape {tuple(out.shape)}, expected {tuple(shape)}{hint}")
    if dtype is not None and out.dtype != dtype:
        raise fail(f"{what} returned dtype {out.dtype}, expected {dtype}")
    return out


def assert_in_box(x_adv: torch.Tensor, what: str, tol: float = 0.0) -> None:
    """x_adv must lie in the image box [0, 1]."""
    bad = (x_adv < -tol) | (x_adv > 1 + tol)
    if bool(bad.any()):
        raise fail(f"{what} leaves the [0,1] box at {int(bad.sum())} pixels (range "
                   f"[{x_adv.min().item():.3f}, {x_adv.max().item():.3f}]): clip with .clamp(0, 1)")


def assert_in_ball(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str, what: str,
                   tol: float = 1e-6) -> None:
    """x_adv - x must lie in the eps ball of the norm ("linf" or "l2"), up to tol."""
    delta = (x_adv - x).flatten(1)
    if norm == "linf":
        bad = delta.abs() > eps + tol
        if bool(bad.any()):
            raise fail(f"{what} leaves the eps-ball: max |delta| = {delta.abs().max().item():.3g} > eps = {eps:g} "
                       f"at {int(bad.sum())} pixels")
    else:
        norms = delta.norm(dim=1)
        bad = norms > eps + tol
        if bool(bad.any()):
            raise fail(f"{what} leaves the L2 eps-ball at {int(bad.sum())} of {len(norms)} examples: largest "
                       f"||delta||_2 = {norms.max().item():.3g} > eps = {eps:g}")


def assert_close(got: torch.Tensor, expected: torch.Tensor, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Elementwise agreement with the reference, naming the first disagreeing example."""
    ok = torch.isclose(got.float(), expected.float(), atol=atol, rtol=rtol)
    if not bool(ok.all()):
        i = int((~ok).flatten().nonzero()[0])
        raise fail(f"{what} is wrong at {int((~ok).sum())} of {ok.numel()} entries, e.g. entry {i}: got "
                   f"{got.flatten()[i].item():.5g}, expected {expected.flatten()[i].item():.5g}")


def _matches(got: torch.Tensor, candidate: torch.Tensor) -> bool:
    return got.shape == candidate.shape and bool(torch.allclose(got.float(), candidate.float(), atol=1e-5, rtol=1e-4))


# ---------------------------------------------------------------------------------------------
# exercise set 00: norms and threat models


def _norm_inputs():
    g = torch.Generator().manual_seed(1)
    grey = (torch.rand((8, 1, 28, 28), generator=g) * 2 - 1) * 0.3
    grey[0, 0, 3, 4] = -0.5       # the largest entry of example 0 is negative
    grey[1] *= -1.0
    colour = (torch.rand((3, 3, 8, 8), generator=g) * 2 - 1) * 0.2
    colour[2, 1, 0, 0] = -0.45
    return grey, colour


def _check_norm(student, p: str) -> str:
    from advlab.attacks.base import flat_norm
    name = f"{p}_norm"
    for delta in _norm_inputs():
        n = len(delta)
        out = call_student(student, delta, what=f"your {name}")
        assert_tensor(out, f"your {name}", shape=(n,))
        ref = flat_norm(delta, p)
        if _matches(out, ref):
            continue
        flat = delta.flatten(1)
        if p == "linf" and _matches(out, flat.amax(1)):
            raise fail(f"your {name} ignores negative entries (example 0's largest change is -0.5, you returned "
                       f"{out[0].item():.3g}): take the absolute value first, delta.abs()")
        if p == "linf" and _matches(out, flat.norm(dim=1)):
            raise fail(f"your {name} computes the L2 norm; the Linf norm is the largest |entry| per example")
        if p == "l2" and _matches(out, flat.pow(2).sum(1)):
            raise fail(f"your {name} looks like the squared L2 norm: did you forget the square root?")
        if p == "l2" and _matches(out, flat.abs().sum(1)):
            raise fail(f"your {name} computes the L1 norm (sum of |delta|); L2 is the square root of the sum "
                       f"of squares")
        if p == "l2" and _matches(out, flat.abs().amax(1)):
            raise fail(f"your {name} computes the Linf norm (largest |entry|); L2 is sqrt(sum of squares)")
        if delta.shape[1] == 3:
            raise fail(f"your {name} is right on grey 28x28 images but wrong on colour (3, 8, 8) images: don't "
                       f"hard-code the image size, flatten each example with delta.flatten(1)")
        assert_close(out, ref, f"your {name}")
    sym = "∞" if p == "linf" else "₂"
    return (f"{name}: one ‖δ‖{sym} per example, correct on 8 grey 28x28 and 3 colour 8x8 perturbations, "
            f"input untouched")


@register
def check_linf_norm(student) -> str:
    """Exercise 00.1a: linf_norm(delta) -> (N,) tensor of max_i |delta_i| per example."""
    return _check_norm(student, "linf")


@register
def check_l2_norm(student) -> str:
    """Exercise 00.1b: l2_norm(delta) -> (N,) tensor of sqrt(sum_i delta_i^2) per example."""
    return _check_norm(student, "l2")


def _reference_in_threat_model(x, x_adv, eps, norm, tol=1e-6):
    from advlab.attacks.base import flat_norm
    in_ball = flat_norm(x_adv - x, norm) <= eps + tol
    in_box = ((x_adv >= 0) & (x_adv <= 1)).flatten(1).all(1)
    return in_ball & in_box


def _threat_model_cases(norm: str):
    """(x, x_adv, eps, descriptions) with a known answer per example."""
    x = fixed_images(8, seed=3)
    x[:, :, 10:14, 10:14] = 0.5                      # a mid-grey patch every example has
    x[:, :, 0, 0], x[:, :, 0, 1] = 0.0, 1.0          # a black and a white pixel every example has
    g = torch.Generator().manual_seed(4)
    sign = torch.randn(x.shape, generator=g).sign()
    d = x[0].numel()
    if norm == "linf":
        eps = 0.1
        unit = sign                                   # ||unit||_inf = 1
        small, tiny = 0.5 * eps * unit, 0.09 * unit
    else:
        eps = 1.5
        unit = sign / math.sqrt(d)                    # ||unit||_2 = 1
        small, tiny = 0.5 * eps * unit, 0.05 * sign   # tiny: Linf 0.05 but L2 = 0.05*28 = 1.4 (inside)
    cases = []
    # 0: unchanged
    cases.append((x[0].clone(), True, "x_adv = x (no change at all)"))
    # 1: inside the ball, then clipped: inside
    cases.append(((x[1] + small[1]).clamp(0, 1), True, "a perturbation of half the budget, clipped to [0,1]"))
    # 2: on the boundary: every pixel of the mid-grey patch moved by the whole budget
    on = torch.zeros_like(x[2])
    if norm == "linf":
        on[:, 10:14, 10:14] = eps
    else:
        on[:, 10:14, 10:14] = eps / 4.0               # 16 pixels: L2 = eps
    cases.append((x[2] + on, True, "on the boundary of the ball: norm = eps up to float rounding"))
    # 3: outside the ball: one pixel by 1.5 eps (Linf); the 16-pixel patch by 0.45 each, L2 = 1.8 (L2)
    out3 = x[3].clone()
    if norm == "linf":
        out3[0, 11, 11] = 0.5 + 1.5 * eps
    else:
        out3[0, 10:14, 10:14] = 0.5 + 0.45
    cases.append((out3, False, "outside the ball (pixels moved by more than the budget allows)"))
    # 4: inside the ball but below 0 at the black pixel
    out4 = x[4].clone()
    out4[0, 0, 0] = -0.05
    cases.append((out4, False, "inside the ball but with a pixel at -0.05, outside the [0,1] box"))
    # 5: inside the ball but above 1 at the white pixel
    out5 = x[5].clone()
    out5[0, 0, 1] = 1.05
    cases.append((out5, False, "inside the ball but with a pixel at 1.05, outside the [0,1] box"))
    # 6: far outside, but clipped to the box
    cases.append(((x[6] + 3 * eps * unit[6]).clamp(0, 1), False, "three times the budget (clipped to [0,1])"))
    # 7: a small perturbation, dominated by negative entries
    cases.append(((x[7] - tiny[7].abs() * (x[7] > 0.2)).clamp(0, 1), True,
                  "a small perturbation that only darkens pixels"))
    x_adv = torch.stack([c[0] for c in cases])
    expected = torch.tensor([c[1] for c in cases])
    return x, x_adv, eps, expected, [c[2] for c in cases]


@register
def check_in_threat_model(student) -> str:
    """Exercise 00.2: in_threat_model(x, x_adv, eps, norm) -> (N,) bool tensor: True where
    x_adv - x is in the eps ball of `norm` (allowing 1e-6 for float rounding) AND x_adv is in [0, 1]."""
    for norm in ("linf", "l2"):
        x, x_adv, eps, expected, desc = _threat_model_cases(norm)
        ref = _reference_in_threat_model(x, x_adv, eps, norm)
        assert torch.equal(ref, expected), "internal error: the reference disagrees with the check's cases"
        out = call_student(student, x, x_adv, eps, norm, what="your in_threat_model")
        if isinstance(out, bool):
            raise fail("your in_threat_model returned a single bool; it should return one bool per example, "
                       f"a tensor of shape ({len(x)},) (hint: reduce over dim=1 of (x_adv - x).flatten(1))")
        assert_tensor(out, "your in_threat_model", shape=(len(x),))
        if out.dtype != torch.bool:
            raise fail(f"your in_threat_model returned dtype {out.dtype}; return booleans (a comparison like "
                       f"norms <= eps gives torch.bool)")
        wrong = (out != expected).nonzero().flatten().tolist()
        if wrong:
            other = "l2" if norm == "linf" else "linf"
            ball_only = _reference_in_threat_model(x, x_adv, eps, norm) | ~((x_adv >= 0) & (x_adv <= 1)).flatten(1).all(1)
            if torch.equal(out, _reference_in_threat_model(x, x_adv, eps, other)):
                hint = (f"for norm={norm!r} you seem to measure the {other} norm; "
                        + ("Linf is the largest |entry|" if norm == "linf" else "L2 is sqrt(sum of squares)"))
            elif torch.equal(out, _reference_in_threat_model(x, x_adv, eps, norm, tol=0.0)):
                hint = "allow for float rounding: compare with <= eps + 1e-6"
            elif torch.equal(out, ball_only):
                hint = "check the box constraint too: every pixel of x_adv must lie in [0, 1]"
            else:
                hint = {2: "allow for float rounding: compare with <= eps + 1e-6",
                        4: "every pixel of x_adv must lie in [0, 1]", 5: "every pixel of x_adv must lie in [0, 1]"
                        }.get(wrong[0], f"measure the {norm} norm of x_adv - x per example and compare it with eps")
            i = wrong[0]
            said = "inside" if bool(out[i]) else "outside"
            raise fail(f"norm={norm!r}, eps={eps:g}: example {i} ({desc[i]}) is "
                       f"{'inside' if bool(expected[i]) else 'outside'} the threat model, your function says "
                       f"{said}" + (f" (and {len(wrong) - 1} more wrong)" if len(wrong) > 1 else "") + f" — {hint}")
    return ("in_threat_model: right on 16 cases for Linf (eps=0.1) and L2 (eps=1.5): inside, on the boundary, "
            "outside the ball, outside the [0,1] box")


@register
def check_random_linf_perturbation(student, eps: float = 0.1) -> str:
    """Exercise 00.3: random_linf_perturbation(x, eps) -> x + delta clipped to [0, 1], with delta
    uniform in [-eps, eps] independently per pixel."""
    x = fixed_images(8, seed=5)
    what = "your random_linf_perturbation"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        out = call_student(student, x, eps, what=what)
        out2 = call_student(student, x, eps, what=what)
    assert_tensor(out, what, like=x)
    assert_in_box(out, what)
    assert_in_ball(x, out, eps, "linf", what)
    d = out - x
    if bool((d == 0).all()):
        raise fail(f"{what} returned x unchanged: add random noise")
    if torch.equal(out, out2):
        raise fail(f"{what} gave the same noise on two calls: don't re-seed inside the function")
    interior = (x >= eps) & (x <= 1 - eps)            # pixels where clipping cannot act
    spread = [float(d[i][interior[i]].max() - d[i][interior[i]].min()) for i in range(len(x))]
    if min(spread) < 1e-6:
        raise fail(f"{what} adds the same random number to every pixel of an image: draw one value per "
                   f"pixel (torch.rand_like(x) has x's shape)")
    di = d[interior]
    if bool((di >= 0).all()) or bool((di <= 0).all()):
        raise fail(f"all your perturbations have the same sign: draw from [-eps, eps], not [0, eps] "
                   f"(e.g. (2 * torch.rand_like(x) - 1) * eps)")
    corners = float((di.abs() > 0.999 * eps).float().mean())
    if corners > 0.9:
        raise fail(f"{100 * corners:.0f}% of the pixels moved by exactly ±eps: that is a random corner of the "
                   f"ball, not a uniform point in it; use (2 * torch.rand_like(x) - 1) * eps")
    half = float((di.abs() < eps / 2).float().mean())
    mean = float(di.mean())
    if not 0.44 <= half <= 0.56 or abs(mean) > 0.1 * eps:
        raise fail(f"your noise is not uniform in [-eps, eps]: {100 * half:.0f}% of unclipped pixels moved by "
                   f"less than eps/2 (uniform noise: 50%), mean change {mean:+.3f} (uniform: 0)")
    if bool((d[~interior] != (x[~interior] + d[~interior]).clamp(0, 1) - x[~interior]).any()):
        raise fail(f"{what} is not x + noise clipped to [0, 1] near the black and white pixels")
    return (f"random_linf_perturbation: inside the ε-ball and the [0,1] box, fresh noise on every call, and "
            f"uniform — {100 * half:.0f}% of unclipped pixels moved by less than ε/2 (expected 50%)")


@register
def check_corner_l2(value, eps: float = 0.1, d: int = 784) -> str:
    """Exercise 00.4: the L2 norm of a corner of the Linf ball of radius eps in d dimensions."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    if not isinstance(value, (int, float)):
        raise fail(f"corner_l2 should be a number, got {type(value).__name__}")
    ref = eps * math.sqrt(d)
    if math.isclose(value, ref, rel_tol=1e-4):
        return (f"corner_l2 = {value:.2f}: a corner of the L∞ ball (ε = {eps:g}) is {value:.2f} away in L2, "
                f"√{d} = {math.sqrt(d):.0f} times ε")
    for cand, msg in ((eps * d, "forgot the square root: the corner has d entries of size eps, so its L2 norm "
                                "is sqrt(d * eps**2)"),
                      (eps ** 2 * d, "computed the squared L2 norm: take the square root"),
                      (eps, "computed the Linf norm of the corner; its L2 norm counts every one of the d pixels")):
        if math.isclose(value, cand, rel_tol=1e-4):
            raise fail(f"corner_l2 = {value:.4g}: you {msg}")
    raise fail(f"corner_l2 = {value:.4g} is not the L2 norm of a corner (every one of the {d} entries is ±{eps:g})")


# ---------------------------------------------------------------------------------------------
# exercise set 01: FGSM, the projections, one PGD step, the targeted loss, PGD assembled


@functools.lru_cache(maxsize=1)
def _toy_classifier() -> torch.nn.Module:
    """A small fixed MLP (784-64-10, tanh), weights from a fixed seed, in eval mode. The exercise-01
    checks run students' attacks on it: fast, offline, deterministic, and its input gradient is
    nonzero at every pixel (so every pixel of an FGSM step moves)."""
    nn = torch.nn
    g = torch.Generator().manual_seed(101)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.Tanh(), nn.Linear(64, 10))
    with torch.no_grad():
        for p, scale in zip(net.parameters(), (1.0 / 28, 0.5, 0.8, 0.5)):
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return net.eval().requires_grad_(False)


def _toy_batch(n: int = 8, seed: int = 11):
    """Images (with exact 0s and 1s) and the toy classifier's own predictions as labels, so the
    loss starts low and an attack has something to increase."""
    x = fixed_images(n, seed=seed)
    with torch.no_grad():
        y = _toy_classifier()(x).argmax(1)
    return x, y


def _toy_grad(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F
    xr = x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(_toy_classifier()(xr), y, reduction="sum")
        g, = torch.autograd.grad(loss, xr)
    return g


def _toy_loss(x: torch.Tensor, y: torch.Tensor) -> float:
    import torch.nn.functional as F
    with torch.no_grad():
        return F.cross_entropy(_toy_classifier()(x), y).item()


def _no_grad_leak(out: torch.Tensor, what: str) -> None:
    if out.requires_grad:
        raise fail(f"{what} returns a tensor that still requires grad (it carries the autograd graph along): "
                   f"return x_adv.detach()")


def _untouched_requires_grad(x: torch.Tensor, what: str) -> None:
    if x.requires_grad:
        raise fail(f"{what} switched on requires_grad of the caller's x (x.requires_grad_() changes the tensor "
                   f"you were given): work on a copy, e.g. x_adv = x.clone().detach().requires_grad_(True)")


def _size_hint(e: AssertionError) -> AssertionError:
    """Add the broadcasting hint to a 'raised RuntimeError: The size of tensor a ...' diagnosis."""
    msg = str(e).removeprefix("❌ ")
    if "RuntimeError" in msg and "size of tensor" in msg:
        return fail(msg + " — hint: per-example norms have shape (N,); reshape them to (N, 1, 1, 1) "
                          "(e.g. norms.view(-1, 1, 1, 1)) to scale a batch of shape (N, C, H, W)")
    return e


@register
def check_fgsm(student, eps: float = 0.1) -> str:
    """Exercise 01.1: fgsm(model, x, y, eps) -> x_adv = clip(x + eps * sign(∇ₓ CE(model(x), y)), 0, 1)."""
    what = "your fgsm"
    model = _toy_classifier()
    x, y = _toy_batch(8, seed=11)
    out = call_student(student, model, x, y, eps, what=what)
    _untouched_requires_grad(x, what)
    if isinstance(out, tuple):
        raise fail(f"{what} returned a tuple of {len(out)} things; return only the adversarial images x_adv")
    assert_tensor(out, what, like=x)
    _no_grad_leak(out, what)
    out = out.detach()
    g = _toy_grad(x, y)
    s = g.sign()
    ref = (x + eps * s).clamp(0, 1)
    if not _matches(out, ref):
        l0, l1 = _toy_loss(x, y), _toy_loss(out.clamp(0, 1), y)
        if _matches(out, eps * s) or _matches(out, ref - x):
            raise fail(f"{what} returned the perturbation δ = eps·sign(∇), not the image: return "
                       f"(x + δ).clamp(0, 1)")
        if _matches(out, (x - eps * s).clamp(0, 1)) or _matches(out, x - eps * s):
            raise fail(f"{what} descends the loss (mean loss went from {l0:.3f} to {l1:.3f}): x - eps·sign(∇) makes "
                       f"the model more confident; an untargeted attack steps along +sign(∇ₓ loss)")
        if _matches(out, (x + s).clamp(0, 1)) or _matches(out, x + s):
            raise fail(f"{what} moved pixels by 1 instead of eps={eps:g}: did you multiply the sign by eps?")
        interior = (x >= eps + 1e-4) & (x <= 1 - eps - 1e-4)       # pixels where clipping cannot act
        d = (out - x)[interior]
        if bool((d.abs() < 1e-7).all()):
            raise fail(f"{what} returned x unchanged (away from the black and white pixels nothing moved): did the "
                       f"gradient come out as zero or None? Take it with respect to a copy of x that requires grad")
        if float(d.abs().max() - d.abs().min()) < 1e-5 and abs(float(d.abs().mean()) - eps) > 1e-5:
            raise fail(f"{what} moved pixels by {float(d.abs().mean()):.3g} instead of eps={eps:g}: did you multiply "
                       f"the sign by eps?")
        gi = g[interior]
        cos = float((d * gi).sum() / (d.norm() * gi.norm()).clamp_min(1e-12))
        if cos > 0.999 and float(d.abs().max() - d.abs().min()) >= 1e-5:
            raise fail(f"{what} steps along eps·∇ (the raw gradient), so pixels move by very different amounts (from "
                       f"{float(d.abs().min()):.2g} to {float(d.abs().max()):.2g}): FGSM takes the sign, "
                       f"x + eps·sign(∇), so every pixel moves by exactly eps")
        if float(d.abs().max() - d.abs().min()) >= 1e-5:
            raise fail(f"away from 0 and 1 every pixel of an FGSM image moves by exactly eps={eps:g}, yours by "
                       f"{float(d.abs().min()):.3g} to {float(d.abs().max()):.3g}: use eps·sign(gradient)")
        agree = float((d.sign() == s[interior]).float().mean())
        if agree < 0.999:
            raise fail(f"{what} steps along sign(∇ₓ loss) at only {100 * agree:.0f}% of the pixels (mean loss went "
                       f"from {l0:.3f} to {l1:.3f}): take the gradient of F.cross_entropy(model(x_adv), y) with "
                       f"respect to the input (x_adv = x.clone().requires_grad_(True)), with the true labels y")
        assert_in_ball(x, out, eps, "linf", what)
        assert_in_box(out, what)
        bad = ~torch.isclose(out, ref, atol=1e-5)
        raise fail(f"{what} is right away from the black and white pixels but wrong at {int(bad.sum())} pixels next "
                   f"to them: the last step is clipping x + eps·sign(∇) to [0, 1] with .clamp(0, 1)")
    eps2 = 0.03
    out2 = call_student(student, model, x, y, eps2, what=what)
    assert_tensor(out2, what, like=x)
    if not _matches(out2.detach(), (x + eps2 * s).clamp(0, 1)):
        raise fail(f"{what} is right for eps={eps:g} but not for eps={eps2:g}: use the eps argument, don't hard-code it")
    return (f"fgsm: clip(x + ε·sign(∇ₓ loss), 0, 1), equal to the reference at ε = {eps:g} and {eps2:g}; the mean loss "
            f"of the test model rises from {_toy_loss(x, y):.3f} to {_toy_loss(ref, y):.3f}; x untouched")


def _projection_cases(norm: str):
    """(delta, eps) batches: inside, zero, on the boundary, outside, far outside; grey and colour."""
    g = torch.Generator().manual_seed(31)
    cases = []
    if norm == "linf":
        eps = 0.1
        d = (torch.rand((6, 1, 28, 28), generator=g) * 2 - 1) * 3 * eps
        d[0] *= 0.3                          # entirely inside
        d[1] = 0.0                           # zero
        d[2] = d[2].clamp(-eps, eps)         # inside or exactly on the boundary
        d[3, 0, 5, 5] = -0.45                # far below -eps
        cases.append((d, eps))
        cases.append(((torch.rand((3, 3, 8, 8), generator=g) * 2 - 1) * 0.6, 0.25))
    else:
        eps = 1.5
        d = torch.randn((6, 1, 28, 28), generator=g)
        d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        d = d * torch.tensor([0.5, 0.0, 1.0, 2.0, 5.0, 0.9]).view(-1, 1, 1, 1) * eps   # ‖δ‖₂ / eps per example
        cases.append((d, eps))
        c = torch.randn((3, 3, 8, 8), generator=g)
        cases.append((c / c.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * torch.tensor([0.3, 1.7, 0.8]).view(-1, 1, 1, 1), 1.0))
    return cases


def _ref_project(delta, eps, norm):
    from advlab.attacks.base import project_l2, project_linf
    return project_linf(delta, eps) if norm == "linf" else project_l2(delta, eps)


def _check_projection(student, norm: str) -> str:
    name = f"project_{norm}"
    what = f"your {name}"
    for delta, eps in _projection_cases(norm):
        try:
            out = call_student(student, delta, eps, what=what)
        except AssertionError as e:
            raise _size_hint(e) from e.__cause__
        assert_tensor(out, what, like=delta)
        ref = _ref_project(delta, eps, norm)
        if _matches(out, ref):
            continue
        flat, n = delta.flatten(1), len(delta)
        norms = flat.norm(dim=1)
        bc = lambda t: t.view(-1, *([1] * (delta.dim() - 1)))  # noqa: E731
        if bool(torch.isnan(out).any()):
            i = int(torch.isnan(out.flatten(1)).any(1).nonzero()[0])
            raise fail(f"{what} returns NaN for example {i}" + (" (a zero perturbation)" if float(norms[i]) == 0 else "")
                       + ": guard the division by the norm, e.g. norms.clamp_min(1e-12)")
        other = _ref_project(delta, eps, "l2" if norm == "linf" else "linf")
        if _matches(out, other):
            raise fail(f"{what} computes the {'L2' if norm == 'linf' else 'L∞'} projection: "
                       + ("the L∞ projection clips each entry to [-eps, eps] independently"
                          if norm == "linf" else "the L2 projection rescales each whole example by "
                          "min(1, eps / ‖δ‖₂), it does not clip entries"))
        if norm == "linf":
            linf = flat.abs().amax(1)
            if _matches(out, delta.clamp(max=eps)):
                raise fail(f"{what} only clips from above: entries below -eps stay (e.g. {float(delta.min()):.2f} "
                           f"with eps = {eps:g}); clamp to [-eps, eps]")
            if _matches(out, delta.clamp(min=-eps)):
                raise fail(f"{what} only clips from below: entries above eps stay (e.g. {float(delta.max()):.2f} "
                           f"with eps = {eps:g}); clamp to [-eps, eps]")
            if _matches(out, delta.clamp(0, eps)):
                raise fail(f"{what} clamps to [0, eps]: negative entries must stay negative; the ball is [-eps, eps]")
            if _matches(out, eps * delta.sign()):
                raise fail(f"{what} moves every entry to ±eps (that is FGSM's step, not a projection): entries "
                           f"already inside [-eps, eps] must not change")
            for cand in (delta * bc(eps / linf.clamp_min(1e-12)),
                         delta * bc(torch.clamp(eps / linf.clamp_min(1e-12), max=1.0))):
                if _matches(out, cand):
                    raise fail(f"{what} rescales whole examples, which also shrinks entries that were already inside "
                               f"[-eps, eps]; the L∞ projection clips each entry independently: "
                               f"delta.clamp(-eps, eps)")
        else:
            scale = torch.clamp(eps / norms.clamp_min(1e-12), max=1.0)
            if _matches(out, delta * bc(eps / norms.clamp_min(1e-12))):
                i = int(((norms < eps) & (norms > 0)).nonzero()[0])
                raise fail(f"{what} also rescales vectors already inside the ball: example {i} has "
                           f"‖δ‖₂ = {float(norms[i]):.3g} < eps = {eps:g} and must stay unchanged, yours has "
                           f"‖δ‖₂ = {float(out[i].flatten().norm()):.3g}; scale by min(1, eps / ‖δ‖₂)")
            whole = float(flat.norm())
            if _matches(out, delta * min(1.0, eps / whole)) or _matches(out, delta * eps / whole):
                raise fail(f"{what} computes one norm for the whole batch ({whole:.3g}); each example has its own: "
                           f"norms = delta.flatten(1).norm(dim=1), shape (N,)")
            if _matches(out, delta * bc(torch.clamp(eps / norms.pow(2).clamp_min(1e-12), max=1.0))):
                raise fail(f"{what} divides by the squared norm: the factor is min(1, eps / ‖δ‖₂)")
            if _matches(out, delta * bc(torch.clamp(eps ** 2 / norms.pow(2).clamp_min(1e-12), max=1.0))):
                raise fail(f"{what} uses squared norms: ‖result‖₂ must be eps (not eps²/‖δ‖₂); the factor is "
                           f"min(1, eps / ‖δ‖₂)")
            got = out.flatten(1).norm(dim=1)
            want = torch.minimum(norms, torch.tensor(eps))
            inside = norms <= eps
            moved_inside = inside & ~torch.isclose(out.flatten(1), flat, atol=1e-6).all(1)
            if bool(moved_inside.any()):
                i = int(moved_inside.nonzero()[0])
                verb = "shrinks" if float(got[i]) < float(norms[i]) else "changes"
                raise fail(f"{what} also {verb} vectors already inside the ball: example {i} has ‖δ‖₂ = "
                           f"{float(norms[i]):.3g} ≤ eps = {eps:g} and must stay unchanged (yours: ‖·‖₂ = "
                           f"{float(got[i]):.3g})")
            bad = ~torch.isclose(got, want, atol=1e-4, rtol=1e-4)
            if bool(bad.any()):
                i = int(bad.nonzero()[0])
                raise fail(f"{what}: example {i} has ‖δ‖₂ = {float(norms[i]):.3g} > eps = {eps:g}; its projection "
                           f"must have norm eps, yours has {float(got[i]):.3g}")
            cos = (out.flatten(1) * flat).sum(1) / (got * norms).clamp_min(1e-12)
            if bool((cos[norms > 0] < 1 - 1e-4).any()):
                raise fail(f"{what} changes the direction of some perturbations: the projection only rescales "
                           f"(multiply each example by min(1, eps / ‖δ‖₂))")
        out_of_ball = (out.flatten(1).abs().amax(1) > eps + 1e-6) if norm == "linf" else \
            (out.flatten(1).norm(dim=1) > eps + 1e-5)
        if bool(out_of_ball.any()):
            i = int(out_of_ball.nonzero()[0])
            raise fail(f"{what} leaves example {i} outside the ball of radius eps = {eps:g}")
        if delta.shape[1] == 3:
            raise fail(f"{what} is right on grey 28x28 batches but wrong on colour (3, 8, 8) ones (eps = {eps:g}): "
                       f"don't hard-code the image size or eps")
        assert_close(out, ref, what)
    if norm == "linf":
        return ("project_linf: every entry clipped to [-ε, ε], entries inside untouched; right on grey and colour "
                "batches and two radii; input untouched")
    return ("project_l2: examples outside the ball rescaled to ‖δ‖₂ = ε, those inside (and the zero vector) left "
            "alone, one norm per example; right on grey and colour batches; input untouched")


@register
def check_project_linf(student) -> str:
    """Exercise 01.2a: project_linf(delta, eps) -> the closest point of the L∞ ball: each entry clipped to [-eps, eps]."""
    return _check_projection(student, "linf")


@register
def check_project_l2(student) -> str:
    """Exercise 01.2b: project_l2(delta, eps) -> delta * min(1, eps / ‖delta‖₂), one norm per example."""
    return _check_projection(student, "l2")


def _pgd_step_case(norm: str):
    """(x_adv, x, grad, alpha, eps, y): a PGD iterate partly on the boundary of the ball, and the
    toy model's input gradient there."""
    x, y = _toy_batch(8, seed=12)
    g = torch.Generator().manual_seed(13)
    if norm == "l2":   # mid-grey images: clipping to [0, 1] barely acts, so the L2 projection must
        x = 0.2 + 0.6 * torch.rand(x.shape, generator=g)
        with torch.no_grad():
            y = _toy_classifier()(x).argmax(1)
    if norm == "linf":
        eps, alpha = 0.1, 0.03
        d = (torch.rand(x.shape, generator=g) * 2 - 1) * eps
        d[:4] = eps * torch.randn(d[:4].shape, generator=g).sign()       # on the corners: projection matters
    else:
        eps, alpha = 1.5, 0.5
        d = torch.randn(x.shape, generator=g)
        d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * eps * torch.tensor(
            [0.98, 0.95, 1.0, 0.9, 0.2, 0.3, 0.5, 0.1]).view(-1, 1, 1, 1)
    x_adv = (x + d).clamp(0, 1)
    return x_adv, x, _toy_grad(x_adv, y), alpha, eps, y


def _steps(x_adv, x, grad, alpha, eps, norm):
    """The reference PGD step and the usual wrong ones, by name."""
    from advlab.attacks.base import normalize_l2
    unit = grad.sign() if norm == "linf" else normalize_l2(grad)
    P = lambda d: _ref_project(d, eps, norm)  # noqa: E731
    c = {
        "ref": (x + P(x_adv + alpha * unit - x)).clamp(0, 1),
        "ref_clip_first": x + P((x_adv + alpha * unit).clamp(0, 1) - x),
        "descend": (x + P(x_adv - alpha * unit - x)).clamp(0, 1),
        "from_x": (x + P(alpha * unit)).clamp(0, 1),
        "no_projection": (x_adv + alpha * unit).clamp(0, 1),
        "no_clip": x + P(x_adv + alpha * unit - x),
        "eps_step": (x + P(x_adv + eps * unit - x)).clamp(0, 1),
        "other_norm_step": (x + P(x_adv + alpha * (normalize_l2(grad) if norm == "linf" else grad.sign()) - x)).clamp(0, 1),
        "other_norm_projection": (x + _ref_project(x_adv + alpha * unit - x, eps,
                                                   "l2" if norm == "linf" else "linf")).clamp(0, 1),
    }
    if norm == "l2":
        c["raw_grad"] = (x + P(x_adv + alpha * grad - x)).clamp(0, 1)
        c["batch_norm"] = (x + P(x_adv + alpha * grad / grad.norm() - x)).clamp(0, 1)
    return c


@register
def check_pgd_step(student) -> str:
    """Exercise 01.3: pgd_step(x_adv, x, grad, alpha, eps, norm) -> one PGD step: x_adv + alpha * sign(grad)
    (linf) or x_adv + alpha * grad / ‖grad‖₂ (l2, per example); project x_new - x onto the eps ball;
    clip to [0, 1]."""
    what = "your pgd_step"
    msgs = []
    for norm in ("linf", "l2"):
        x_adv, x, grad, alpha, eps, y = _pgd_step_case(norm)
        try:
            out = call_student(student, x_adv, x, grad, alpha, eps, norm, what=what)
        except AssertionError as e:
            raise _size_hint(e) from e.__cause__
        assert_tensor(out, what, like=x)
        _no_grad_leak(out, what)
        c = _steps(x_adv, x, grad, alpha, eps, norm)
        l0, l1 = _toy_loss(x_adv, y), _toy_loss(out.clamp(0, 1), y)
        if _matches(out, c["ref"]) or (norm == "l2" and _matches(out, c["ref_clip_first"])):
            msgs.append(f"{norm}: loss {l0:.3f} → {l1:.3f}")
            continue
        unit = "alpha·sign(grad)" if norm == "linf" else "alpha·grad/‖grad‖₂"
        where = f"norm={norm!r}: "
        if _matches(out, c["descend"]):
            raise fail(f"{where}your PGD step descends the loss (loss went from {l0:.3f} to {l1:.3f}): an untargeted "
                       f"attack adds +{unit}")
        if _matches(out, c["from_x"]):
            raise fail(f"{where}you stepped from x, not from the current iterate x_adv: x_new = x_adv + {unit}, "
                       f"then project x_new - x")
        if _matches(out, c["no_projection"]):
            d = (out - x).flatten(1)
            size = d.abs().amax(1).max() if norm == "linf" else d.norm(dim=1).max()
            raise fail(f"{where}your step leaves the eps-ball (largest ‖x_new - x‖ = {float(size):.3g} > eps = {eps:g}): "
                       f"project the total perturbation x_new - x onto the {norm} ball, not only the step {unit} "
                       f"(which is smaller than eps anyway)")
        if _matches(out, c["no_clip"]):
            assert_in_box(out, f"{where}your pgd_step")
        if _matches(out, c["eps_step"]):
            raise fail(f"{where}your step has size eps = {eps:g}; PGD takes small steps of size alpha = {alpha:g} and "
                       f"relies on the projection to stay in the ball")
        if _matches(out, c["other_norm_step"]):
            raise fail(f"{where}wrong step direction: for 'linf' the step is alpha·sign(grad), for 'l2' it is "
                       f"alpha·grad/‖grad‖₂ per example; you used the other one")
        if _matches(out, c["other_norm_projection"]):
            raise fail(f"{where}wrong projection: project with the {norm} ball "
                       + ("(clip each entry to [-eps, eps])" if norm == "linf" else "(rescale to ‖·‖₂ ≤ eps)"))
        if norm == "l2" and _matches(out, c["raw_grad"]):
            raise fail(f"{where}you stepped along alpha·grad; for L2 normalise the gradient of each example to length 1 "
                       f"first: grad / ‖grad‖₂ (per example, shape (N, 1, 1, 1))")
        if norm == "l2" and _matches(out, c["batch_norm"]):
            raise fail(f"{where}you normalised the gradient by the norm of the whole batch; normalise each example by "
                       f"its own norm (grad.flatten(1).norm(dim=1))")
        assert_in_ball(x, out, eps, norm, f"{where}your pgd_step", tol=1e-5)
        assert_in_box(out, f"{where}your pgd_step")
        if l1 < l0:
            raise fail(f"{where}your PGD step descends the loss (loss went from {l0:.3f} to {l1:.3f})")
        assert_close(out, c["ref"], f"{where}your pgd_step")
    return ("pgd_step: ascend, project the total perturbation onto the ε-ball, clip to [0,1]; right for L∞ and L2 "
            f"({'; '.join(msgs)}); inputs untouched")


def _targeted_cases():
    g = torch.Generator().manual_seed(41)
    z = torch.randn((8, 10), generator=g) * 3
    t = torch.randint(0, 10, (8,), generator=g)
    t[0] = z[0].argmax()                    # one example already predicted as its target
    t[1] = z[1].argmin()                    # one whose target is the least likely class
    z5 = torch.randn((5, 5), generator=g) * 2
    t5 = torch.tensor([4, 0, 2, 1, 3])
    return [(z, t), (z5, t5)]


@register
def check_targeted_loss(student) -> str:
    """Exercise 01.5: targeted_loss(logits, target) -> (N,) per-example loss whose *descent* makes the
    target class more likely: the cross-entropy to the target (or the targeted margin
    max_{j≠t} z_j - z_t)."""
    import torch.nn.functional as F
    what = "your targeted_loss"
    kind = None
    for z, t in _targeted_cases():
        n = len(z)
        zr = z.clone().requires_grad_(True)
        with torch.enable_grad():
            out = call_student(student, zr, t, what=what)
        if isinstance(out, (int, float)):
            raise fail(f"{what} returned a Python number; return a tensor of {n} losses (no .item())")
        ce = F.cross_entropy(z, t, reduction="none")
        margin = z.scatter(1, t[:, None], float("-inf")).amax(1) - z.gather(1, t[:, None]).squeeze(1)
        if isinstance(out, torch.Tensor) and out.dim() == 0:
            v = out.detach()
            if torch.isclose(v, ce.mean()) or torch.isclose(v, ce.sum()):
                raise fail(f"{what} returns a single number (the batch {'mean' if torch.isclose(v, ce.mean()) else 'sum'} "
                           f"of the cross-entropy); return one loss per example, shape ({n},): "
                           f"F.cross_entropy(logits, target, reduction='none')")
        assert_tensor(out, what, shape=(n,))
        if not out.requires_grad:
            raise fail(f"{what} is not differentiable with respect to the logits (no autograd graph): avoid .argmax(), "
                       f".item(), torch.no_grad() and numpy inside it")
        val = out.detach()
        if _matches(val, ce):
            kind = kind or "ce"
            continue
        if _matches(val, margin):
            kind = kind or "margin"
            continue
        if _matches(val, -ce):
            raise fail(f"descending {what} makes the target *less* likely: -CE(logits, target) goes down as the "
                       f"target's probability goes down. Return the cross-entropy to the target itself; the attack "
                       f"descends it (that is where the minus sign goes)")
        if _matches(val, -margin):
            raise fail(f"descending {what} pushes the target's logit down: return max_{{j≠t}} z_j - z_t (or the "
                       f"cross-entropy to the target), not its negative")
        if _matches(val, F.cross_entropy(z.softmax(1), t, reduction="none")):
            raise fail(f"{what} applies softmax before cross_entropy; F.cross_entropy expects logits (it applies "
                       f"log-softmax itself)")
        if _matches(val, -z.gather(1, t[:, None]).squeeze(1)):
            raise fail(f"{what} is -z_t (nll_loss on raw logits?): that misses the log-softmax, so other classes "
                       f"never enter; use F.cross_entropy(logits, target, reduction='none')")
        p_t = z.softmax(1).gather(1, t[:, None]).squeeze(1)
        if _matches(val, -p_t) or _matches(val, 1 - p_t):
            raise fail(f"{what} uses the target's probability: its descent points the right way, but its gradient "
                       f"vanishes when p_target is tiny (exactly where an attack starts); use the cross-entropy "
                       f"-log p_target")
        if _matches(val, F.cross_entropy(z, z.argmax(1), reduction="none")):
            raise fail(f"{what} ignores the target: it measures the loss of the predicted class")
        with torch.enable_grad():
            gz, = torch.autograd.grad(out.sum(), zr, allow_unused=True)
        if gz is not None:
            dz_t = gz.gather(1, t[:, None]).squeeze(1)
            if bool((dz_t > 1e-7).any()):
                i = int((dz_t > 1e-7).nonzero()[0])
                raise fail(f"descending {what} lowers the target's logit for example {i}: the loss must decrease as "
                           f"the target's logit z_t grows")
        assert_close(val, ce, what)
    extra = "" if kind == "ce" else " (the targeted margin; the reference is the cross-entropy to the target)"
    return (f"targeted_loss: one loss per example, differentiable, and its descent raises the target's probability"
            f"{extra}")


def _reference_pgd(model, x, y, eps, alpha, steps, norm):
    from advlab.attacks import BIM
    return BIM(eps=eps, alpha=alpha, steps=steps, norm=norm, checks=False)(model, x, y)


@register
def check_pgd(student) -> str:
    """Exercise 01.4: pgd(model, x, y, eps, alpha, steps, norm="linf", random_start=True) built from
    pgd_step; without the random start it must agree with advlab.attacks.BIM."""
    what = "your pgd"
    model = _toy_classifier()
    x, y = _toy_batch(16, seed=14)
    msgs = []
    for norm, eps, alpha, steps in (("linf", 0.1, 0.02, 8), ("l2", 1.5, 0.4, 8)):
        where = f"norm={norm!r}, random_start=False: "
        out = call_student(student, model, x, y, eps, alpha, steps, norm, False, what=what)
        _untouched_requires_grad(x, what)
        assert_tensor(out, what, like=x)
        _no_grad_leak(out, what)
        out = out.detach()
        if bool((out == x).all()):
            raise fail(f"{where}{what} returned x unchanged: run `steps` PGD steps starting from x_adv = x")
        assert_in_ball(x, out, eps, norm, f"{where}{what}", tol=1e-5)
        assert_in_box(out, f"{where}{what}")
        ref = _reference_pgd(model, x, y, eps, alpha, steps, norm)
        agree = float(torch.isclose(out, ref, atol=1e-5).float().mean())
        l_ref, l_out = _toy_loss(ref, y), _toy_loss(out, y)
        if agree < 0.99:
            one = _reference_pgd(model, x, y, eps, alpha, 1, norm)
            if _matches(out, one):
                raise fail(f"{where}{what} stops after one step: loop `steps` times and feed each x_adv into the next "
                           f"step (recompute the gradient at the current x_adv)")
            if l_out < _toy_loss(x, y):
                raise fail(f"{where}{what} descends the loss (loss went from {_toy_loss(x, y):.3f} to {l_out:.3f}): "
                           f"pass the gradient of the loss itself to pgd_step, which ascends it")
            fixed = x.clone()
            g0 = _toy_grad(x, y)
            for _ in range(steps):
                fixed = _steps(fixed, x, g0, alpha, eps, norm)["ref"]
            if _matches(out, fixed):
                raise fail(f"{where}{what} reuses the gradient at x for every step: recompute it at the current "
                           f"iterate x_adv inside the loop")
            raise fail(f"{where}{what} agrees with advlab.attacks.BIM (PGD without random start, same eps, alpha, "
                       f"steps) at only {100 * agree:.1f}% of the pixels; mean loss {l_out:.3f} (yours) vs {l_ref:.3f} "
                       f"(BIM). Each step: gradient of F.cross_entropy(model(x_adv), y) at the current x_adv, then "
                       f"x_adv = pgd_step(x_adv, x, grad, alpha, eps, norm)")
        where = f"norm={norm!r}, random_start=True: "
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            r1 = call_student(student, model, x, y, eps, alpha, steps, norm, True, what=what)
            r2 = call_student(student, model, x, y, eps, alpha, steps, norm, True, what=what)
        assert_tensor(r1, what, like=x)
        r1, r2 = r1.detach(), r2.detach()
        assert_in_ball(x, r1, eps, norm, f"{where}{what}", tol=1e-5)
        assert_in_box(r1, f"{where}{what}")
        if torch.equal(r1, out):
            raise fail(f"{where}{what} ignores random_start: start from a random point of the ball, e.g. "
                       f"x_adv = (x + project(uniform noise, eps)).clamp(0, 1)")
        if torch.equal(r1, r2):
            raise fail(f"{where}{what} gives the same result on two calls: draw a fresh random start each time "
                       f"(don't re-seed inside the function)")
        msgs.append(f"{norm}: loss {_toy_loss(x, y):.3f} → {l_out:.3f}")
    return (f"pgd: without random start it equals advlab.attacks.BIM step for step ({'; '.join(msgs)}); with it, "
            f"a fresh random start each call, always inside the ε-ball and [0,1]")


# ---------------------------------------------------------------------------------------------
# exercise set 02: stronger attacks (DLR loss, C&W objective, robust accuracy from minimal norms,
# the transfer table)


def _as_float_tensor(out, what: str, n: int) -> torch.Tensor:
    """A student's list / numpy array / tensor of n numbers as a float tensor of shape (n,)."""
    if isinstance(out, torch.Tensor):
        t = out.detach()
    else:
        try:
            import numpy as np
            t = torch.as_tensor(np.asarray(out, dtype=np.float64))
        except (TypeError, ValueError):
            raise fail(f"{what} returned a {type(out).__name__}; expected {n} numbers (a tensor or a list)") from None
    if t.dim() == 0 or t.numel() != n or (t.dim() > 1 and max(t.shape) != n):
        raise fail(f"{what} returned shape {tuple(t.shape)}; expected {n} numbers, one per ε of eps_grid")
    return t.flatten().double()


def _logit_cases():
    """(logits, y) batches with a known structure: correct and misclassified examples, the true
    class at every rank, 10 classes and 5 classes (so nothing may assume 10)."""
    g = torch.Generator().manual_seed(20)
    z = torch.randn((10, 10), generator=g) * 3
    y = torch.randint(0, 10, (10,), generator=g)
    order = z.argsort(1, descending=True)
    for i, rank in enumerate([0, 0, 1, 2, 9, 0, 3, 1, 5, 2]):   # rank of the true class among the logits
        y[i] = order[i, rank]
    z5 = torch.randn((6, 5), generator=g) * 2 + 1.0
    o5 = z5.argsort(1, descending=True)
    y5 = torch.stack([o5[i, r] for i, r in enumerate([0, 1, 2, 4, 0, 3])])
    return [(z, y), (z5, y5)]


def _other_max(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return z.scatter(1, y[:, None], float("-inf")).amax(1)


def _z_y(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return z.gather(1, y[:, None]).squeeze(1)


def _reference_dlr(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    s = z.sort(1, descending=True).values
    return -(_z_y(z, y) - _other_max(z, y)) / (s[:, 0] - s[:, 2] + 1e-12)


@register
def check_dlr_loss(student) -> str:
    """Exercise 02.1: dlr_loss(logits, y) -> (N,) tensor, the Difference of Logits Ratio
    -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3) per example (z_pi1 >= z_pi2 >= ... the sorted logits)."""
    what = "your dlr_loss"
    for z, y in _logit_cases():
        n, k = z.shape
        out = call_student(student, z, y, what=what)
        assert_tensor(out, what, shape=(n,))
        ref = _reference_dlr(z, y)
        if _matches(out, ref):
            continue
        s = z.sort(1, descending=True).values
        z_y, other = _z_y(z, y), _other_max(z, y)
        num = -(z_y - other)
        if _matches(out, -ref):
            raise fail(f"{what} has the sign flipped: DLR must be large (positive) when the example is "
                       f"misclassified, so the numerator is -(z_y - max_{{j≠y}} z_j) = max_{{j≠y}} z_j - z_y")
        if _matches(out, -(z_y - z.amax(1)) / (s[:, 0] - s[:, 2] + 1e-12)):
            raise fail(f"{what}: your max runs over all classes, the true class included, so the numerator is 0 "
                       f"for every correctly classified example; take the max over j ≠ y only (e.g. set "
                       f"logit y to -inf first: logits.scatter(1, y[:, None], float('-inf')))")
        if _matches(out, num):
            raise fail(f"{what} has no denominator: that is the margin loss, and it is not scale-invariant "
                       f"(multiply the logits by 10 and it grows 10×); divide by z_π1 - z_π3")
        for den, msg in (
                (s[:, 0] - s[:, 1], "z_π1 - z_π2 (the second largest logit); use the third largest, z_π3"),
                (z_y - s[:, 2], "z_y - z_π3; the denominator uses the largest logit z_π1 whichever class it "
                                "is (it differs from z_y on misclassified examples)"),
                (s[:, 0] - s[:, -1], "z_π1 minus the smallest logit; use the third largest, z_π3"),
                (z.sort(1).values[:, -1] - z.sort(1).values[:, 2],
                 "a third-SMALLEST logit: sort in descending order (z.sort(1, descending=True))"),
                (z.sort(1).values[:, 0] - z.sort(1).values[:, 2],
                 "the sorted logits in ascending order: sort in descending order (z.sort(1, descending=True))"),
                (s[:, 0] - s[:, 3], "z_π1 - z_π4: π3 is index 2 of the descending sort (indices start at 0)")):
            if _matches(out, num / (den + 1e-12)) or _matches(out, num / den):
                raise fail(f"{what}: wrong denominator, you divide by {msg}")
        p = z.softmax(1)
        if _matches(out, _reference_dlr(p, y)):
            raise fail(f"{what} works on probabilities (softmax); DLR is defined on the logits themselves")
        scaled = call_student(student, 10 * z, y, what=what)
        if isinstance(scaled, torch.Tensor) and scaled.shape == out.shape and not _matches(scaled, out):
            raise fail(f"{what} is not scale-invariant: multiplying every logit by 10 changes it (example 0: "
                       f"{out[0].item():.4g} → {scaled[0].item():.4g}); numerator and denominator must both "
                       f"be differences of logits")
        if k != 10:
            raise fail(f"{what} is right with 10 classes but wrong with {k}: don't hard-code the number of classes")
        assert_close(out, ref, what, atol=1e-4)
    z, y = _logit_cases()[0]
    d = _reference_dlr(z, y)
    return (f"dlr_loss: right on 16 examples (10 and 5 classes, true class at every rank), positive exactly "
            f"where misclassified ({int((d > 0).sum())} of 10 here), and unchanged when the logits are scaled")


def _reference_cw(z, y, kappa=0.0, targeted=False):
    m = _other_max(z, y) - _z_y(z, y) if targeted else _z_y(z, y) - _other_max(z, y)
    return m.clamp(min=-kappa)


@register
def check_cw_objective(student) -> str:
    """Exercise 02.2: cw_objective(logits, y, kappa=0.0, targeted=False) -> (N,) tensor, Carlini &
    Wagner's f: untargeted max(z_y - max_{j != y} z_j, -kappa); targeted (y = target classes)
    max(max_{j != y} z_j - z_y, -kappa)."""
    what = "your cw_objective"
    (z, y), (z5, y5) = _logit_cases()
    cases = [(z, y, 0.0, False), (z, y, 2.0, False), (z5, y5, 1.0, False), (z, y, 0.0, True), (z, y, 2.0, True),
             (z5, y5, 1.0, True)]
    for z, y, kappa, targeted in cases:
        n = len(z)
        out = call_student(student, z, y, kappa=kappa, targeted=targeted, what=what)
        assert_tensor(out, what, shape=(n,))
        ref = _reference_cw(z, y, kappa, targeted)
        if _matches(out, ref):
            continue
        setting = f"kappa={kappa:g}, targeted={targeted}"
        m = _reference_cw(z, y, math.inf, targeted)        # the unclamped margin
        if _matches(out, _reference_cw(z, y, kappa, not targeted)):
            if targeted:
                raise fail(f"{what} ({setting}) ignores targeted=True: then y holds the TARGET class and f = "
                           f"max(max_{{j≠t}} z_j - z_t, -κ), small once the target's logit is the largest")
            raise fail(f"{what} ({setting}) has the sign flipped: untargeted f = max(z_y - max_{{j≠y}} z_j, -κ) "
                       f"is positive while the example is still correctly classified")
        if _matches(out, m):
            raise fail(f"{what} ({setting}) has no clamp at -κ: f = max(margin, -κ) stops rewarding the attack "
                       f"once the margin reaches κ, so the distance term takes over; without it the attack keeps "
                       f"pushing past the boundary")
        if _matches(out, m.clamp(min=kappa)):
            raise fail(f"{what} ({setting}) clamps at +κ; the floor is -κ: max(margin, -kappa)")
        if _matches(out, m.clamp(max=-kappa)):
            raise fail(f"{what} ({setting}) takes min(margin, -κ); f is max(margin, -κ)")
        if _matches(out, ref + kappa):
            raise fail(f"{what} ({setting}) returns max(margin + κ, 0) = f + κ; the course (and advlab.attacks.CW) "
                       f"uses f = max(margin, -κ)")
        if kappa and _matches(out, _reference_cw(z, y, 0.0, targeted)):
            raise fail(f"{what} ({setting}) ignores kappa: f = max(margin, -kappa)")
        z_all = z.amax(1)
        wrong_max = (_z_y(z, y) - z_all) if not targeted else (z_all - _z_y(z, y))
        if _matches(out, wrong_max.clamp(min=-kappa)):
            raise fail(f"{what} ({setting}): your max runs over all classes, the class y included; take "
                       f"max_{{j≠y}} z_j (set logit y to -inf first)")
        if _matches(out, _reference_cw(z.softmax(1), y, kappa, targeted)):
            raise fail(f"{what} ({setting}) works on probabilities; C&W's f uses the logits Z (softmax "
                       f"outputs saturate and hide the gradient)")
        assert_close(out, ref, f"{what} ({setting})")
    return ("cw_objective: right for untargeted and targeted attacks with κ = 0, 1, 2 on 10- and 5-class logits: "
            "positive before success, floored at -κ after it")


def _norms_cases():
    """(norms, success, eps_grid): norms exactly on grid points, failures with small norms, and
    misclassified-at-clean examples (norm 0, success)."""
    norms = torch.tensor([0.0, 0.3, 0.5, 0.5, 1.0, 1.2, 2.0, 0.2, 0.4, 3.5, 0.0, 1.7])
    success = torch.tensor([True, True, True, True, True, True, True, False, False, True, False, True])
    grid = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0]
    g = torch.Generator().manual_seed(21)
    n2 = torch.rand(37, generator=g) * 3
    s2 = torch.rand(37, generator=g) > 0.2
    grid2 = torch.linspace(0, 3, 13)
    return [(norms, success, grid), (n2, s2, grid2)]


def _reference_robust_acc(norms, success, grid) -> torch.Tensor:
    return torch.tensor([float(((~success) | (norms > float(e))).double().mean()) for e in grid], dtype=torch.float64)


@register
def check_robust_acc_from_norms(student) -> str:
    """Exercise 02.3: robust_acc_from_norms(norms, success, eps_grid) -> one robust accuracy (a fraction)
    per eps of eps_grid: an example is robust at eps unless the attack succeeded with norm <= eps."""
    what = "your robust_acc_from_norms"
    for norms, success, grid in _norms_cases():
        out = call_student(student, norms, success, grid, what=what)
        out = _as_float_tensor(out, what, len(grid))
        ref = _reference_robust_acc(norms, success, grid)
        if _matches(out, ref):
            continue
        n = len(norms)
        ge = torch.tensor([float(((~success) | (norms >= float(e))).double().mean()) for e in grid], dtype=torch.float64)
        if _matches(out, ge):
            raise fail(f"{what}: an example whose perturbation has norm exactly ε is NOT robust at ε (the "
                       f"perturbation lies in the closed ball ‖δ‖ ≤ ε): robust means norm > ε, not ≥ ε")
        no_success = torch.tensor([float((norms > float(e)).double().mean()) for e in grid], dtype=torch.float64)
        if _matches(out, no_success):
            raise fail(f"{what} ignores `success`: where the attack failed, the example is robust at every ε, "
                       f"whatever norm the attack's last iterate had")
        inverted = torch.tensor([float(((~success) | (norms <= float(e))).double().mean()) for e in grid],
                                dtype=torch.float64)
        inverted2 = torch.tensor([float((success & (norms <= float(e))).double().mean()) for e in grid],
                                 dtype=torch.float64)
        if _matches(out, inverted) or _matches(out, 1 - ref) or _matches(out, inverted2):
            raise fail(f"{what} is the wrong way round: it should DEcrease with ε. An example is broken at ε "
                       f"when the attack succeeded with a perturbation of norm ≤ ε; robust otherwise (you may be "
                       f"returning the attack success rate)")
        if _matches(out, ref * n):
            raise fail(f"{what} returns counts of robust examples; return fractions in [0, 1] (divide by N)")
        if _matches(out, ref * 100):
            raise fail(f"{what} returns percentages; return fractions in [0, 1]")
        if bool((out[1:] > out[:-1] + 1e-9).any()):
            raise fail(f"{what} increases with ε somewhere (ε = {[float(e) for e in grid]}, you return "
                       f"{[round(float(v), 4) for v in out]}): a larger budget can only break more examples")
        i = int((~torch.isclose(out, ref, atol=1e-6)).nonzero()[0])
        raise fail(f"{what} is wrong at ε = {float(grid[i]):g}: got {float(out[i]):.4g}, expected {float(ref[i]):.4g} "
                   f"(robust at ε: not success, or norm > ε)")
    norms, success, grid = _norms_cases()[0]
    ref = _reference_robust_acc(norms, success, grid)
    return (f"robust_acc_from_norms: right on {len(norms)} + 37 examples, norms exactly on the grid included; "
            f"at ε = 0 it gives the clean accuracy ({float(ref[0]):.3f} here) and it never increases with ε")


def _tiny_zoo():
    """Three tiny deterministic classifiers of 1x8x8 images, images and labels for the transfer check."""
    import torch.nn as nn
    g = torch.Generator().manual_seed(22)
    nets = {}
    for name, hidden in (("a", 16), ("b", 24), ("c", 0)):
        layers = [nn.Flatten()] + ([nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 4)] if hidden
                                   else [nn.Linear(64, 4)])
        net = nn.Sequential(*layers)
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.6 if p.dim() > 1 else 0.1))
        nets[name] = net.eval()
    x = fixed_images(40, shape=(1, 8, 8), seed=23)
    with torch.no_grad():
        y = sum(net(x).softmax(1) for net in nets.values()).argmax(1)
    return nets, x, y


class _CountingAttack:
    """FGSM (L∞, eps 0.15) that counts its calls and remembers which models it attacked."""

    def __init__(self):
        from advlab.attacks import FGSM
        self.inner = FGSM(eps=0.15, checks=False)
        self.calls = []

    def __call__(self, model, x, y):
        self.calls.append(model)
        return self.inner(model, x, y)

    def __repr__(self):
        return repr(self.inner)


def _reference_transfer(models: dict, attack, x, y) -> torch.Tensor:
    from advlab.evaluate import accuracy
    names = list(models)
    table = torch.zeros(len(names), len(names), dtype=torch.float64)
    for i, s in enumerate(names):
        x_adv = attack(models[s], x, y)
        for j, t in enumerate(names):
            table[i, j] = accuracy(models[t], x_adv, y)
    return table


@register
def check_transfer_table(student) -> str:
    """Exercise 02.4: transfer_table(models, attack, x, y) -> (S, S) table (tensor or nested list) whose
    entry [i, j] is the accuracy of target model j on attack(source model i, x, y); models is a dict
    name -> model and rows/columns follow its order."""
    what = "your transfer_table"
    from advlab.evaluate import accuracy
    nets, x, y = _tiny_zoo()
    names = list(nets)
    atk = _CountingAttack()
    ref = _reference_transfer(nets, _CountingAttack(), x, y)
    out = call_student(student, nets, atk, x, y, what=what)
    if isinstance(out, dict):
        raise fail(f"{what} returned a dict; return an S×S table (a tensor or a list of rows), row i = source "
                   f"model i, column j = target model j")
    try:
        import numpy as np
        t = torch.as_tensor(np.asarray(out.detach() if isinstance(out, torch.Tensor) else out, dtype=np.float64))
    except (TypeError, ValueError):
        raise fail(f"{what} returned a {type(out).__name__}; expected an S×S table of accuracies") from None
    if tuple(t.shape) != (len(names), len(names)):
        raise fail(f"{what} returned shape {tuple(t.shape)}; expected ({len(names)}, {len(names)}): one row per "
                   f"source model, one column per target model")
    if not atk.calls:
        raise fail(f"{what} never called `attack`: craft x_adv = attack(source_model, x, y) for each source")
    if not _matches(t, ref):
        clean = torch.tensor([accuracy(nets[n], x, y) for n in names], dtype=torch.float64)
        if _matches(t, ref.T):
            raise fail(f"{what} is transposed: row i must be the SOURCE (the substitute the attack was crafted "
                       f"on), column j the TARGET it is evaluated on")
        if _matches(t, clean.expand(len(names), -1)) or _matches(t, clean[:, None].expand(-1, len(names))):
            raise fail(f"{what} holds clean accuracies: evaluate the targets on the adversarial images x_adv")
        if _matches(t, ref.diagonal()[None].expand(len(names), -1)):
            raise fail(f"{what} attacks the target model itself in every entry (white-box everywhere): craft "
                       f"x_adv on the source model of the row, then evaluate every target on it")
        if _matches(t, ref * len(x)) or _matches(t, ref * 100):
            raise fail(f"{what} returns counts or percentages; return accuracies as fractions in [0, 1]")
        i, j = [int(v) for v in (~torch.isclose(t, ref, atol=1e-6)).nonzero()[0]]
        raise fail(f"{what}[{i}, {j}] (source {names[i]!r} → target {names[j]!r}) is {float(t[i, j]):.4g}, "
                   f"expected {float(ref[i, j]):.4g}")
    note = ""
    if len(atk.calls) > len(names):
        note = (f" — but you crafted adversarial images {len(atk.calls)} times; once per source ({len(names)}) is "
                f"enough: craft x_adv outside the loop over targets")
    return (f"transfer_table: right on 3 tiny models (rows = source, columns = target, white-box diagonal)" + note)


# ---------------------------------------------------------------------------------------------
# exercise set 03: adversarial training (the PGD-AT inner loop, the TRADES loss)


class _ModeSpy(torch.nn.Module):
    """The toy classifier behind a dropout layer, recording the train flag of every forward call:
    in train mode its output is random, so an inner loop run in train mode cannot match."""

    def __init__(self):
        super().__init__()
        self.net, self.drop, self.modes = _toy_classifier(), torch.nn.Dropout(0.5), []

    def forward(self, x):
        self.modes.append(self.training)
        return self.net(self.drop(x))


def _ref_pgd_at(model, x, y, eps, alpha, steps):
    from advlab.defenses.adversarial_training import pgd_linf
    return pgd_linf(model, x, y, eps, alpha, steps, random_start=False)


@register
def check_pgd_at_examples(student) -> str:
    """Exercise 03.1: pgd_at_examples(model, x, y, eps, alpha, steps, random_start=True), the inner
    maximisation of PGD-AT: L∞ PGD on the cross-entropy, run with the model in eval mode, the
    caller's mode restored, and x_adv returned detached."""
    what = "your pgd_at_examples"
    x, y = _toy_batch(16, seed=31)
    eps, alpha, steps = 0.1, 0.025, 6
    spy = _ModeSpy().train()
    torch.manual_seed(0)
    out = call_student(student, spy, x, y, eps, alpha, steps, False, what=what)
    assert_tensor(out, what, like=x)
    _untouched_requires_grad(x, what)
    _no_grad_leak(out, what)
    if not spy.training:
        raise fail(f"{what} leaves the model in eval mode: training goes on after the attack, so remember the "
                   f"mode (was_training = model.training) and restore it (model.train(was_training)) at the end")
    if not spy.modes:
        raise fail(f"{what} never calls the model")
    if any(spy.modes):
        raise fail(f"{what} runs the model in train mode during the attack ({sum(spy.modes)} of {len(spy.modes)} "
                   f"forward passes): dropout makes the gradients random and BatchNorm would learn the statistics "
                   f"of adversarial batches; call model.eval() before the loop")
    out = out.detach()
    where = "random_start=False: "
    assert_in_ball(x, out, eps, "linf", f"{where}{what}", tol=1e-6)
    assert_in_box(out, f"{where}{what}")
    model = spy.eval()
    ref = _ref_pgd_at(model, x, y, eps, alpha, steps)
    if not _matches(out, ref):
        if _matches(out, _ref_pgd_at(model, x, y, eps, alpha, 1)):
            raise fail(f"{where}{what} stops after one step: loop `steps` times, recomputing the gradient at the "
                       f"current x_adv")
        if _toy_loss(out, y) < _toy_loss(x, y):
            raise fail(f"{where}{what} descends the loss: step along +sign(grad of the cross-entropy)")
        unclipped = x.clone()
        for _ in range(steps):
            unclipped = (unclipped + alpha * _toy_grad(unclipped, y).sign()).clamp(x - eps, x + eps)
        if _matches(out, unclipped):
            raise fail(f"{where}{what} leaves the [0,1] box between steps: clip to [0,1] after each projection")
        raise fail(f"{where}{what} differs from the reference inner loop (mean loss {_toy_loss(out, y):.3f} yours, "
                   f"{_toy_loss(ref, y):.3f} reference). Each step: x_adv ← clip(x_adv + alpha·sign(∇ CE), "
                   f"x − eps, x + eps), then clip to [0, 1]")
    spy.train()
    torch.manual_seed(1)
    r1 = call_student(student, spy, x, y, eps, alpha, steps, True, what=what).detach()
    r2 = call_student(student, spy, x, y, eps, alpha, steps, True, what=what).detach()
    where = "random_start=True: "
    assert_in_ball(x, r1, eps, "linf", f"{where}{what}", tol=1e-6)
    assert_in_box(r1, f"{where}{what}")
    if torch.equal(r1, out):
        raise fail(f"{where}{what} ignores random_start: start from x + uniform noise in [-eps, eps], clipped to [0,1]")
    if torch.equal(r1, r2):
        raise fail(f"{where}{what} gives the same x_adv on two calls: draw a fresh random start each call")
    return (f"pgd_at_examples: eval mode during the attack, the caller's mode restored, {steps} steps equal to "
            f"the reference (loss {_toy_loss(x, y):.3f} → {_toy_loss(out, y):.3f}); random starts fresh per call")


def _ref_trades(model, x, x_adv, y, beta):
    import torch.nn.functional as F
    z, z_adv = model(x), model(x_adv)
    return F.cross_entropy(z, y) + beta * F.kl_div(F.log_softmax(z_adv, 1), F.softmax(z, 1), reduction="batchmean")


def _trainable_toy():
    g = torch.Generator().manual_seed(7)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(net[1].weight.shape, generator=g) / 6)
        net[1].bias.zero_()
    return net


@register
def check_trades_loss(student) -> str:
    """Exercise 03.2: trades_loss(model, x, x_adv, y, beta) -> scalar
    CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x_adv)), the KL averaged over the batch,
    differentiable in the model's parameters through both terms."""
    import torch.nn.functional as F
    what = "your trades_loss"
    x, y = _toy_batch(12, seed=32)
    # a large perturbation, so that the two directions of the KL and the reductions differ clearly
    x_adv = (0.5 * x + 0.5 * fixed_images(12, seed=33)).clamp(0, 1)
    for beta in (1.0, 6.0):
        net = _trainable_toy()
        out = call_student(student, net, x, x_adv, y, beta, what=what)
        assert_tensor(out, what, shape=())
        ref = _ref_trades(net, x, x_adv, y, beta)
        if not torch.isclose(out.detach(), ref.detach(), atol=1e-5, rtol=1e-4):
            z, z_adv = net(x).detach(), net(x_adv).detach()
            ce, ce_adv = F.cross_entropy(z, y), F.cross_entropy(z_adv, y)
            kl = F.kl_div(F.log_softmax(z_adv, 1), F.softmax(z, 1), reduction="batchmean")
            kl_rev = F.kl_div(F.log_softmax(z, 1), F.softmax(z_adv, 1), reduction="batchmean")
            candidates = {
                "the KL the wrong way round: TRADES uses KL(p(x) ‖ p(x_adv)), i.e. "
                "F.kl_div(F.log_softmax(f(x_adv)), F.softmax(f(x)))": ce + beta * kl_rev,
                "the KL averaged over every entry (reduction='mean'), which divides it by the number of classes "
                "too; use reduction='batchmean'": ce + beta * kl / z.shape[1],
                "the KL summed over the batch (reduction='sum'); use reduction='batchmean'": ce + beta * kl * len(x),
                "the cross-entropy of x_adv: TRADES' first term is the *clean* cross-entropy CE(f(x), y) "
                "(CE on x_adv alone is PGD-AT)": ce_adv + beta * kl,
                "no beta: multiply the KL term by beta": ce + kl,
                "beta on the cross-entropy: beta weighs the KL term": beta * ce + kl,
                "F.kl_div given probabilities as its first argument: it expects log-probabilities "
                "(F.log_softmax)": ce + beta * F.kl_div(F.softmax(z_adv, 1), F.softmax(z, 1), reduction="batchmean"),
            }
            for msg, cand in candidates.items():
                if torch.isclose(out.detach(), cand, atol=1e-5, rtol=1e-4):
                    raise fail(f"beta={beta}: {what} computes {msg}")
            raise fail(f"beta={beta}: {what} = {out.item():.5f}, expected CE(f(x), y) + beta · KL = "
                       f"{ce.item():.5f} + {beta} · {kl.item():.5f} = {ref.item():.5f}")
        if not out.requires_grad:
            raise fail(f"{what} is not differentiable (it was computed under no_grad or detached): training "
                       f"needs its gradient in the model's parameters")
        grad, = torch.autograd.grad(out, net[1].weight)
        ref_grad, = torch.autograd.grad(_ref_trades(net, x, x_adv, y, beta), net[1].weight)
        if not torch.allclose(grad, ref_grad, atol=1e-6, rtol=1e-3):
            raise fail(f"beta={beta}: {what} has the right value but the wrong gradient: something is detached "
                       f"(in TRADES the gradient flows through f(x) in both terms and through f(x_adv); only "
                       f"x_adv itself is a constant)")
    return "trades_loss: the value and the parameter gradient of CE(f(x), y) + β·KL(p(x) ‖ p(x_adv)) for β = 1 and 6"


# ---------------------------------------------------------------------------------------------
# exercise set 04: Defense-GAN (the latent search with restarts, the BPDA wrapper)


def _toy_generator() -> torch.nn.Module:
    """A tiny fixed generator G(z) = sigmoid(W z + b), latent_dim 8, images (N, 1, 28, 28), in eval
    mode with trainable parameters (so that a search which calls .backward() leaves a trace in their
    .grad). A fresh one per call: a check must not see another check's gradients."""
    nn = torch.nn

    class ToyGenerator(nn.Module):
        def __init__(self):
            super().__init__()
            self.latent_dim = 8
            g = torch.Generator().manual_seed(41)
            self.W = nn.Parameter(torch.randn(784, 8, generator=g) * 2.0)
            self.b = nn.Parameter(torch.randn(784, generator=g) * 0.5)

        def forward(self, z):
            return torch.sigmoid(z @ self.W.t() + self.b).view(-1, 1, 28, 28)

    return ToyGenerator().eval()


def _latent_search_case():
    """(G, x, steps, restarts, lr, momentum): two images on G's range and four off it; few steps,
    so that the restarts end at clearly different errors and the best one differs between images."""
    G = _toy_generator()
    with torch.no_grad():
        on_range = G(torch.randn(2, 8, generator=torch.Generator().manual_seed(42)) / 8 ** 0.5)
    x = torch.cat([on_range, fixed_images(4, seed=43)])
    return G, x, 6, 5, 10.0, 0.7


def _ref_search(G, x, z0, steps, lr, momentum, loss_mean=False, pixel_sum=False):
    """The search of exercise 04.1 from the given initial latents z0 (R, N, d). Returns the final
    reconstructions (R, N, C, H, W) and errors (R, N) of every restart. Variants for the diagnoses:
    loss_mean (the batch's mean error as the loss), pixel_sum (squared error summed over pixels)."""
    R, n, d = z0.shape
    z = z0.reshape(R * n, d).clone()
    target = x.repeat(R, 1, 1, 1)
    v = torch.zeros_like(z)
    err_of = (lambda e: e.flatten(1).sum(1)) if pixel_sum else (lambda e: e.flatten(1).mean(1))
    with torch.enable_grad():
        for _ in range(steps):
            z.requires_grad_(True)
            err = err_of((G(z) - target).pow(2))
            grad, = torch.autograd.grad(err.mean() if loss_mean else err.sum(), z)
            with torch.no_grad():
                v = momentum * v + grad
                z = z.detach() - lr * v
    with torch.no_grad():
        rec = G(z)
        err = (rec - target).pow(2).flatten(1).mean(1)
    return rec.view(R, n, *x.shape[1:]), err.view(R, n)


def _pick(recs, errs, best):
    idx = torch.arange(recs.shape[1])
    return recs[best, idx], errs[best, idx]


@register
def check_latent_search_restarts(student) -> str:
    """Exercise 04.1: latent_search_restarts(G, x, steps, restarts, lr=10.0, momentum=0.7, generator=None)
    -> (x_rec, err): Defense-GAN's projection with R restarts. z0 = randn(restarts, N, d, generator) /
    sqrt(d); per image the error is the mean over pixels of (G(z) - x)^2; `steps` steps of SGD with
    momentum on the sum of the errors (v <- momentum * v + grad, z <- z - lr * v); per image the restart
    with the lowest final error wins; x_rec = G(z*) (N, C, H, W), err its error (N,)."""
    from advlab.defenses.defense_gan import latent_search
    what = "your latent_search_restarts"
    G, x, steps, R, lr, mom = _latent_search_case()
    n, d = len(x), G.latent_dim
    seed = 44
    out = call_student(student, G, x, steps, R, lr, mom, torch.Generator().manual_seed(seed), what=what)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise fail(f"{what} returned a {type(out).__name__}; return the pair (x_rec, err): the reconstructions "
                   f"G(z*) of shape (N, C, H, W) and their errors of shape (N,)")
    x_rec, err = out
    assert_tensor(x_rec, f"{what}'s x_rec", like=x)
    assert_tensor(err, f"{what}'s err", shape=(n,))
    for p in G.parameters():
        if p.grad is not None:
            raise fail(f"{what} left gradients in G's parameters (.grad is set): loss.backward() differentiates "
                       f"w.r.t. every parameter too; take the gradient in z alone with "
                       f"grad, = torch.autograd.grad(err.sum(), z)")
    for t, name in ((x_rec, "x_rec"), (err, "err")):
        if t.requires_grad:
            raise fail(f"{what} returns {name} still attached to the autograd graph: compute the final "
                       f"G(z) and errors under torch.no_grad() (or .detach() them)")
    x_rec, err = x_rec.detach(), err.detach()
    ref = latent_search(G, x, steps, R, lr, mom, decay_at=1.0, generator=torch.Generator().manual_seed(seed))
    if _matches(x_rec, ref.x_rec) and _matches(err, ref.err):
        again = call_student(student, G, x, steps, R, lr, mom, torch.Generator().manual_seed(seed), what=what)
        if not _matches(again[0].detach(), ref.x_rec):
            raise fail(f"{what} gives different results for the same seeded generator: draw every random "
                       f"number with generator=generator")
        per_restart = ref.all_err
        return (f"latent_search_restarts: equal to Defense-GAN's search on {n} images ({R} restarts, {steps} "
                f"steps); the winning restart differs between images ({sorted(set(ref.best.tolist()))}) and "
                f"beats the mean restart by {(per_restart.mean(1) - ref.err).mean().item():.4f} in error")
    # --- diagnoses: which plausible variant did the student compute?
    own = (x_rec - x).pow(2).flatten(1).mean(1)
    if _matches(err, own * x[0].numel()):
        raise fail(f"{what} returns the squared error summed over pixels; the error of Defense-GAN (and of this "
                   f"exercise) is the mean over pixels: (G(z) - x).pow(2).flatten(1).mean(1)")
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(R, n, d, generator=g) / math.sqrt(d)
    recs, errs = _ref_search(G, x, z0, steps, lr, mom)
    idx = torch.arange(n)
    if _matches(x_rec, recs[0]) and not _matches(recs[0], ref.x_rec):
        raise fail(f"{what} keeps restart 0 for every image: run all restarts and keep, per image, the one "
                   f"with the lowest final error (err.view(restarts, N).argmin(0))")
    if _matches(x_rec, recs[-1]):
        raise fail(f"{what} keeps the last restart for every image: keep, per image, the restart with the "
                   f"lowest final error")
    if _matches(x_rec, recs[errs.sum(1).argmin()].view_as(x)) or _matches(x_rec, recs[errs.mean(1).argmin()]):
        raise fail(f"{what} picks one restart for the whole batch (lowest total error); the choice is per "
                   f"image: err.view(restarts, N).argmin(0) gives one restart index per image")
    if _matches(x_rec, _pick(recs, errs, errs.argmax(0))[0]):
        raise fail(f"{what} keeps the restart with the HIGHEST error (argmax); keep the lowest (argmin)")
    if _matches(err, errs.mean(0)):
        raise fail(f"{what} returns the error averaged over the restarts; return the error of the chosen one")
    variants = [
        (dict(z0=z0 * math.sqrt(d)), "draws the initial latents from N(0, I); Defense-GAN's prior is "
                                     "N(0, I/d): divide torch.randn(...) by sqrt(latent_dim)"),
        (dict(z0=(torch.randn(n, R, d, generator=torch.Generator().manual_seed(seed)) / math.sqrt(d)).transpose(0, 1)),
         "draws the latents image-major (shape (N, restarts, d)); draw them restart-major, "
         "torch.randn(restarts, N, d, generator=generator), so that row r * N + i is restart r of image i "
         "(the order x.repeat(restarts, 1, 1, 1) gives the targets)"),
        (dict(loss_mean=True), "differentiates the MEAN of the errors over the restarts and images, which "
                               "divides every gradient by restarts * N (a learning rate that shrinks with the "
                               "batch): take the gradient of err.sum(), each latent's own error"),
        (dict(pixel_sum=True), "minimises the squared error summed over pixels: with lr = 10 that is a "
                               "784x larger step; the error is the mean over pixels"),
        (dict(momentum=0.0), "ignores momentum: v <- momentum * v + grad, then z <- z - lr * v"),
        (dict(lr=lr * (1 - mom)), "uses an exponential average v <- momentum * v + (1 - momentum) * grad; "
                                  "Defense-GAN (and torch.optim.SGD) use v <- momentum * v + grad"),
        (dict(lr=-lr), "climbs the error: step against the gradient, z <- z - lr * v"),
        (dict(steps=steps - 1), "takes one step too few: loop `steps` times"),
        (dict(steps=steps + 1), "takes one step too many: loop `steps` times"),
    ]
    for change, msg in variants:
        kw = dict(z0=z0, steps=steps, lr=lr, momentum=mom) | change
        r_v, e_v = _ref_search(G, x, kw.pop("z0"), **kw)
        x_v, err_v = _pick(r_v, e_v, e_v.argmin(0))
        if _matches(x_rec, x_v):
            raise fail(f"{what} {msg}")
    a = call_student(student, G, x, steps, R, lr, mom, torch.Generator().manual_seed(seed), what=what)
    if not _matches(a[0].detach(), x_rec):
        raise fail(f"{what} gives different results for the same seeded generator: draw the initial latents "
                   f"with generator=generator, not from torch's global random stream")
    if not _matches(err, own):
        raise fail(f"{what}: err is not the error of the x_rec you return (mean over pixels of "
                   f"(x_rec - x)^2 per image)")
    if err.mean() > errs.mean() + 1e-6:
        raise fail(f"{what} ends with a higher error than the average restart of the reference "
                   f"({err.mean().item():.4f} vs {errs.mean().item():.4f}): check the sign of the step and "
                   f"that you keep the best restart")
    assert_close(x_rec, ref.x_rec, f"{what}'s x_rec", atol=1e-4)
    raise fail(f"{what} differs from Defense-GAN's search")  # pragma: no cover - assert_close raised


def _bpda_case():
    """x, two purifiers and a surrogate. The 4-level quantiser is non-differentiable (autograd sees a
    zero gradient); the blur is differentiable, so a gradient of the purifier leaking into the answer
    shows. The surrogate is smooth and nonlinear: its Jacobian depends on the point it is taken at."""
    import torch.nn.functional as F
    x = fixed_images(6, seed=45)
    calls = {"grad_enabled": []}

    def quantise(t):
        calls["grad_enabled"].append(torch.is_grad_enabled())
        return torch.round(t * 3) / 3

    def blur(t):
        calls["grad_enabled"].append(torch.is_grad_enabled())
        return F.avg_pool2d(t, 3, stride=1, padding=1, count_include_pad=False)

    def surrogate(t):
        return torch.sigmoid(6 * (F.avg_pool2d(t, 3, stride=1, padding=1, count_include_pad=False) - 0.5))

    return x, [(quantise, None), (quantise, surrogate), (blur, None)], calls


def _vjp(fn, x, u):
    xs = x.clone().requires_grad_(True)
    with torch.enable_grad():
        out = fn(xs)
        if not out.requires_grad:
            return torch.zeros_like(x)
        g, = torch.autograd.grad((out * u).sum(), xs)
    return g


@register
def check_bpda(student) -> str:
    """Exercise 04.2: bpda(purify, x, backward_fn=None) -> a tensor equal to purify(x) whose gradient
    w.r.t. x is the identity (backward_fn None) or the gradient of backward_fn at x (straight-through),
    whatever purify's own gradient is."""
    what = "your bpda"
    x, cases, calls = _bpda_case()
    u = fixed_images(6, seed=46) - 0.5           # an upstream gradient
    calls["grad_enabled"].clear()
    for purify, backward_fn in cases:
        where = (f"with purify = a {'quantiser' if purify.__name__ == 'quantise' else 'blur'} and "
                 f"{'backward_fn=None' if backward_fn is None else 'a backward_fn'}: ")
        with torch.no_grad():
            value = purify(x)
        xr = x.clone().requires_grad_(True)
        args = (purify, xr) if backward_fn is None else (purify, xr, backward_fn)
        out = call_student(student, *args, what=what)
        assert_tensor(out, what, like=x)
        v = out.detach()
        if not _matches(v, value):
            if _matches(v, x):
                raise fail(f"{where}{what} returns x itself: the forward value must be the defense's real output "
                           f"purify(x), otherwise the attack is evaluated on a model without the defense")
            if backward_fn is not None and _matches(v, backward_fn(x)):
                raise fail(f"{where}{what} returns backward_fn(x): it only approximates the gradient; the value "
                           f"must be purify(x)")
            if _matches(v, x + value):
                raise fail(f"{where}{what} returns x + purify(x): subtract the surrogate inside the detach, "
                           f"s + (purify(x) - s).detach()")
            assert_close(v, value, f"{where}{what}'s value (it must equal purify(x))", atol=1e-5)
        if not out.requires_grad:
            raise fail(f"{where}{what} returns a tensor that does not require grad: no gradient reaches x. "
                       f"Keep a differentiable path from x (x itself, or backward_fn(x)) and detach only the "
                       f"difference: s + (purify(x) - s).detach()")
        try:
            g, = torch.autograd.grad((out * u).sum(), xr)
        except RuntimeError as e:
            raise fail(f"{where}{what}'s output is not connected to x in the autograd graph ({e}); the output "
                       f"must be computed from x: s + (purify(x) - s).detach() with s = x") from None
        expected = u if backward_fn is None else _vjp(backward_fn, x, u)
        if _matches(g, expected):
            continue
        own = _vjp(purify, x, u)                 # what autograd sees of the purifier itself
        surrogate = "x (identity)" if backward_fn is None else "backward_fn(x)"
        if _matches(g, own):
            raise fail(f"{where}{what} lets autograd differentiate purify itself"
                       + (", and the gradient of a non-differentiable purifier is zero (the masked gradient "
                          "BPDA replaces)" if bool((own == 0).all()) else "")
                       + f": detach purify(x) and let the gradient flow through {surrogate} only")
        if _matches(g, expected + own):
            raise fail(f"{where}{what} adds purify's own gradient to the surrogate's (something like "
                       f"s + purify(x) - s.detach()): detach the whole difference, s + (purify(x) - s).detach()")
        if backward_fn is not None and _matches(g, u):
            raise fail(f"{where}{what} ignores backward_fn: the gradient must be backward_fn's, at x")
        if backward_fn is not None and _matches(g, _vjp(backward_fn, value, u)):
            raise fail(f"{where}{what} evaluates backward_fn at purify(x); BPDA differentiates the "
                       f"surrogate at the input x: s = backward_fn(x)")
        assert_close(g, expected, f"{where}the gradient through {what}", atol=1e-5)
    built_graph = any(calls["grad_enabled"])
    xr = x.clone()
    plain = call_student(student, cases[0][0], xr, what=what)
    _untouched_requires_grad(xr, what)
    with torch.no_grad():
        if not _matches(plain.detach(), cases[0][0](x)):
            raise fail(f"{what} on an x that does not require grad must still return purify(x)")
    note = (" Tip: run purify under torch.no_grad(); only its value is used, and for a latent search autograd "
            "would otherwise record all of its L × R steps." if built_graph else "")
    return ("bpda: the value is purify(x) exactly; the gradient is the identity, or backward_fn's gradient at x, "
            "never the purifier's own gradient (zero for a quantiser, a blur's for a blur)." + note)


# ---------------------------------------------------------------------------------------------
# exercise set 05: VAE-GAN purification (one discriminator-guided step)


def _toy_vaegan_parts():
    """(D, decode): a tiny fixed discriminator D (images (N, 1, 28, 28) -> (N,) logits; nonlinear, so
    that its gradient depends on the image, and per example) and a tiny decoder (latents (N, 8) ->
    images in [0, 1]), both in eval mode with trainable parameters (a step that calls .backward()
    leaves a trace in their .grad). Fresh modules per call."""
    nn = torch.nn

    class ToyDiscriminator(nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(51)
            self.W = nn.Parameter(torch.randn(16, 784, generator=g) / 28.0)
            self.b = nn.Parameter(torch.randn(16, generator=g) * 0.1)
            self.v = nn.Parameter(torch.randn(16, generator=g))

        def forward(self, x):
            return torch.tanh(x.flatten(1) @ self.W.t() + self.b) @ self.v

    class ToyDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(52)
            self.W = nn.Parameter(torch.randn(784, 8, generator=g))
            self.b = nn.Parameter(torch.randn(784, generator=g) * 0.5)

        def forward(self, z):
            return torch.sigmoid(z @ self.W.t() + self.b).view(-1, 1, 28, 28)

    return ToyDiscriminator().eval(), ToyDecoder().eval()


def _ref_dstep(D, x, step_size, decode=None, *, sign=1.0, normalise="l2", clip=None):
    """The reference step of exercise 05.1 with switches for the typical mistakes: sign -1 (descent),
    normalise "l2" | "none" | "batch" (one norm for the whole batch) | "sign" | "linf", clip True/False
    (default: clip in image space only)."""
    xin = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        score = D(xin if decode is None else decode(xin))
        g, = torch.autograd.grad(score.sum(), xin)
    shape = (-1,) + (1,) * (x.dim() - 1)
    if normalise == "l2":
        d = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
    elif normalise == "batch":
        d = g / g.norm().clamp_min(1e-12)
    elif normalise == "sign":
        d = g.sign()
    elif normalise == "linf":
        d = g / g.flatten(1).abs().amax(1).clamp_min(1e-12).view(shape)
    else:
        d = g
    out = x.detach() + sign * step_size * d
    if (decode is None) if clip is None else clip:
        out = out.clamp(0, 1)
    return out


def _dstep_cases():
    """[(name, D, x, step_size, decode)]: an image batch with saturated pixels (where clipping matters)
    and a step large enough to leave [0, 1]; a latent batch with entries far outside [0, 1]."""
    D, dec = _toy_vaegan_parts()
    x = fixed_images(6, seed=53)
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(54)) * 1.5
    return [("image space (decode=None)", D, x, 3.0, None), ("latent space (decode given)", D, z, 0.5, dec)]


@register
def check_discriminator_step(student) -> str:
    """Exercise 05.1: discriminator_step(D, x, step_size, decode=None) -> one normalised ascent step on
    D's "real" logit. decode None: x images (N, C, H, W), g = grad_x D(x).sum(), return
    clip_[0,1](x + step_size * g / ||g||_2) with one L2 norm per example; decode given: x latents (N, d),
    g = grad_x D(decode(x)).sum(), return x + step_size * g / ||g||_2 (no clipping). The result is
    detached; D's (and decode's) parameters get no .grad."""
    what = "your discriminator_step"
    notes = []
    for where, D, x, s, dec in _dstep_cases():
        pre = f"in {where}: "
        xr = x.clone()
        args = (D, xr, s) if dec is None else (D, xr, s, dec)
        out = call_student(student, *args, what=what)
        _untouched_requires_grad(xr, what)
        if isinstance(out, torch.Tensor) and dec is not None and out.dim() == 4 and out.dim() != x.dim():
            raise fail(f"{pre}{what} returned images of shape {tuple(out.shape)}: in latent space the step is "
                       f"taken on z, and the function returns the new latent z (N, d), not Dec(z)")
        assert_tensor(out, f"{pre}{what}", like=x)
        for m in (D, dec):
            if m is not None and any(p.grad is not None for p in m.parameters()):
                raise fail(f"{pre}{what} left gradients in the {'discriminator' if m is D else 'decoder'}'s "
                           f"parameters (.grad is set): score.sum().backward() differentiates w.r.t. every "
                           f"parameter too; take the gradient in x alone with "
                           f"g, = torch.autograd.grad(score.sum(), x_in)")
        if out.requires_grad:
            raise fail(f"{pre}{what} returns a tensor that still requires grad (attached to the graph of the "
                       f"gradient computation): return the step .detach()ed")
        out = out.detach()
        ref = _ref_dstep(D, x, s, dec)
        if _matches(out, ref):
            continue
        variants = [
            (dict(sign=-1.0), "steps DOWN the discriminator's score (x - step_size * g): the purifier climbs "
                              "towards \"real\", x + step_size * g / ||g||"),
            (dict(normalise="none"), "does not normalise the gradient: divide g by its L2 norm per example, "
                                     "so that step_size is the L2 length of the step"),
            (dict(normalise="batch"), "normalises by ONE norm over the whole batch; each example's gradient "
                                      "has its own L2 norm: g.flatten(1).norm(dim=1), reshaped to broadcast"),
            (dict(normalise="sign"), "takes the sign of the gradient (a PGD-L∞ habit); this step is an L2 "
                                     "step: g / ||g||_2 per example"),
            (dict(normalise="linf"), "divides by the largest |g| entry (an L∞ normalisation); divide by the "
                                     "L2 norm per example, g.flatten(1).norm(dim=1)"),
        ]
        if dec is None:
            variants.append((dict(clip=False), "does not clip: in image space the step must stay an image, "
                                               "clamp the result to [0, 1]"))
        else:
            variants.append((dict(clip=True), "clips the latent to [0, 1]: only images live in [0, 1]; a "
                                              "latent z ~ N(0, I) must not be clipped"))
        for change, msg in variants:
            if _matches(out, _ref_dstep(D, x, s, dec, **change)):
                raise fail(f"{pre}{what} {msg}")
        extra = ("it also leaves [0, 1]: clamp the image step to [0, 1]" if dec is None else
                 "it also clips the latent to [0, 1], which only images need")
        for change, msg in variants[:-1]:
            both = dict(change) | dict(clip=dec is not None)
            if _matches(out, _ref_dstep(D, x, s, dec, **both)):
                raise fail(f"{pre}{what} {msg}; {extra}")
        assert_close(out, ref, f"{pre}{what}'s result", atol=1e-5)
    # the step size is an L2 length: check it on an interior image, where clipping does not act
    D, _ = _toy_vaegan_parts()
    xi = 0.25 + 0.5 * fixed_images(3, seed=55)
    out = call_student(student, D, xi, 0.05, what=what).detach()
    length = (out - xi).flatten(1).norm(dim=1)
    with torch.no_grad():
        gain = (D(out) - D(xi)).min().item()
    notes.append(f"on unclipped images each step has L2 length {length.mean().item():.3f} (= step_size 0.05) and "
                 f"raises every score (smallest gain {gain:.4f})")
    return ("discriminator_step: a normalised ascent step on D's real logit, one L2 norm per example, clipped "
            "to [0, 1] in image space and left unclipped in latent space; " + notes[0] + ". (Climbing the "
            "logit, sigmoid(logit) or log sigmoid(logit) gives the same step: normalisation keeps only the "
            "direction.)")


def _toy_vaegan():
    """A tiny VAE-GAN with the interface of advlab.generative.VAEGAN (encode -> (mu, logvar), decode,
    discriminator, latent_dim 8), from _toy_vaegan_parts plus a linear encoder. Fresh per call."""
    nn = torch.nn
    D, dec = _toy_vaegan_parts()

    class ToyVAEGAN(nn.Module):
        def __init__(self):
            super().__init__()
            self.latent_dim = 8
            g = torch.Generator().manual_seed(56)
            self.E = nn.Parameter(torch.randn(8, 784, generator=g) / 28.0)
            self.decoder, self.discriminator = dec, D

        def encode(self, x):
            mu = (2 * x - 1).flatten(1) @ self.E.t()
            return mu, torch.zeros_like(mu) - 2.0

        def decode(self, z):
            return self.decoder(z)

    return ToyVAEGAN().eval()


def _ref_purify_latent(V, x, steps, step_size, constant_direction=False):
    """Paper 002's purifier in latent space, differentiable in x (x must require grad):
    z = mu(x); steps x z <- z + s * g / ||g||, g = grad_z D(Dec(z)) (create_graph); Dec(z).
    constant_direction: g taken without create_graph (the step direction is a constant for autograd)."""
    with torch.enable_grad():
        z = V.encode(x)[0]
        for _ in range(steps):
            g, = torch.autograd.grad(V.discriminator(V.decode(z)).sum(), z, create_graph=not constant_direction)
            z = z + step_size * g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return V.decode(z)


@register
def check_purify_latent(student) -> str:
    """Exercise 05.2: purify_latent(V, x, steps, step_size) -> Dec(z_K), z_0 = mu(x), K latent-space
    discriminator steps, differentiable in x with the exact gradient (create_graph=True) when x requires
    grad. Compared in value with VAEGANPurifier(space="latent").purify and in gradient (a vector-Jacobian
    product) with autograd through it."""
    from advlab.defenses.vaegan import VAEGANPurifier
    what = "your purify_latent"
    V = _toy_vaegan()
    x = fixed_images(5, seed=57)
    u = fixed_images(5, seed=58) - 0.5
    steps, s = 3, 0.5
    lib = VAEGANPurifier(V, torch.nn.Identity(), steps=steps, step_size=s, space="latent")
    xr = x.clone().requires_grad_(True)
    out = call_student(student, V, xr, steps, s, what=what)
    assert_tensor(out, what, like=x)
    if any(p.grad is not None for p in V.parameters()):
        raise fail(f"{what} left gradients in the VAE-GAN's parameters (.grad is set): take the gradient in z "
                   f"alone with torch.autograd.grad(score.sum(), z, create_graph=True)")
    with torch.no_grad():
        value = lib.purify(x)
    v = out.detach()
    if not _matches(v, value):
        with torch.no_grad():
            mu = V.encode(x)[0]
        if _matches(v, V.decode(mu).detach()):
            raise fail(f"{what} returns Dec(mu(x)), the plain reconstruction: take the {steps} guided steps on z "
                       f"before decoding")
        for k in (steps - 1, steps + 1):
            with torch.no_grad():
                alt = VAEGANPurifier(V, torch.nn.Identity(), steps=k, step_size=s, space="latent").purify(x)
            if _matches(v, alt):
                raise fail(f"{what} takes {k} guided steps instead of {steps}: loop `steps` times")
        with torch.no_grad():
            img = VAEGANPurifier(V, torch.nn.Identity(), steps=steps, step_size=s, space="image").purify(x)
        if _matches(v, img):
            raise fail(f"{what} takes the steps in image space; here they are taken on the latent z, and the "
                       f"result is Dec(z_K)")
        assert_close(v, value, f"{what}'s purified images (compared with VAEGANPurifier(space='latent'))",
                     atol=1e-5)
    if not out.requires_grad:
        raise fail(f"{what} returns a tensor that does not require grad although x does: no gradient reaches x, "
                   f"so an attacker sees nothing (the gradient masking of lecture 04). Do not detach z; keep the "
                   f"graph of every step")
    try:
        g, = torch.autograd.grad((out * u).sum(), xr)
    except RuntimeError as e:
        raise fail(f"{what}'s output is not connected to x in the autograd graph ({e})") from None
    expected = _vjp(lib.purify, x, u)
    if _matches(g, expected):
        return (f"purify_latent: the values of VAEGANPurifier(steps={steps}, space='latent') and the exact gradient "
                f"through all {steps} guided steps (create_graph=True), as an adaptive attacker needs it")
    const = _vjp(lambda t: _ref_purify_latent(V, t, steps, s, constant_direction=True), x, u)
    if _matches(g, const):
        raise fail(f"{what} has the right values but treats each step's direction g / ||g|| as a constant for "
                   f"autograd (the gradient of the score was taken without create_graph=True, or detached): the "
                   f"gradient w.r.t. x then misses how the direction itself depends on x. Pass create_graph=True "
                   f"to torch.autograd.grad")
    assert_close(g, expected, f"the gradient through {what}", atol=1e-5)
    raise fail(f"{what}'s gradient differs")  # pragma: no cover - assert_close raised


# exercise set 06: LQ-VAE (the gradient-norm penalty, the quantiser and its relaxations)


def _toy_encoder() -> torch.nn.Module:
    """A tiny fixed encoder images (N, 1, 28, 28) -> (mu, logvar), each (N, 6), no batch norm (each
    image's gradient depends on that image only), smooth (tanh) so that its Jacobian depends on the
    input. A fresh one per call, so that a check sees no other check's gradients."""
    nn = torch.nn

    class ToyEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(61)
            self.W1 = nn.Parameter(torch.randn(24, 784, generator=g) / 28.0)
            self.W2 = nn.Parameter(torch.randn(12, 24, generator=g) * 0.6)

        def forward(self, x):
            h = torch.tanh(2 * x.flatten(1) @ self.W1.t() - 0.3)
            mu, logvar = (h @ self.W2.t()).chunk(2, dim=1)
            return mu, logvar

    return ToyEncoder().eval()


def _penalty_variants(encoder, x, K, seed):
    """Per-image penalty variants for the diagnoses, each computed with v drawn like the reference:
    name -> (N,) values (or a scalar for the whole-batch norm)."""
    xr = x.detach().clone().requires_grad_(True)
    mu, logvar = encoder(xr)
    n, d = mu.shape
    raw = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    v = raw / raw.norm(dim=1, keepdim=True)
    out = {}
    g_v, = torch.autograd.grad(mu, xr, grad_outputs=v, retain_graph=True)
    g_raw, = torch.autograd.grad(mu, xr, grad_outputs=raw, retain_graph=True)
    g_one, = torch.autograd.grad(mu.sum(), xr, retain_graph=True)
    g_lv, = torch.autograd.grad(logvar, xr, grad_outputs=v, retain_graph=True)
    norm = g_v.flatten(1).norm(dim=1)
    out["squared norm"] = (g_v.flatten(1).pow(2).sum(1) - K) ** 2
    out["no square"] = norm - K
    out["absolute value"] = (norm - K).abs()
    out["K = 1"] = (norm - 1.0) ** 2
    out["K = 0"] = norm ** 2
    out["unnormalised v"] = (g_raw.flatten(1).norm(dim=1) - K) ** 2
    out["sum of mu"] = (g_one.flatten(1).norm(dim=1) - K) ** 2
    out["logvar"] = (g_lv.flatten(1).norm(dim=1) - K) ** 2
    out["batch norm"] = ((g_v.norm() - K) ** 2).expand(n)
    out["linf norm"] = (g_v.flatten(1).abs().max(1).values - K) ** 2
    out["l1 norm"] = (g_v.flatten(1).abs().sum(1) - K) ** 2
    return {k: t.detach() for k, t in out.items()}


@register
def check_gradient_norm_penalty(student) -> str:
    """Exercise 06.1: gradient_norm_penalty(encoder, x, K=1.0, generator=None) -> (N,) the penalty
    (||grad_x (v_i . mu(x_i))||_2 - K)^2 per image, v_i = randn(N, d, generator) / its row norm,
    differentiable for the encoder's parameters (create_graph=True); equal to
    advlab.generative.lqvae.lipschitz_penalty(encoder, x, K, "projection", generator)."""
    from advlab.generative.lqvae import lipschitz_penalty
    what = "your gradient_norm_penalty"
    x = fixed_images(5, seed=62)
    n = len(x)
    seed = 63
    for K in (0.6, 1.0):
        enc = _toy_encoder()
        xs = x.clone()
        out = call_student(student, enc, xs, K, torch.Generator().manual_seed(seed), what=what)
        _untouched_requires_grad(xs, what)
        assert_tensor(out, what, shape=(n,))
        for p in enc.parameters():
            if p.grad is not None:
                raise fail(f"{what} left gradients in the encoder's parameters (.grad is set): take the input "
                           f"gradient with torch.autograd.grad(mu, x, grad_outputs=v, create_graph=True), not "
                           f"with .backward()")
        ref_enc = _toy_encoder()
        ref = lipschitz_penalty(ref_enc, x, K, "projection", torch.Generator().manual_seed(seed))
        got = out.detach()
        if not _matches(got, ref.detach()):
            variants = _penalty_variants(_toy_encoder(), x, K, seed)
            msgs = {
                "squared norm": "uses the SQUARED norm ||g||^2 (e.g. g.pow(2).sum()); the penalty uses the L2 norm "
                                "itself, g.flatten(1).norm(dim=1), then (norm - K) ** 2",
                "no square": "returns norm - K without the square: the penalty is (norm - K) ** 2, which pushes "
                             "the gain towards K from both sides",
                "absolute value": "returns |norm - K|; the penalty is the square (norm - K) ** 2",
                "K = 1": f"ignores K (it computes (norm - 1) ** 2 but K = {K}): subtract the K you were given",
                "K = 0": "penalises the norm itself, norm ** 2 (K = 0): the penalty pulls the norm towards K, "
                         "(norm - K) ** 2",
                "unnormalised v": "does not normalise v: divide each row by its norm, "
                                  "v = v / v.norm(dim=1, keepdim=True), so that v is a unit direction",
                "sum of mu": "differentiates mu.sum() (the all-ones direction, of length sqrt(d)); use a random "
                             "unit direction per image: grad_outputs=v",
                "logvar": "differentiates logvar, the second output of the encoder; the penalty is on the mean mu "
                          "(encoder(x)[0])",
                "batch norm": "takes ONE norm over the whole batch's gradient (grad.norm()); take one norm per "
                              "image: grad.flatten(1).norm(dim=1)",
                "linf norm": "takes the L-infinity norm of the gradient; the penalty uses the L2 norm",
                "l1 norm": "takes the L1 norm of the gradient; the penalty uses the L2 norm",
            }
            if _matches(got, variants["batch norm"]):
                raise fail(f"{what} {msgs['batch norm']}")
            for name, msg in msgs.items():
                if _matches(got, variants[name]):
                    raise fail(f"{what} {msg}")
            same = call_student(student, _toy_encoder(), x.clone(), K, torch.Generator().manual_seed(seed), what=what)
            other = call_student(student, _toy_encoder(), x.clone(), K, torch.Generator().manual_seed(seed + 1),
                                 what=what)
            if not _matches(same.detach(), got) or _matches(other.detach(), got):
                raise fail(f"{what} does not draw v from the generator it is given (the same seeded generator "
                           f"must give the same penalty): v = torch.randn(N, d, generator=generator)")
            assert_close(got, ref.detach(), f"{what}'s penalty (K = {K})", atol=1e-5)
        # the gradient must reach the encoder's parameters, and be the right one
        if not out.requires_grad:
            raise fail(f"{what} returns a penalty without a graph: no gradient reaches the encoder, so the "
                       f"penalty trains nothing. Take the input gradient with create_graph=True "
                       f"(torch.autograd.grad(mu, x, grad_outputs=v, create_graph=True)) and do not .detach() it")
        try:
            gs = torch.autograd.grad(out.sum(), list(enc.parameters()), allow_unused=True)
        except RuntimeError as e:
            raise fail(f"{what}'s penalty cannot be differentiated for the encoder ({e}): use create_graph=True "
                       f"in torch.autograd.grad") from None
        ref_gs = torch.autograd.grad(ref.sum(), list(ref_enc.parameters()))
        for g, rg, name in zip(gs, ref_gs, ("W1", "W2")):
            if g is None or float(g.abs().max()) == 0.0:
                raise fail(f"{what}'s penalty passes no gradient to the encoder's weights {name}: the input "
                           f"gradient must stay in the graph (create_graph=True), so that the double backward "
                           f"reaches the weights")
            assert_close(g, rg, f"the gradient of {what}'s penalty for the encoder's {name}", atol=1e-5)
    return (f"gradient_norm_penalty: equal to the library's lipschitz_penalty on {n} images for K = 0.6 and 1, "
            f"values and gradients for the encoder (double backward through create_graph=True)")


def _quantiser_case():
    """z (N, d) away from 0 (where the sign is ambiguous), some beyond +-1, and the upstream gradient u."""
    g = torch.Generator().manual_seed(64)
    z = torch.randn(6, 10, generator=g) * 1.2
    z = torch.where(z.abs() < 0.05, z.sign() * 0.05 + z, z)
    u = torch.randn(6, 10, generator=g)
    return z, u


def _grad_of(out: torch.Tensor, z: torch.Tensor, u: torch.Tensor):
    if not out.requires_grad:
        return None
    g, = torch.autograd.grad((out * u).sum(), z, allow_unused=True)
    return torch.zeros_like(z) if g is None else g


@register
def check_quantiser(student) -> str:
    """Exercise 06.2: quantise(z, relax="hard", temperature=0.5) on latents z (N, d):
    "hard" H(z) = sign(z) in {-1, +1}; "straight-through" H(z) in value with the gradient of the identity;
    "soft" H~(z) = tanh(2 z / temperature) (the two-level soft quantiser of the library, differentiable,
    tending to H(z) as temperature -> 0). Compared with advlab.generative.lqvae.Quantiser(levels=2)."""
    from advlab.generative.lqvae import Quantiser
    what = "your quantise"
    q = Quantiser(levels=2, span=1.0)
    z, u = _quantiser_case()
    H = q.hard(z)
    # --- hard
    zr = z.clone().requires_grad_(True)
    out = call_student(student, zr, "hard", what=what)
    assert_tensor(out, f'{what}(z, "hard")', like=z)
    got = out.detach()
    if not _matches(got, H):
        if _matches(got, (z > 0).float()):
            raise fail(f'{what}(z, "hard") returns bits in {{0, 1}}; H maps to the levels {{-1, +1}}: '
                       f'torch.where(z > 0, 1.0, -1.0) (or 2 * (z > 0) - 1)')
        if _matches(got, z):
            raise fail(f'{what}(z, "hard") returns z unchanged: H(z) = sign(z), one of -1 and +1')
        if _matches(got, torch.round(z)) or _matches(got, torch.round(z).clamp(-1, 1)):
            raise fail(f'{what}(z, "hard") rounds to the nearest integer (0 is a level then); H has two levels '
                       f'-1 and +1: the sign of z')
        if _matches(got, -H):
            raise fail(f'{what}(z, "hard") has the sign flipped: positive z goes to +1')
        assert_close(got, H, f'{what}(z, "hard")')
    # --- straight-through
    zr = z.clone().requires_grad_(True)
    out = call_student(student, zr, "straight-through", what=what)
    assert_tensor(out, f'{what}(z, "straight-through")', like=z)
    got = out.detach()
    if not _matches(got, H):
        if _matches(got, z):
            raise fail(f'{what}(z, "straight-through") returns z in the forward pass: its VALUE must be H(z) '
                       f'(only the gradient is that of the identity): H(z) + (z - z.detach())')
        if _matches(got, torch.tanh(2 * z / 0.5)):
            raise fail(f'{what}(z, "straight-through") returns the soft value tanh(2 z / t); straight-through '
                       f'keeps the hard value H(z) and replaces only the gradient')
        if _matches(got, H + z):
            raise fail(f'{what}(z, "straight-through") returns H(z) + z: detach the part that must not count in '
                       f'the value, H(z) + (z - z.detach())')
        assert_close(got, H, f'{what}(z, "straight-through")\'s value (it must equal H(z))')
    g = _grad_of(out, zr, u)
    if g is None or float(g.abs().max()) == 0.0:
        raise fail(f'{what}(z, "straight-through") passes a zero gradient (sign and rounding have zero '
                   f'gradient almost everywhere): the gradient must be that of the identity. Write '
                   f'H(z) + (z - z.detach()), or z + (H(z) - z).detach()')
    if not _matches(g, u):
        if _matches(g, u * (z.abs() <= 1)):
            raise fail(f'{what}(z, "straight-through") clips the gradient to |z| <= 1 (a hard-tanh '
                       f'straight-through); the library Quantiser passes the gradient of the identity everywhere')
        if _matches(g, 2 * u):
            raise fail(f'{what}(z, "straight-through") passes twice the gradient of the identity: do not add z '
                       f'twice; H(z) + (z - z.detach())')
        t = torch.tanh(2 * z / 0.5)
        if _matches(g, u * (1 - t ** 2) * 4):
            raise fail(f'{what}(z, "straight-through") passes the gradient of the soft quantiser; '
                       f'straight-through passes that of the identity')
        raise fail(f'{what}(z, "straight-through"): the gradient is not that of the identity (e.g. entry 0: '
                   f'{g.flatten()[0].item():.4g} for an upstream gradient {u.flatten()[0].item():.4g})')
    # --- soft, at two temperatures, and its limit
    for t in (0.5, 0.2):
        zr = z.clone().requires_grad_(True)
        out = call_student(student, zr, "soft", temperature=t, what=what)
        assert_tensor(out, f'{what}(z, "soft", temperature={t})', like=z)
        got = out.detach()
        expected = q.soft(z, t)
        if not _matches(got, expected):
            cands = {
                "tanh(z / t)": (torch.tanh(z / t), "computes tanh(z / t); two levels at -1 and +1 give "
                                                   "tanh(2 z / t) (the softmax over exp(-(z - c)^2 / t))"),
                "tanh(2 z t)": (torch.tanh(2 * z * t), "multiplies by the temperature; divide: tanh(2 z / t) "
                                                       "(a small temperature makes the step sharper)"),
                "fixed t": (torch.tanh(2 * z / 0.5), "ignores the temperature argument (uses 0.5 whatever it "
                                                     "is given): tanh(2 z / temperature)"),
                "tanh(z)": (torch.tanh(z), "computes tanh(z) without the temperature: tanh(2 z / temperature)"),
                "sigmoid": (torch.sigmoid(2 * z / t), "returns a sigmoid in [0, 1]; the levels are -1 and +1: "
                                                      "tanh(2 z / temperature)"),
                "sigmoid4": (torch.sigmoid(4 * z / t), "returns a value in [0, 1] (the weight of level +1); "
                                                       "return the weighted mean of the levels, "
                                                       "tanh(2 z / temperature)"),
                "hard": (H, "returns H(z) itself: the soft quantiser is the smooth approximation "
                            "tanh(2 z / temperature)"),
            }
            for _, (c, msg) in cands.items():
                if _matches(got, c):
                    raise fail(f'{what}(z, "soft", temperature={t}) {msg}')
            assert_close(got, expected, f'{what}(z, "soft", temperature={t})')
        g = _grad_of(out, zr, u)
        if g is None or float(g.abs().max()) == 0.0:
            raise fail(f'{what}(z, "soft") passes no gradient: it must be differentiable (do not detach it)')
        assert_close(g, _grad_of(q.soft(zr, t), zr, u), f'the gradient of {what}(z, "soft", temperature={t})')
    with torch.no_grad():
        sharp = call_student(student, z.clone(), "soft", temperature=0.01, what=what)
    if not _matches(sharp.detach(), H):
        raise fail(f'{what}(z, "soft", temperature=0.01) should be (numerically) H(z): the soft quantiser '
                   f'tends to the hard one as the temperature goes to 0')
    return ("quantise: H(z) = sign(z) in {-1, +1}; straight-through has H's value and the gradient of the identity; "
            "soft = tanh(2 z / t) with its gradient, tending to H as t -> 0 (as the library's Quantiser)")
