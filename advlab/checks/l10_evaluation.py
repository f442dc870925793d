"""Exercise set 10, evaluating defenses honestly: the EoT gradient, the per-image worst case over
attacks and random draws, and a BPDA wrapper for a non-differentiable stage.

The EoT check runs the student's function on a small stochastic model whose random stream can be
restarted (`_NoisyToy`: input noise and a random mask in front of exercise set 01's toy MLP), so that
the student's n passes and the reference's n passes see the same draws and can be compared entry
for entry. The BPDA check uses the bit-depth reduction of advlab.evaluation.masking, whose autograd
gradient is zero, and a second stage with a different shape of rounding.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn as nn

from .framework import (
    _matches, _no_grad_leak, _untouched_requires_grad, assert_close, assert_tensor, call_student, fail, fixed_images,
    register,
)
from .l01_attacks import _toy_classifier


class _NoisyToy(nn.Module):
    """toy(mask * x + 0.2 * noise), mask ~ Bernoulli(0.8) per pixel, noise ~ N(0, 1): a stochastic
    classifier whose draws come from its own generator (`reseed` restarts it). Counts its calls."""

    def __init__(self, seed: int = 10):
        super().__init__()
        self.net = _toy_classifier()
        self.generator = torch.Generator().manual_seed(seed)
        self.calls = 0

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        mask = (torch.rand(x.shape, generator=self.generator) < 0.8).to(x.dtype)
        noise = torch.randn(x.shape, generator=self.generator).to(x.dtype)
        return self.net(mask * x + 0.2 * noise)


def _ce_sum(logits, y):
    return nn.functional.cross_entropy(logits, y, reduction="sum")


def _eot_variants(model, x, y, n, seed):
    """The reference and the usual wrong answers, each from the same draws (model reseeded)."""
    def grads(reduce):
        model.reseed(seed)
        out = []
        for _ in range(n):
            xr = x.clone().requires_grad_(True)
            g, = torch.autograd.grad(reduce(model(xr), y), xr)
            out.append(g)
        return torch.stack(out)                      # (n, N, C, H, W)
    per_draw = grads(_ce_sum)
    ref = per_draw.mean(0)
    model.reseed(seed)
    xr = x.clone().requires_grad_(True)
    mean_logits = torch.stack([model(xr) for _ in range(n)]).mean(0)
    g_logits, = torch.autograd.grad(_ce_sum(mean_logits, y), xr)
    return ref, {
        "one": (per_draw[0], "is the gradient of ONE draw: average the gradients of n forward passes (each pass "
                             "draws the defense's randomness anew)"),
        "last": (per_draw[-1], "is the gradient of the last draw only: accumulate the n gradients, then divide by n"),
        "sum": (per_draw.sum(0), f"is n = {n} times too large: it sums the n gradients, EoT averages them"),
        "batch_mean": (ref / len(x), "is divided by the batch size: take the gradient of the SUM of the per-image "
                                     "losses (reduction='sum'), so that each image's gradient does not depend on "
                                     "how many images share the batch"),
        "sign": (ref.sign(), "is the sign of the gradient: return the averaged gradient itself (the attack takes "
                             "the sign in its step)"),
        "mean_logits": (g_logits, "is the gradient of the loss of the AVERAGED logits; EoT averages the gradients "
                                  "of the loss over draws (the expectation of the gradient)"),
    }


@register
def check_eot_gradient(fn) -> str:
    """Exercise 10.1: eot_gradient(model, x, y, n) -> the input gradient of the summed cross-entropy,
    averaged over n forward passes of a stochastic model (Expectation over Transformation)."""
    what = "your eot_gradient"
    x = fixed_images(6, seed=101)
    with torch.no_grad():
        y = _toy_classifier()(x).argmax(1)
    model = _NoisyToy()
    for n, seed in ((8, 3), (1, 4), (5, 5)):
        ref, wrong = _eot_variants(model, x, y, n, seed)
        model.reseed(seed)
        out = call_student(fn, model, x, y, n, what=what)
        assert_tensor(out, what, like=x)
        _untouched_requires_grad(x, what)
        _no_grad_leak(out, what)
        if model.calls != n:
            raise fail(f"{what} with n = {n} called the model {model.calls} times; EoT needs exactly n forward "
                       f"passes, one gradient per draw")
        if _matches(out, ref):
            continue
        for key, (cand, diagnosis) in wrong.items():
            if n > 1 or key in ("batch_mean", "sign"):
                if _matches(out, cand):
                    raise fail(f"{what} (n = {n}) {diagnosis}")
        if _matches(out, -ref):
            raise fail(f"{what} (n = {n}) has the wrong sign: the gradient of the loss the attack ascends, not of -loss")
        assert_close(out, ref, f"{what} (n = {n})")
    return ("eot_gradient: the mean of n per-draw gradients of the summed loss; with n = 1 it is the plain "
            "input gradient")


def _robust_ref(correct, rule):
    d = correct.shape[1]
    per_attack = correct.sum(1) * 2 > d if rule == "vote" else correct.all(1)    # (A, N)
    return per_attack.all(0)


@register
def check_robust_images(fn) -> str:
    """Exercise 10.2: robust_images(correct, rule) for correct (A attacks, D draws, N images) bool and
    rule "vote" (a strict majority of draws correct) or "worst_of_n" (every draw correct) -> (N,) bool:
    the images that survive every attack under the rule."""
    what = "your robust_images"
    g = torch.Generator().manual_seed(10)
    hand = torch.tensor([   # 2 attacks, 4 draws, 5 images
        [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 0, 1, 1], [1, 0, 0, 1, 0]],
        [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]], dtype=torch.bool)
    cases = [hand, torch.rand(3, 5, 40, generator=g) > 0.25, torch.rand(4, 1, 30, generator=g) > 0.4,
             torch.ones(2, 3, 7, dtype=torch.bool)]
    for correct in cases:
        for rule in ("vote", "worst_of_n"):
            shape = tuple(correct.shape)
            out = call_student(fn, correct, rule, what=what)
            if not torch.is_tensor(out):
                raise fail(f"{what}(correct of shape {shape}, {rule!r}) returned {type(out).__name__}; return a "
                           f"(N,) bool tensor, one entry per image (the accuracy is its mean)")
            if out.dim() == 0:
                raise fail(f"{what} returned one number; return the per-image mask of shape ({shape[2]},): "
                           f"True where the image survives every attack (its mean is the accuracy)")
            assert_tensor(out, what, shape=(shape[2],))
            out = out.bool()
            ref = _robust_ref(correct, rule)
            if torch.equal(out, ref):
                continue
            where = f"{what}(correct of shape {shape}, rule {rule!r})"
            d = shape[1]
            vote_ge = (correct.sum(1) * 2 >= d).all(0)
            if rule == "vote" and torch.equal(out, vote_ge):
                raise fail(f"{where} counts a tie (half the draws correct) as robust; a majority must be strict: "
                           f"more than half the draws correct (the attacker wins a tie)")
            other = _robust_ref(correct, "worst_of_n" if rule == "vote" else "vote")
            if torch.equal(out, other):
                raise fail(f"{where} applies the other rule: 'vote' keeps an image when more than half the draws "
                           f"classify it correctly, 'worst_of_n' only when every draw does")
            any_attack = (correct.sum(1) * 2 > d if rule == "vote" else correct.all(1)).any(0)
            if torch.equal(out, any_attack):
                raise fail(f"{where} keeps images that survive ANY attack; an image is robust only if it survives "
                           f"ALL of them (reduce over the attacks with .all)")
            any_draw = correct.any(1).all(0)
            if torch.equal(out, any_draw):
                raise fail(f"{where} keeps an image when ANY draw classifies it correctly; under "
                           f"{'worst-of-N an attacker resubmits until one draw fails: every draw must be correct' if rule == 'worst_of_n' else 'a vote more than half the draws must be correct'}")
            bad = int((out != ref).sum())
            raise fail(f"{where} is wrong on {bad} of {shape[2]} images (attacks along dim 0, draws along dim 1, "
                       f"images along dim 2)")
    return ("robust_images: per attack a strict majority of draws (vote) or every draw (worst-of-N), then every "
            "attack; worst-of-N can only be lower")


def _stages():
    from advlab.evaluation.masking import BitDepthSqueeze

    class _Posterize(nn.Module):                  # floor to 4 levels, then a fixed brightness shift
        def forward(self, x):
            return (torch.floor(x * 4).clamp(max=3) / 3 * 0.9 + 0.05)
    return [("a 3-bit squeeze", BitDepthSqueeze(3)), ("a 4-level posterise", _Posterize())]


def _instance(student, stage, what):
    if inspect.isclass(student):
        try:
            return student(stage)
        except NotImplementedError:
            raise
        except Exception as e:   # noqa: BLE001 - the student's constructor
            raise fail(f"{what}: BPDAWrapper(stage) raised {type(e).__name__}: {e}") from None
    raise fail(f"{what}: pass the class BPDAWrapper itself (not an instance); the check builds it around its "
               f"own stages")


@register
def check_bpda_wrapper(student) -> str:
    """Exercise 10.3: class BPDAWrapper(nn.Module), BPDAWrapper(stage)(x) -> a tensor equal to stage(x)
    whose gradient w.r.t. x is the identity (straight-through), for a stage whose own gradient is zero."""
    what = "your BPDAWrapper"
    x = fixed_images(6, seed=103)
    u = fixed_images(6, seed=104) - 0.5                 # an upstream gradient
    for name, stage in _stages():
        wrapper = _instance(student, stage, what)
        if not isinstance(wrapper, nn.Module):
            raise fail(f"{what} must subclass nn.Module (so that it fits in nn.Sequential(wrapper, classifier))")
        where = f"{what} around {name}"
        with torch.no_grad():
            value = stage(x)
        xr = x.clone().requires_grad_(True)
        out = call_student(wrapper, xr, what=where)
        assert_tensor(out, where, like=x)
        if not _matches(out.detach(), value):
            if _matches(out.detach(), x):
                raise fail(f"{where} returns x itself: the forward value must be the stage's real output, or the "
                           f"attack is evaluated on a model without the defense")
            assert_close(out.detach(), value, f"{where}'s value (it must equal stage(x))")
        if not out.requires_grad:
            raise fail(f"{where} returns a tensor that does not require grad: no gradient reaches x. Keep x in the "
                       f"graph and detach only the difference: x + (stage(x) - x).detach()")
        g, = torch.autograd.grad((out * u).sum(), xr)
        if _matches(g, torch.zeros_like(g)):
            raise fail(f"{where} passes a gradient of zero: that is the stage's own (masked) gradient. BPDA replaces "
                       f"it by the identity: x + (stage(x) - x).detach()")
        if not _matches(g, u):
            assert_close(g, u, f"{where}'s gradient (it must be the upstream gradient, unchanged)")
    # used in an attack: five BIM steps through the wrapper equal five through advlab's BPDA
    from advlab.attacks import BIM, bpda_model
    from advlab.evaluation.masking import BitDepthSqueeze
    toy = _toy_classifier()
    xb = fixed_images(8, seed=105)
    with torch.no_grad():
        yb = toy(xb).argmax(1)
    atk = BIM(eps=0.2, alpha=0.05, steps=5, checks=False)
    theirs = atk(bpda_model(BitDepthSqueeze(3), toy), xb, yb)
    ours = atk(nn.Sequential(_instance(student, BitDepthSqueeze(3), what), toy), xb, yb)
    assert_close(ours, theirs, f"BIM through {what}")
    return ("BPDAWrapper: the stage's exact output on the way forward, the identity on the way back; BIM through "
            "it matches advlab.attacks.bpda_model")
