"""CMAP (advlab.purifiers.cmap): the consistency function's parameterisation (the boundary condition
f(x, sigma_min) = x, the Karras noise levels), consistency training (the curriculum, the lognormal index
distribution, the pseudo-Huber distance, seeded and exactly resumable training, the zoo entry through the
CLI), and the purifier (the latent search lowers its objective, the distribution term keeps the latents'
statistics, the vote, the zero gradient of forward, the BPDA model, bad arguments). Tiny widths,
synthetic data."""
import math

import pytest
import torch
import torch.nn as nn
from pytorch_msssim import ssim

from advlab import data, purifiers, zoo
from advlab.purifiers.base import Purifier
from advlab.purifiers.cmap.model import SIGMA_MAX, SIGMA_MIN, ConsistencyModel, karras_sigmas, scalings
from advlab.purifiers.cmap.purifier import CMAP, distribution_penalty, reconstruction_loss
from advlab.purifiers.cmap.train import (CTConfig, check_config, ct_loss, index_probabilities, n_steps, pseudo_huber,
                                         train_consistency)
from advlab.purifiers.voting import aggregate

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed=0) -> ConsistencyModel:
    """A tiny consistency model whose zero-initialised output layers get random weights."""
    torch.manual_seed(seed)
    m = ConsistencyModel(width=8, emb_dim=16)
    with torch.no_grad():
        for p in m.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.2)
    return m.eval()


def tiny_cfg(**kw):
    base = dict(dataset="synthetic", width=8, emb_dim=16, iters=4, batch_size=8, n_train=32, log_every=2,
                ckpt_every=2, eval_n=8, seed=0, device="cpu")
    return CTConfig(**(base | kw))


@pytest.fixture(scope="module")
def xy():
    return data.batch("synthetic", "test", n=4, seed=0)


# ----------------------------------------------------------------------------- the model
def test_boundary_condition_and_scalings(xy):
    m = tiny_model()
    x = 2 * xy[0] - 1
    assert torch.allclose(m(x, SIGMA_MIN), x, atol=1e-6)                 # f(x, sigma_min) = x
    c_skip, c_out, _ = scalings(torch.tensor([SIGMA_MIN, 1.0, SIGMA_MAX], dtype=torch.float64))
    assert c_skip[0] == 1 and c_out[0] == 0 and c_skip[2] < 1e-4
    s = karras_sigmas(11)
    assert math.isclose(s[0].item(), SIGMA_MIN) and math.isclose(s[-1].item(), SIGMA_MAX) and (s.diff() > 0).all()


def test_generate_and_sample(xy):
    m = tiny_model()
    z = m.draw_latents(3, torch.Generator().manual_seed(0))
    assert z.shape == (3, 1, 28, 28) and 40 < z.std().item() < 120                 # N(0, 80^2)
    zr = z.clone().requires_grad_(True)
    out = m.generate(zr)
    assert out.shape == (3, 1, 28, 28) and out.min() >= 0 and out.max() <= 1
    out.sum().backward()
    assert zr.grad.abs().sum() > 0
    one = m.sample(2, generator=torch.Generator().manual_seed(1))
    two = m.sample(2, (80.0, 0.8), generator=torch.Generator().manual_seed(1))
    assert one.shape == two.shape == (2, 1, 28, 28) and not torch.equal(one, two)
    for bad in ((), (10.0,), (80.0, 90.0), (80.0, 0.001)):
        with pytest.raises(ValueError, match="^sigmas: "):
            m.sample(2, bad)
    with pytest.raises(ValueError, match="^dropout: "):
        ConsistencyModel(dropout=1.0)


# ----------------------------------------------------------------------------- consistency training
def test_curriculum_and_noise_schedule():
    steps = [n_steps(i, 7000) for i in range(0, 7000, 1000)]
    assert steps[0] == 11 and steps == sorted(steps) and n_steps(6999, 7000) == 1281
    assert all(b in (a, 2 * a - 1) for a, b in zip(steps, steps[1:]))              # doubling of N - 1
    p = index_probabilities(karras_sigmas(161))
    assert math.isclose(p.sum().item(), 1.0) and (p >= 0).all()
    s = karras_sigmas(161)
    peak = s[p.argmax() + 1].item()
    assert 0.05 < peak < 1.5                                                       # lognormal(-1.1, 2.0) mass


def test_pseudo_huber():
    a = torch.zeros(2, 1, 28, 28)
    b = a.clone()
    b[1] += 1.0
    d = pseudo_huber(a, b)
    assert abs(d[0].item()) < 1e-8 and math.isclose(d[1].item(), 28 - 0.00054 * 28, rel_tol=1e-3)   # ~ the L2 distance


def test_ct_loss_is_finite_and_grad_reaches_the_student_only(xy):
    m = tiny_model().train()
    out = ct_loss(m, xy[0], 0, 100, torch.Generator().manual_seed(0))
    assert math.isfinite(out["loss"].item()) and out["n_steps"] == 11
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_cpu_bf16_autocasts_the_network_and_keeps_the_loss_in_float32(xy):
    m = tiny_model().train()
    conv_out = []
    for mod in m.modules():
        if isinstance(mod, torch.nn.Conv2d):
            mod.register_forward_hook(lambda mod, inp, o: conv_out.append(o.dtype))
    out = ct_loss(m, xy[0], 0, 100, torch.Generator().manual_seed(0), use_amp=True)
    assert out["loss"].dtype == torch.float32 and math.isfinite(out["loss"].item())
    assert conv_out and set(conv_out) == {torch.bfloat16}
    conv_out.clear()
    ct_loss(m, xy[0], 0, 100, torch.Generator().manual_seed(0))
    assert set(conv_out) == {torch.float32}


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_training_is_seeded_and_resume_is_exact(tmp_path):
    a, ma = train_consistency(tiny_cfg(), checkpoint=tmp_path / "a.pt", progress=False)
    b, _ = train_consistency(tiny_cfg(), progress=False)
    c, _ = train_consistency(tiny_cfg(seed=1), progress=False)
    sa, sb, sc = _state(a), _state(b), _state(c)
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and not all(torch.equal(sa[k], sc[k]) for k in sa)
    train_consistency(tiny_cfg(iters=2), checkpoint=tmp_path / "r.pt", progress=False)
    r, mr = train_consistency(tiny_cfg(), checkpoint=tmp_path / "r.pt", progress=False)
    assert all(torch.equal(sa[k], _state(r)[k]) for k in sa)
    assert [h["iter"] for h in mr["history"]] == [2, 4] and mr["weights"] == "ema" and not r.training
    assert "samples" not in ma                                   # synthetic data: no zoo classifier judges them
    for kw, name in ((dict(iters=0), "iters"), (dict(lr=0.0), "lr"), (dict(dropout=1.5), "dropout"),
                     (dict(cpu_bf16="yes"), "cpu_bf16")):
        with pytest.raises(ValueError, match=f"^{name}: "):
            check_config(tiny_cfg(**kw))


def test_zoo_entry_trains_through_the_cli_and_loads(tmp_path, monkeypatch):
    from advlab import cli
    entry = zoo.REGISTRY["fmnist/consistency"]
    assert entry.trainer == "advlab.purifiers.cmap.train" and isinstance(zoo.build("fmnist/consistency"), ConsistencyModel)
    monkeypatch.setattr(entry, "train_quick", dict(iters=2, batch_size=4, n_train=16, log_every=1, ckpt_every=1, eval_n=4))
    monkeypatch.setattr(entry, "arch_kwargs", dict(width=8, emb_dim=16, dropout=0.0))
    monkeypatch.setattr(entry, "dataset", "synthetic")
    assert cli.main(["train", "fmnist/consistency", "--profile", "quick", "--out", str(tmp_path), "--device", "cpu"]) == 0
    rec = zoo.info("fmnist/consistency", root=tmp_path)
    assert rec["command"].startswith("advlab train fmnist/consistency") and rec["config"]["width"] == 8
    back = zoo.load("fmnist/consistency", root=tmp_path)
    assert isinstance(back, ConsistencyModel) and back.width == 8 and not back.training


# ----------------------------------------------------------------------------- the purifier
class LinearClf(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.lin = nn.Linear(784, 10)

    def forward(self, x):
        return self.lin(x.flatten(1))


def test_losses_match_their_definitions(xy):
    x = xy[0]
    y = (x + 0.1).clamp(0, 1)
    want = (y - x).abs().flatten(1).mean(1) + 0.5 * (1 - ssim(y, x, data_range=1.0, size_average=False))
    assert torch.allclose(reconstruction_loss(y, x, 0.5), want)
    u = torch.randn(5, 3, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 + 0.5
    flat = u[:, 1].flatten()
    assert math.isclose(distribution_penalty(u)[1].item(), flat.mean().item() ** 2 + (flat.var().item() - 1) ** 2,
                        rel_tol=1e-4)


def test_search_lowers_its_objective_and_is_seeded(xy):
    d = CMAP(tiny_model(), LinearClf(), k=3, iters=15, lr=0.1, seed=2).eval()
    res = d.search(xy[0])
    assert res.images.shape == (3, 4, 1, 28, 28) == res.u.shape and res.loss.shape == (3, 4)
    assert res.curve.shape == (15, 4) and (res.curve[-1] < res.curve[0]).all()
    assert res.images.min() >= 0 and res.images.max() <= 1
    again = CMAP(tiny_model(), LinearClf(), k=3, iters=15, lr=0.1, seed=2).eval().search(xy[0])
    assert torch.equal(res.images, again.images)
    assert not torch.equal(res.images, d.search(xy[0]).images)                   # fresh latents on the next call


def test_trace_follows_the_search_step_by_step(xy):
    """trace gives the same result as search with the same draws, one row per step (0..iters), whose terms add
    up to the search's objective curve, and the K images at the requested steps."""
    x = xy[0][:2]
    d = CMAP(tiny_model(), LinearClf(), k=3, iters=6, lr=0.1, lam=0.5, beta=2.0, seed=0).eval()
    tr = d.trace(x, at=(0, 2, 6, 50), generator=torch.Generator().manual_seed(5))
    res = d.search(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(tr["result"].images, res.images) and torch.allclose(tr["result"].curve, res.curve)
    assert tr["mae"].shape == (7, 3, 2) == tr["ssim_term"].shape and tr["dist"].shape == (7, 2)
    objective = (tr["mae"] + 0.5 * tr["ssim_term"]).mean(1) + 2.0 * tr["dist"]      # (7, 2)
    assert torch.allclose(objective[:-1], res.curve, atol=1e-5)
    assert torch.allclose(tr["mae"][-1] + 0.5 * tr["ssim_term"][-1], res.loss, atol=1e-5)
    assert sorted(tr["snapshots"]) == [0, 2, 6] and torch.equal(tr["snapshots"][6], res.images)
    assert torch.allclose(tr["dist"], tr["mean_u"] ** 2 + (tr["var_u"] - 1) ** 2, atol=1e-5)
    with pytest.raises(ValueError, match="x: trace"):
        CMAP(tiny_model(), LinearClf(), k=2, iters=1, batch_size=1).trace(xy[0])


def test_the_distribution_term_keeps_the_latents_statistics(xy):
    kw = dict(k=4, iters=25, lr=0.3, seed=0)
    free = CMAP(tiny_model(), LinearClf(), beta=0.0, **kw).eval().search(xy[0])
    held = CMAP(tiny_model(), LinearClf(), beta=50.0, **kw).eval().search(xy[0])
    assert distribution_penalty(held.u).mean() < distribution_penalty(free.u).mean()


def test_vote_forward_zero_gradient_and_bpda(xy):
    x, _ = xy
    d = CMAP(tiny_model(), LinearClf(), k=3, iters=3, seed=1).eval()
    assert isinstance(d, Purifier) and d.stochastic and not d.differentiable and d.backwards == ("identity",)
    assert purifiers.get("cmap") is CMAP
    d.reseed(1)
    scores = d(x)
    d.reseed(1)
    assert torch.equal(scores, aggregate(d.draw_logits(x), "vote"))
    xr = x.clone().requires_grad_(True)
    d.reseed(1)
    d(xr).sum().backward()
    assert xr.grad is not None and xr.grad.abs().sum() == 0                       # what autograd sees: nothing
    am = d.adaptive_model()
    xr = x.clone().requires_grad_(True)
    d.reseed(1)
    out = am(xr)
    assert torch.equal(out.argmax(1), scores.argmax(1))                            # the same decisions
    torch.nn.functional.cross_entropy(out, scores.argmax(1)).backward()
    assert xr.grad.abs().sum() > 0
    d.reseed(1)
    assert d.purify(x).shape == x.shape


@pytest.mark.parametrize("kwargs, name", [(dict(k=0), "k"), (dict(iters=-1), "iters"), (dict(lr=0), "lr"),
                                          (dict(lam=-1.0), "lam"), (dict(beta=float("nan")), "beta"),
                                          (dict(batch_size=0), "batch_size")])
def test_bad_arguments_name_them(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}: "):
        CMAP(tiny_model(), LinearClf(), **kwargs)
    with pytest.raises(ValueError, match="^generator: "):
        CMAP(LinearClf(), LinearClf())


def test_from_zoo_untrained_names_the_training_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLAB_ZOO", str(tmp_path))
    monkeypatch.setenv("ADVLAB_ZOO_BUNDLED", "0")
    with pytest.raises(zoo.NotTrainedError, match="advlab train fmnist/consistency --profile full"):
        CMAP.from_zoo("fashion_mnist")
