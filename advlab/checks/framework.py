"""The exercise-check framework: the registry of checks, the decorator that turns a check body into
a notebook-friendly check, and the standard diagnoses every exercise set's checks share.

A check is `check_<exercise>(student, ...)` decorated with `@register`. Its body runs the student's
function on fixed inputs, compares the result with advlab's reference and either returns the success
message or raises `fail(...)` (an AssertionError) with a specific diagnosis. `register` prints
"✅ <message>" and returns True on success; prints PENDING and returns False while the answer is
still a blank (None, or a body that raises NotImplementedError), so that an exercise notebook runs
top to bottom in CI; and lets the diagnosis propagate otherwise.

The state lives here and only here: `CHECKS` maps exercise names to their checks, `RESULTS` to the
outcome of their last run (what `summary()` prints). The lecture modules l00_setup ... l11_leaderboard
import from this module and never keep state of their own.

The assert_* helpers and `call_student` give the diagnoses most checks need (shape and dtype, the
[0, 1] box, the eps-ball, closeness to the reference, inputs modified in place, a function that
raised); the private helpers at the end catch the autograd mistakes that recur across the exercise
sets (a caller's tensor switched to requires_grad, a result still attached to the graph).
"""
from __future__ import annotations

import functools
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
# autograd diagnoses shared by several exercise sets


def _no_grad_leak(out: torch.Tensor, what: str) -> None:
    """A returned adversarial example must not carry the autograd graph along."""
    if out.requires_grad:
        raise fail(f"{what} returns a tensor that still requires grad (it carries the autograd graph along): "
                   f"return x_adv.detach()")


def _untouched_requires_grad(x: torch.Tensor, what: str) -> None:
    """The caller's x must come back with requires_grad as it was given (False)."""
    if x.requires_grad:
        raise fail(f"{what} switched on requires_grad of the caller's x (x.requires_grad_() changes the tensor "
                   f"you were given): work on a copy, e.g. x_adv = x.clone().detach().requires_grad_(True)")


def _vjp(fn, x, u):
    """The vector-Jacobian product u^T d fn(x) / dx by autograd (zeros if fn(x) has no graph): the
    reference gradient a check compares a student's differentiable function with."""
    xs = x.clone().requires_grad_(True)
    with torch.enable_grad():
        out = fn(xs)
        if not out.requires_grad:
            return torch.zeros_like(x)
        g, = torch.autograd.grad((out * u).sum(), xs)
    return g
