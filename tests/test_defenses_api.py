"""The purifier API (advlab.purifiers.base.Purifier, alias Defense) and advlab.evaluate.defense_report, on toy
defenses around a small classifier trained here on the synthetic dataset (seconds on 1 thread)."""
import json
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from advlab import attacks, data, evaluate
from advlab.defenses import Defense


class Blur(Defense):
    """Deterministic and differentiable: a 3x3 box blur."""

    def _purify(self, x, generator):
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class Quantise(Defense):
    """Deterministic, not differentiable (zero gradient almost everywhere): 8 grey levels."""

    differentiable = False
    backwards = ("identity", "exact")

    def _purify(self, x, generator):
        return torch.round(x * 7) / 7


class Noise(Defense):
    """Stochastic and differentiable: additive Gaussian noise drawn from `generator`, clipped."""

    stochastic = True

    def _purify(self, x, generator):
        return (x + 0.1 * torch.randn(x.shape, generator=generator).to(x)).clamp(0, 1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clf():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    x, y = data.batch("synthetic", "train", n=1024, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for i in range(150):
        idx = torch.randint(0, 1024, (128,))
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def xy():
    return data.batch("synthetic", "test", n=64, seed=0)


def test_classifier_fixture_learns(clf, xy):
    assert evaluate.accuracy(clf, *xy) > 0.9


def test_forward_is_classifier_of_purify(clf, xy):
    x, _ = xy
    d = Blur(clf)
    assert isinstance(d, nn.Module) and d.classifier is clf and d.stochastic is False
    p = d.purify(x)
    assert p.shape == x.shape and p.min() >= 0 and p.max() <= 1 and not torch.equal(p, x)
    with torch.no_grad():
        assert torch.allclose(d(x), clf(p))


def test_adaptive_model_exact_for_differentiable_bpda_otherwise(clf, xy):
    x, y = xy
    blur = Blur(clf)
    assert blur.adaptive_model() is blur
    q = Quantise(clf)
    m = q.adaptive_model()
    assert m is not q and isinstance(m[0], attacks.BPDA)
    with torch.no_grad():
        assert torch.equal(m(x), q(x))  # same forward, only the backward differs


def _input_grad(model, x, y):
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(model(xr), y).backward()
    return xr.grad


def test_gradients_flow_through_adaptive_model_and_not_through_naive(clf, xy):
    x, y = xy
    q = Quantise(clf)
    assert _input_grad(q, x, y).abs().max() == 0          # what a naive attack sees
    g = _input_grad(q.adaptive_model(), x, y)
    assert g.abs().max() > 0
    # identity BPDA: the classifier's gradient at the purified image
    assert torch.allclose(g, _input_grad(clf, q.purify(x), y), atol=1e-6)
    assert _input_grad(Blur(clf).adaptive_model(), x, y).abs().max() > 0


def test_callable_backward_is_used(clf, xy):
    x, y = xy
    q = Quantise(clf)
    g = _input_grad(q.adaptive_model(backward=lambda t: 2 * t), x, y)
    assert torch.allclose(g, 2 * _input_grad(q.adaptive_model("identity"), x, y), atol=1e-6)


def test_stochastic_defense_is_seedable(clf, xy):
    x, _ = xy
    a, b, c = Noise(clf, seed=1), Noise(clf, seed=1), Noise(clf, seed=2)
    pa = a.purify(x)
    assert torch.equal(pa, b.purify(x)) and not torch.equal(pa, c.purify(x))
    assert not torch.equal(pa, a.purify(x))               # fresh draws on each call
    a.reseed(1)
    assert torch.equal(pa, a.purify(x))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(a.purify(x, generator=g1), c.purify(x, generator=g2))
    assert "seed=1" in a.describe()


@pytest.mark.parametrize("bad, match", [
    (lambda d, x: d.purify(x[0]), "^x: "),
    (lambda d, x: d.purify(x * 2), "^x: "),
    (lambda d, x: d.purify(x.masked_fill(x > 0.5, float("nan"))), "^x: "),
    (lambda d, x: d.purify((x * 255).to(torch.uint8)), "^x: "),
    (lambda d, x: d(x + 1), "^x: "),
    (lambda d, x: d.purify(x, generator=5), "^generator: "),
    (lambda d, x: d.adaptive_model("nope"), "^backward: "),
    (lambda d, x: Blur("not a model"), "^classifier: "),
    (lambda d, x: Blur(d.classifier, seed="a"), "^seed: "),
    (lambda d, x: Blur.from_zoo("fashion_mnist"), "^dataset: "),
])
def test_bad_inputs_raise_value_error_naming_the_argument(clf, xy, bad, match):
    with pytest.raises(ValueError, match=match):
        bad(Blur(clf), xy[0])


def test_defense_report_names_every_attack_and_passes_for_honest_defense(clf, xy):
    x, y = xy
    atk = attacks.PGD(eps=0.1, alpha=0.01, steps=10)
    rep = evaluate.defense_report(Quantise(clf), x, y, attack=atk, sanity_eps=(0.3, 1.0))
    for key in ("defense", "n", "num_classes", "chance", "clean", "undefended", "grey_box", "adaptive", "sanity"):
        assert key in rep
    assert rep["n"] == 64 and rep["num_classes"] == 10 and rep["clean"]["classifier"]["acc"] > 0.9
    for key in ("undefended", "grey_box", "adaptive"):
        assert rep[key]["attack"] == repr(atk) and 0 <= rep[key]["acc"] <= 1
    assert "BPDA" in rep["adaptive_model"] and "identity" in rep["adaptive_model"]
    assert [r["eps"] for r in rep["sanity"]["rows"]] == [0.3, 1.0]
    assert all(r["attack"].startswith("PGD(") and f"eps={r['eps']:.4g}" in r["attack"] for r in rep["sanity"]["rows"])
    assert rep["sanity"]["rows"][-1]["acc"] <= 0.2
    assert rep["sanity"]["passed"] is True and rep["sanity"]["informative"] is True
    assert rep["undefended"]["acc"] <= rep["clean"]["classifier"]["acc"]
    json.dumps(rep)


def test_sanity_check_detects_a_broken_evaluation(clf, xy):
    x, y = xy
    atk = attacks.PGD(eps=0.1, alpha=0.01, steps=10, checks=False)
    with pytest.warns(RuntimeWarning, match="evaluation broken"):
        rep = evaluate.defense_report(Quantise(clf), x, y, attack=atk, backward="exact", sanity_eps=(0.3, 1.0))
    assert rep["sanity"]["passed"] is False and "evaluation broken" in rep["sanity"]["message"]
    assert rep["adaptive_model"].startswith("defense end to end")
    assert rep["sanity"]["rows"][-1]["acc"] > 0.5  # zero gradients: the images never move


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # zero gradients are the point here
def test_sanity_check_says_when_it_is_uninformative(xy):
    x, y = xy
    const = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    nn.init.zeros_(const[1].weight)
    rep = evaluate.defense_report(Blur(const.eval()), x, y, attack=attacks.FGSM(eps=0.1), sanity_eps=(1.0,))
    assert rep["sanity"]["informative"] is False and "uninformative" in rep["sanity"]["message"]


def test_default_attack_is_pgd40_and_eot_for_stochastic(clf, xy):
    x, y = xy
    rep = evaluate.defense_report(Noise(clf, seed=0), x[:32], y[:32], eot_iter=3, sanity_eps=(1.0,), sanity_n=8)
    att = rep["undefended"]["attack"]
    assert att.startswith("PGD(") and "steps=40" in att and "eps=0.1" in att and "alpha=0.01" in att
    assert "random_start=True" in att and "eot_iter=1" in att
    assert "eot_iter=3" in rep["adaptive"]["attack"] and rep["stochastic"] is True
    assert "random_start=False" in rep["sanity"]["rows"][0]["attack"] and rep["sanity"]["rows"][0]["n"] == 8


def test_report_renders_as_table_and_json(clf, xy, tmp_path):
    x, y = xy
    atk = attacks.FGSM(eps=0.1)
    rep = evaluate.defense_report(Blur(clf), x[:16], y[:16], attack=atk, sanity_eps=(1.0,), sanity_margin=1.0)
    md = evaluate.format_report(rep)
    assert md.count("\n|") >= 7 and repr(atk) in md and "grey box" in md and "Blur" in md
    txt = evaluate.format_report(rep, fmt="text")
    assert "adaptive" in txt and repr(atk) in txt and "|" not in txt.splitlines()[1]
    evaluate.save_report(rep, tmp_path / "sub" / "r.json")
    assert json.loads((tmp_path / "sub" / "r.json").read_text()) == rep
    with pytest.raises(ValueError, match="^fmt: "):
        evaluate.format_report(rep, fmt="html")


@pytest.mark.parametrize("kwargs, match", [
    (dict(eot_iter=0), "^eot_iter: "), (dict(sanity_eps=(0.1, -1)), "^sanity_eps: "),
    (dict(attack=3), "^attack: "), (dict(sanity_margin=2), "^sanity_margin: "), (dict(sanity_n=0), "^sanity_n: "),
])
def test_defense_report_bad_arguments(clf, xy, kwargs, match):
    x, y = xy
    with pytest.raises(ValueError, match=match):
        evaluate.defense_report(Blur(clf), x, y, **kwargs)
    with pytest.raises(ValueError, match="^y: "):
        evaluate.defense_report(Blur(clf), x, y[:-1])
    with pytest.raises(ValueError, match="^defense: "):
        evaluate.defense_report(clf, x, y)


def test_import_advlab_stays_light():
    code = ("import sys, advlab, advlab.defenses as d, advlab.generative as g; d.Defense; d.DefenseGAN; g.Generator; "
            "bad = [m for m in ('matplotlib', 'ipywidgets', 'IPython', 'pandas', 'papermill') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
