"""CARSO (advlab.purifiers.carso): the representation-conditional VAE's shapes and hooks, the condition
taken without gradient in training and with it in the adaptive model, the loss against the clean image,
the beta and LR schedules, adversarially balanced batches (online and from the cached pool), seeded and
resumable training, the zoo entry through the CLI, and the defense's Purifier contract (seeded draws,
CARSO's aggregation, the exact and mean_probs backwards). Tiny widths and a tiny CNN on synthetic data."""
import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from advlab import data, models, purifiers, zoo
from advlab.purifiers import voting
from advlab.purifiers.base import Purifier
from advlab.purifiers.carso import model as carso_model
from advlab.purifiers.carso import train as carso_train
from advlab.purifiers.carso.model import (SMALLCNN_LAYERS, SMALLCNN_SHAPES, CARSOModel, classifier_features,
                                          feature_shapes)
from advlab.purifiers.carso.purifier import CARSO
from advlab.purifiers.carso.train import (SETTINGS, CARSOConfig, balanced_batch, beta_at, build_pool, check_config,
                                          compute_losses, lr_at, make_attack, pool_batch, split_counts, train_carso)

pytestmark = pytest.mark.usefixtures("one_thread")

LAYERS = ("features.0", "features.4")
SHAPES = ((4, 28, 28), (8, 14, 14))


class TinyCNN(nn.Module):
    """Two convs (the conditioning layers), BN, pooling, a linear head: SmallCNN's pattern, tiny."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))   # (8, 7, 7)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 7 * 7, 10))

    def forward(self, x):
        return self.head(self.features(x))


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return CARSOModel(SHAPES, LAYERS, latent_dim=8, fc_repr=16, width=8, enc_width=2)


def tiny_cfg(**kw):
    base = dict(dataset="synthetic", layers=list(LAYERS), condition_shapes=[list(s) for s in SHAPES], latent_dim=8,
                fc_repr=16, width=8, enc_width=2, pgd_steps=3, iters=4, batch_size=8, n_train=64, log_every=2,
                ckpt_every=2, eval_n=8, seed=0, device="cpu")
    return CARSOConfig(**(base | kw))


@pytest.fixture(scope="module")
def clf():
    torch.manual_seed(3)
    return TinyCNN().eval()


@pytest.fixture(scope="module")
def model():
    return tiny_model().eval()


@pytest.fixture(scope="module")
def xy():
    return data.batch("synthetic", "test", n=8, seed=0)


# ----------------------------------------------------------------------------- model
def test_smallcnn_layers_and_the_zoo_sizes():
    net = models.SmallCNN()
    assert feature_shapes(net, SMALLCNN_LAYERS) == SMALLCNN_SHAPES
    m = CARSOModel()
    assert [c.out_features for c in m.compressors] == [4 * 22 * 22, 8 * 8 * 8, 8 * 8 * 8]
    n = sum(p.numel() for p in m.parameters())
    assert 1_000_000 < n < 3_000_000 and m.inference_parameters() < n
    x = torch.rand(2, 1, 28, 28)
    feats, logits = classifier_features(net.eval(), x, SMALLCNN_LAYERS)
    m.eval()
    c = m.condition(feats)
    assert c.shape == (2, 512) and logits.shape == (2, 10)
    assert m.decode(torch.randn(2, 64), c).shape == (2, 1, 28, 28)


def test_shapes(model, clf, xy):
    x, _ = xy
    feats, logits = classifier_features(clf, x, LAYERS)
    assert [tuple(f.shape) for f in feats] == [(8, *s) for s in SHAPES] and logits.shape == (8, 10)
    assert torch.equal(logits, clf(x))
    c = model.condition(feats)
    mu, logvar = model.encode(x, c)
    assert c.shape == (8, 16) and mu.shape == logvar.shape == (8, 8)
    rec_logits, mu2, _ = model(x, feats, torch.Generator().manual_seed(0))
    assert rec_logits.shape == x.shape and torch.allclose(mu, mu2)
    out = model.decode(torch.randn(8, 8) * 30, c)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_hooks_refuse_unknown_and_in_place_modified_layers(clf, xy):
    x, _ = xy
    with pytest.raises(ValueError, match="^layers: .*not sub-modules"):
        classifier_features(clf, x, ("features.9",))
    with pytest.raises(ValueError, match="^layers: .*in place"):      # BN then ReLU(inplace=True)
        classifier_features(models.SmallCNN().eval(), torch.rand(2, 1, 28, 28), ("features.1",))
    assert not clf.features[0]._forward_hooks                          # hooks removed


def test_condition_has_no_gradient_in_training_and_has_one_in_the_adaptive_model(monkeypatch, model, clf, xy):
    x, _ = xy
    seen = []

    def spy(classifier, inputs, layers):
        feats, logits = classifier_features(classifier, inputs, layers)
        seen.append(all(f.requires_grad for f in feats))
        return feats, logits

    monkeypatch.setattr(carso_train, "classifier_features", spy)
    monkeypatch.setattr(carso_model, "classifier_features", spy)
    m = tiny_model().train()
    inputs = x.clone().requires_grad_(True)
    losses = compute_losses(m, clf, inputs, x, beta=1.0)
    losses["loss"].backward()
    assert seen == [False]                                            # training: no graph to the classifier
    assert all(p.grad is None for p in clf.parameters())
    assert all(p.grad is not None for p in m.parameters())            # the CVAE learns, the encoder included
    defense = CARSO(model, clf, n_samples=3).eval()
    seen.clear()
    g, = torch.autograd.grad(defense.adaptive_model()(inputs).logsumexp(1).sum() - defense(inputs)[:, 0].sum(), inputs)
    assert seen and all(seen)                                         # adaptive: the condition carries the gradient
    assert g.abs().sum() > 0


def test_loss_targets_the_clean_image(model, clf, xy):
    x, _ = xy
    m = tiny_model().train()
    x_adv = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    losses = compute_losses(m, clf, x_adv, x, beta=0.5, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        feats, _ = classifier_features(clf, x_adv, LAYERS)
    logits, mu, logvar = m(x_adv, feats, torch.Generator().manual_seed(2))
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)         # against the target
    kl = (0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)).mean()
    assert torch.allclose(losses["rec"], bce, rtol=1e-5) and torch.allclose(losses["kl"], kl, rtol=1e-5)
    assert torch.allclose(losses["loss"], bce + 0.5 * kl, rtol=1e-5)
    against_input = F.binary_cross_entropy_with_logits(logits, x_adv, reduction="sum") / len(x)
    assert (losses["rec"] - against_input).abs() > 1e-4 * bce                         # not the input


# ----------------------------------------------------------------------------- schedules
def test_beta_schedule_boundaries():
    assert beta_at(0, 1000) == 0 and beta_at(124, 1000) == 0 and beta_at(125, 1000) == 0   # 0 for the first 12.5%
    assert beta_at(145, 1000) == pytest.approx(0.5) and beta_at(165, 1000) == 1             # linear over the next 4%
    assert beta_at(999, 1000) == 1 and beta_at(130, 1000) == pytest.approx(0.125)
    assert beta_at(10, 100, start=0.1, ramp=0.0) == 1 and beta_at(9, 100, start=0.1, ramp=0.0) == 0
    assert lr_at(0, 800) == pytest.approx(1 / 100) and lr_at(99, 800) == 1 and lr_at(199, 800) == 1
    assert lr_at(200, 800) == 1 and lr_at(500, 800) == pytest.approx(0.5) and lr_at(799, 800) == pytest.approx(1 / 600)


def test_training_logs_the_schedules(clf):
    _, metrics = train_carso(tiny_cfg(iters=8, log_every=1, beta_start=0.25, beta_ramp=0.25, pool="online"),
                             classifier=clf, progress=False)
    assert [h["beta"] for h in metrics["history"]] == [0, 0, 0, 0.5, 1, 1, 1, 1]
    lrs = [h["lr"] for h in metrics["history"]]                     # after each step: warm-up 1 it, plateau 1 it
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(0)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


# ----------------------------------------------------------------------------- balanced batches
def test_split_counts_and_the_four_attack_settings():
    assert split_counts(64, 0.5) == [32, 8, 8, 8, 8]
    assert split_counts(10, 0.5) == [5, 2, 1, 1, 1] and split_counts(8, 0.0) == [8, 0, 0, 0, 0]
    assert split_counts(8, 1.0) == [0, 2, 2, 2, 2]
    cfg = CARSOConfig()
    kinds = [(type(a).__name__, a.eps, getattr(a, "steps", 1), getattr(a, "alpha", None), getattr(a, "random_start", None))
             for a in (make_attack(k, cfg) for k in (1, 2, 3, 4))]
    assert kinds == [("PGD", 0.05, 40, 0.01, True), ("PGD", 0.1, 40, 0.01, True), ("FGSM", 0.05, 1, None, None),
                     ("FGSM", 0.1, 1, None, None)]
    assert [s[0] for s in SETTINGS] == ["pgd_half", "pgd_full", "fgsm_half", "fgsm_full"]


def _check_composition(inputs, targets, kinds, counts, eps):
    assert [int((kinds == k).sum()) for k in range(5)] == counts
    d = (inputs - targets).flatten(1).abs().amax(1)
    assert torch.equal(inputs[kinds == 0], targets[kinds == 0])            # clean rows untouched
    for k, (_, _, scale) in enumerate(SETTINGS, 1):
        rows = kinds == k
        assert (d[rows] <= eps * scale + 1e-6).all()                          # inside its own eps ball
        assert (d[rows] > 0).all()                                            # and perturbed
    assert inputs.min() >= 0 and inputs.max() <= 1


def test_online_balanced_batch(clf):
    x, y = data.batch("synthetic", "train", n=16, seed=0)
    cfg = tiny_cfg(adv_fraction=0.5)
    g = torch.Generator().manual_seed(0)
    inputs, targets, kinds = balanced_batch(clf, x, y, cfg, g)
    assert torch.equal(targets, x)                                           # the target is the clean image
    _check_composition(inputs, targets, kinds, [8, 2, 2, 2, 2], cfg.eps)
    fgsm_full = kinds == 4              # FGSM at eps moves each interior pixel with a nonzero gradient by eps
    step = (inputs - targets)[fgsm_full]
    moved = (targets[fgsm_full] > 0.1) & (targets[fgsm_full] < 0.9) & (step != 0)
    assert moved.float().mean() > 0.3
    assert torch.allclose(step[moved].abs(), torch.full_like(step[moved], 0.1), atol=1e-6)
    again = balanced_batch(clf, x, y, cfg, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((inputs, targets, kinds), again))


def test_pool_is_cached_resumable_and_batches_are_balanced(tmp_path, clf, monkeypatch):
    x, y = data.batch("synthetic", "train", n=40, seed=0)
    cfg = tiny_cfg(pool="precomputed", pool_pgd_n=6, pool_fgsm_n=10, pool_chunk=4, pool_dir=str(tmp_path),
                   batch_size=12, adv_fraction=2 / 3)
    pool, info = build_pool(clf, x, y, cfg, progress=False)
    assert info["sizes"] == {"pgd_half": 6, "pgd_full": 6, "fgsm_half": 10, "fgsm_full": 10}
    assert len(list((tmp_path).glob("*/*.safetensors"))) == 2 * 2 + 2 * 3
    for k, (index, x_adv) in pool.items():
        scale = SETTINGS[k - 1][2]
        assert (x_adv - x[index]).abs().amax() <= cfg.eps * scale + 1e-6 and len(set(index.tolist())) == len(index)
    # a second call reads every chunk back and crafts nothing; a lost chunk is crafted again
    monkeypatch.setattr(carso_train, "make_attack", lambda *a, **k: pytest.fail("crafted a cached chunk"))
    again, _ = build_pool(clf, x, y, cfg, progress=False)
    assert all(torch.equal(pool[k][1], again[k][1]) for k in pool)
    monkeypatch.undo()
    next(tmp_path.glob("*/pgd_full_000004.safetensors")).unlink()
    third, _ = build_pool(clf, x, y, cfg, progress=False)
    assert torch.equal(third[2][1], pool[2][1])
    inputs, targets, kinds = pool_batch(pool, x, cfg, torch.Generator().manual_seed(0))
    _check_composition(inputs, targets, kinds, [4, 2, 2, 2, 2], cfg.eps)
    for k in (1, 2, 3, 4):                                                     # targets: the clean originals
        index, x_adv = pool[k]
        for inp, tgt in zip(inputs[kinds == k], targets[kinds == k]):
            j = next(i for i in range(len(index)) if torch.equal(x_adv[i], inp))
            assert torch.equal(tgt, x[index[j]])


# ----------------------------------------------------------------------------- training
def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_training_is_seeded_resumable_and_learns(tmp_path, clf, monkeypatch):
    pool_dir = str(tmp_path / "pool")
    cfg = lambda **kw: tiny_cfg(pool="precomputed", pool_pgd_n=8, pool_fgsm_n=8, pool_chunk=8,  # noqa: E731
                                pool_dir=pool_dir, **kw)
    a, ma = train_carso(cfg(), classifier=clf, checkpoint=tmp_path / "a.pt", progress=False)
    b, _ = train_carso(cfg(), classifier=clf, progress=False)
    c, _ = train_carso(cfg(seed=1), classifier=clf, progress=False)
    sa, sb, sc = _state(a), _state(b), _state(c)
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and not all(torch.equal(sa[k], sc[k]) for k in sa)
    calls, real = [], carso_train.compute_losses

    def crash_at_third(*args, **kwargs):                   # the run dies in iteration 3, after the checkpoint at 2
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(carso_train, "compute_losses", crash_at_third)
    with pytest.raises(RuntimeError, match="killed"):
        train_carso(cfg(), classifier=clf, checkpoint=tmp_path / "r.pt", progress=False)
    monkeypatch.undo()
    r, mr = train_carso(cfg(), classifier=clf, checkpoint=tmp_path / "r.pt", progress=False)
    assert all(torch.equal(sa[k], _state(r)[k]) for k in sa) and [h["iter"] for h in mr["history"]] == [2, 4]
    assert ma["pool"]["mode"] == "precomputed" and ma["pool"]["sizes"]["pgd_full"] == 8
    assert "given TinyCNN" in ma["classifier"] and not a.training
    for key in ("recon_mse", "recon_acc", "classifier_acc", "carso_acc"):
        assert math.isfinite(ma[key])
    _, long = train_carso(cfg(iters=40, log_every=10, lr=3e-3), classifier=clf, progress=False)
    rec = [h["rec"] for h in long["history"]]
    assert rec[-1] < rec[0] - 2            # (the noise of the synthetic images keeps the BCE high)


def test_mismatched_classifier_and_bad_config_raise(clf):
    with pytest.raises(ValueError, match="^condition_shapes: "):
        train_carso(tiny_cfg(condition_shapes=[[4, 28, 28], [8, 7, 7]]), classifier=clf, progress=False)
    for kw, arg in ((dict(pool="disk"), "pool"), (dict(adv_fraction=1.5), "adv_fraction"), (dict(iters=0), "iters"),
                    (dict(eps=-0.1), "eps"), (dict(layers=["features.0"]), "layers"),
                    (dict(warmup=0.7, plateau=0.5), "plateau"), (dict(beta_ramp=float("nan")), "beta_ramp")):
        with pytest.raises(ValueError, match=f"^{arg}: "):
            check_config(tiny_cfg(**kw))


def test_zoo_entry_builds_trains_through_the_cli_and_loads(tmp_path, monkeypatch):
    from advlab import cli
    entry = zoo.REGISTRY["fmnist/carso"]
    assert entry.trainer == "advlab.purifiers.carso.train" and entry.train["pool"] == "precomputed"
    built = zoo.build("fmnist/carso")
    assert isinstance(built, CARSOModel) and built.layers == SMALLCNN_LAYERS[1:]       # the stem left out (the search)
    assert built.condition_shapes == SMALLCNN_SHAPES[1:]
    assert 1_000_000 < sum(p.numel() for p in built.parameters()) < 3_000_000
    assert purifiers.get("carso") is CARSO and CARSO.ZOO["fashion_mnist"] == {"classifier": "fmnist/pgd-at",
                                                                               "cvae": "fmnist/carso"}
    small = dict(condition_shapes=[list(s) for s in SHAPES], layers=list(LAYERS), latent_dim=8, fc_repr=16, width=8,
                 enc_width=2)
    monkeypatch.setattr(entry, "arch_kwargs", small)
    monkeypatch.setattr(entry, "dataset", "synthetic")
    monkeypatch.setattr(entry, "train_quick", dict(iters=2, batch_size=8, n_train=32, pool_pgd_n=4, pool_fgsm_n=4,
                                                   pool_chunk=4, pgd_steps=2, log_every=1, ckpt_every=1, eval_n=4,
                                                   pool_dir=str(tmp_path / "pool")))
    torch.manual_seed(0)
    tiny = TinyCNN().eval()
    monkeypatch.setattr(carso_train, "_load_classifier", lambda cfg, device: tiny)
    assert cli.main(["train", "fmnist/carso", "--profile", "quick", "--out", str(tmp_path), "--device", "cpu"]) == 0
    rec = zoo.info("fmnist/carso", root=tmp_path)
    assert rec["command"].startswith("advlab train fmnist/carso") and rec["metrics"]["pool"]["mode"] == "precomputed"
    assert rec["config"]["iters"] == 2 and rec["config"]["width"] == 8 and "carso_acc" in rec["metrics"]
    back = zoo.load("fmnist/carso", root=tmp_path)
    assert isinstance(back, CARSOModel) and back.width == 8 and back.layers == LAYERS and not back.training
    defense = CARSO(back, tiny)
    assert defense(data.batch("synthetic", "test", n=2)[0]).shape == (2, 10)
    # --set layers alone: the shapes come from the classifier and are recorded (they did not, and failed)
    one = tmp_path / "one_layer"
    assert cli.main(["train", "fmnist/carso", "--profile", "quick", "--out", str(one), "--device", "cpu",
                     "--set", f'layers=["{LAYERS[-1]}"]']) == 0
    rec = zoo.info("fmnist/carso", root=one)
    assert rec["config"]["layers"] == [LAYERS[-1]] and rec["config"]["condition_shapes"] == [list(SHAPES[-1])]
    back = zoo.load("fmnist/carso", root=one)
    assert back.layers == (LAYERS[-1],) and CARSO(back, tiny)(data.batch("synthetic", "test", n=2)[0]).shape == (2, 10)


def test_from_zoo_untrained_names_the_training_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLAB_ZOO", str(tmp_path))
    monkeypatch.setenv("ADVLAB_ZOO_BUNDLED", "0")
    with pytest.raises(zoo.NotTrainedError, match="advlab train fmnist/carso --profile full"):
        CARSO.from_zoo("fashion_mnist")


# ----------------------------------------------------------------------------- the defense
def test_defense_keeps_the_purifier_contract(model, clf, xy):
    x, _ = xy
    d = CARSO(model, clf, n_samples=4, seed=1)
    assert isinstance(d, Purifier) and d.stochastic and d.differentiable and d.backwards == ("exact", "mean_probs")
    p = d.purify(x)
    assert p.shape == x.shape and p.min() >= 0 and p.max() <= 1
    assert torch.equal(p, CARSO(model, clf, seed=1).purify(x)) and not torch.equal(p, CARSO(model, clf, seed=2).purify(x))
    assert not torch.equal(p, d.purify(x))                                      # fresh draws on each call
    d.reseed(1)
    assert torch.equal(p, d.purify(x))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(d.purify(x, generator=g1), CARSO(model, clf, seed=5).purify(x, generator=g2))
    d.reseed(1)
    draws = d.sample(x)
    assert draws.shape == (4, *x.shape) and torch.equal(draws[0], p)           # purify is the first draw
    assert d.settings() == {"seed": 1, "n_samples": 4, "rule": "carso", "latent_dim": 8}
    assert d.describe() == "CARSO(seed=1, n_samples=4, rule='carso', latent_dim=8)"


def test_forward_is_carso_aggregation_of_the_draws(model, clf, xy):
    x, _ = xy
    d = CARSO(model, clf, n_samples=5, seed=3).eval()
    with torch.no_grad():
        scores = d(x)
        d.reseed(3)
        logits = d.draw_logits(x)
        d.reseed(3)
        rec = d.sample(x)
    assert logits.shape == (5, 8, 10) and torch.equal(scores, voting.aggregate(logits, "carso"))
    assert torch.allclose(logits, clf(rec.flatten(0, 1)).view(5, 8, 10), atol=1e-6)
    probs = scores.exp()
    assert torch.allclose(probs.sum(1), torch.ones(8), atol=1e-4)
    by_hand = torch.softmax(logits.double().exp().sum(0), 1)                    # p_c ~ exp(sum_j exp(l_jc))
    assert torch.allclose(probs.double(), by_hand, atol=1e-5)
    d2 = CARSO(model, clf, n_samples=5, seed=3, rule="vote").eval()
    with torch.no_grad():
        assert torch.equal(d2(x), voting.aggregate(logits, "vote"))


def test_adaptive_models_keep_the_forward_and_give_gradients(model, clf, xy):
    x, y = xy
    d = CARSO(model, clf, n_samples=3, seed=0).eval()
    assert d.adaptive_model() is d and d.adaptive_model("exact") is d
    smooth = d.adaptive_model("mean_probs")
    bpda = d.adaptive_model(lambda t: t)
    with torch.no_grad():
        d.reseed(0)
        ref = d(x)
        d.reseed(0)
        logits = d.draw_logits(x)
    grads = {}
    for name, m in (("exact", d), ("mean_probs", smooth), ("identity", bpda)):
        d.reseed(0)
        xr = x.clone().requires_grad_(True)
        out = m(xr)
        expected = voting.aggregate(logits, "mean_probs") if name == "mean_probs" else ref   # same draws
        assert torch.allclose(out, expected, atol=1e-6)
        grads[name], = torch.autograd.grad(F.cross_entropy(out, y), xr)
        assert torch.isfinite(grads[name]).all() and grads[name].abs().sum() > 0
    # mean_probs: the gradient of the mean softmax over the same draws
    d.reseed(0)
    xr = x.clone().requires_grad_(True)
    by_hand, = torch.autograd.grad(F.cross_entropy(voting.aggregate(d.draw_logits(xr), "mean_probs"), y), xr)
    close = lambda a, b: torch.allclose(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())   # noqa: E731
    assert close(grads["mean_probs"], by_hand)
    assert (grads["exact"] - grads["mean_probs"]).norm() > 1e-3 * grads["exact"].norm()
    # identity BPDA: each draw's Jacobian is the identity, the classifier and the aggregation are exact
    d.reseed(0)
    rec = d.sample(x).detach().requires_grad_(True)
    loss = F.cross_entropy(voting.aggregate(clf(rec.flatten(0, 1)).view(3, 8, 10), "carso"), y)
    d_rec, = torch.autograd.grad(loss, rec)
    assert close(grads["identity"], d_rec.sum(0)) and not close(grads["identity"], grads["exact"])
    assert logits.shape == (3, 8, 10)


def test_bad_arguments_raise_value_error_naming_the_argument(model, clf, xy):
    x, _ = xy
    d = CARSO(model, clf)
    for bad, match in [(lambda: CARSO(nn.Linear(2, 2), clf), "^cvae: "),
                       (lambda: CARSO(model, "fmnist/pgd-at"), "^classifier: "),
                       (lambda: CARSO(model, models.SmallCNN()), "^classifier: "),           # other layers/shapes
                       (lambda: CARSO(model, clf, n_samples=0), "^n_samples: "),
                       (lambda: CARSO(model, clf, rule="max"), "^rule: "),
                       (lambda: CARSO(model, clf, seed="a"), "^seed: "),
                       (lambda: d(x + 1), "^x: "), (lambda: d.purify(x[0]), "^x: "),
                       (lambda: d.purify(x, generator=5), "^generator: "),
                       (lambda: d.sample(x, k=0), "^k: "),
                       (lambda: d.adaptive_model("identity"), "^backward: "),
                       (lambda: CARSO.from_zoo("mnist"), "^dataset: ")]:
        with pytest.raises(ValueError, match=match):
            bad()


def test_report_cli_arguments_are_checked():
    with pytest.raises(SystemExit):
        carso_train.main(["report", "--n", "0"])
    json.dumps(carso_train.CARSOConfig().__dict__)


def test_exact_cross_entropy_saturates_where_mean_probs_does_not(model, clf, xy):
    """CARSO's double exponential: on confidently classified inputs the cross-entropy of the exact scores
    has a zero input gradient (float64 underflow), the mean_probs surrogate still has one."""
    import copy
    x, _ = xy
    loud = copy.deepcopy(clf)
    with torch.no_grad():
        loud.head[1].weight.mul_(300)
        loud.head[1].bias.mul_(300)
    d = CARSO(model, loud, n_samples=4, seed=0).eval()
    with torch.no_grad():
        y = d(x).argmax(1)                                          # the defense's own decisions: "correct"
    grads = {}
    for name in ("exact", "mean_probs"):
        d.reseed(0)
        xr = x.clone().requires_grad_(True)
        grads[name], = torch.autograd.grad(F.cross_entropy(d.adaptive_model(name)(xr), y), xr)
    assert grads["exact"].abs().max() == 0 and grads["mean_probs"].abs().max() > 0


def test_the_zoo_defense_loads_classifies_and_has_an_adaptive_model():
    """The trained fmnist/carso with fmnist/pgd-at (skipped while the zoo has no weights for them)."""
    try:
        d = CARSO.from_zoo("fashion_mnist")
    except zoo.NotTrainedError:
        pytest.skip("fmnist/carso or fmnist/pgd-at is not trained here")
    x, y = data.batch("fashion_mnist", "test", n=1000, seed=0)
    x, y = x[:200], y[:200]
    with torch.no_grad():
        acc = torch.cat([d(x[i:i + 100]) for i in (0, 100)]).argmax(1).eq(y).float().mean().item()
    assert acc >= 0.78                                          # 83.4% on all 1000 (docs/results/carso_*)
    rep = json.loads((__import__("pathlib").Path(__file__).parents[1] / "docs" / "results"
                      / "carso_fmnist_n1000_seed0.json").read_text())
    assert zoo.same_weights("fmnist/carso", rep["models"]["fmnist/carso"])     # the report is of these weights
    xr = x[:8].clone().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(d.adaptive_model("mean_probs")(xr), y[:8]), xr)
    assert (g.flatten(1).abs().amax(1) > 0).all()
