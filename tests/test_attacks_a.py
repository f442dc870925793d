"""Unit tests of FGSM, PGD/BIM, CW, DeepFool, BPDA and Transfer against closed forms on linear models."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import advlab.attacks as A
from advlab.attacks.base import target_labels

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

D, K = 784, 10


def linear_model(seed=0, scale=0.1, k=K) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Flatten(), nn.Linear(D, k))
    with torch.no_grad():
        m[1].weight.copy_(torch.randn(k, D, generator=g) * scale)
        m[1].bias.copy_(torch.randn(k, generator=g) * scale)
    return m.eval()


def interior_batch(n=64, seed=0):
    """Images away from the box edges, so a small perturbation is never clipped."""
    g = torch.Generator().manual_seed(seed)
    return 0.3 + 0.4 * torch.rand((n, 1, 28, 28), generator=g)


def predictions(m, x):
    with torch.no_grad():
        return m(x).argmax(1)


def exact_distances(m, x, y, norm="l2"):
    """Minimal distance to misclassification of an affine classifier (no box constraint):
    min_k (z_y - z_k) / ||w_y - w_k||_dual over k != y (L2: dual L2; Linf: dual L1)."""
    W = m[1].weight.detach().double()
    z = m(x).detach().double()
    dw = W[y][:, None, :] - W[None, :, :]                          # (n, K, D)
    dn = dw.norm(dim=2) if norm == "l2" else dw.abs().sum(2)
    d = (z.gather(1, y[:, None]) - z) / dn
    d[torch.arange(len(y)), y] = float("inf")
    return d.min(1).values


def closed_form_grad(m, x, y, targeted=False):
    """Input gradient of the summed cross-entropy of a linear model: W^T (softmax(z) - onehot(y))."""
    W = m[1].weight.detach().double()
    z = m(x).detach().double()
    g = (F.softmax(z, 1) - F.one_hot(y, K).double()) @ W
    return (-g if targeted else g).view_as(x)


def lp(v, norm):
    v = v.flatten(1)
    return v.abs().amax(1) if norm == "linf" else v.norm(dim=1)


# ---------------------------------------------------------------------------------------------
# FGSM


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_equals_closed_form_on_linear_model(norm, targeted):
    m, x = linear_model(), interior_batch()
    y = predictions(m, x) if not targeted else target_labels(predictions(m, x), "next", K)
    eps = 0.05 if norm == "linf" else 1.0
    g = closed_form_grad(m, x, y, targeted)
    if norm == "linf":
        expected = x.double() + eps * g.sign()
    else:
        expected = x.double() + eps * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    expected = expected.clamp(0, 1).float()
    out = A.FGSM(eps=eps, norm=norm, targeted=targeted)(m, x, y)
    reliable = g.abs() > 1e-6 * g.abs().amax()  # a sign of a ~0 component is float noise
    assert torch.allclose(out[reliable], expected[reliable], atol=1e-5, rtol=0)
    assert torch.allclose(lp(out - x, norm), torch.full((len(x),), eps), atol=1e-4)


def test_fgsm_targeted_moves_towards_target():
    m, x = linear_model(), interior_batch()
    t = target_labels(predictions(m, x), "next", K)
    ce = lambda xx: F.cross_entropy(m(xx), t, reduction="none").detach()  # noqa: E731
    assert bool((ce(A.FGSM(eps=0.02, targeted=True)(m, x, t)) < ce(x)).all())


# ---------------------------------------------------------------------------------------------
# PGD / BIM


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_one_step_no_random_start_equals_fgsm(norm):
    m, x = linear_model(), interior_batch()
    y = predictions(m, x)
    eps = 0.05 if norm == "linf" else 1.0
    pgd = A.PGD(eps=eps, alpha=eps, steps=1, random_start=False, norm=norm)(m, x, y)
    fgsm = A.FGSM(eps=eps, norm=norm)(m, x, y)
    assert torch.allclose(pgd, fgsm, atol=1e-6, rtol=0)
    bim = A.BIM(eps=eps, alpha=eps, steps=1, norm=norm)(m, x, y)
    assert torch.equal(bim, pgd)


def test_bim_is_pgd_without_random_start():
    assert A.BIM(eps=0.1, alpha=0.01, steps=5).random_start is False
    assert not A.BIM().randomized and A.PGD().randomized
    assert isinstance(A.BIM(), A.PGD)


def test_pgd_l2_projection_onto_sphere():
    """A large step lands outside the ball; projection rescales it to exactly eps."""
    m, x = linear_model(), interior_batch()
    y = predictions(m, x)
    eps = 0.5
    out = A.PGD(eps=eps, alpha=2.0, steps=5, norm="l2", random_start=False)(m, x, y)
    norms = lp(out - x, "l2")
    assert bool((norms <= eps + 1e-5).all())
    assert torch.allclose(norms, torch.full_like(norms, eps), atol=1e-4)  # interior images: no clipping
    # and the direction is the gradient's: projection of x + alpha * g/||g|| is x + eps * g/||g||
    one = A.PGD(eps=eps, alpha=2.0, steps=1, norm="l2", random_start=False)(m, x, y)
    assert torch.allclose(one, A.FGSM(eps=eps, norm="l2")(m, x, y), atol=1e-6)


def test_pgd_linf_random_start_stays_in_ball_and_clips():
    m = linear_model()
    x = torch.rand(32, 1, 28, 28)
    x[:, :, :4] = 0.0
    x[:, :, -4:] = 1.0  # pixels on the box edges
    y = predictions(m, x)
    out = A.PGD(eps=0.2, alpha=0.05, steps=7)(m, x, y)
    assert float(lp(out - x, "linf").max()) <= 0.2 + 1e-6
    assert out.min() >= 0 and out.max() <= 1


def test_pgd_is_stronger_than_fgsm_and_keep_best_at_least_as_strong():
    m, x = linear_model(seed=1, scale=0.02), interior_batch(200, seed=1)
    y = predictions(m, x)
    acc = lambda xa: (predictions(m, xa) == y).float().mean().item()  # noqa: E731
    eps = 0.01
    a_fgsm = acc(A.FGSM(eps=eps)(m, x, y))
    a_pgd = acc(A.PGD(eps=eps, alpha=eps / 4, steps=20)(m, x, y))
    best = A.PGD(eps=eps, alpha=eps / 4, steps=20, keep_best=True)(m, x, y)
    assert a_pgd <= a_fgsm
    assert acc(best) <= a_pgd
    assert float(lp(best - x, "linf").max()) <= eps + 1e-6


def test_pgd_keep_best_returns_first_success():
    """With a huge step the first iterate after x misclassifies; keep_best must not walk on."""
    m, x = linear_model(), interior_batch(16)
    y = predictions(m, x)
    out = A.PGD(eps=0.3, alpha=0.3, steps=5, random_start=False, keep_best=True)(m, x, y)
    first = A.PGD(eps=0.3, alpha=0.3, steps=1, random_start=False)(m, x, y)
    ok = predictions(m, first) != y
    assert bool(ok.any())
    assert torch.allclose(out[ok], first[ok], atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_pgd_raises_target_rate(norm):
    m, x = linear_model(seed=2), interior_batch(128, seed=2)
    y = predictions(m, x)
    t = target_labels(y, "random", K, generator=torch.Generator().manual_seed(0))
    eps = 0.1 if norm == "linf" else 3.0
    before = (predictions(m, x) == t).float().mean().item()
    out = A.PGD(eps=eps, alpha=eps / 5, steps=20, norm=norm, targeted=True)(m, x, t)
    after = (predictions(m, out) == t).float().mean().item()
    untargeted = A.PGD(eps=eps, alpha=eps / 5, steps=20, norm=norm)(m, x, y)
    assert before == 0.0 and after >= 0.9
    assert after > (predictions(m, untargeted) == t).float().mean().item()


@pytest.mark.parametrize("loss", ["ce", "margin", "dlr"])
def test_pgd_losses(loss):
    m, x = linear_model(seed=3, scale=0.02), interior_batch(64, seed=3)
    y = predictions(m, x)
    out = A.PGD(eps=0.05, alpha=0.01, steps=10, loss=loss)(m, x, y)
    assert (predictions(m, out) == y).float().mean().item() < 0.5


def test_pgd_eot_iter_averages_gradients_of_a_random_model():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = linear_model()

        def forward(self, x):
            return self.lin(x + 0.05 * torch.randn_like(x))

    m, x = Noisy(), interior_batch(32)
    y = predictions(m.lin, x)
    torch.manual_seed(0)
    out = A.PGD(eps=0.05, alpha=0.01, steps=5, eot_iter=4, random_start=False)(m, x, y)
    assert float(lp(out - x, "linf").max()) <= 0.05 + 1e-6
    assert (predictions(m.lin, out) != y).float().mean().item() > 0.5


def test_repr_names_the_settings():
    r = repr(A.PGD(eps=0.1, alpha=0.01, steps=40, norm="l2"))
    assert r.startswith("PGD(") and "eps=0.1" in r and "alpha=0.01" in r and "steps=40" in r and "'l2'" in r
    assert "c=1" in repr(A.CW()) and "overshoot=0.02" in repr(A.DeepFool())


# ---------------------------------------------------------------------------------------------
# DeepFool and CW: minimal perturbations on a linear model, where the answer is known


def _far_from_boundary(m, x, y, norm="l2", minimum=0.2):
    d = exact_distances(m, x, y, norm)
    keep = d > minimum * (1 if norm == "l2" else 1 / 28)
    return x[keep], y[keep], d[keep]


def test_deepfool_l2_hits_the_exact_minimal_distance():
    m, x = linear_model(), interior_batch(128)
    x, y, d = _far_from_boundary(m, x, predictions(m, x))
    assert len(x) >= 32
    out = A.DeepFool(steps=50, overshoot=0.02)(m, x, y)
    assert bool((predictions(m, out) != y).all())
    ratio = lp(out - x, "l2").double() / d
    assert bool((ratio >= 1.0).all()) and bool((ratio <= 1.03).all()), (ratio.min(), ratio.max())


def test_deepfool_linf_uses_the_dual_norm():
    m, x = linear_model(), interior_batch(128)
    x, y, d = _far_from_boundary(m, x, predictions(m, x), "linf")
    out = A.DeepFool(steps=50, overshoot=0.02, norm="linf")(m, x, y)
    assert bool((predictions(m, out) != y).all())
    ratio = lp(out - x, "linf").double() / d
    assert bool((ratio >= 1.0).all()) and bool((ratio <= 1.03).all()), (ratio.min(), ratio.max())


def test_deepfool_stops_on_misclassified_and_num_classes():
    m, x = linear_model(), interior_batch(16)
    y = predictions(m, x)
    wrong = (y + 1) % K  # already misclassified w.r.t. these labels: returned unchanged
    assert torch.equal(A.DeepFool()(m, x, wrong), x)
    out = A.DeepFool(num_classes=3)(m, x, y)
    assert bool((predictions(m, out) != y).all())


def test_deepfool_eps_bound():
    m, x = linear_model(), interior_batch(16)
    y = predictions(m, x)
    out = A.DeepFool(eps=0.05)(m, x, y)
    assert float(lp(out - x, "l2").max()) <= 0.05 + 1e-6


def test_cw_finds_near_minimal_l2_perturbations():
    m, x = linear_model(), interior_batch(64)
    x, y, d = _far_from_boundary(m, x, predictions(m, x))
    out = A.CW(c=1.0, steps=100, lr=0.01)(m, x, y)
    assert bool((predictions(m, out) != y).all())
    ratio = lp(out - x, "l2").double() / d
    assert bool((ratio >= 0.999).all()) and float(ratio.median()) <= 1.02 and float(ratio.max()) <= 1.1, \
        (ratio.min(), ratio.median(), ratio.max())


def test_cw_binary_search_raises_c_after_failures():
    m, x = linear_model(), interior_batch(32)
    y = predictions(m, x)
    succ = lambda out: (predictions(m, out) != y).float().mean().item()  # noqa: E731
    one = A.CW(c=1e-3, steps=50, lr=0.01, binary_search_steps=1)(m, x, y)
    five = A.CW(c=1e-3, steps=50, lr=0.01, binary_search_steps=5)(m, x, y)
    assert succ(one) < 0.5 and succ(five) == 1.0
    failed = predictions(m, one) == y
    assert torch.equal(one[failed], x[failed]), "unsuccessful examples must be returned unchanged"


def test_cw_targeted_and_kappa():
    m, x = linear_model(), interior_batch(32)
    t = target_labels(predictions(m, x), "next", K)
    out = A.CW(c=5.0, kappa=0.5, steps=100, lr=0.01, targeted=True)(m, x, t)
    z = m(out).detach()
    hit = z.argmax(1) == t
    assert hit.float().mean().item() >= 0.9
    other = z.scatter(1, t[:, None], float("-inf")).amax(1)
    assert bool((z.gather(1, t[:, None]).squeeze(1)[hit] - other[hit] > 0.5).all())  # the kappa margin


def test_cw_eps_bound_counts_only_successes_inside_the_ball():
    m, x = linear_model(), interior_batch(32)
    y = predictions(m, x)
    d = exact_distances(m, x, y)
    eps = float(d.median())
    out = A.CW(c=1.0, steps=100, eps=eps)(m, x, y)
    l2 = lp(out - x, "l2")
    assert float(l2.max()) <= eps + 1e-6
    fooled = predictions(m, out) != y
    assert bool((d[fooled] <= eps + 1e-6).all()) and bool(torch.equal(out[~fooled], x[~fooled]))


# ---------------------------------------------------------------------------------------------
# BPDA


def quantize(x):  # a non-differentiable purifier: its gradient is zero almost everywhere
    return torch.round(x * 16) / 16


def test_bpda_identity_gradient_is_the_upstream_gradient():
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    up = torch.randn(4, 1, 28, 28)
    out = A.BPDA(quantize)(x)
    assert torch.equal(out, quantize(x.detach()))
    out.backward(up)
    assert torch.equal(x.grad, up)


def test_bpda_custom_backward_matches_autograd_of_backward_fn():
    approx = lambda z: torch.sigmoid(8 * (z - 0.5))  # noqa: E731 - smooth surrogate of a threshold
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    up = torch.randn(4, 1, 28, 28)
    out = A.BPDA(lambda z: (z > 0.5).float(), backward_fn=approx)(x)
    assert torch.equal(out, (x.detach() > 0.5).float())
    out.backward(up)
    x2 = x.detach().clone().requires_grad_(True)
    approx(x2).backward(up)
    assert torch.allclose(x.grad, x2.grad, atol=0, rtol=0)


def test_bpda_registers_modules_and_checks_arguments():
    class Purifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return self.drop(x)

        def purify(self, x):
            return quantize(x)

    p = Purifier()
    b = A.BPDA(p)
    b.eval()
    assert not p.drop.training
    b.train()
    assert p.drop.training
    b2 = A.BPDA(p.purify)  # a bound method: its module is registered too
    b2.eval()
    assert not p.training
    with pytest.raises(ValueError, match="forward_fn"):
        A.BPDA("nope")
    with pytest.raises(ValueError, match="backward_fn"):
        A.BPDA(quantize, backward_fn=3)
    with pytest.raises(ValueError, match="forward_fn"):
        A.BPDA(lambda z: z.flatten(1)).forward(torch.rand(2, 1, 4, 4, requires_grad=True))


def test_bpda_model_lets_pgd_break_a_quantizing_purifier():
    clf = linear_model(scale=0.05)
    x = interior_batch(64)
    y = predictions(clf, quantize(x))
    plain = nn.Sequential(A.bpda_model(quantize, clf)[0].__class__(quantize, backward_fn=quantize), clf)
    naive = A.PGD(eps=0.1, alpha=0.02, steps=10, random_start=False)(plain, x, y)
    assert torch.equal(naive, x)  # zero gradient: the naive attack does not move
    model = A.bpda_model(quantize, clf)
    assert isinstance(model, nn.Module) and any(isinstance(mod, A.BPDA) for mod in model.modules())
    out = A.PGD(eps=0.1, alpha=0.02, steps=10)(model, x, y)
    assert (predictions(model, out) == y).float().mean().item() < 0.5
    assert float(lp(out - x, "linf").max()) <= 0.1 + 1e-6


# ---------------------------------------------------------------------------------------------
# Transfer


def test_transfer_crafts_on_the_substitute_only():
    sub, x = linear_model(seed=5), interior_batch(16)

    class Target(nn.Module):
        calls = 0

        def forward(self, z):
            Target.calls += 1
            return torch.zeros(len(z), K)

    y = predictions(sub, x)
    inner = A.PGD(eps=0.1, alpha=0.02, steps=5, random_start=False)
    atk = A.Transfer(inner, sub)
    out = atk(Target(), x, y)
    assert Target.calls == 0
    assert torch.equal(out, inner(sub, x, y))
    assert atk.eps == 0.1 and atk.norm == "linf" and not atk.targeted
    r = repr(atk)
    assert "Transfer(" in r and "PGD(" in r and "Sequential" in r


def test_attacks_work_inside_no_grad_with_runtime_checks():
    """Callers often evaluate under torch.no_grad(); the attack must still get its gradients."""
    import torch
    import advlab.attacks as A
    from advlab import data, models
    torch.manual_seed(0)
    model = models.build("cnn", "synthetic").eval()
    x, y = data.batch("synthetic", "test", n=8, seed=0)
    with torch.no_grad():
        x_adv = A.PGD(eps=0.1, alpha=0.05, steps=2)(model, x, y)
    assert (x_adv - x).abs().max() > 0
