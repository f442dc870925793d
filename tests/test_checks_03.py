"""advlab.checks for exercise set 03 (adversarial training): each check passes on a reference
answer, reports a blank as pending, and names the typical mistakes."""
import pytest
import torch
import torch.nn.functional as F

from advlab import checks


def pgd_at_examples(model, x, y, eps, alpha, steps, random_start=True):
    was_training = model.training
    model.eval()
    x_adv = x.clone()
    if random_start:
        x_adv = (x_adv + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    model.train(was_training)
    return x_adv.detach()


def trades_loss(model, x, x_adv, y, beta):
    z, z_adv = model(x), model(x_adv)
    return F.cross_entropy(z, y) + beta * F.kl_div(F.log_softmax(z_adv, 1), F.softmax(z, 1), reduction="batchmean")


def test_reference_answers_pass():
    assert checks.check_pgd_at_examples(pgd_at_examples) is True
    assert checks.check_trades_loss(trades_loss) is True


def test_blanks_are_pending():
    def blank(*a):
        raise NotImplementedError
    assert checks.check_pgd_at_examples(blank) is False
    assert checks.check_trades_loss(blank) is False


def _no_eval(model, x, y, eps, alpha, steps, random_start=True):
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def _not_restored(model, x, y, eps, alpha, steps, random_start=True):
    model.eval()
    return _no_eval(model, x, y, eps, alpha, steps, random_start)


def _one_step(model, x, y, eps, alpha, steps, random_start=True):
    return pgd_at_examples(model, x, y, eps, alpha, 1, random_start)


def _no_box(model, x, y, eps, alpha, steps, random_start=True):
    was = model.training
    model.eval()
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps)
    model.train(was)
    return x_adv.detach()


def _same_start(model, x, y, eps, alpha, steps, random_start=True):
    if random_start:
        torch.manual_seed(0)
    return pgd_at_examples(model, x, y, eps, alpha, steps, random_start)


@pytest.mark.parametrize("wrong,message", [
    (_no_eval, "train mode"), (_not_restored, "leaves the model in eval mode"), (_one_step, "one step"),
    (_no_box, "box"), (_same_start, "two calls")])
def test_pgd_at_examples_mistakes(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_pgd_at_examples(wrong)


def _kl(p_log, q):
    return F.kl_div(p_log, q, reduction="batchmean")


@pytest.mark.parametrize("wrong,message", [
    (lambda m, x, xa, y, b: F.cross_entropy(m(x), y) + b * _kl(F.log_softmax(m(x), 1), F.softmax(m(xa), 1)),
     "wrong way round"),
    (lambda m, x, xa, y, b: F.cross_entropy(m(x), y) + b * F.kl_div(F.log_softmax(m(xa), 1), F.softmax(m(x), 1),
                                                                     reduction="sum"), "summed"),
    (lambda m, x, xa, y, b: F.cross_entropy(m(xa), y) + b * _kl(F.log_softmax(m(xa), 1), F.softmax(m(x), 1)),
     "clean"),
    (lambda m, x, xa, y, b: F.cross_entropy(m(x), y) + _kl(F.log_softmax(m(xa), 1), F.softmax(m(x), 1)),
     "beta=6.0: your trades_loss computes no beta"),
    (lambda m, x, xa, y, b: F.cross_entropy(m(x), y) + b * _kl(F.log_softmax(m(xa), 1), F.softmax(m(x), 1).detach()),
     "wrong gradient"),
    (lambda m, x, xa, y, b: F.cross_entropy(m(x), y, reduction="none") + b * _kl(F.log_softmax(m(xa), 1),
                                                                                   F.softmax(m(x), 1)),
     "shape"),
])
def test_trades_loss_mistakes(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_trades_loss(wrong)
