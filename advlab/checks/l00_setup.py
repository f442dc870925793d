"""Checks for exercise set 00: norms and threat models (the L∞ and L2 norms of a batch of
perturbations, the in-threat-model test, a random point of the L∞ ball, the L2 size of a corner).

The inputs are built so that the common slips produce a recognisable wrong answer: the largest
entry of some perturbations is negative (a max without abs), colour images sit next to grey ones (a
hard-coded 28x28), threat-model cases lie exactly on the boundary of the ball (a comparison without
float tolerance) or outside the [0, 1] box while inside the ball (a forgotten box constraint). Each
check first compares with the reference (advlab.attacks.base.flat_norm), then names the mistake
whose output the student's answer matches. The random perturbation is judged statistically
(fresh noise per call, one draw per pixel, both signs, uniform rather than on the corners).
"""
from __future__ import annotations

import math

import torch

from .framework import (
    _matches, assert_close, assert_in_ball, assert_in_box, assert_tensor, call_student, fail, fixed_images,
    register,
)


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
    """Exercise 00.4: the L2 norm of a corner of the Linf ball of radius eps in d dimensions: the student's
    corner_l2_norm(eps, d), or the number it returned."""
    if callable(value):
        value = value(eps, d)          # a blank raises NotImplementedError: pending
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
