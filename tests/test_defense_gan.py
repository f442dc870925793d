"""Defense-GAN: the latent search (restarts, determinism, projection on G's range), the defense
module and its BPDA approximations, and from_zoo. A small sigmoid-linear generator keeps the
search well conditioned and fast; the real DCGAN generator is checked for shapes only."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from advlab import attacks, data, evaluate, zoo
from advlab.defenses import DefenseGAN, latent_search
from advlab.generative import Generator


class LinearGen(nn.Module):
    """G(z) = sigmoid(W z + b), images (N, 1, 28, 28); its range is an 8-dimensional manifold."""

    def __init__(self, latent_dim=8, seed=0):
        super().__init__()
        self.latent_dim = latent_dim
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(784, latent_dim, generator=g) * latent_dim ** 0.5)
        self.b = nn.Parameter(torch.zeros(784))

    def forward(self, z):
        return torch.sigmoid(z @ self.W.t() + self.b).view(-1, 1, 28, 28)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def G():
    return LinearGen().eval()


@pytest.fixture(scope="module")
def clf():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()


@pytest.fixture(scope="module")
def x_in_range(G):
    z0 = torch.randn(16, G.latent_dim, generator=torch.Generator().manual_seed(5)) / G.latent_dim ** 0.5
    with torch.no_grad():
        return G(z0)


def test_search_projects_a_sample_of_G_onto_itself(G, x_in_range):
    start = latent_search(G, x_in_range, steps=0, restarts=1, generator=torch.Generator().manual_seed(0))
    # lr 0.3: the toy generator's loss scale, not the zoo default tuned for fmnist/wgan-gp
    res = latent_search(G, x_in_range, steps=200, restarts=10, lr=0.3, generator=torch.Generator().manual_seed(0))
    assert start.err.mean() > 0.05                       # random starts are far away
    assert res.err.max() < 1e-5
    assert (res.x_rec - x_in_range).abs().max() < 1e-2


def test_restarts_keep_the_lowest_error(G, x_in_range):
    # lr 10 (the paper's): on this toy generator it makes single searches get stuck, which the last checks need
    one = latent_search(G, x_in_range, steps=200, restarts=1, lr=10.0, generator=torch.Generator().manual_seed(0))
    ten = latent_search(G, x_in_range, steps=200, restarts=10, lr=10.0, generator=torch.Generator().manual_seed(0))
    assert ten.all_err.shape == (16, 10) and one.all_err.shape == (16, 1)
    assert torch.equal(ten.err, ten.all_err.min(1).values) and torch.equal(ten.best, ten.all_err.argmin(1))
    # restart 0 is the same draw for every R, so R = 10 can only improve on R = 1, per image
    assert torch.allclose(ten.all_err[:, 0], one.err, atol=1e-6, rtol=1e-4)
    assert (ten.err <= one.err + 1e-7).all()
    assert one.err.max() > 10 * ten.err.max() + 1e-4    # R = 1 gets stuck on some images here
    with torch.no_grad():
        assert torch.allclose(ten.x_rec, G(ten.z), atol=1e-6)


def test_search_is_deterministic_and_batch_size_invariant(G):
    x, _ = data.batch("synthetic", "test", n=10)
    a = latent_search(G, x, steps=20, restarts=3, generator=torch.Generator().manual_seed(1))
    b = latent_search(G, x, steps=20, restarts=3, generator=torch.Generator().manual_seed(1), batch_size=4)
    c = latent_search(G, x, steps=20, restarts=3, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(a.x_rec, b.x_rec, atol=1e-6) and torch.equal(a.best, b.best)
    assert not torch.allclose(a.x_rec, c.x_rec)


def test_search_leaves_G_untouched(G):
    x, _ = data.batch("synthetic", "test", n=4)
    G.train()
    latent_search(G, x, steps=3, restarts=2)
    assert G.training and G.W.grad is None
    G.eval()


def test_defense_shapes_range_and_seeding(G, clf):
    x, _ = data.batch("synthetic", "test", n=8)
    d = DefenseGAN(G, clf, steps=10, restarts=2, seed=3)
    assert d.stochastic is True and d.differentiable is False
    p = d.purify(x)
    assert p.shape == x.shape and p.dtype == x.dtype and p.min() >= 0 and p.max() <= 1
    assert torch.equal(p, DefenseGAN(G, clf, steps=10, restarts=2, seed=3).purify(x))
    assert not torch.equal(p, DefenseGAN(G, clf, steps=10, restarts=2, seed=4).purify(x))
    assert not torch.equal(p, d.purify(x))               # new restarts on every call
    with torch.no_grad():
        d.reseed(3)
        assert torch.allclose(d(x), clf(p))
    assert "steps=10" in d.describe() and "restarts=2" in d.describe()


def test_real_generator_shapes():
    G = Generator(latent_dim=16, width=4).eval()
    clf = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    x, _ = data.batch("synthetic", "test", n=3)
    d = DefenseGAN(G, clf, steps=2, restarts=2)
    assert d.purify(x).shape == (3, 1, 28, 28) and d(x).shape == (3, 10)


def _grad(model, x, y):
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(model(xr), y).backward()
    return xr.grad


def test_gradients_flow_through_the_adaptive_models(G, clf):
    x, y = data.batch("synthetic", "test", n=4)
    d = DefenseGAN(G, clf, steps=10, restarts=2)
    assert _grad(d, x, y).abs().max() == 0               # the search is not differentiated
    ident = d.adaptive_model()
    assert isinstance(ident[0], attacks.BPDA)
    g_id = _grad(ident, x, y)
    assert g_id.abs().max() > 0
    through_g = d.adaptive_model("generator")
    g_gen = _grad(through_g, x, y)
    assert g_gen.abs().max() > 0
    assert F.cosine_similarity(g_id.flatten(1), g_gen.flatten(1)).abs().max() < 0.99  # a different path
    d.reseed(0)
    with torch.no_grad():
        ref = d(x)
        d.reseed(0)
        assert torch.allclose(through_g(x), ref)         # forward is the real defense


def test_bpda_attacks_beat_the_naive_one(G, clf, x_in_range):
    d = DefenseGAN(G, clf, steps=30, restarts=2).eval()
    x = x_in_range
    with torch.no_grad():
        y = d(x).argmax(1)                               # labels = the defense's own predictions
    atk = attacks.PGD(eps=0.5, alpha=0.0625, steps=20, random_start=False, checks=False)
    naive = evaluate.accuracy(d, atk(d, x, y), y)        # zero gradient: nothing moves
    identity = evaluate.accuracy(d, atk(d.adaptive_model(), x, y), y)
    through_g = evaluate.accuracy(d, atk(d.adaptive_model("generator"), x, y), y)
    assert naive > 0.8 and identity < naive - 0.2 and through_g < 0.2


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=-1), "^steps: "), (dict(restarts=0), "^restarts: "), (dict(lr=-1.0), "^lr: "),
    (dict(momentum=1.0), "^momentum: "), (dict(decay_at=2), "^decay_at: "), (dict(batch_size=0), "^batch_size: "),
    (dict(seed=1.5), "^seed: "), (dict(unroll=0), "^unroll: "),
])
def test_bad_settings_raise_value_error(G, clf, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DefenseGAN(G, clf, **kwargs)


def test_bad_inputs_raise_value_error(G, clf):
    d = DefenseGAN(G, clf, steps=1, restarts=1)
    x, _ = data.batch("synthetic", "test", n=2)
    with pytest.raises(ValueError, match="^generator: "):
        DefenseGAN(nn.Linear(3, 3), clf)
    with pytest.raises(ValueError, match="^x: "):
        d.purify(x - 1)
    with pytest.raises(ValueError, match="^x: "):
        d.search(x[0])
    with pytest.raises(ValueError, match="^backward: "):
        d.adaptive_model("exact")
    with pytest.raises(ValueError, match="^dataset: "):
        DefenseGAN.from_zoo("cifar10")
    with pytest.raises(ValueError, match="^z: "):
        Generator(latent_dim=16, width=4)(torch.zeros(2, 15))


def test_from_zoo_missing_generator_names_its_command(monkeypatch, tmp_path, clf):
    monkeypatch.setenv("ADVLAB_ZOO", str(tmp_path))
    monkeypatch.setenv("ADVLAB_ZOO_BUNDLED", "0")
    with pytest.raises(zoo.NotTrainedError, match="advlab train fmnist/wgan-gp"):
        DefenseGAN.from_zoo("fashion_mnist", classifier=clf)


def test_from_zoo_builds_from_zoo_parts(monkeypatch, tmp_path):
    monkeypatch.setenv("ADVLAB_ZOO", str(tmp_path))
    monkeypatch.setenv("ADVLAB_ZOO_BUNDLED", "0")
    zoo.save("fmnist/wgan-gp", zoo.build("fmnist/wgan-gp"), {}, {}, "test")
    zoo.save("fmnist/cnn", zoo.build("fmnist/cnn"), {}, {}, "test")
    d = DefenseGAN.from_zoo("fashion_mnist", steps=1, restarts=1, seed=2)
    assert isinstance(d.generator, Generator) and d.generator.latent_dim == 128
    assert not d.training and not d.classifier.training and (d.steps, d.restarts, d.seed) == (1, 1, 2)
    other = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert DefenseGAN.from_zoo("fashion_mnist", classifier=other).classifier is other
