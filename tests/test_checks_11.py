"""Exercise set 11's checks: a correct answer passes, the typical wrong answers fail with their diagnosis."""
import math

import pytest
import torch

from advlab import checks

Z = 1.959963984540054


def wilson_ok(k, n):
    p = k / n
    d = 1 + Z * Z / n
    c = (p + Z * Z / (2 * n)) / d
    h = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def wald(k, n):
    p = k / n
    h = Z * math.sqrt(p * (1 - p) / n)
    return p - h, p + h


def test_wilson_correct_passes():
    assert checks.check_wilson_interval(wilson_ok) is True


@pytest.mark.parametrize("wrong, message", [
    (wald, "normal (Wald) interval"),
    (lambda k, n: tuple(100 * v for v in wilson_ok(k, n)), "in percent"),
    (lambda k, n: wilson_ok(k, n)[0], "should return a pair"),
    (lambda k, n: (k / n - 0.01, k / n + 0.01), "expected ("),
])
def test_wilson_wrong_answers_fail_with_their_diagnosis(wrong, message):
    with pytest.raises(AssertionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        checks.check_wilson_interval(wrong)


def test_wilson_blank_is_pending():
    def blank(k, n):
        raise NotImplementedError
    assert checks.check_wilson_interval(blank) is False


def test_worst_case_correct_passes():
    assert checks.check_worst_case_accuracy(lambda s: s.all(0).float().mean().item()) is True
    assert checks.check_worst_case_accuracy(lambda s: s.all(0).float().mean()) is True   # a 0-d tensor is fine


@pytest.mark.parametrize("wrong, message", [
    (lambda s: s.float().mean(1).min().item(), "strongest single attack"),
    (lambda s: s.float().mean().item(), "mean of the attacks"),
    (lambda s: s.any(0).float().mean().item(), "survive ANY attack"),
    (lambda s: 100 * s.all(0).float().mean().item(), "in percent"),
    (lambda s: s.all(1).float().mean().item(), "attacks along dim 0"),
    (lambda s: s.all(0).float(), "return one number"),
])
def test_worst_case_wrong_answers_fail_with_their_diagnosis(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_worst_case_accuracy(wrong)


def test_worst_case_that_modifies_its_input_fails():
    def inplace(s):
        s[0] = True
        return s.all(0).float().mean().item()
    with pytest.raises(AssertionError, match="in place"):
        checks.check_worst_case_accuracy(inplace)


def paired_ok(a, b):
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    n, k = a_only + b_only, min(a_only, b_only)
    return a_only, b_only, (min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0)


def test_paired_correct_passes():
    assert checks.check_paired_test(paired_ok) is True
    scipy_stats = pytest.importorskip("scipy.stats")          # a student may use scipy's binomial test
    assert checks.check_paired_test(lambda a, b: (int((a & ~b).sum()), int((b & ~a).sum()), scipy_stats.binomtest(
        int((a & ~b).sum()), max(1, int((a ^ b).sum())), 0.5).pvalue if (a ^ b).any() else 1.0)) is True


def _one_sided(a, b):
    a_only, b_only, _ = paired_ok(a, b)
    n, k = a_only + b_only, min(a_only, b_only)
    return a_only, b_only, (sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n if n else 1.0)


def _chi2(a, b):
    a_only, b_only, _ = paired_ok(a, b)
    n = a_only + b_only
    return a_only, b_only, (math.erfc(math.sqrt((a_only - b_only) ** 2 / n / 2)) if n else 1.0)


def _uncapped(a, b):
    a_only, b_only, _ = paired_ok(a, b)
    n, k = a_only + b_only, min(a_only, b_only)
    return a_only, b_only, (2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n if n else 1.0)


@pytest.mark.parametrize("wrong, message", [
    (lambda a, b: paired_ok(b, a), "swapped"),
    (lambda a, b: (int(a.sum()), int(b.sum()), paired_ok(a, b)[2]), "robust under both as well"),
    (_one_sided, "one tail"),
    (_chi2, "chi-square approximation"),
    (_uncapped, "cap the doubled tail"),
    (lambda a, b: paired_ok(a, b)[:2], "should return a triple"),
    (lambda a, b: (*paired_ok(a, b)[:2], 0.5), "expected"),
])
def test_paired_wrong_answers_fail_with_their_diagnosis(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_paired_test(wrong)
