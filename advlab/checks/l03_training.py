"""Checks for exercise set 03: adversarial training (the PGD-AT inner loop, the TRADES loss).

The inner maximisation of PGD-AT (Madry et al., "Towards Deep Learning Models Resistant to
Adversarial Attacks") runs on exercise 01's toy classifier behind a dropout layer that records
the train flag of every forward pass: an attack run in train mode gives random gradients and
cannot match the reference, and the caller's mode must be restored afterwards; the values are
compared with advlab's own pgd_linf. The TRADES loss (Zhang et al., "Theoretically Principled
Trade-off between Robustness and Accuracy") is checked in value and in its gradient for the
model's parameters, on a perturbation large enough that the direction of the KL and its reduction
('batchmean', not 'mean' or 'sum') give clearly different numbers.
"""
from __future__ import annotations

import torch

from .framework import (
    _matches, _no_grad_leak, _untouched_requires_grad, assert_in_ball, assert_in_box, assert_tensor, call_student,
    fail, fixed_images, register,
)
from .l01_attacks import _toy_batch, _toy_classifier, _toy_grad, _toy_loss


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
    from advlab.training.adversarial import pgd_linf
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
