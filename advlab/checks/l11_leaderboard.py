"""Exercise set 11, the leaderboard: a Wilson confidence interval, the per-image worst case, and the paired test.

A leaderboard cell is a count of robust images out of n; reading it honestly needs its interval, and
a defense's robust accuracy is the fraction of images that survive EVERY attack, not the smallest of
the attacks' own accuracies. Two entries attacked on the same images are compared image by image: only the
images that survive one of them and not the other say which is more robust (the exact McNemar test).
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


def _triple(out) -> tuple[int, int, float]:
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise fail(f"paired_test should return a triple (a_only, b_only, p_value), got {out!r}")
    vals = [v.item() if isinstance(v, torch.Tensor) else v for v in out]
    try:
        return int(vals[0]), int(vals[1]), float(vals[2])
    except (TypeError, ValueError):
        raise fail(f"paired_test should return two counts and a number, got {out!r}") from None


@register
def check_paired_test(fn) -> str:
    """Exercise 11.3: paired_test(robust_a, robust_b) for two (N,) bool tensors on the same images -> (a_only,
    b_only, p_value): the images robust under a only, under b only, and the two-sided exact McNemar p-value."""
    from advlab.metrics import mcnemar_exact
    g = torch.Generator().manual_seed(113)
    a1, b1 = torch.rand(200, generator=g) > 0.3, torch.rand(200, generator=g) > 0.35
    a2 = torch.tensor([True] * 30 + [False] * 10)
    b2 = torch.tensor([True] * 20 + [False] * 10 + [True] * 7 + [False] * 3)
    same = torch.rand(50, generator=g) > 0.5
    tie = torch.tensor([True, False, True, False, True]), torch.tensor([False, True, False, True, True])
    cases = [(a2, b2), (a1, b1), (same, same.clone()), (b2, a2), tie,     # tie: 2 and 2 discordant, p = 1
             (torch.ones(8, dtype=torch.bool), torch.zeros(8, dtype=torch.bool))]
    for ra, rb in cases:
        a_only, b_only, p = _triple(call_student(fn, ra, rb, what="paired_test"))
        want_a, want_b = int((ra & ~rb).sum()), int((rb & ~ra).sum())
        both, neither = int((ra & rb).sum()), int((~ra & ~rb).sum())
        if (a_only, b_only) != (want_a, want_b):
            if (a_only, b_only) == (want_b, want_a):
                raise fail(f"paired_test: a_only and b_only are swapped ({a_only}, {b_only}); a_only counts the images "
                           f"robust under a and not under b (here {want_a})")
            if a_only in (want_a + both, int(ra.sum())) or b_only in (want_b + both, int(rb.sum())):
                raise fail(f"paired_test: ({a_only}, {b_only}) counts the images robust under both as well; the paired "
                           f"test uses only the discordant images (here {want_a} and {want_b})")
            raise fail(f"paired_test: counts ({a_only}, {b_only}); expected ({want_a}, {want_b}) (a & ~b, b & ~a)")
        ref = mcnemar_exact(want_a, want_b)
        if math.isclose(p, ref, rel_tol=1e-6, abs_tol=1e-12):
            continue
        n, k = want_a + want_b, min(want_a, want_b)
        one_sided = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n if n else 1.0
        stat = (want_a - want_b) ** 2 / n if n else 0.0
        cc = (abs(want_a - want_b) - 1) ** 2 / n if n else 0.0
        if math.isclose(p, one_sided, rel_tol=1e-6):
            raise fail(f"paired_test: p = {p:.4g} is one tail of the binomial; the question is 'do a and b differ?', "
                       f"either way: double the tail, capped at 1 (here {ref:.4g})")
        if n and (math.isclose(p, math.erfc(math.sqrt(stat / 2)), rel_tol=1e-6)
                  or math.isclose(p, math.erfc(math.sqrt(cc / 2)), rel_tol=1e-6)):
            raise fail(f"paired_test: p = {p:.4g} is the chi-square approximation of McNemar's test; with "
                       f"{n} discordant images use the exact binomial (here {ref:.4g})")
        if p > 1:
            raise fail(f"paired_test: p = {p:.4g} is above 1: cap the doubled tail at 1")
        raise fail(f"paired_test: p = {p:.4g} for {want_a} images robust under a only and {want_b} under b only; "
                   f"expected {ref:.4g} (each discordant image a fair coin under the null: 2·P(Binomial({n}, 1/2) <= {k}))"
                   + (f"; the {both} images robust under both and the {neither} under neither do not enter" if both or neither else ""))
    return ("paired_test: 30 and 27 of 40 robust, 10 images under a only and 7 under b only: p = "
            f"{mcnemar_exact(10, 7):.2f}, no evidence that a is more robust")
