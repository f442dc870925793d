"""advlab.checks for exercise set 04 (Defense-GAN): each check passes on a reference answer, reports
a blank as pending, and names the typical mistakes."""
import math

import pytest
import torch

from advlab import checks

pytestmark = pytest.mark.usefixtures("one_thread")


def _search(G, x, steps, restarts, lr=10.0, momentum=0.7, generator=None, *, prior=None, order="restart",
            loss="sum", pixels="mean", pick="per-image", backward=False, ema=False, sign=1.0, extra_steps=0,
            err_of="best"):
    """The reference answer of exercise 04.1, with switches that make the typical mistakes."""
    d, n = G.latent_dim, len(x)
    if order == "restart":
        z = torch.randn(restarts, n, d, generator=generator)
    else:
        z = torch.randn(n, restarts, d, generator=generator).transpose(0, 1)
    z = (z / math.sqrt(d) if prior is None else z * prior).reshape(restarts * n, d)
    target = x.repeat(restarts, 1, 1, 1)
    v = torch.zeros_like(z)
    for _ in range(steps + extra_steps):
        z.requires_grad_(True)
        sq = (G(z) - target).pow(2).flatten(1)
        err = sq.mean(1) if pixels == "mean" else sq.sum(1)
        total = err.sum() if loss == "sum" else err.mean()
        if backward:
            total.backward()
            grad = z.grad
        else:
            grad, = torch.autograd.grad(total, z)
        v = momentum * v + (1 - momentum) * grad if ema else momentum * v + grad
        z = z.detach() - sign * lr * v
    with torch.no_grad():
        rec = G(z).view(restarts, n, *x.shape[1:])
        err = (rec - x).pow(2).flatten(2).mean(2)                     # (R, N)
        if pixels == "returned-sum":
            err = err * x[0].numel()
        idx = torch.arange(n)
        if pick == "per-image":
            best = err.argmin(0)
        elif pick == "first":
            best = torch.zeros(n, dtype=torch.long)
        elif pick == "worst":
            best = err.argmax(0)
        else:                                                          # one restart for the whole batch
            best = err.sum(1).argmin().expand(n)
        e = err[best, idx] if err_of == "best" else err.mean(0)
        return rec[best, idx], e


def latent_search_restarts(G, x, steps, restarts, lr=10.0, momentum=0.7, generator=None):
    return _search(G, x, steps, restarts, lr, momentum, generator)


def bpda(purify, x, backward_fn=None):
    with torch.no_grad():
        value = purify(x)
    s = x if backward_fn is None else backward_fn(x)
    return s + (value - s).detach()


def test_reference_answers_pass(capsys):
    assert checks.check_latent_search_restarts(latent_search_restarts) is True
    assert checks.check_bpda(bpda) is True
    out = capsys.readouterr().out
    assert "Tip" not in out                      # the reference runs purify under no_grad


def test_blanks_are_pending_and_registered(capsys):
    def blank(*a, **k):
        raise NotImplementedError
    for name in ("latent_search_restarts", "bpda"):
        check = checks.CHECKS[name]
        assert check.__name__ == f"check_{name}"
        assert check(blank) is False and check(None) is False
        assert checks.RESULTS[name] == "pending"
    assert capsys.readouterr().out.strip().splitlines() == [checks.PENDING] * 4


def test_the_case_exercises_the_choice_of_restart():
    """The check's inputs must make restart choice visible: the winner differs between images."""
    from advlab.generative.latent_search import latent_search
    G, x, steps, R, lr, mom = checks._latent_search_case()
    res = latent_search(G, x, steps, R, lr, mom, decay_at=1.0, generator=torch.Generator().manual_seed(44))
    assert len(set(res.best.tolist())) >= 3 and (res.best != 0).any()
    assert (res.all_err.max(1).values - res.all_err.min(1).values).min() > 1e-3


def _mistake(**kw):
    def f(G, x, steps, restarts, lr=10.0, momentum=0.7, generator=None):
        return _search(G, x, steps, restarts, lr, momentum, generator, **kw)
    return f


def _global_rng(G, x, steps, restarts, lr=10.0, momentum=0.7, generator=None):
    return _search(G, x, steps, restarts, lr, momentum, None)


def _inplace(G, x, steps, restarts, lr=10.0, momentum=0.7, generator=None):
    out = _search(G, x, steps, restarts, lr, momentum, generator)
    x.clamp_(0.1, 0.9)
    return out


@pytest.mark.parametrize("wrong,message", [
    (_mistake(pick="first"), "keeps restart 0"),
    (_mistake(pick="worst"), "HIGHEST"),
    (_mistake(pick="batch"), "whole batch"),
    (_mistake(err_of="mean"), "averaged over the restarts"),
    (_mistake(prior=1.0), r"N\(0, I\)"),
    (_mistake(order="image"), "image-major"),
    (_mistake(loss="mean"), "MEAN of the errors"),
    (_mistake(pixels="sum"), "summed over pixels"),
    (_mistake(pixels="returned-sum"), "summed over pixels"),
    (_mistake(ema=True), "exponential average"),
    (_mistake(sign=-1.0), "climbs the error"),
    (_mistake(extra_steps=1), "one step too many"),
    (_mistake(extra_steps=-1), "one step too few"),
    (_mistake(backward=True), "left gradients in G's parameters"),
    (_global_rng, "generator"),
    (_inplace, "in place"),
    (lambda G, x, *a, **k: _search(G, x, *a, **k)[0], "pair"),
])
def test_latent_search_mistakes(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_latent_search_restarts(wrong)


def test_latent_search_without_momentum_is_named():
    def no_momentum(G, x, steps, restarts, lr=10.0, momentum=0.7, generator=None):
        return _search(G, x, steps, restarts, lr, 0.0, generator)
    with pytest.raises(AssertionError, match="ignores momentum"):
        checks.check_latent_search_restarts(no_momentum)


def test_latent_search_attached_output_is_named():
    def attached(G, x, steps, restarts, lr=10.0, momentum=0.7, generator=None):
        x_rec, err = _search(G, x, steps, restarts, lr, momentum, generator)
        return x_rec + 0 * G.b.sum(), err
    with pytest.raises(AssertionError, match="attached to the autograd graph"):
        checks.check_latent_search_restarts(attached)


def _naive(purify, x, backward_fn=None):
    return purify(x)                                  # autograd through the quantiser: zero gradient


def _detached(purify, x, backward_fn=None):
    with torch.no_grad():
        return purify(x)


def _identity_forward(purify, x, backward_fn=None):
    return x * 1.0


def _ignores_backward_fn(purify, x, backward_fn=None):
    return bpda(purify, x)


def _surrogate_at_purified(purify, x, backward_fn=None):
    with torch.no_grad():
        value = purify(x)
    if backward_fn is None:
        return x + (value - x).detach()
    s = backward_fn(x + (value - x).detach())         # the surrogate applied at the purified image
    return s + (value - s).detach()


def _surrogate_value(purify, x, backward_fn=None):
    return x if backward_fn is None else backward_fn(x)


def _not_connected(purify, x, backward_fn=None):
    with torch.no_grad():
        value = purify(x)
    return value.requires_grad_(True)


def _leaks(purify, x, backward_fn=None):
    s = x if backward_fn is None else backward_fn(x)
    return s + (purify(x) - s.detach())               # right value, but purify's own gradient is added


def _plus_x(purify, x, backward_fn=None):
    with torch.no_grad():
        value = purify(x)
    return x + value


def _requires_grad_inplace(purify, x, backward_fn=None):
    x.requires_grad_(True)
    return bpda(purify, x, backward_fn)


@pytest.mark.parametrize("wrong,message", [
    (_naive, "zero"), (_detached, "does not require grad"), (_identity_forward, "returns x itself"),
    (_ignores_backward_fn, "ignores backward_fn"), (_surrogate_at_purified, "at purify"),
    (_surrogate_value, "returns x itself"), (_not_connected, "not connected"), (_leaks, "adds purify's own gradient"),
    (_plus_x, r"x \+ purify"), (_requires_grad_inplace, "requires_grad"),
])
def test_bpda_mistakes(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_bpda(wrong)


def test_bpda_surrogate_value_with_backward_fn_is_named():
    def surrogate_value(purify, x, backward_fn=None):
        return bpda(purify, x) if backward_fn is None else backward_fn(x)
    with pytest.raises(AssertionError, match="returns backward_fn"):
        checks.check_bpda(surrogate_value)


def test_bpda_with_graph_passes_with_a_tip(capsys):
    def straight_through(purify, x, backward_fn=None):
        s = x if backward_fn is None else backward_fn(x)
        return s + (purify(x) - s).detach()           # correct, but purify builds a graph
    assert checks.check_bpda(straight_through) is True
    assert "torch.no_grad()" in capsys.readouterr().out


def test_library_bpda_passes():
    from advlab.attacks.bpda import BPDA
    assert checks.check_bpda(lambda purify, x, backward_fn=None: BPDA(purify, backward_fn)(x)) is True
