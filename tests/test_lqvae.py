"""Paper 004's LQ-VAE (advlab.purifiers.lqvae): the quantiser
and its relaxations, the Lipschitz penalty against closed forms, Algorithm 1's update routing, seeded
and resumable training, the zoo entry through the CLI, the adaptive-attack paths and the bit-flip
helper. Tiny widths on synthetic data keep it fast."""
import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from advlab import data, zoo
from advlab.defenses import LQVAE, Defense
from advlab.purifiers.lqvae.model import LQVAEModel, Quantiser, code_flips, gradient_norm, lipschitz_penalty
from advlab.purifiers.lqvae.train import LQVAEConfig, check_config, compute_losses, train_lqvae, train_step


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(**kw):
    base = dict(dataset="synthetic", latent_dim=8, width=4, iters=4, batch_size=8, n_train=64,
                log_every=2, ckpt_every=2, eval_n=8, seed=0, device="cpu")
    return LQVAEConfig(**(base | kw))


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return LQVAEModel(**(dict(latent_dim=8, width=4) | kw))


@pytest.fixture(scope="module")
def model():
    return tiny_model().eval()


@pytest.fixture(scope="module")
def clf(linear_clf):
    return linear_clf


@pytest.fixture(scope="module")
def xy():
    return data.batch("synthetic", "test", n=8, seed=0)


# ----------------------------------------------------------------------------- model and quantiser
def test_shapes_and_ranges(model, xy):
    x, _ = xy
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (8, 8)
    codes = model.code(x)
    assert codes.shape == (8, 8) and codes.dtype == torch.int64 and set(codes.unique().tolist()) <= {0, 1}
    with torch.no_grad():
        out = model(x)
        far = model.g(model.quantiser.soft(torch.randn(8, 8) * 50))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert far.min() >= 0 and far.max() <= 1
    fresh = tiny_model()                                  # Algorithm 1, line 1: h starts as a copy of g
    assert all(torch.equal(a, b) for a, b in zip(fresh.g.state_dict().values(), fresh.h.state_dict().values()))
    assert fresh.h.fc[0].weight.data_ptr() != fresh.g.fc[0].weight.data_ptr()


@pytest.mark.parametrize("levels, span", [(2, 1.0), (3, 1.0), (5, 2.0)])
def test_quantiser_outputs_lie_on_its_levels(levels, span):
    q = Quantiser(levels, span)
    z = torch.randn(100, 16, generator=torch.Generator().manual_seed(0)) * 2
    values = torch.linspace(-span, span, levels)
    h = q.hard(z)
    assert torch.isin(h, values).all()
    assert torch.equal(h, values[q.index(z)])
    nearest = values[(z.unsqueeze(-1) - values).abs().argmin(-1)]     # the nearest level, by brute force
    assert torch.allclose(h, nearest)
    assert q.index(z).min() >= 0 and q.index(z).max() <= levels - 1
    if levels == 2:
        assert torch.equal(h, torch.where(z > 0, 1.0, -1.0))


def test_soft_quantiser_tends_to_hard_and_has_a_gradient():
    q = Quantiser(2, 1.0, temperature=0.5)
    z = torch.linspace(-3, 3, 601)
    z = z[z.abs() > 0.05]                                  # away from the decision boundary at 0
    assert torch.allclose(q.soft(z), torch.tanh(2 * z / 0.5), atol=1e-6)      # the two-level closed form
    gaps = [(q.soft(z, t) - q.hard(z)).abs().max().item() for t in (1.0, 0.1, 0.01, 0.001)]
    assert gaps[0] > gaps[1] > gaps[2] >= gaps[3] and gaps[-1] < 1e-6
    q3 = Quantiser(3, 1.0)
    z3 = torch.linspace(-2, 2, 401)
    z3 = z3[((z3.abs() - 0.5).abs() > 0.05)]               # boundaries of three levels at +-0.5
    assert (q3.soft(z3, 1e-3) - q3.hard(z3)).abs().max() < 1e-6
    zg = torch.randn(32, 4, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    grad, = torch.autograd.grad(q.relaxed(zg).sum(), zg)
    assert (grad > 0).all()                                # monotone and smooth: nonzero everywhere
    assert not q.hard(zg).requires_grad                   # H has none


def test_straight_through_equals_hard_forward_with_identity_gradient():
    q = Quantiser(4, 1.5, relax="straight-through")
    z = (torch.randn(16, 8, generator=torch.Generator().manual_seed(0)) * 2).requires_grad_(True)
    out = q.relaxed(z)
    assert torch.equal(out, q.hard(z))
    grad, = torch.autograd.grad((out * torch.arange(8.0)).sum(), z)
    assert torch.equal(grad, torch.arange(8.0).expand(16, 8))


# ----------------------------------------------------------------------------- the Lipschitz penalty
class LinearEncoder(nn.Module):
    """mu(x) = W x (flattened): its Jacobian is W for every x."""

    def __init__(self, W):
        super().__init__()
        self.W = nn.Parameter(W)

    def forward(self, x):
        mu = x.flatten(1) @ self.W.t()
        return mu, torch.zeros_like(mu)


def test_penalty_matches_hand_computation_on_a_linear_encoder():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 28, 28, generator=g)
    Q, _ = torch.linalg.qr(torch.randn(784, 6, generator=g, dtype=torch.float64))
    s, K = 2.5, 1.0
    ortho = LinearEncoder((s * Q.t()).float())            # W = s Q^T: every direction has gain s
    assert torch.allclose(lipschitz_penalty(ortho, x, K, "projection", g), torch.full((5,), (s - K) ** 2), atol=1e-4)
    assert torch.allclose(lipschitz_penalty(ortho, x, K, "jacobian"), torch.full((5,), (s * math.sqrt(6) - K) ** 2),
                          atol=1e-3)
    W = torch.randn(6, 784, generator=g) * 0.05
    enc = LinearEncoder(W.clone())
    pen = lipschitz_penalty(enc, x, K, "jacobian")
    fro = W.norm()
    assert torch.allclose(pen, torch.full((5,), (fro.item() - K) ** 2), rtol=1e-4)
    pen.sum().backward()                                   # d/dW of (||W||_F - K)^2, five times
    assert torch.allclose(enc.W.grad, 5 * 2 * (fro - K) * W / fro, rtol=1e-3, atol=1e-6)
    v = torch.randn(5, 6, generator=torch.Generator().manual_seed(3))
    v = v / v.norm(dim=1, keepdim=True)                    # the directions the penalty will draw
    by_hand = ((v @ W).norm(dim=1) - K) ** 2               # ||W^T v_i||
    assert torch.allclose(lipschitz_penalty(enc, x, K, "projection", torch.Generator().manual_seed(3)), by_hand,
                          rtol=1e-4)


def test_projection_estimates_the_mean_squared_gain_and_the_penalty_trains_the_encoder(model, xy):
    x, _ = xy
    xr = x.clone().requires_grad_(True)
    mu = model.encode(xr)[0]
    fro = gradient_norm(mu, xr, "jacobian")               # create_graph (the default) keeps mu's graph
    proj = torch.stack([gradient_norm(mu, xr, "projection", torch.Generator().manual_seed(i))
                        for i in range(64)]).detach()          # E ||J^T v||^2 = ||J||_F^2 / d for unit v
    assert torch.allclose(proj.pow(2).mean(0), fro.pow(2) / 8, rtol=0.25)
    m = tiny_model()
    pen = lipschitz_penalty(m.encoder, x, K=5.0, generator=torch.Generator().manual_seed(0)).mean()
    pen.backward()                                         # double backward reaches every conv and linear weight
    weights = [p for n, p in m.encoder.named_parameters() if n.endswith("weight")]
    assert len(weights) == 3 and all(p.grad is not None and p.grad.abs().max() > 0 for p in weights)


# ----------------------------------------------------------------------------- Algorithm 1
def _grads(loss, params):
    return list(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))


def _touches(grads):
    return any(g is not None and g.abs().max() > 0 for g in grads)


def test_update_routing_follows_algorithm_1(xy):
    x, _ = xy
    m = tiny_model().train()
    losses = compute_losses(m, x, tiny_cfg(), torch.Generator().manual_seed(0))
    enc, g, h = (list(p.parameters()) for p in (m.encoder, m.g, m.h))
    assert _touches(_grads(losses["h"], enc)) and _touches(_grads(losses["h"], h))   # L_h: encoder and h
    assert not _touches(_grads(losses["h"], g))
    assert not _touches(_grads(losses["g"], enc)) and not _touches(_grads(losses["g"], h))  # L_g: g only
    assert _touches(_grads(losses["g"], g))
    assert not _touches(_grads(losses["kl"] + losses["lip"], g + h)) and _touches(_grads(losses["lip"], enc))
    # the single backward of L_f + L_g gives each network its own gradient
    total = _grads(losses["f"] + losses["g"], enc + g + h)
    own = _grads(losses["f"], enc) + _grads(losses["g"], g) + _grads(losses["h"], h)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(total, own))


def test_straight_through_makes_the_two_decoders_identical_and_soft_does_not(xy):
    x, _ = xy
    for relax in ("straight-through", "soft"):
        m, cfg = tiny_model(relax=relax), tiny_cfg(relax=relax)
        opt, gen = torch.optim.Adam(m.parameters(), lr=1e-2), torch.Generator().manual_seed(0)
        for _ in range(3):
            losses = train_step(m, opt, x, cfg, gen)
        same = all(torch.allclose(a, b) for a, b in zip(m.g.state_dict().values(), m.h.state_dict().values()))
        assert same == (relax == "straight-through") and math.isfinite(losses["f"])


def test_losses_decrease_on_a_fixed_batch(xy):
    x, _ = xy
    m, cfg = tiny_model(), tiny_cfg(lr=3e-3)
    opt, gen = torch.optim.Adam(m.parameters(), lr=cfg.lr), torch.Generator().manual_seed(0)
    hist = [train_step(m, opt, x, cfg, gen) for _ in range(30)]
    assert all(math.isfinite(v) for h in hist for v in h.values())
    first = {k: sum(h[k] for h in hist[:5]) / 5 for k in hist[0]}
    last = {k: sum(h[k] for h in hist[-5:]) / 5 for k in hist[0]}
    assert last["h"] < 0.9 * first["h"] and last["g"] < 0.9 * first["g"] and last["f"] < first["f"]


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_training_is_seeded_and_checkpoint_resume_is_exact(tmp_path):
    a, _ = train_lqvae(tiny_cfg(), checkpoint=tmp_path / "a.pt", progress=False)
    b, _ = train_lqvae(tiny_cfg(), progress=False)
    c, _ = train_lqvae(tiny_cfg(seed=1), progress=False)
    sa, sb, sc = _state(a), _state(b), _state(c)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    train_lqvae(tiny_cfg(iters=2), checkpoint=tmp_path / "r.pt", progress=False)       # stops after 2
    r, metrics = train_lqvae(tiny_cfg(), checkpoint=tmp_path / "r.pt", progress=False)
    sr = _state(r)
    assert all(torch.equal(sa[k], sr[k]) for k in sa)
    assert [h["iter"] for h in metrics["history"]] == [2, 4]
    assert all(math.isfinite(metrics[k]) for k in ("recon_mse", "recon_mse_h", "grad_norm"))
    _, m_off = train_lqvae(tiny_cfg(iters=2, lipschitz_weight=0.0), progress=False)        # penalty off
    assert all(h["lip"] == 0 for h in m_off["history"])


def test_zoo_entry_trains_through_the_cli_and_loads(tmp_path, monkeypatch):
    from advlab import cli
    entry = zoo.REGISTRY["fmnist/lqvae"]
    assert entry.trainer == "advlab.purifiers.lqvae.train" and isinstance(zoo.build("fmnist/lqvae"), LQVAEModel)
    order = list(zoo.REGISTRY)
    assert order.index("fmnist/lqvae") > order.index("fmnist/vaegan")     # after the other generative entries
    monkeypatch.setattr(entry, "train_quick", dict(iters=2, batch_size=4, n_train=32, log_every=1, ckpt_every=1,
                                                   eval_n=4))
    monkeypatch.setattr(entry, "arch_kwargs", entry.arch_kwargs | dict(latent_dim=8, width=4))
    monkeypatch.setattr(entry, "dataset", "synthetic")
    assert cli.main(["train", "fmnist/lqvae", "--profile", "quick", "--out", str(tmp_path), "--device", "cpu"]) == 0
    rec = zoo.info("fmnist/lqvae", root=tmp_path)
    assert rec["command"].startswith("advlab train fmnist/lqvae") and "recon_mse" in rec["metrics"]
    assert rec["config"]["iters"] == 2 and rec["config"]["width"] == 4 and rec["config"]["levels"] == 2
    assert [h["iter"] for h in rec["metrics"]["history"]] == [1, 2]
    back = zoo.load("fmnist/lqvae", root=tmp_path)
    assert isinstance(back, LQVAEModel) and back.width == 4 and not back.training
    assert back.quantiser.relax == "soft" and back.quantiser.temperature == 0.5
    ckpts = list((tmp_path / "checkpoints").glob("fmnist__lqvae_*.pt"))
    assert len(ckpts) == 1 and json.loads(ckpts[0].with_suffix(".pt.json").read_text())["iter"] == 2
    defense = LQVAE(back, nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))
    assert defense.purify(data.batch("synthetic", "test", n=2)[0]).shape == (2, 1, 28, 28)


# ----------------------------------------------------------------------------- the purifier
def test_purifier_is_a_deterministic_defense(model, clf, xy):
    x, _ = xy
    defense = LQVAE(model, clf)
    assert isinstance(defense, Defense) and not defense.stochastic and not defense.differentiable
    p = defense.purify(x)
    assert p.shape == x.shape and p.min() >= 0 and p.max() <= 1 and not p.requires_grad
    with torch.no_grad():
        assert torch.equal(p, model(x))
        assert torch.equal(defense(x), clf(p))
    assert torch.equal(p, defense.purify(x, torch.Generator().manual_seed(5)))
    assert defense.settings() == {"latent_dim": 8, "levels": 2} and defense.describe().startswith("LQVAE(")


def test_naive_gradient_is_zero_and_every_adaptive_path_gives_one(model, clf, xy):
    x, y = xy
    defense = LQVAE(model, clf).eval()
    xr = x.clone().requires_grad_(True)
    naive, = torch.autograd.grad(F.cross_entropy(defense(xr), y), xr)
    assert naive.abs().max() == 0                           # H masks the gradient
    with torch.no_grad():
        reference = defense(x)
    grads = {}
    for backward in LQVAE.backwards:
        adaptive = defense.adaptive_model(backward)
        logits = adaptive(xr)
        assert torch.allclose(logits, reference, atol=1e-6)     # the forward pass is the real defense
        grads[backward], = torch.autograd.grad(F.cross_entropy(logits, y), xr)
        assert grads[backward].abs().sum() > 0 and torch.isfinite(grads[backward]).all()
    assert defense.adaptive_model()[0].backward_fn == defense.straight_through       # the default
    assert not torch.allclose(grads["straight-through"], grads["identity"])
    assert not torch.allclose(grads["soft"], grads["identity"])


def test_straight_through_gradient_is_the_gradient_with_h_replaced_by_identity(model, clf, xy):
    x, y = xy
    defense = LQVAE(model, clf).eval()
    xr = x.clone().requires_grad_(True)
    g_st, = torch.autograd.grad(F.cross_entropy(defense.adaptive_model()(xr), y), xr)
    xr2 = x.clone().requires_grad_(True)
    mu = model.encode(xr2)[0]
    codes = model.quantiser.hard(mu).requires_grad_(True)
    loss = F.cross_entropy(clf(model.g(codes)), y)
    d_codes, = torch.autograd.grad(loss, codes)             # dL/dH, then pulled back through the encoder
    by_hand, = torch.autograd.grad(mu, xr2, grad_outputs=d_codes)
    assert torch.allclose(g_st, by_hand, atol=1e-6)


def test_code_flips(model, clf, xy):
    x, _ = xy
    assert torch.equal(code_flips(model, x, x.clone()), torch.zeros(8))
    other = 1 - x
    f = code_flips(model, x, other)
    assert f.shape == (8,) and f.min() >= 0 and f.max() <= 1 and f.max() > 0
    assert torch.allclose(f, (model.code(x) != model.code(other)).float().mean(1))
    assert torch.equal(LQVAE(model, clf).code_flips(x, other), f)


def test_from_zoo_untrained_names_the_training_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLAB_ZOO", str(tmp_path))
    monkeypatch.setenv("ADVLAB_ZOO_BUNDLED", "0")
    assert LQVAE.ZOO["fashion_mnist"] == {"classifier": "fmnist/cnn", "lqvae": "fmnist/lqvae"}
    with pytest.raises(zoo.NotTrainedError, match="advlab train fmnist/lqvae --profile full"):
        LQVAE.from_zoo("fashion_mnist")


@pytest.mark.parametrize("kwargs, arg", [(dict(relax="hard"), "relax"), (dict(penalty="spectral"), "penalty"),
                                         (dict(levels=1), "levels"), (dict(temperature=0.0), "temperature"),
                                         (dict(lipschitz_k=-1.0), "lipschitz_k"), (dict(kl_weight=float("nan")),
                                                                                   "kl_weight"),
                                         (dict(latent_dim=0), "latent_dim"), (dict(span=True), "span")])
def test_bad_config_raises_valueerror(kwargs, arg):
    with pytest.raises(ValueError, match=f"^{arg}: "):
        check_config(tiny_cfg(**kwargs))


def test_bad_arguments_raise_valueerror(model, clf, xy):
    x, _ = xy
    with pytest.raises(ValueError, match="^lqvae: "):
        LQVAE(nn.Linear(2, 2), clf)
    with pytest.raises(ValueError, match="^classifier: "):
        LQVAE(model, "fmnist/cnn")
    defense = LQVAE(model, clf)
    with pytest.raises(ValueError, match="^backward: "):
        defense.adaptive_model("exact")
    with pytest.raises(ValueError, match="^x: "):
        defense.purify(torch.full((2, 1, 28, 28), 2.0))
    with pytest.raises(ValueError, match="^x: "):
        defense.adaptive_model()(torch.full((2, 1, 28, 28), -1.0))
    with pytest.raises(ValueError, match="^x_adv: "):
        code_flips(model, x, x[:4])
    with pytest.raises(ValueError, match="^x_adv: "):
        code_flips(model, x, x + 2)
    with pytest.raises(ValueError, match="^relax: "):
        LQVAEModel(relax="ste")
    with pytest.raises(ValueError, match="^kind: "):
        gradient_norm(torch.zeros(2, 3), torch.zeros(2, 1, 28, 28), kind="spectral")
    with pytest.raises(ValueError, match="^iters: "):
        train_lqvae(tiny_cfg(iters=0), progress=False)
