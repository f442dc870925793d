"""Exercise set 10's checks: a correct answer passes, the typical wrong answers fail with their diagnosis."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from advlab import checks


def eot_ok(model, x, y, n):
    g = torch.zeros_like(x)
    for _ in range(n):
        xr = x.clone().requires_grad_(True)
        loss = F.cross_entropy(model(xr), y, reduction="sum")
        g += torch.autograd.grad(loss, xr)[0]
    return g / n


def eot_one(model, x, y, n):
    return eot_ok(model, x, y, 1)


def eot_sum(model, x, y, n):
    return eot_ok(model, x, y, n) * n


def eot_batch_mean(model, x, y, n):
    return eot_ok(model, x, y, n) / len(x)


def eot_mean_logits(model, x, y, n):
    xr = x.clone().requires_grad_(True)
    logits = torch.stack([model(xr) for _ in range(n)]).mean(0)
    return torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), xr)[0]


def eot_twice(model, x, y, n):
    eot_ok(model, x, y, 1)
    return eot_ok(model, x, y, n)


def eot_leaks_graph(model, x, y, n):
    x.requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x, create_graph=True)[0]


def test_eot_correct_passes():
    assert checks.check_eot_gradient(eot_ok) is True


@pytest.mark.parametrize("wrong, message", [
    (eot_one, "called the model 1 times"),
    (eot_sum, "sums the n gradients"),
    (eot_batch_mean, "divided by the batch size"),
    (eot_mean_logits, "AVERAGED logits"),
    (lambda m, x, y, n: eot_ok(m, x, y, n).sign(), "sign of the gradient"),
    (lambda m, x, y, n: -eot_ok(m, x, y, n), "wrong sign"),
    (eot_twice, "called the model"),
    (eot_leaks_graph, "requires_grad"),
])
def test_eot_wrong_answers_fail_with_their_diagnosis(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_eot_gradient(wrong)


def test_eot_blank_is_pending():
    def blank(model, x, y, n):
        raise NotImplementedError
    assert checks.check_eot_gradient(blank) is False


def robust_ok(correct, rule):
    per_attack = correct.sum(1) * 2 > correct.shape[1] if rule == "vote" else correct.all(1)
    return per_attack.all(0)


def test_robust_images_correct_passes():
    assert checks.check_robust_images(robust_ok) is True
    assert checks.check_robust_images(lambda c, r: robust_ok(c, r).long()) is True   # 0/1 is fine


@pytest.mark.parametrize("wrong, message", [
    (lambda c, r: ((c.sum(1) * 2 >= c.shape[1]) if r == "vote" else c.all(1)).all(0), "tie"),
    (lambda c, r: robust_ok(c, "worst_of_n" if r == "vote" else "vote"), "other rule"),
    (lambda c, r: ((c.sum(1) * 2 > c.shape[1]) if r == "vote" else c.all(1)).any(0), "ANY attack"),
    (lambda c, r: robust_ok(c, "vote") if r == "vote" else c.any(1).all(0), "ANY draw"),
    (lambda c, r: robust_ok(c, r).float().mean(), "one number"),
    (lambda c, r: robust_ok(c, r).float().mean().item(), "return a \\(N,\\) bool tensor"),
    (lambda c, r: c.all(2).all(0), "returned shape"),
])
def test_robust_images_wrong_answers_fail_with_their_diagnosis(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_robust_images(wrong)


class BPDAOk(nn.Module):
    def __init__(self, stage):
        super().__init__()
        self.stage = stage

    def forward(self, x):
        return x + (self.stage(x) - x).detach()


class BPDAThroughStage(BPDAOk):
    def forward(self, x):
        return self.stage(x)


class BPDAIdentityValue(BPDAOk):
    def forward(self, x):
        return x


class BPDANoGraph(BPDAOk):
    def forward(self, x):
        with torch.no_grad():
            return self.stage(x)


def test_bpda_wrapper_correct_passes():
    assert checks.check_bpda_wrapper(BPDAOk) is True


@pytest.mark.parametrize("wrong, message", [
    (BPDAThroughStage, "gradient of zero"),
    (BPDAIdentityValue, "returns x itself"),
    (BPDANoGraph, "does not require grad"),
    (BPDAOk(nn.Identity()), "not an instance"),
])
def test_bpda_wrapper_wrong_answers_fail_with_their_diagnosis(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_bpda_wrapper(wrong)


def test_bpda_wrapper_blank_is_pending():
    class Blank(nn.Module):
        def __init__(self, stage):
            super().__init__()
            raise NotImplementedError
    assert checks.check_bpda_wrapper(Blank) is False
