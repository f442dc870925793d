"""advlab.evaluation.disruption (the consistency-disruption attack on CMAP), on a tiny untrained consistency
model and a linear classifier: the threat model holds in both norms, the cross-entropy it ascends rises,
gamma = 0 and no steps keep the defender's own fit, the returned image is the candidate the defense
classifies worst, seeding, and bad arguments."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from advlab.attacks.base import fit_to_threat_model
from advlab.evaluation.disruption import ConsistencyDisruption
from advlab.purifiers.cmap.model import ConsistencyModel
from advlab.purifiers.cmap.purifier import CMAP

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_defense(seed=2, **kw):
    torch.manual_seed(0)
    g = ConsistencyModel(width=8, emb_dim=16)
    with torch.no_grad():
        for p in g.parameters():
            if p.abs().sum() == 0:       # the zero-initialised output layers get random weights
                p.normal_(0, 0.2)
    torch.manual_seed(5)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    return CMAP(g, clf, **({"k": 3, "iters": 6, "lr": 0.1, "seed": seed} | kw)).eval()


@pytest.fixture(scope="module")
def xy():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 1, 28, 28, generator=g), torch.tensor([0, 3, 5, 9])


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_threat_model_holds(xy, norm, eps):
    x, y = xy
    atk = ConsistencyDisruption(eps=eps, norm=norm, steps=4, gamma=5.0)
    x_adv = atk(tiny_defense(), x, y)
    assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1
    d = (x_adv - x).flatten(1)
    size = d.abs().max(1).values if norm == "linf" else d.norm(dim=1)
    assert (size <= eps + 1e-6).all()
    cands = atk.candidates(tiny_defense(), x, y)
    assert cands.shape == (3, *x.shape)
    assert (((cands - x).flatten(2).abs().amax(2) if norm == "linf" else (cands - x).flatten(2).norm(dim=2))
            <= eps + 1e-6).all()


def test_cross_entropy_rises_and_gamma_zero_keeps_the_defenders_fit(xy):
    x, y = xy
    atk = ConsistencyDisruption(eps=0.3, steps=10, gamma=50.0, lr=0.2)
    atk.candidates(tiny_defense(), x, y)
    ce = atk.last_curve["cross_entropy"]
    assert len(ce) == 11 and ce[-1] > ce[0]
    # no steps: the candidates are the defender's own K images of the same draw, projected
    d = tiny_defense()
    still = ConsistencyDisruption(eps=0.3, steps=0, gamma=0.0, seed=7).candidates(d, x, y)
    res = d.search(x, generator=torch.Generator().manual_seed(7))
    want = torch.stack([fit_to_threat_model(res.images[j], x, 0.3, "linf") for j in range(3)])
    assert torch.allclose(still, want, atol=1e-6)


def test_returns_the_candidate_the_defense_classifies_worst(xy, monkeypatch):
    x, y = xy
    d = tiny_defense()
    atk = ConsistencyDisruption(eps=0.2, steps=2, gamma=1.0)
    cands = atk.candidates(d, x, y)
    monkeypatch.setattr(atk, "candidates", lambda *a, **k: cands)
    # a defense whose vote is decided by the candidate's index: the true class loses only on candidate 1
    calls = []

    def fake_forward(xc):
        scores = torch.zeros(len(xc), 10)
        j = next((i for i in range(len(cands)) if xc.shape == cands[i].shape and torch.equal(xc, cands[i])), None)
        if j is None:            # the attack's own shape check on one image
            return scores
        calls.append(j)
        scores[torch.arange(len(xc)), y] = 1.0 if j != 1 else -1.0
        return scores

    monkeypatch.setattr(d, "forward", fake_forward)
    out = atk(d, x, y)
    assert calls == [0, 1, 2]
    assert torch.allclose(out, cands[1], atol=1e-6)


def test_seeded(xy):
    x, y = xy
    a = ConsistencyDisruption(eps=0.1, steps=3, seed=4)(tiny_defense(), x, y)
    b = ConsistencyDisruption(eps=0.1, steps=3, seed=4)(tiny_defense(), x, y)
    assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs,match", [({"gamma": -1.0}, "gamma"), ({"steps": 2.5}, "steps"),
                                          ({"steps": -1}, "steps"), ({"lr": 0.0}, "lr"), ({"norm": "l1"}, "norm")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConsistencyDisruption(eps=0.1, **kwargs)


def test_needs_a_cmap_defense(xy):
    x, y = xy
    with pytest.raises(ValueError, match="model: the consistency-disruption attack needs a CMAP defense"):
        ConsistencyDisruption(eps=0.1)(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), x, y)


# ------------------------------------------------------------------ the unrolled search (full gradient)
from advlab.evaluation.unrolled import UnrolledCMAP   # noqa: E402
from advlab.purifiers.voting import aggregate          # noqa: E402


def test_unrolled_cmap_has_the_defenses_values(xy):
    x, _ = xy
    d = tiny_defense(iters=7)
    d.reseed(3)
    want = aggregate(d.draw_logits(x), "mean_probs")
    d.reseed(3)
    with torch.no_grad():
        got = UnrolledCMAP(d, segment=3)(x)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


class SmoothGenerator(nn.Module):
    """generate(z) = sigmoid(conv(z / T)): smooth everywhere (no clamp), so finite differences are exact enough."""
    latent_shape, sigma_max = (1, 28, 28), 80.0

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def generate(self, z):
        return torch.sigmoid(self.conv(z / self.sigma_max))


def test_unrolled_cmap_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(0)
    x = (0.2 + 0.6 * torch.rand(2, 1, 28, 28, generator=g)).double()
    y = torch.tensor([1, 4])
    torch.manual_seed(5)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    d = CMAP(SmoothGenerator(), clf, k=2, iters=3, lr=0.1, seed=2).double().eval()
    model = UnrolledCMAP(d, segment=2)               # two segments: the checkpointed path and its boundary

    def loss(inp):
        d.reseed(11)                                  # the same initial latents in every call
        return nn.functional.nll_loss(model(inp), y)

    xr = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(loss(xr), xr)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    h = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = 1e-7       # small: Adam's first step, lr * g / (|g| + 1e-8), jumps where a coordinate of g changes sign
    with torch.no_grad():
        fd = (loss(x + t * h) - loss(x - t * h)) / (2 * t)
    assert fd.dtype == torch.float64
    assert abs(fd.item() - (grad * h).sum().item()) <= 1e-4 * abs(fd.item()) + 1e-9


def test_the_ensemble_runs_it_on_cmap_only():
    from advlab import models
    from advlab.evaluation.adaptive import PROFILES, build_ensemble
    d = tiny_defense()
    keys = [s.key for s in build_ensemble(d, 0.1, PROFILES["quick"], 0, 2)]
    assert keys[-1] == "consistency-disruption" and keys.count("consistency-disruption") == 1
    spec = build_ensemble(d, 0.1, PROFILES["full"], 0, 2)[-1]
    assert spec.attack.steps == PROFILES["full"]["disruption_steps"] and spec.attack.eps == 0.1
    assert "consistency-disruption" not in [s.key for s in build_ensemble(models.build("cnn"), 0.1, PROFILES["quick"], 0, 1)]


def _held_after_forward(iters):
    """MiB of resident memory that UnrolledCMAP's forward keeps for the backward (4 latents, 2 images)."""
    import gc

    def rss():
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS")) / 1024
    d = tiny_defense(iters=iters, k=4)
    d.generator = ConsistencyModel(width=32, emb_dim=128).eval()      # the zoo model's size
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    gc.collect()
    before = rss()
    out = UnrolledCMAP(d, segment=4)(x)
    gc.collect()
    held = rss() - before
    out.sum().backward()
    assert x.grad.abs().sum() > 0
    return held


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_unrolled_search_memory_does_not_grow_with_the_iterations():
    # torch.utils.checkpoint let the create_graph graph of every step live (about 175 MiB a step here, 3.5 GiB
    # for 20 steps); the hand-checkpointed segments keep only their inputs
    short, long = _held_after_forward(4), _held_after_forward(24)
    assert long < short + 300, (short, long)


def test_gradient_comparison_measures_both_backwards_per_count():
    from advlab.evaluation.unrolled import gradient_comparison
    g = torch.Generator().manual_seed(0)
    x, y = 0.2 + 0.6 * torch.rand(3, 1, 28, 28, generator=g), torch.tensor([1, 4, 7])
    torch.manual_seed(5)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    d = CMAP(SmoothGenerator(), clf, k=2, iters=5, lr=0.1, seed=2).eval()
    rows = gradient_comparison(d, x, y, iters=(0, 4), seed=1)
    assert [r["iters"] for r in rows] == [0, 4] and d.iters == 5          # the defense itself is untouched
    for r in rows:
        assert r["bpda_l2"] > 0 and r["classifier_l2"] > 0 and r["unrolled_nonfinite"] == 0
        assert -1 <= r["cosine"] <= 1 and 0 <= r["sign_agreement"] <= 1
    # no step: the search returns G(T u0), which does not depend on x; BPDA's stand-in does
    assert rows[0]["unrolled_l2"] == 0 and rows[0]["unrolled_zero"] == 3 and rows[1]["unrolled_zero"] == 0
