"""Exercise set 11, the leaderboard: a Wilson confidence interval, and the per-image worst case.

A leaderboard cell is a count of robust images out of n; reading it honestly needs its interval, and
a defense's robust accuracy is the fraction of images that survive EVERY attack, not the smallest of
the attacks' own accuracies.
"""
from __future__ import annotations

import math

import torch

from .framework import call_student, fail, register


def _pair(out, what: str) -> tuple[float, float]:
    if isinstance(out, torch.Tensor):
        out = out.tolist()
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise fail(f"{what} should return a pair (low, high), got {out!r}")
    try:
        return float(out[0]), float(out[1])
    except (TypeError, ValueError):
        raise fail(f"{what} should return two numbers, got {out!r}") from None


@register
def check_wilson_interval(fn) -> str:
    """Exercise 11.1: wilson_interval(k, n) -> the 95% Wilson score interval of k successes in n, as fractions."""
    from advlab.evaluation.adaptive import Z95 as z, wilson
    for k, n in ((740, 1000), (0, 100), (100, 100), (23, 64), (1, 7)):
        lo, hi = _pair(call_student(fn, k, n, what="wilson_interval"), "wilson_interval")
        ref_lo, ref_hi = wilson(k, n)
        if math.isclose(lo, ref_lo, abs_tol=1e-4) and math.isclose(hi, ref_hi, abs_tol=1e-4):
            continue
        p = k / n
        wald = (p - z * math.sqrt(p * (1 - p) / n), p + z * math.sqrt(p * (1 - p) / n))
        if math.isclose(lo, 100 * ref_lo, abs_tol=1e-2):
            raise fail(f"wilson_interval({k}, {n}) = ({lo:.4g}, {hi:.4g}) is in percent: return fractions in [0, 1]")
        if math.isclose(lo, wald[0], abs_tol=1e-4) and math.isclose(hi, wald[1], abs_tol=1e-4):
            raise fail(f"wilson_interval({k}, {n}) = ({lo:.4f}, {hi:.4f}) is the normal (Wald) interval p ± z·sqrt(p(1-p)/n); "
                       "the Wilson interval centres on (p + z²/2n) / (1 + z²/n)"
                       + (" — and at k = 0 or k = n the Wald interval has width 0, which no 100 images can promise"
                          if k in (0, n) else ""))
        if lo > hi:
            raise fail(f"wilson_interval({k}, {n}) = ({lo:.4f}, {hi:.4f}): low is above high")
        raise fail(f"wilson_interval({k}, {n}) = ({lo:.4f}, {hi:.4f}); expected ({ref_lo:.4f}, {ref_hi:.4f}) "
                   "(z = 1.96; check the centre (p + z²/2n) / (1 + z²/n) and the half-width)")
    lo, hi = wilson(740, 1000)
    return (f"wilson_interval: 740 robust of 1000 is 74.0% with 95% interval [{100 * lo:.1f}, {100 * hi:.1f}]; "
            "0 of 100 still allows up to 3.7%")


@register
def check_worst_case_accuracy(fn) -> str:
    """Exercise 11.2: worst_case_accuracy(survived) for survived (A attacks, N images) bool -> a float:
    the fraction of images that survived every attack."""
    g = torch.Generator().manual_seed(11)
    cases = [torch.rand(4, 50, generator=g) > 0.3, torch.ones(3, 10, dtype=torch.bool),
             torch.zeros(2, 5, dtype=torch.bool), torch.tensor([[True, True, False, False], [False, True, True, False]])]
    for survived in cases:
        out = call_student(fn, survived, what="worst_case_accuracy")
        if isinstance(out, torch.Tensor):
            if out.numel() != 1:
                raise fail(f"worst_case_accuracy returned a tensor of shape {tuple(out.shape)}; return one number "
                           "(the fraction of images robust to every attack)")
            out = out.item()
        if not isinstance(out, (int, float)):
            raise fail(f"worst_case_accuracy should return a number, got {type(out).__name__}")
        ref = survived.all(0).float().mean().item()
        if math.isclose(out, ref, abs_tol=1e-6):
            continue
        own = survived.float().mean(1)
        if math.isclose(out, own.min().item(), abs_tol=1e-6):
            raise fail(f"worst_case_accuracy = {out:.3f} is the strongest single attack's accuracy; an image broken by "
                       f"attack 1 and another broken by attack 2 are both lost: take the images that survive all "
                       f"attacks (here {ref:.3f})")
        if math.isclose(out, own.mean().item(), abs_tol=1e-6):
            raise fail(f"worst_case_accuracy = {out:.3f} is the mean of the attacks' accuracies; the defense keeps only "
                       f"the images that survive every attack (here {ref:.3f})")
        if math.isclose(out, survived.any(0).float().mean().item(), abs_tol=1e-6):
            raise fail(f"worst_case_accuracy = {out:.3f} counts images that survive ANY attack; an image is robust only "
                       f"if it survives ALL of them (here {ref:.3f})")
        if math.isclose(out, 100 * ref, abs_tol=1e-4):
            raise fail(f"worst_case_accuracy = {out:.4g} is in percent: return a fraction in [0, 1]")
        raise fail(f"worst_case_accuracy = {out:.4f}; expected {ref:.4f} for survived of shape {tuple(survived.shape)} "
                   "(attacks along dim 0, images along dim 1)")
    return "worst_case_accuracy: an image counts only if it survives every attack (all over dim 0, then the mean)"
