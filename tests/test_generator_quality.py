"""advlab.generative.quality: the Fréchet distance (against scipy's sqrtm as an oracle, and on cases with a
closed form), the penultimate features, the sampler of every generator (shape, range, seeding) on tiny
untrained models, the statistics, and bad arguments."""
import math

import pytest
import torch
import torch.nn as nn

from advlab import models
from advlab.generative import quality
from advlab.generative.blocks import Generator
from advlab.purifiers.cmap.model import ConsistencyModel
from advlab.purifiers.lqvae.model import LQVAEModel
from advlab.purifiers.mlvgm.model import HVAEModel
from advlab.purifiers.vaegan.model import VAEGAN

pytestmark = pytest.mark.usefixtures("one_thread")


def test_frechet_distance_matches_scipy():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    b = torch.randn(200, 6, generator=g, dtype=torch.float64) * 1.7 + 0.4
    mu_a, mu_b = a.mean(0).numpy(), b.mean(0).numpy()
    s_a, s_b = torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    covmean = scipy_linalg.sqrtm(s_a @ s_b).real
    expected = ((mu_a - mu_b) ** 2).sum() + s_a.trace() + s_b.trace() - 2 * covmean.trace()
    assert quality.frechet_distance(a, b) == pytest.approx(float(expected), rel=1e-6)


def test_frechet_distance_closed_forms():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(500, 4, generator=g, dtype=torch.float64)
    assert abs(quality.frechet_distance(a, a)) < 1e-8
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    assert quality.frechet_distance(a, a + shift) == pytest.approx(float(shift.pow(2).sum()), rel=1e-8)
    # scaling by 2: same mean (up to the shift of the mean), covariance 4 S: tr(S) + 4 tr(S) - 2 * 2 tr(S) = tr(S)
    centred = a - a.mean(0)
    assert quality.frechet_distance(centred, 2 * centred) == pytest.approx(float(torch.cov(a.T).trace()), rel=1e-8)
    assert quality.frechet_distance(a, a + 3) > quality.frechet_distance(a, a + 1) > 0


def test_frechet_distance_bad_inputs():
    with pytest.raises(ValueError, match="a, b: expected"):
        quality.frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="at least 2 rows"):
        quality.frechet_distance(torch.zeros(1, 3), torch.zeros(5, 3))


def test_penultimate_features_are_the_last_linear_input():
    torch.manual_seed(0)
    clf = models.build("cnn").train()
    x = torch.rand(7, 1, 28, 28)
    feats, probs = quality.penultimate_features(clf, x, batch_size=3)
    assert feats.shape == (7, 384) and probs.shape == (7, 10) and feats.dtype == torch.float64
    assert clf.training                                   # the mode is restored
    clf.eval()
    with torch.no_grad():
        logits = clf.head[-1](feats.float())              # the last Linear applied to the features gives the logits
        assert torch.allclose(logits.softmax(1).double(), probs, atol=1e-5)
        assert torch.allclose(probs.sum(1), torch.ones(7, dtype=torch.float64))
    assert not clf.head[-1]._forward_hooks                # the hook is removed
    with pytest.raises(ValueError, match="classifier: has no nn.Linear"):
        quality.penultimate_features(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), x)


def _tiny(name):
    torch.manual_seed(0)
    return {"fmnist/wgan-gp": lambda: Generator(latent_dim=8, width=4),
            "fmnist/vaegan": lambda: VAEGAN(latent_dim=8, width=4),
            "fmnist/lqvae": lambda: LQVAEModel(latent_dim=8, width=4),
            "fmnist/hvae": lambda: HVAEModel(width=8, z_channels=(2, 2, 1)),
            "fmnist/consistency": lambda: ConsistencyModel(width=8, emb_dim=16)}[name]().eval()


@pytest.mark.parametrize("key", list(quality.SAMPLERS), ids=lambda k: f"{k[0]}:{k[1]}")
def test_every_sampler_draws_images_reproducibly(key):
    name, variant = key
    model = _tiny(name)
    x = quality.draw(name, 5, variant=variant, seed=3, model=model, batch_size=2)
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1 and torch.isfinite(x).all()
    assert torch.equal(x, quality.draw(name, 5, variant=variant, seed=3, model=model, batch_size=2))
    if name != "fmnist/consistency":     # the untrained consistency model's output layers start at zero
        assert not torch.equal(x, quality.draw(name, 5, variant=variant, seed=4, model=model, batch_size=2))


def test_draw_bad_arguments():
    with pytest.raises(ValueError, match="name: no sampler for 'fmnist/cnn'"):
        quality.draw("fmnist/cnn", 4)
    with pytest.raises(ValueError, match="variant: fmnist/hvae has the variants"):
        quality.draw("fmnist/hvae", 4, variant="temperature 2", model=_tiny("fmnist/hvae"))
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="n: must be an int >= 1"):
            quality.draw("fmnist/hvae", bad, model=_tiny("fmnist/hvae"))


def test_sample_stats():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(50, 3, generator=g, dtype=torch.float64)
    probs = torch.full((50, 10), 0.01, dtype=torch.float64)
    probs[:20, 3] = 0.91                    # 20 confident class-3 predictions
    probs[20:, 5] = 0.5                     # 30 unconfident class-5 ones
    st = quality.sample_stats(feats, probs, feats)
    assert st["confident"] == pytest.approx(0.4)
    assert st["class_hist"] == [0, 0, 0, 20, 0, 30, 0, 0, 0, 0]
    assert st["fd"] == pytest.approx(0.0, abs=1e-6)
    assert math.isfinite(quality.sample_stats(feats, probs, feats + 1)["fd"])


def test_readme_quotes_the_recorded_sample_quality():
    import json
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    rec_path = root / "docs" / "results" / "generator_quality.json"
    if not rec_path.exists():
        pytest.skip("no record (python -m advlab.generative.quality)")
    rec = json.loads(rec_path.read_text())
    first = {}
    for r in rec["rows"]:
        if "fd" in r:
            first.setdefault(r["generator"], r)          # the first variant is the one README quotes first
    readme = (root / "README.md").read_text()
    for name, r in first.items():
        m = re.search(rf"{re.escape(name)} FD ([0-9.]+) \(([0-9]+)%", readme)
        assert m, f"README quotes no FD for {name}"
        assert float(m.group(1)) == round(r["fd"], 1) and int(m.group(2)) == round(100 * r["confident"]), name
    assert f"is {rec['real_floor']['fd']:.2f}" in readme
