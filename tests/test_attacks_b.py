"""Unit tests of the AutoAttack family: APGD, APGD-T, FAB, Square, AutoAttack (small models, fast)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from advlab import data
from advlab.attacks import APGD, APGDT, FAB, AutoAttack, Square
from advlab.attacks.apgd import apgd_checkpoints, apgd_run
from advlab.attacks.base import ce_loss, flat_norm
from advlab.attacks.square import p_schedule


@pytest.fixture(scope="module")
def mlp():
    """A small MLP trained on the synthetic Fashion-MNIST look-alike, and 100 test images."""
    torch.manual_seed(0)
    x, y = data.batch("synthetic", "train", n=512, seed=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(30):
        for i in range(0, 512, 64):
            loss = F.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    xt, yt = data.batch("synthetic", "test", n=100, seed=0)
    return model, xt, yt


def _correct(model, x, y):
    with torch.no_grad():
        return model(x).argmax(1) == y


class Linear2(nn.Module):
    """Two classes: logits (0, <w, x> + b); the boundary is the hyperplane <w, x> + b = 0."""

    def __init__(self, w, b):
        super().__init__()
        self.w = nn.Parameter(w.flatten(), requires_grad=False)
        self.b = nn.Parameter(torch.tensor(float(b)), requires_grad=False)

    def forward(self, x):
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], 1)


# --------------------------------------------------------------------------------------------- APGD


def test_apgd_checkpoints_follow_the_formula():
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1 + 1e-9:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    expected = [math.ceil(round(pj * 100, 6)) for pj in p]
    assert expected == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(100) == expected
    assert apgd_checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]


def test_apgd_returns_the_best_iterate_never_worse_than_its_start(mlp):
    """Record every iterate the model sees: the result is the one with maximal loss (>= the start)."""
    model, x, y = mlp
    seen = []

    class Spy(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, v):
            seen.append(v.detach().clone())
            return self.m(v)

    eps = 0.01  # small enough that no example becomes misclassified: pure best-point tracking
    g = torch.Generator().manual_seed(0)
    x0 = (x + (2 * torch.rand(x.shape, generator=g) - 1) * eps).clamp(0, 1)
    out, loss_out, found = apgd_run(Spy(model), x, x0, y, ce_loss, lambda z, t: z.argmax(1) != t, eps, "linf", 15)
    assert not found.any()
    with torch.no_grad():
        losses = torch.stack([ce_loss(model(v), y) for v in seen])  # (iterates, n)
        l_out, l_start = ce_loss(model(out), y), ce_loss(model(x0), y)
    assert len(seen) == 16
    assert torch.all(l_out >= l_start - 1e-6)
    assert torch.allclose(l_out, losses.amax(0), atol=1e-5)
    assert torch.allclose(loss_out, l_out, atol=1e-5)
    assert (l_out > l_start + 1e-4).float().mean() > 0.5  # and it did climb
    assert flat_norm(out - x, "linf").max() <= eps + 1e-6


def test_apgd_dlr_is_scale_invariant(mlp):
    model, x, y = mlp
    x, y = x[:50], y[:50]
    scaled = nn.Sequential(model, nn.Identity()).eval()
    scaled.forward = lambda v: 4.0 * model(v)  # exact in floating point (a power of two)
    for norm, eps in (("linf", 0.1), ("l2", 2.0)):
        atk = APGD(eps, norm, steps=10, loss="dlr", seed=3)
        a, b = atk(model, x, y), atk(scaled, x, y)
        assert torch.allclose(a, b, atol=1e-6), norm


def test_apgd_attacks_and_keeps_misclassified_points(mlp):
    model, x, y = mlp
    clean = _correct(model, x, y)
    for norm, eps in (("linf", 0.15), ("l2", 3.0)):
        for loss in ("ce", "dlr"):
            xa = APGD(eps, norm, steps=10, loss=loss)(model, x, y)
            assert flat_norm(xa - x, norm).max() <= eps + 1e-5
            assert _correct(model, xa, y).float().mean() < clean.float().mean()
            # already misclassified points are returned unchanged
            assert torch.equal(xa[~clean], x[~clean])


def test_apgd_targeted_reaches_targets(mlp):
    model, x, y = mlp
    t = (y + 1) % 10
    xa = APGD(5.0, "l2", steps=20, targeted=True)(model, x, t)
    with torch.no_grad():
        hit = model(xa).argmax(1) == t
    assert hit.float().mean() > 0.5
    xa = APGD(5.0, "l2", steps=20, targeted=True, loss="dlr")(model, x, t)
    with torch.no_grad():
        assert (model(xa).argmax(1) == t).float().mean() > 0.5


def test_apgd_restarts_only_help(mlp):
    model, x, y = mlp
    one = _correct(model, APGD(3.0, "l2", steps=10, n_restarts=1)(model, x, y), y)
    three = _correct(model, APGD(3.0, "l2", steps=10, n_restarts=3)(model, x, y), y)
    assert not (three & ~one).any()  # the first restart is the same; later ones only add successes


def test_apgdt_reports_only_misclassified_points_or_the_original(mlp):
    model, x, y = mlp
    for norm, eps in (("linf", 0.12), ("l2", 3.0)):
        xa = APGDT(eps, norm, steps=10, n_target_classes=4)(model, x, y)
        fooled = ~_correct(model, xa, y)
        unchanged = (xa == x).flatten(1).all(1)
        assert torch.all(fooled | unchanged)
        assert fooled.any() and unchanged.any()
        assert flat_norm(xa - x, norm).max() <= eps + 1e-5


@pytest.mark.parametrize("n_classes", [2, 3])
def test_apgdt_and_dlr_on_few_classes(n_classes):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, n_classes)).eval()
    x = torch.rand(20, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    assert not _correct(model, APGDT(0.3, steps=5)(model, x, y), y).all()
    if n_classes == 2:
        with pytest.raises(ValueError, match="loss"):
            APGD(0.3, steps=5, loss="dlr")(model, x, y)


def test_apgd_argument_checks():
    for kw, name in ((dict(loss="margin"), "loss"), (dict(rho=1.5), "rho"), (dict(steps=0), "steps"),
                     (dict(n_restarts=0), "n_restarts"), (dict(eot_iter=0), "eot_iter"), (dict(norm="l1"), "norm")):
        with pytest.raises(ValueError, match=name):
            APGD(0.1, **kw)
    with pytest.raises(ValueError, match="eps"):
        APGD(-0.1)
    with pytest.raises(ValueError, match="n_target_classes"):
        APGDT(0.1, n_target_classes=0)


# ---------------------------------------------------------------------------------------------- FAB


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("multi_targeted", [False, True])
def test_fab_finds_the_minimal_perturbation_of_a_linear_model(norm, multi_targeted):
    g = torch.Generator().manual_seed(0)
    x = 0.3 + 0.4 * torch.rand(16, 1, 8, 8, generator=g)
    w = torch.randn(64, generator=g)
    dual = w.abs().sum() if norm == "linf" else w.norm()
    dist_true = 0.02 + 0.1 * torch.rand(16, generator=g)   # wanted distance of each x to the boundary
    # one model for all: move each x along w so that <w, x> = -dist_true * ||w||_dual (b = 0)
    shift = (-(x.flatten(1) @ w) - dist_true * dual) / (w @ w)
    x = (x + shift.view(-1, 1, 1, 1) * w.view(1, 1, 8, 8)).clamp(0, 1)
    model = Linear2(w, 0.0).eval()
    with torch.no_grad():
        dist = -model(x)[:, 1] / dual   # the exact distance, as long as the box does not bind:
    step = dist[:, None] * (w.sign() if norm == "linf" else w / w.norm())
    keep = (dist > 0) & ((x.flatten(1) + step) >= 0).all(1) & ((x.flatten(1) + step) <= 1).all(1)
    assert keep.sum() >= 8
    x, dist = x[keep], dist[keep]
    y = torch.zeros(len(x), dtype=torch.long)
    xa = FAB(1.0, norm, steps=30, multi_targeted=multi_targeted)(model, x, y)
    assert not _correct(model, xa, y).any()
    found = flat_norm(xa - x, norm)
    assert torch.all(found >= dist * (1 - 1e-3))
    assert torch.all(found <= dist * 1.05), (found / dist).max()


def test_fab_returns_x_when_eps_is_too_small(mlp):
    model, x, y = mlp
    x, y = x[:50], y[:50]
    xa = FAB(3.0, "l2", steps=10)(model, x, y)
    broken = ~_correct(model, xa, y)
    nrm = flat_norm(xa - x, "l2")
    assert torch.all((nrm <= 3.0 + 1e-5))
    assert torch.all(broken | (nrm == 0)) and broken.any() and (~broken).any()
    xb = FAB(1e-4, "l2", steps=10)(model, x, y)
    assert torch.equal(xb, x)


def test_fab_argument_checks():
    for kw, name in ((dict(alpha_max=1.5), "alpha_max"), (dict(eta=0.5), "eta"), (dict(beta=0.0), "beta"),
                     (dict(steps=-1), "steps"), (dict(n_target_classes=0), "n_target_classes"),
                     (dict(multi_targeted="yes"), "multi_targeted")):
        with pytest.raises(ValueError, match=name):
            FAB(0.1, **kw)


# ------------------------------------------------------------------------------------------- Square


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v):
        return v.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("Square used a gradient")


class BlackBox(nn.Module):
    """Counts the rows it is queried on; any backward pass through it raises."""

    def __init__(self, m):
        super().__init__()
        self.m = m
        self.rows = 0
        self.grad_enabled = []

    def forward(self, v):
        self.rows += len(v)
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.m(_NoBackward.apply(v))


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 2.0)])
def test_square_uses_no_gradients_and_respects_the_query_budget(norm, eps):
    g = torch.Generator().manual_seed(1)
    x = 0.3 + 0.4 * torch.rand(20, 1, 8, 8, generator=g)
    w = torch.randn(64, generator=g)
    model = BlackBox(Linear2(w, -(x.flatten(1) @ w).median().item() - 0.5)).eval()
    y = torch.zeros(20, dtype=torch.long)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    model.rows, model.grad_enabled = 0, []
    atk = Square(eps, norm, n_queries=60)
    xa = atk(model, x, y)
    rows = model.rows
    assert not any(model.grad_enabled)
    q = atk.last_queries
    assert q.shape == (20,) and q.dtype == torch.long
    assert torch.all(q <= 60) and torch.all(q >= 1)
    assert torch.all(q[~clean] == 1)  # misclassified from the start: only the clean query
    fooled = ~_correct(model, xa, y)
    assert torch.all(q[clean & ~fooled] == 60)  # still robust: the whole budget
    assert fooled[clean].any()
    assert 0 <= rows - q.sum().item() <= 1 + 16  # the rest are the base class's probes and checks
    assert flat_norm(xa - x, norm).max() <= eps + 1e-5


def test_square_is_reproducible_and_p_schedule():
    assert p_schedule(0.8, 10, 10000) == 0.8 and p_schedule(0.8, 11, 10000) == 0.4
    assert p_schedule(0.8, 9000, 10000) == 0.8 / 512
    assert p_schedule(0.8, 3, 1000) == 0.4 and p_schedule(0.8, 6, 1000) == 0.2  # rescaled to 10000
    g = torch.Generator().manual_seed(2)
    x = torch.rand(8, 1, 8, 8, generator=g)
    model = Linear2(torch.randn(64, generator=g), 0.0).eval()
    y = torch.zeros(8, dtype=torch.long)
    a = Square(0.1, n_queries=30, seed=5)(model, x, y)
    b = Square(0.1, n_queries=30, seed=5)(model, x, y)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="n_queries"):
        Square(0.1, n_queries=0)
    with pytest.raises(ValueError, match="p_init"):
        Square(0.1, p_init=2.0)
    with pytest.raises(ValueError, match="loss"):
        Square(0.1, loss="dlr")


# --------------------------------------------------------------------------------------- AutoAttack


@pytest.mark.parametrize("norm,eps", [("l2", 3.0), ("linf", 0.12)])
def test_autoattack_is_the_pointwise_first_success_of_its_parts(mlp, norm, eps):
    model, x, y = mlp
    steps, nq = 8, 40
    aa = AutoAttack(eps, norm, steps=steps, n_queries=nq, seed=1, n_classes=4)  # 3 target classes
    xa = aa(model, x, y)
    parts = [APGD(eps, norm, steps, n_restarts=1, loss="ce", seed=1),
             APGDT(eps, norm, steps, n_restarts=1, n_target_classes=3, seed=1),
             FAB(eps, norm, steps, n_restarts=1, multi_targeted=True, n_target_classes=3, seed=1),
             Square(eps, norm, nq, n_restarts=1, p_init=0.8, seed=1)]
    expected = x.clone()
    robust = _correct(model, x, y)
    accs = []
    for atk in parts:
        xp = atk(model, x, y)
        ok = _correct(model, xp, y)
        accs.append(ok.float().mean().item())
        first = robust & ~ok
        expected[first] = xp[first]
        robust &= ok
    assert torch.allclose(xa, expected, atol=1e-6)
    assert torch.equal(_correct(model, xa, y), robust)
    aa_acc = robust.float().mean().item()
    assert all(aa_acc <= a for a in accs)
    rep = aa.last_report
    assert rep["n"] == len(x) and math.isclose(rep["robust_acc"], aa_acc, abs_tol=1e-6)
    assert [r["attack"] for r in rep["cascade"]] == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    steps_acc = [r["robust_acc"] for r in rep["cascade"]]
    assert steps_acc == sorted(steps_acc, reverse=True)
    assert math.isclose(rep["clean_acc"], _correct(model, x, y).float().mean().item(), abs_tol=1e-6)


def test_autoattack_chunks_rand_version_report_and_checks(mlp, capsys):
    model, x, y = mlp
    x, y = x[:40], y[:40]
    a = AutoAttack(3.0, "l2", steps=5, n_queries=20, n_classes=4, chunk_size=15)(model, x, y)
    b = AutoAttack(3.0, "l2", steps=5, n_queries=20, n_classes=4, chunk_size=15)(model, x, y)
    assert torch.equal(a, b)
    assert flat_norm(a - x, "l2").max() <= 3.0 + 1e-5
    aa = AutoAttack(2.0, "l2", version="rand", steps=3, verbose=True)
    assert aa.attacks["apgd-ce"].eot_iter == 20 and aa.attacks["apgd-dlr"].loss == "dlr"
    aa(model, x[:10], y[:10])
    out = capsys.readouterr().out
    assert "apgd-dlr" in out and "robust accuracy" in out
    assert AutoAttack(0.1, n_classes=3).attacks["apgd-t"].n_target_classes == 2
    assert AutoAttack(0.1, n_classes=3).attacks["fab-t"].n_target_classes == 2
    for kw, name in ((dict(version="plus"), "version"), (dict(n_classes=1), "n_classes"),
                     (dict(n_queries=0), "n_queries"), (dict(steps=0), "steps"), (dict(verbose=1), "verbose")):
        with pytest.raises(ValueError, match=name):
            AutoAttack(0.1, **kw)
