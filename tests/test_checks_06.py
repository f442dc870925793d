"""advlab.checks for exercise set 06 (LQ-VAE): each check passes on a reference answer, reports a blank
as pending, and names the typical mistakes."""
import pytest
import torch

from advlab import checks

pytestmark = [pytest.mark.usefixtures("one_thread"),
              # the planted mistake "backward=True" calls .backward(create_graph=True) on purpose
              pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")]


def _penalty(encoder, x, K=1.0, generator=None, *, create_graph=True, norm="l2", square=True, k_used=None,
             normalise=True, direction="random", output=0, per="image", detach=False, use_generator=True,
             backward=False):
    """The reference answer of exercise 06.1, with switches that make the typical mistakes."""
    x = x.detach().clone().requires_grad_(True)
    mu = encoder(x)[output]
    n, d = mu.shape
    v = torch.randn(n, d, generator=generator if use_generator else None)
    if normalise:
        v = v / v.norm(dim=1, keepdim=True)
    if backward:
        (mu * v).sum().backward(create_graph=True)
        grad = x.grad
    elif direction == "random":
        grad, = torch.autograd.grad(mu, x, grad_outputs=v, create_graph=create_graph)
    else:
        grad, = torch.autograd.grad(mu.sum(), x, create_graph=create_graph)
    if detach:
        grad = grad.detach()
    g = grad.flatten(1)
    if per == "batch":
        nrm = grad.norm().expand(n)
    elif norm == "l2":
        nrm = g.norm(dim=1)
    elif norm == "squared":
        nrm = g.pow(2).sum(1)
    elif norm == "linf":
        nrm = g.abs().max(1).values
    else:
        nrm = g.abs().sum(1)
    k = K if k_used is None else k_used
    return (nrm - k) ** 2 if square else nrm - k


def gradient_norm_penalty(encoder, x, K=1.0, generator=None):
    return _penalty(encoder, x, K, generator)


def quantise(z, relax="hard", temperature=0.5, *, mistake=None):
    """The reference answer of exercise 06.2; `mistake` plants one typical error."""
    H = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
    if mistake == "bits":
        H = (z > 0).to(z.dtype)
    if mistake == "round":
        H = torch.round(z)
    if mistake == "flipped":
        H = -H
    if relax == "hard":
        return H
    if relax == "straight-through":
        if mistake == "st-zero":
            return torch.sign(z)                       # autograd of sign: zero
        if mistake == "st-value":
            return z
        if mistake == "st-nodetach":
            return z + (H - z)                         # value H, gradient 1 - 1 = 0
        if mistake == "st-double":
            return H + 2 * (z - z.detach())
        if mistake == "st-clip":
            return H + (z.clamp(-1, 1) - z.clamp(-1, 1).detach())
        return H + (z - z.detach())
    t = temperature
    if mistake == "t-divide-missing":
        return torch.tanh(z / t)
    if mistake == "t-multiply":
        return torch.tanh(2 * z * t)
    if mistake == "t-ignored":
        return torch.tanh(2 * z / 0.5)
    if mistake == "sigmoid":
        return torch.sigmoid(4 * z / t)
    if mistake == "soft-detached":
        return torch.tanh(2 * z / t).detach()
    return torch.tanh(2 * z / t)


def test_reference_answers_pass():
    assert checks.check_gradient_norm_penalty(gradient_norm_penalty) is True
    assert checks.check_quantiser(quantise) is True


def test_library_functions_pass():
    """The library's own functions, wrapped in the exercises' signatures, pass the checks."""
    from advlab.purifiers.lqvae.model import Quantiser, lipschitz_penalty
    q = Quantiser(levels=2)
    assert checks.check_gradient_norm_penalty(
        lambda enc, x, K=1.0, generator=None: lipschitz_penalty(enc, x, K, "projection", generator)) is True

    def lib_quantise(z, relax="hard", temperature=0.5):
        return {"hard": q.hard, "straight-through": q.straight_through,
                "soft": lambda t: q.soft(t, temperature)}[relax](z)
    assert checks.check_quantiser(lib_quantise) is True


def test_blanks_are_pending_and_registered(capsys):
    def blank(*a, **k):
        raise NotImplementedError
    for name in ("gradient_norm_penalty", "quantiser"):
        check = checks.CHECKS[name]
        assert check.__name__ == f"check_{name}"
        assert check(blank) is False and check(None) is False
        assert checks.RESULTS[name] == "pending"
    assert capsys.readouterr().out.strip().splitlines() == [checks.PENDING] * 4


def _p(**kw):
    def f(encoder, x, K=1.0, generator=None):
        return _penalty(encoder, x, K, generator, **kw)
    return f


def _inplace_requires_grad(encoder, x, K=1.0, generator=None):
    x.requires_grad_(True)
    return _penalty(encoder, x, K, generator)


@pytest.mark.parametrize("wrong,message", [
    (_p(create_graph=False), "create_graph=True"),
    (_p(detach=True), "create_graph=True"),
    (_p(norm="squared"), "SQUARED norm"),
    (_p(per="batch"), "ONE norm over the whole batch"),
    (_p(square=False), "without the square"),
    (_p(k_used=1.0), "ignores K"),
    (_p(k_used=0.0), r"norm \*\* 2 \(K = 0\)"),
    (_p(normalise=False), "does not normalise v"),
    (_p(direction="ones"), "mu.sum()"),
    (_p(output=1), "logvar"),
    (_p(norm="linf"), "L-infinity"),
    (_p(norm="l1"), "L1 norm"),
    (_p(use_generator=False), "generator"),
    (_p(backward=True), r"left gradients in the encoder's parameters"),
    (_inplace_requires_grad, "requires_grad of the caller's x"),
    (lambda enc, x, K=1.0, generator=None: _penalty(enc, x, K, generator).mean(), "single number"),
])
def test_gradient_norm_penalty_mistakes(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_gradient_norm_penalty(wrong)


def _q(mistake):
    def f(z, relax="hard", temperature=0.5):
        return quantise(z, relax, temperature, mistake=mistake)
    return f


@pytest.mark.parametrize("mistake,message", [
    ("bits", r"bits in \{0, 1\}"),
    ("round", "rounds to the nearest integer"),
    ("flipped", "sign flipped"),
    ("st-zero", "zero gradient"),
    ("st-nodetach", "zero gradient"),
    ("st-value", "returns z in the forward pass"),
    ("st-double", "twice the gradient"),
    ("st-clip", "clips the gradient"),
    ("t-divide-missing", r"tanh\(z / t\)"),
    ("t-multiply", "multiplies by the temperature"),
    ("t-ignored", "ignores the temperature"),
    ("sigmoid", r"\[0, 1\]"),
    ("soft-detached", "passes no gradient"),
])
def test_quantiser_mistakes(mistake, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_quantiser(_q(mistake))


def test_quantiser_identity_as_hard_is_named():
    with pytest.raises(AssertionError, match="returns z unchanged"):
        checks.check_quantiser(lambda z, relax="hard", temperature=0.5: z * 1.0)
