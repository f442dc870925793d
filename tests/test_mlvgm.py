"""MLVGM purification (advlab.purifiers.mlvgm): the hierarchical VAE's shapes per level, the residual KL, the
per-level interpolation (a = 0 reconstructs from posterior means, a = 1 ignores x at that level), the
temperature of the prior draws, the schedules, gradients end to end, the Purifier contract, training
(seeded, resumable, free bits, warm-ups), the zoo entry through the CLI and the Bayesian-optimisation
search on a toy objective. Tiny widths, synthetic data."""
import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from advlab import data, evaluate, purifiers, zoo
from advlab.generative.losses import kl_divergence
from advlab.purifiers.base import Purifier
from advlab.purifiers.mlvgm import schedules
from advlab.purifiers.mlvgm.model import SIZES, HVAEModel, build_hvae, gaussian_kl
from advlab.purifiers.mlvgm.purifier import MLVGM, gaussian_blur
from advlab.purifiers.mlvgm.train import (HVAEConfig, beta_at, check_config, compute_losses, free_bits_kl,
                                          lr_factor, train_hvae)

pytestmark = pytest.mark.usefixtures("one_thread")

ZC = (2, 2, 1)


def tiny_model(seed=0) -> HVAEModel:
    """A tiny HVAE whose zero-initialised layers (posterior/prior heads, residual branches) are given
    random weights, so that x reaches every level as in a trained model."""
    torch.manual_seed(seed)
    m = HVAEModel(width=8, z_channels=ZC)
    with torch.no_grad():
        for p in m.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.3)
    return m.eval()


def tiny_cfg(**kw):
    base = dict(dataset="synthetic", width=8, z_channels=list(ZC), iters=4, batch_size=8, n_train=64, log_every=2,
                ckpt_every=2, eval_n=8, seed=0, device="cpu", lr_warmup=1, kl_warmup=2)
    return HVAEConfig(**(base | kw))


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def xy():
    return data.batch("synthetic", "test", n=6, seed=0)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- the model
def test_shapes_per_level(model, xy):
    x, _ = xy
    assert model.latent_shapes() == [(2, 4, 4), (2, 7, 7), (1, 14, 14)] and SIZES == (4, 7, 14)
    feats = model.features(x)
    assert [tuple(f.shape) for f in feats] == [(6, 8, 4, 4), (6, 8, 7, 7), (6, 4, 14, 14)]
    means = model.encode(x)
    assert [tuple(m.shape) for m in means] == [(6, 2, 4, 4), (6, 2, 7, 7), (6, 1, 14, 14)]
    out, levels = model.decode_mixed(x, [0.3, 0.6, 0.9], 0.6, gen(), return_latents=True)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert all(lv["z"].shape == lv["z_e"].shape == lv["z_s"].shape for lv in levels)
    s = model.sample(5, 0.6, gen())
    assert s.shape == (5, 1, 28, 28) and s.min() >= 0 and s.max() <= 1
    bpd = model.elbo(x, gen())
    assert bpd.shape == (6,) and torch.isfinite(bpd).all() and (bpd > 0).all()
    recon, kls, logits = model.loss_terms(x, gen())
    assert recon.shape == (6,) and [tuple(k.shape) for k in kls] == [(6, 2, 4, 4), (6, 2, 7, 7), (6, 1, 14, 14)]
    assert torch.allclose(bpd, (recon + sum(k.flatten(1).sum(1) for k in kls)) / (784 * math.log(2)))


def test_zoo_sizes_and_builder():
    m = build_hvae(width=64, z_channels=[8, 4, 2])
    assert isinstance(m, HVAEModel) and m.z_channels == (8, 4, 2)
    assert 300_000 < sum(p.numel() for p in m.parameters()) < 3_000_000
    with pytest.raises(ValueError, match="^z_channels: "):
        HVAEModel(z_channels=(1, 2))
    with pytest.raises(ValueError, match="^width: "):
        HVAEModel(width=2)


def test_residual_kl_is_the_standard_kl_at_the_top_and_zero_at_the_prior():
    torch.manual_seed(0)
    mu, logsig = torch.randn(4, 10), 0.5 * torch.randn(4, 10)
    kl = gaussian_kl(mu, logsig, torch.zeros_like(mu)).sum(1)
    assert torch.allclose(kl, kl_divergence(mu, 2 * logsig), atol=1e-5)
    assert torch.equal(gaussian_kl(torch.zeros(3), torch.zeros(3), torch.randn(3)), torch.zeros(3))
    # shifting both prior and posterior by the same mean leaves it unchanged; a wider prior lowers it
    lp = torch.full((4, 10), 0.7)
    assert (gaussian_kl(mu, logsig - 0.7, lp) >= 0).all()


def test_a_zero_reconstructs_from_posterior_means(model, xy):
    x, _ = xy
    with torch.no_grad():
        a0, levels = model.decode_mixed(x, [0, 0, 0], 0.6, gen(1), return_latents=True)
        assert torch.allclose(a0, model.reconstruct(x), atol=1e-6)
        assert torch.allclose(a0, model.decode_mixed(x, torch.zeros(3), 0.6, gen(2)), atol=1e-6)   # no noise
        for lv, m in zip(levels, model.encode(x)):
            assert torch.equal(lv["z"], lv["z_e"]) and torch.allclose(lv["z_e"], m, atol=1e-6)


def test_a_one_ignores_x_at_that_level(model, xy):
    x, _ = xy
    with torch.no_grad():
        # all levels at 1: an ancestral sample, whatever x
        ones = model.decode_mixed(x, [1, 1, 1], 0.6, gen(3))
        assert torch.allclose(ones, model.decode_mixed(torch.rand_like(x), [1, 1, 1], 0.6, gen(3)), atol=1e-6)
        assert torch.allclose(ones, model.sample(len(x), 0.6, gen(3)), atol=1e-6)
        # the finest level at 1: its posterior (the only place x enters level 3) no longer matters
        out, levels = model.decode_mixed(x, [0, 0, 1], 0.6, gen(4), return_latents=True)
        assert torch.equal(levels[2]["z"], levels[2]["z_s"])
        altered = tiny_model()
        altered.post_heads[2][1].weight.data.normal_(0, 1.0)
        assert torch.allclose(out, altered.decode_mixed(x, [0, 0, 1], 0.6, gen(4)), atol=1e-6)
        assert not torch.allclose(model.decode_mixed(x, [0, 0, 0], 0.6, gen(4)),
                                  altered.decode_mixed(x, [0, 0, 0], 0.6, gen(4)), atol=1e-4)
        # but the coarse levels still carry x
        assert not torch.allclose(out, model.decode_mixed(x.flip(0), [0, 0, 1], 0.6, gen(4)), atol=1e-4)


def test_interpolation_is_the_convex_mix(model, xy):
    x, _ = xy
    a = torch.tensor([0.25, 0.5, 0.8])
    with torch.no_grad():
        _, levels = model.decode_mixed(x, a, 0.6, gen(5), return_latents=True)
    for ai, lv in zip(a, levels):
        assert torch.allclose(lv["z"], (1 - ai) * lv["z_e"] + ai * lv["z_s"], atol=1e-6)


def test_temperature_scales_the_prior_draws(model, xy):
    x, _ = xy
    with torch.no_grad():          # a = 0: the path (so each level's prior) does not depend on the draws
        z = {t: model.decode_mixed(x, [0, 0, 0], t, gen(6), return_latents=True)[1] for t in (0.0, 0.5, 1.0)}
    for i in range(3):
        spread = {t: z[t][i]["z_s"] - z[0.0][i]["z_s"] for t in (0.5, 1.0)}          # T * sigma_p * eps
        assert spread[1.0].abs().max() > 0
        assert torch.allclose(spread[0.5], 0.5 * spread[1.0], atol=1e-5)
    top = model.decode_mixed(x, [1, 0, 0], 0.6, gen(7), return_latents=True)[1][0]["z_s"]
    ref = torch.randn(len(x), 2, 4, 4, generator=gen(7))                             # level 1: N(0, I)
    assert torch.allclose(top, 0.6 * ref, atol=1e-6)


def test_gradient_flows_end_to_end_to_the_input(model, xy, linear_clf):
    x, y = xy
    for kwargs in (dict(), dict(alphas="cosine", scale=0.7), dict(preprocess=("noise", 0.5)),
                   dict(preprocess=("blur", 1.0))):
        d = MLVGM(model, linear_clf, **kwargs)
        xr = x.clone().requires_grad_(True)
        g, = torch.autograd.grad(F.cross_entropy(d(xr), y), xr)
        assert torch.isfinite(g).all() and g.abs().sum() > 0, kwargs
    # every parameter of the encoder path gets a gradient too (posterior means are differentiable)
    xr = x.clone().requires_grad_(True)
    model.zero_grad()
    model.decode_mixed(xr, [0.3, 0.6, 0.9], 0.6, gen()).sum().backward()
    assert model.stem.weight.grad.abs().sum() > 0 and model.post_heads[0][1].weight.grad.abs().sum() > 0
    model.zero_grad()


# ----------------------------------------------------------------------------- schedules
def test_schedule_values():
    assert torch.allclose(schedules.linear(3), torch.tensor([1 / 3, 2 / 3, 1.0]))
    assert torch.allclose(schedules.cosine(3), torch.tensor([0.25, 0.75, 1.0]), atol=1e-6)
    assert torch.allclose(schedules.cosine(4), torch.tensor([(1 - math.cos(math.pi / 4)) / 2, 0.5,
                                                             (1 - math.cos(3 * math.pi / 4)) / 2, 1.0]), atol=1e-6)
    assert torch.allclose(schedules.resolve("linear", 3, scale=0.7), 0.7 * schedules.linear(3))
    assert torch.allclose(schedules.resolve([0, 0.5, 1], 3), torch.tensor([0, 0.5, 1.0]))
    starts = schedules.starting_points(3)
    assert len(starts) == 5 and torch.allclose(starts[3], 1 - schedules.linear(3))
    assert torch.allclose(starts[4], 1 - schedules.cosine(3)) and torch.equal(starts[2], torch.full((3,), 0.5))
    for bad, match in ((("nope", 3), "^alphas: "), (([0.1, 2.0, 0.3], 3), "^alphas: "), (([0.1, 0.2], 3), "^alphas: "),
                       ((torch.tensor([0.1, float("nan"), 0.2]), 3), "^alphas: ")):
        with pytest.raises(ValueError, match=match):
            schedules.resolve(*bad)
    with pytest.raises(ValueError, match="^scale: "):
        schedules.resolve("linear", 3, scale=1.5)


def test_learned_schedule_is_loaded_from_the_record(tmp_path, monkeypatch, model, linear_clf):
    missing = tmp_path / "none.json"
    with pytest.raises(FileNotFoundError, match="schedules search"):
        schedules.resolve("learned", 3, path=missing)
    rec = tmp_path / "s.json"
    rec.write_text(json.dumps({"alphas": [0.1, 0.4, 0.9], "history": []}))
    monkeypatch.setattr(schedules, "LEARNED_FILE", rec)
    d = MLVGM(model, linear_clf, alphas="learned")
    assert d.settings()["schedule"] == "learned" and d.settings()["alphas"] == [0.1, 0.4, 0.9]


# ----------------------------------------------------------------------------- the purifier
def test_purifier_contract(model, xy, linear_clf):
    x, y = xy
    d = MLVGM(model, linear_clf, seed=1)
    assert isinstance(d, Purifier) and d.stochastic and d.differentiable and d.backwards == ("exact",)
    assert d.adaptive_model() is d and purifiers.get("mlvgm") is MLVGM
    assert MLVGM.ZOO["fashion_mnist"] == {"classifier": "fmnist/cnn", "hvae": "fmnist/hvae"}
    p = d.purify(x)
    assert p.shape == x.shape and p.min() >= 0 and p.max() <= 1
    assert torch.equal(p, MLVGM(model, linear_clf, seed=1).purify(x))            # seeded
    assert not torch.equal(p, d.purify(x))                                         # fresh draws each call
    assert not torch.equal(p, MLVGM(model, linear_clf, seed=2).purify(x))
    d.reseed(1)
    assert torch.equal(p, d.purify(x))
    assert torch.equal(d.purify(x, gen(9)), MLVGM(model, linear_clf, seed=5).purify(x, gen(9)))
    d.reseed(1)
    with torch.no_grad():
        assert torch.allclose(d(x), linear_clf(p))                                 # classifier(purify(x))
    s = d.settings()
    assert s == {"seed": 1, "schedule": "linear", "alphas": [0.3333, 0.6667, 1.0], "scale": 1.0,
                 "temperature": 0.6, "preprocess": None}
    assert d.describe().startswith("MLVGM(seed=1, schedule='linear'")
    assert MLVGM(model, linear_clf, alphas=[0.1, 0.2, 0.3]).settings()["schedule"] == "custom"
    logits = d.draw_logits(x, 3, gen(0))
    assert logits.shape == (3, 6, 10) and torch.allclose(d.mean_logits(x, 3, gen(0)), logits.mean(0))
    assert not model.training                                                      # flags restored
    d.train()
    d.purify(x)
    assert all(m.training for m in d.hvae.modules())                               # ... whatever they were
    d.eval()


def test_preprocessing(model, xy, linear_clf):
    x, _ = xy
    from advlab.purifiers.mlvgm.purifier import add_l2_noise
    noisy = add_l2_noise(torch.full_like(x, 0.5), 0.3, gen())
    assert torch.allclose((noisy - 0.5).flatten(1).norm(dim=1), torch.full((6,), 0.3), atol=1e-5)
    blurred = gaussian_blur(x, 1.0)
    assert blurred.shape == x.shape and torch.allclose(blurred.mean(), x.mean(), atol=0.02)
    assert torch.allclose(gaussian_blur(torch.full_like(x, 0.3), 1.0), torch.full_like(x, 0.3), atol=1e-6)
    d = MLVGM(model, linear_clf, preprocess=("noise", 1.0), seed=0)
    assert d.settings()["preprocess"] == ("noise", 1.0) and torch.equal(d.purify(x), MLVGM(
        model, linear_clf, preprocess=("noise", 1.0), seed=0).purify(x))


@pytest.mark.parametrize("kwargs, match", [
    (dict(alphas="fast"), "^alphas: "), (dict(alphas=[0.5, 0.5]), "^alphas: "), (dict(scale=-0.1), "^scale: "),
    (dict(temperature=-1), "^temperature: "), (dict(temperature=float("inf")), "^temperature: "),
    (dict(preprocess=("jpeg", 1)), "^preprocess: "), (dict(preprocess=("blur", 0)), "^preprocess: "),
    (dict(preprocess="noise"), "^preprocess: "), (dict(seed="a"), "^seed: "),
])
def test_bad_arguments_raise_value_error_naming_them(model, linear_clf, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLVGM(model, linear_clf, **kwargs)


def test_bad_inputs(model, xy, linear_clf):
    x, _ = xy
    with pytest.raises(ValueError, match="^hvae: "):
        MLVGM(nn.Linear(2, 2), linear_clf)
    with pytest.raises(ValueError, match="^classifier: "):
        MLVGM(model, "clf")
    d = MLVGM(model, linear_clf)
    for bad in (x * 2, x[0], x.masked_fill(x > 0.5, float("nan"))):
        with pytest.raises(ValueError, match="^x: "):
            d.purify(bad)
    with pytest.raises(ValueError, match="^generator: "):
        d.purify(x, generator=3)
    with pytest.raises(ValueError, match="^k: "):
        d.draw_logits(x, 0)
    with pytest.raises(ValueError, match="^backward: "):
        d.adaptive_model("identity")
    with pytest.raises(ValueError, match="^alphas: "):
        model.decode_mixed(x, [0.1, 0.2, 1.2])


def test_defense_report_runs_with_eot(model, linear_clf):
    from advlab import attacks
    x, y = data.batch("synthetic", "test", n=8, seed=1)
    rep = evaluate.defense_report(MLVGM(model, linear_clf), x, y, attack=attacks.FGSM(eps=0.1), eot_iter=2,
                                  sanity_eps=(1.0,), sanity_n=4, sanity_margin=1.0)
    assert rep["stochastic"] is True and "eot_iter=2" in rep["adaptive"]["attack"]
    assert rep["adaptive_model"].startswith("defense end to end") and "MLVGM(" in rep["defense"]


# ----------------------------------------------------------------------------- training
def test_schedules_of_training_and_free_bits():
    cfg = tiny_cfg(iters=100, kl_warmup=10, lr_warmup=10, lr_final=0.1)
    assert beta_at(0, cfg) == pytest.approx(0.1) and beta_at(9, cfg) == 1.0 and beta_at(50, cfg) == 1.0
    assert beta_at(0, tiny_cfg(kl_warmup=0)) == 1.0
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(99, cfg) == pytest.approx(0.1, abs=0.01) and lr_factor(55, cfg) == pytest.approx(0.55)
    kl = torch.zeros(4, 2, 3, 3)
    kl[:, 0] = 1.0                                               # channel 0: 9 nats, channel 1: 0
    assert free_bits_kl(kl, 0.5).item() == pytest.approx(9 + 4.5)
    kl.requires_grad_(True)
    free_bits_kl(kl, 0.5).backward()
    assert kl.grad[:, 1].abs().sum() == 0 and kl.grad[:, 0].abs().sum() > 0     # below the floor: no gradient
    for bad, match in ((dict(free_bits=-1), "^free_bits: "), (dict(free_bits=[0.1, 0.2]), "^free_bits: "),
                       (dict(free_bits=[0.1, -0.2, 0.1]), "^free_bits: "), (dict(ema_decay=1.0), "^ema_decay: "),
                       (dict(z_channels=[1, 2]), "^z_channels: "), (dict(iters=0), "^iters: "),
                       (dict(lr=0), "^lr: ")):
        with pytest.raises(ValueError, match=match):
            check_config(tiny_cfg(**bad))


def test_losses_are_finite_and_consistent(model):
    x, _ = data.batch("synthetic", "train", n=8, seed=0)
    losses = compute_losses(model, x, 0.5, tiny_cfg(), gen())
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["kl"].item() == pytest.approx(sum(losses[f"kl{i}"].item() for i in (1, 2, 3)), rel=1e-5)
    assert losses["loss"].item() >= losses["recon"].item()
    # free bits per level: a floor of 1000 nats per coordinate on level 1 alone adds beta * 1000 * 32 coordinates
    high = compute_losses(model, x, 0.5, tiny_cfg(free_bits=[1000.0, 0.0, 0.0]), gen())
    low = compute_losses(model, x, 0.5, tiny_cfg(free_bits=[0.0, 0.0, 0.0]), gen())
    assert high["loss"].item() == pytest.approx(low["loss"].item() - 0.5 * low["kl1"].item() + 0.5 * 1000 * 32, rel=1e-5)


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_training_is_seeded_and_checkpoint_resume_is_exact(tmp_path):
    # lr_final=1: a constant lr after its one-step warm-up, so that a run of 2 iterations is the first half
    # of the run of 4 (the cosine's length otherwise depends on iters)
    cfg = lambda **kw: tiny_cfg(lr_final=1.0, **kw)   # noqa: E731
    a, _ = train_hvae(cfg(), checkpoint=tmp_path / "a.pt", progress=False)
    b, _ = train_hvae(cfg(), progress=False)
    c, _ = train_hvae(cfg(seed=1), progress=False)
    sa, sb, sc = _state(a), _state(b), _state(c)
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and not all(torch.equal(sa[k], sc[k]) for k in sa)
    train_hvae(cfg(iters=2), checkpoint=tmp_path / "r.pt", progress=False)           # stops after 2
    r, metrics = train_hvae(cfg(), checkpoint=tmp_path / "r.pt", progress=False)
    sr = _state(r)
    assert all(torch.equal(sa[k], sr[k]) for k in sa)
    assert [h["iter"] for h in metrics["history"]] == [2, 4] and metrics["weights"] == "ema"
    assert all(math.isfinite(metrics[k]) for k in ("recon_mse", "elbo_bpd")) and len(metrics["kl_per_level"]) == 3
    no_ema, m2 = train_hvae(cfg(ema_decay=0.0), progress=False)
    assert m2["weights"] == "last" and not all(torch.equal(sa[k], _state(no_ema)[k]) for k in sa)


def test_zoo_entry_trains_through_the_cli_and_loads(tmp_path, monkeypatch, linear_clf):
    from advlab import cli
    entry = zoo.REGISTRY["fmnist/hvae"]
    assert entry.trainer == "advlab.purifiers.mlvgm.train" and entry.builder.endswith("model:build_hvae")
    assert isinstance(zoo.build("fmnist/hvae"), HVAEModel)
    monkeypatch.setattr(entry, "train_quick", dict(iters=2, batch_size=4, n_train=32, log_every=1, ckpt_every=1,
                                                   eval_n=4, kl_warmup=1, lr_warmup=1))
    monkeypatch.setattr(entry, "arch_kwargs", dict(width=8, z_channels=[2, 2, 1]))
    monkeypatch.setattr(entry, "dataset", "synthetic")
    assert cli.main(["train", "fmnist/hvae", "--profile", "quick", "--out", str(tmp_path), "--device", "cpu"]) == 0
    rec = zoo.info("fmnist/hvae", root=tmp_path)
    assert rec["command"].startswith("advlab train fmnist/hvae") and "elbo_bpd" in rec["metrics"]
    assert rec["config"]["width"] == 8 and rec["config"]["z_channels"] == [2, 2, 1]
    back = zoo.load("fmnist/hvae", root=tmp_path)
    assert isinstance(back, HVAEModel) and back.z_channels == (2, 2, 1) and not back.training
    d = MLVGM(back, linear_clf)
    assert d.purify(data.batch("synthetic", "test", n=2)[0]).shape == (2, 1, 28, 28)


# ----------------------------------------------------------------------------- the search
def test_botorch_missing_names_the_extra(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "botorch", None)
    with pytest.raises(ImportError, match=r"advlab\[mlvgm\]"):
        schedules._botorch()


def test_bayes_opt_improves_on_a_toy_objective():
    pytest.importorskip("botorch")
    target = torch.tensor([0.2, 0.9])
    hist = schedules.bayes_opt(lambda a: -float((a - target).pow(2).sum()), 2, steps=3, seed=0, log=lambda s: None)
    assert [h["kind"] for h in hist] == ["start"] * 5 + ["bo"] * 3 and [h["step"] for h in hist] == list(range(8))
    assert all(0 <= v <= 1 for h in hist for v in h["alphas"])
    assert max(h["objective"] for h in hist[5:]) >= max(h["objective"] for h in hist[:5]) - 0.05


@pytest.mark.filterwarnings("ignore:Data .outcome observations. is not standardized")   # a toy: equal scores
def test_search_writes_a_record_the_purifier_loads(tmp_path, monkeypatch, model, linear_clf):
    pytest.importorskip("botorch")
    out = tmp_path / "search.json"
    rec = schedules.search(model, linear_clf, classifier_name="toy", dataset="synthetic", n_images=16, eps_l2=5.0,
                           eot=1, steps=1, out=out, log=lambda s: None)
    saved = json.loads(out.read_text())
    assert saved["alphas"] == rec["alphas"] and len(saved["history"]) == 6 and saved["sizes"]["eot"] == 1
    assert saved["objective"] == max(h["objective"] for h in saved["history"]) and saved["fooling_counts"]["n"] == 16
    monkeypatch.setattr(schedules, "LEARNED_FILE", out)
    assert MLVGM(model, linear_clf, alphas="learned").settings()["alphas"] == [round(a, 4) for a in rec["alphas"]]


def test_the_level_pieces_reproduce_decode_mixed(model, xy):
    x, _ = xy
    a = torch.tensor([0.2, 0.6, 0.9])
    feats, s = model.features(x), model.start(len(x))
    g = gen(5)
    for i in range(model.n_levels):
        z_e, z_s = model.level_latents(i, s, feats[i], 0.6, g)
        assert z_e.shape == (len(x), *model.latent_shapes()[i]) == z_s.shape
        s = model.advance(i, s, (1 - a[i]) * z_e + a[i] * z_s)
    assert torch.equal(model.to_image(s), model.decode_mixed(x, a, 0.6, gen(5)))


def test_hvae_report_says_over_how_many_calls_it_trained():
    """train_iterations counts seconds over all calls of a chunked run: the report says so; a record made
    before calls were counted (the shipped one) keeps its 'last (resumed) call' wording."""
    import json
    from advlab import resources
    from advlab.purifiers.mlvgm.train import format_hvae_report
    rep = json.loads((resources.results_dir() / "hvae_fmnist.json").read_text())
    assert "wall clock in the last (resumed) call" in format_hvae_report(rep)
    rep["training"]["calls"] = 3
    assert f"{rep['training']['train_seconds']} s wall clock over 3 call(s)" in format_hvae_report(rep)
