"""advlab.checks for exercise set 07 (CARSO): each check passes on a reference answer, reports a blank
as pending, and names the typical mistakes."""
import pytest
import torch

from advlab import attacks, checks

pytestmark = pytest.mark.usefixtures("one_thread")


def _aggregate(logits, *, mode="carso"):
    """The reference answer of exercise 07.1, with switches that make the typical mistakes."""
    if mode == "carso":
        s = torch.logsumexp(logits.double(), dim=0).exp()               # S_c = sum_j exp(l_jc), (N, C)
        return torch.log_softmax(s, dim=1)
    if mode == "float32_naive":
        return torch.log(torch.softmax(logits.exp().sum(0), dim=1))
    if mode == "mean_probs":
        return torch.log(torch.softmax(logits, 2).mean(0))
    if mode == "mean_logits":
        return torch.log_softmax(logits.mean(0), 1)
    if mode == "unnormalised":
        return torch.logsumexp(logits.double(), dim=0).exp()
    if mode == "sum_logits":
        return torch.log_softmax(logits.sum(0), 1)
    raise ValueError(mode)


def _batch(classifier, x, y, fraction=0.5, eps=0.1, generator=None, *, mistake=None):
    """The reference answer of exercise 07.2, with switches that make the typical mistakes."""
    n = len(x)
    n_adv = round(fraction * n)
    counts = [n_adv // 4 + (i < n_adv % 4) for i in range(4)]
    if mistake == "counts":
        counts = [n_adv // 4] * 4
    perm = torch.randperm(n, generator=generator)
    inputs, kinds = x.clone(), torch.zeros(n, dtype=torch.long)
    start = n - n_adv
    for k, ((name, scale), c) in enumerate(zip((("pgd", 0.5), ("pgd", 1.0), ("fgsm", 0.5), ("fgsm", 1.0)), counts), 1):
        rows = perm[start:start + c]
        start += c
        if mistake == "full_budget":
            scale = 1.0
        atk = (attacks.PGD(eps=scale * eps, alpha=0.01, steps=40, random_start=True, seed=k) if name == "pgd"
               else attacks.FGSM(eps=scale * eps))
        inputs[rows] = atk(classifier, x[rows], y[rows])
        kinds[rows] = k
    if mistake == "noise":
        inputs = torch.where((kinds > 0)[:, None, None, None], (x + 0.001 * torch.randn_like(x)).clamp(0, 1), x)
    targets = inputs.clone() if mistake == "adv_targets" else x.clone()
    return inputs, targets, kinds


def test_aggregation_reference_passes():
    assert checks.check_carso_aggregation(_aggregate) is True


@pytest.mark.parametrize("mode, message", [
    ("float32_naive", "non-finite"), ("mean_probs", "mean softmax"), ("mean_logits", "mean logit"),
    ("unnormalised", "not normalised"), ("sum_logits", "CARSO's rule picks"),
])
def test_aggregation_mistakes_are_named(mode, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_carso_aggregation(lambda z: _aggregate(z, mode=mode))


def test_balanced_batch_reference_passes():
    assert checks.check_balanced_batch(_batch) is True


@pytest.mark.parametrize("mistake, message", [
    ("adv_targets", "perturbed inputs"), ("counts", "rows per kind"), ("full_budget", "over their budget"),
    ("noise", "whole budget"),
])
def test_balanced_batch_mistakes_are_named(mistake, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_balanced_batch(lambda *a, **k: _batch(*a, **k, mistake=mistake))


def test_blanks_are_pending():
    def blank(*a, **k):
        raise NotImplementedError
    assert checks.check_carso_aggregation(blank) is False
    assert checks.check_balanced_batch(blank) is False
    assert checks.RESULTS["carso_aggregation"] == "pending"
