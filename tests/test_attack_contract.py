"""The contract every attack keeps (advlab/attacks/base.py), checked for every attack.

Attacks not importable yet are skipped. Settings are tiny (few steps/queries, tiny models), so the
file runs in well under 3 minutes on 2 CPU cores; eps values are drawn at random per case from a
fixed seed (property-style), so every run checks the same cases.
"""
from __future__ import annotations

import copy
import inspect
import math
import random
import warnings
import zlib

import pytest
import torch
import torch.nn as nn

import advlab.attacks as A
from advlab import data, models

NAMES = ["FGSM", "PGD", "BIM", "CW", "DeepFool", "Transfer", "APGD", "APGDT", "FAB", "Square", "AutoAttack"]
L2_ONLY = {"CW"}
TOL = 1e-6

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # runtime_checks warnings are expected here


# ---------------------------------------------------------------------------------------------
# tiny models and data


def tiny_net(shape=(1, 28, 28), num_classes=10, seed=0, mixed_modes=False) -> nn.Module:
    """Conv + BatchNorm + Dropout + Linear, with non-trivial BN running statistics."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    net = nn.Sequential(nn.Conv2d(c, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Dropout(0.3), nn.Flatten(), nn.Linear(4 * ((h + 1) // 2) * ((w + 1) // 2), num_classes))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() > 1 else 0.1))
        net.train()
        for _ in range(3):  # fill the BN running statistics
            net(torch.rand((8, *shape), generator=g))
    net.eval()
    if mixed_modes:  # a mix of train/eval submodules, as after a careless user's edits
        net.train()
        net[3].eval()
        net[5].eval()
    return net


def dataset_for(shape):
    return "synthetic" if shape[0] == 1 else "synthetic-cifar10"


def batch_for(model, shape, n, seed=0):
    """n synthetic images on the model's device; labels are the model's own predictions, so every
    example is attacked."""
    p = next(model.parameters())
    x, _ = data.batch(dataset_for(shape), "test", n=n, seed=seed)
    x = x.to(p.device)
    was = [m.training for m in model.modules()]
    model.eval()
    with torch.no_grad():
        y = model(x.to(p.dtype)).argmax(1)
    for m, f in zip(model.modules(), was):
        m.training = f
    return x, y


def _filter(cls, **kw):
    params = inspect.signature(cls).parameters
    return {k: v for k, v in kw.items() if k in params}


def make(name, eps=0.1, norm="linf", **extra):
    """A small, fast instance of attack `name` (skips when not importable yet)."""
    cls = getattr(A, name, None)
    if cls is None:
        pytest.skip(f"advlab.attacks.{name} is not implemented yet")
    if name in L2_ONLY and norm != "l2":
        pytest.skip(f"{name} is L2 only")
    if name == "FGSM":
        return cls(eps=eps, norm=norm, **extra)
    if name in ("PGD", "BIM"):
        return cls(eps=eps, alpha=max(eps / 4, 1e-3), steps=3, norm=norm, **extra)
    if name == "CW":
        return cls(c=1.0, steps=5, lr=0.05, eps=eps, **extra)
    if name == "DeepFool":
        return cls(steps=3, norm=norm, eps=eps, **extra)
    if name == "Transfer":
        return cls(A.PGD(eps=eps, alpha=max(eps / 4, 1e-3), steps=2, norm=norm, random_start=False, **extra),
                   substitute=tiny_net(seed=7))
    if name == "Square":
        return cls(eps=eps, norm=norm, **(_filter(cls, n_queries=20, p_init=0.8) | extra))
    small = dict(steps=3, n_restarts=1, n_target_classes=2, n_queries=20, n_iter=3, version="standard",
                 n_classes=10, seed=0)
    return cls(eps=eps, norm=norm, **(_filter(cls, **small) | extra))


def random_eps(norm, key) -> float:
    rng = random.Random(zlib.crc32(key.encode()))
    return rng.uniform(0.01, 0.3) if norm == "linf" else rng.uniform(0.1, 3.0)


def transfer_substitute(atk, shape):
    """Transfer crafts on its substitute: give it one of the right input shape."""
    if isinstance(atk, getattr(A, "Transfer", ())) and shape != (1, 28, 28):
        atk.substitute = tiny_net(shape, seed=7)
    return atk


def set_chunk(atk, size):
    target = atk.attack if isinstance(atk, getattr(A, "Transfer", ())) else atk
    target.chunk_size = size
    return atk


def check_threat_model(atk, x, x_adv, eps, norm):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad
    assert bool(torch.isfinite(x_adv).all())
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    if eps is not None:
        d = (x_adv - x).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert float(size.max()) <= eps + TOL, f"{atk!r}: perturbation {float(size.max())} > eps {eps}"


# ---------------------------------------------------------------------------------------------
# threat model, input untouched, shape/dtype/device

CASES = [((1, 28, 28), 1, None), ((3, 32, 32), 5, None), ((1, 28, 28), 5, 2)]


@pytest.mark.parametrize("case", range(len(CASES)), ids=["1x28x28-n1", "3x32x32-n5", "1x28x28-n5-chunk2"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", NAMES)
def test_threat_model(name, norm, case):
    shape, n, chunk = CASES[case]
    eps = random_eps(norm, f"{name}-{norm}-{case}")
    atk = transfer_substitute(make(name, eps, norm), shape)
    if chunk:
        set_chunk(atk, chunk)
    model = tiny_net(shape, seed=case)
    x, y = batch_for(model, shape, n, seed=case)
    x0 = x.clone()
    x_adv = atk(model, x, y)
    assert torch.equal(x, x0), "x was modified"
    check_threat_model(atk, x, x_adv, eps, norm)


@pytest.mark.parametrize("name", ["CW", "DeepFool"])
def test_unbounded_minimal_attacks_stay_in_box(name):
    atk = make(name, None, "l2")
    model = tiny_net()
    x, y = batch_for(model, (1, 28, 28), 4)
    x_adv = atk(model, x, y)
    check_threat_model(atk, x, x_adv, None, "l2")


@pytest.mark.parametrize("name", NAMES)
def test_eps_zero_returns_x(name):
    atk = make(name, 0.0, "l2" if name in L2_ONLY else "linf")
    model = tiny_net()
    x, y = batch_for(model, (1, 28, 28), 3)
    assert torch.allclose(atk(model, x, y), x, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_float64_dtype_kept(name):
    norm = "l2" if name in L2_ONLY else "linf"
    atk = make(name, 0.1 if norm == "linf" else 1.0, norm)
    if isinstance(atk, getattr(A, "Transfer", ())):
        atk.substitute = atk.substitute.double()
    model = tiny_net().double()
    x, y = batch_for(model, (1, 28, 28), 3)
    x = x.double()
    x_adv = atk(model, x, y)
    assert x_adv.dtype == torch.float64
    check_threat_model(atk, x, x_adv, atk.eps, norm)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_device_kept_cuda(name):
    norm = "l2" if name in L2_ONLY else "linf"
    atk = make(name, 0.1 if norm == "linf" else 1.0, norm)
    if isinstance(atk, getattr(A, "Transfer", ())):
        atk.substitute = atk.substitute.cuda()
    model = tiny_net().cuda()
    x, y = batch_for(model, (1, 28, 28), 4)
    x, y = x.cuda(), y.cuda()
    x_adv = atk(model, x, y)
    assert x_adv.device == x.device
    check_threat_model(atk, x, x_adv, atk.eps, norm)


@pytest.mark.parametrize("name", NAMES)
def test_device_kept_fake_cuda(name):
    """The same on the CPU under advlab.fake_cuda: an attack that mixes a CPU tensor into the device batch,
    draws with a CPU generator on the device or calls .numpy() on it fails here as it would on a GPU."""
    from advlab.fake_cuda import FakeCuda
    norm = "l2" if name in L2_ONLY else "linf"
    atk = make(name, 0.1 if norm == "linf" else 1.0, norm)
    with FakeCuda() as fake:
        if isinstance(atk, getattr(A, "Transfer", ())):
            atk.substitute = atk.substitute.cuda()
        model = tiny_net().cuda()
        x, y = batch_for(model, (1, 28, 28), 4)
        x, y = x.cuda(), y.cuda()
        assert x.device.type == "cuda" and fake.on(x)
        x_adv = atk(model, x, y)
        assert x_adv.device.type == "cuda" and fake.on(x_adv)
        x, x_adv = x.cpu(), x_adv.cpu()
    check_threat_model(atk, x, x_adv, atk.eps, norm)


# ---------------------------------------------------------------------------------------------
# model state: train/eval flags, BN statistics, parameter .grad


@pytest.mark.parametrize("name", NAMES)
def test_model_state_restored(name):
    norm = "l2" if name in L2_ONLY else "linf"
    atk = make(name, 0.1 if norm == "linf" else 1.0, norm)
    model = tiny_net(mixed_modes=True)
    sub = getattr(atk, "substitute", None)
    if sub is not None:  # Transfer: the substitute is the model actually run
        sub.train()
        sub[3].eval()
    x, y = batch_for(model, (1, 28, 28), 4)
    modules = [m for m in (model, sub) if m is not None]
    flags = [[m.training for m in mod.modules()] for mod in modules]
    buffers = [{k: v.clone() for k, v in mod.state_dict().items()} for mod in modules]
    for mod in modules:  # some parameters carry a .grad, the others have None
        for i, p in enumerate(mod.parameters()):
            p.grad = torch.full_like(p, 0.5) if i % 2 == 0 else None
    atk(model, x, y)
    for mod, fl, buf in zip(modules, flags, buffers):
        assert [m.training for m in mod.modules()] == fl, "train/eval flags not restored"
        for k, v in mod.state_dict().items():
            assert torch.equal(v, buf[k]), f"{k} changed (BN statistics or parameters)"
        for i, p in enumerate(mod.parameters()):
            if i % 2 == 0:
                assert p.grad is not None and torch.equal(p.grad, torch.full_like(p, 0.5)), "param .grad changed"
            else:
                assert p.grad is None, "param .grad created"


def test_real_architectures_cnn_and_resnet18():
    """The zoo architectures (BN + dropout inside) on both input shapes, with two fast attacks."""
    for arch, ds in (("cnn", "synthetic"), ("resnet18", "synthetic-cifar10")):
        torch.manual_seed(0)
        model = models.build(arch, ds)
        model.train()
        shape = data.info(ds).shape
        x, y = batch_for(model, shape, 2)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        for atk in (A.FGSM(eps=0.1), A.PGD(eps=0.5, alpha=0.1, steps=2, norm="l2")):
            x_adv = atk(model, x, y)
            check_threat_model(atk, x, x_adv, atk.eps, atk.norm)
            assert all(m.training for m in model.modules())
            assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------------------
# seeds, batch splitting, chunking


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output(name):
    norm = "l2" if name in L2_ONLY else "linf"
    model = tiny_net()
    x, y = batch_for(model, (1, 28, 28), 4)
    kw = {} if name == "Transfer" else {"seed": 3}
    out1 = make(name, 0.1 if norm == "linf" else 1.0, norm, **kw)(model, x, y)
    out2 = make(name, 0.1 if norm == "linf" else 1.0, norm, **kw)(model, x, y)
    assert torch.equal(out1, out2)


def test_pgd_random_start_depends_on_seed():
    model = tiny_net()
    x, y = batch_for(model, (1, 28, 28), 4)
    a = A.PGD(eps=0.1, alpha=0.01, steps=1, seed=0)(model, x, y)
    b = A.PGD(eps=0.1, alpha=0.01, steps=1, seed=1)(model, x, y)
    assert not torch.equal(a, b)
    assert torch.equal(a, A.PGD(eps=0.1, alpha=0.01, steps=1, seed=0)(model, x, y))


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_parts_and_chunking(name, norm):
    """Without randomness the result of an example does not depend on its batch or chunk.

    float64 so that batch-size dependent float32 kernels cannot flip a sign(g) component.
    """
    eps = random_eps(norm, f"parts-{name}-{norm}")
    atk = make(name, eps, norm)
    if getattr(atk, "randomized", False):
        pytest.skip(f"{atk!r} is randomised (declares randomized=True)")
    if isinstance(atk, getattr(A, "Transfer", ())):
        atk.substitute = atk.substitute.double()
    model = tiny_net(seed=3).double()
    x, y = batch_for(model, (1, 28, 28), 6, seed=3)
    x = x.double()
    full = atk(model, x, y)
    parts = torch.cat([atk(model, x[:1], y[:1]), atk(model, x[1:4], y[1:4]), atk(model, x[4:], y[4:])])
    assert torch.allclose(full, parts, atol=TOL, rtol=0), float((full - parts).abs().max())
    chunked = set_chunk(make(name, eps, norm), 4)
    if isinstance(chunked, getattr(A, "Transfer", ())):
        chunked.substitute = atk.substitute
    out = chunked(model, x, y)
    assert torch.allclose(full, out, atol=TOL, rtol=0), float((full - out).abs().max())


# ---------------------------------------------------------------------------------------------
# bad settings and bad inputs raise ValueError naming the argument

BAD_SETTINGS = [("eps", -0.1), ("eps", float("nan")), ("eps", float("inf")), ("norm", "l3"), ("norm", None),
                ("steps", 0), ("steps", -2), ("steps", 2.5), ("alpha", 0.0), ("alpha", -0.01),
                ("alpha", float("nan")), ("n_queries", 0), ("eot_iter", 0), ("c", -1.0), ("lr", 0.0),
                ("overshoot", -0.1), ("kappa", -1.0), ("n_restarts", 0), ("binary_search_steps", 0)]


def _bad_setting_cases():
    """(name, arg, value) for every argument the attack has; one skipped case per missing attack."""
    cases = []
    for name in NAMES:
        if name == "Transfer":
            continue
        cls = getattr(A, name, None)
        if cls is None:
            cases.append(pytest.param(name, None, None, id=f"{name}-missing"))
            continue
        params = inspect.signature(cls).parameters
        cases += [pytest.param(name, a, v, id=f"{name}-{a}={v}") for a, v in BAD_SETTINGS if a in params]
    return cases


@pytest.mark.parametrize("name,arg,value", _bad_setting_cases())
def test_bad_settings_raise(name, arg, value):
    cls = getattr(A, name, None)
    if cls is None:
        pytest.skip(f"advlab.attacks.{name} is not implemented yet")
    good = make(name, 0.1, "l2" if name in L2_ONLY else "linf")
    kwargs = {k: getattr(good, k) for k in inspect.signature(cls).parameters
              if k in ("eps", "norm") and hasattr(good, k)}
    kwargs[arg] = value
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        cls(**kwargs)


def test_transfer_bad_settings():
    with pytest.raises(ValueError, match="attack"):
        A.Transfer("not an attack", tiny_net())
    with pytest.raises(ValueError, match="substitute"):
        A.Transfer(A.FGSM(), "not a model")


def _bad_inputs(x, y):
    yield "x", x * 2 + 0.5, y                       # outside [0, 1]
    yield "x", x - 1.0, y
    xn = x.clone()
    xn[0, 0, 0, 0] = float("nan")
    yield "x", xn, y                                # NaN
    yield "x", x[:, 0], y                           # wrong rank (N, H, W)
    yield "x", x[0], y[:1]                          # a single image without batch dim
    yield "x", (x * 255).to(torch.uint8), y         # integer images
    yield "y", x, y[:-1]                            # wrong count
    yield "y", x, torch.full_like(y, 10)            # out of range (10 classes)
    yield "y", x, -torch.ones_like(y)
    yield "y", x, y.float()                         # wrong dtype
    yield "y", x, y[:, None]                        # wrong shape


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise(name):
    norm = "l2" if name in L2_ONLY else "linf"
    atk = make(name, 0.1 if norm == "linf" else 1.0, norm)
    model = tiny_net()
    x, y = batch_for(model, (1, 28, 28), 3)
    for arg, xb, yb in _bad_inputs(x, y):
        with pytest.raises(ValueError, match=rf"\b{arg}\b"):
            atk(model, xb, yb)
    with pytest.raises(ValueError, match="model"):
        atk("not a model", x, y)
