"""The threat model holds exactly in every dtype (issue 14): with bf16 / fp16 inputs, rounding after
the projection gave a perturbation of 0.0332 for eps 0.0314. Every attack's output must satisfy
||x_adv - x|| <= eps with the perturbation computed in the input's dtype, in float32 of both and
exactly (float64), compared with eps as a Python float, and lie in [0, 1].

Property-style: eps and inputs are drawn at random from fixed seeds, so every run checks the same
cases; the attacks run with tiny settings on a tiny model (CPU, well under a minute).
"""
from __future__ import annotations

import random
import zlib

import pytest
import torch
import torch.nn as nn

import advlab.attacks as A
from advlab.attacks.base import fit_to_threat_model

pytestmark = [pytest.mark.filterwarnings("ignore::RuntimeWarning"), pytest.mark.usefixtures("one_thread")]

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
NAMES = ["FGSM", "PGD", "BIM", "CW", "DeepFool", "Transfer", "APGD", "APGDT", "FAB", "Square", "AutoAttack"]


def sizes(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> dict[str, float]:
    """The largest perturbation, computed the ways a user would: in x's dtype, in float32 (for inputs
    of at most 32 bits; rounding float64 inputs to float32 is the user's own change), exactly."""
    out = {}
    ways = (("input dtype", x.dtype), ("float32", torch.float32), ("float64", torch.float64))
    for label, dt in ways[::2] if x.dtype == torch.float64 else ways:
        d = (x_adv.to(dt) - x.to(dt)).flatten(1)
        s = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        out[label] = float(s.max())
    return out


def assert_in_threat_model(x_adv, x, eps, norm, what=""):
    assert x_adv.dtype == x.dtype and x_adv.shape == x.shape and x_adv.device == x.device
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    for label, s in sizes(x_adv, x, norm).items():
        assert s <= eps, f"{what}: {norm} perturbation {s!r} > eps {eps!r} computed in {label}"


def draw(key: str, norm: str) -> float:
    rng = random.Random(zlib.crc32(key.encode()))
    return rng.uniform(0.005, 0.3) if norm == "linf" else rng.uniform(0.1, 3.0)


# ---------------------------------------------------------------------------------------------
# the final projection alone, on many random cases


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("dtype", DTYPES + [torch.float64], ids=str)
def test_fit_to_threat_model_random_cases(dtype, norm):
    g = torch.Generator().manual_seed(zlib.crc32(f"{dtype}-{norm}".encode()))
    for case in range(40):
        eps = draw(f"fit-{dtype}-{norm}-{case}", norm)
        x = torch.rand(4, 1, 12, 12, generator=g)
        if case % 4 == 1:       # pixels on the box edges and tiny values, where rounding is coarsest or finest
            x[:, :, :3] = 0.0
            x[:, :, -3:] = 1.0
            x[:, :, 5] = 1e-3 * torch.rand(4, 1, 12, generator=g)
        x = x.to(dtype)
        # a float32 iterate that an attack could return: inside, on and beyond the ball
        v = 2 * torch.rand(x.shape, generator=g) - 1
        if norm == "linf":
            v = v.sign() * (v.abs() > 0.3) if case % 2 else v
            x_adv = x.float() + eps * v * (1 + (case % 3) * 0.5)
        else:
            x_adv = x.float() + eps * (1 + (case % 3) * 0.5) * v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        out = fit_to_threat_model(x_adv.clamp(0, 1), x, eps, norm)
        assert_in_threat_model(out, x, eps, norm, f"case {case}, eps {eps}")


def test_the_reported_bf16_case():
    """eps 0.0314 (about 8/255) in bf16: the rounding after the projection gave 0.0332 (17 * 2^-9)."""
    eps = 0.0314
    x = torch.full((1, 1, 2, 2), 0.49, dtype=torch.bfloat16)  # x + eps crosses 0.5, where bf16 gets coarser
    x_adv = (x.float() + eps).clamp(0, 1)     # exactly on the ball in float32 ...
    naive = (x.float() + (x_adv - x.float()).clamp(-eps, eps)).to(torch.bfloat16)
    assert float((naive.float() - x.float()).abs().max()) > eps  # ... and outside it after the cast
    out = fit_to_threat_model(x_adv, x, eps, "linf")
    assert_in_threat_model(out, x, eps, "linf")
    assert float((out.float() - x.float()).abs().max()) > eps - 2 ** -7  # moved by no more than needed


def test_fit_to_threat_model_keeps_points_inside_the_ball():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 6, 6, generator=g)
    x_adv = (x + 0.05 * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
    assert torch.equal(fit_to_threat_model(x_adv, x, 0.1, "linf"), x_adv)
    assert torch.equal(fit_to_threat_model(x_adv, x, None, "l2"), x_adv)


# ---------------------------------------------------------------------------------------------
# every attack, bf16 / fp16 / fp32 inputs, model in fp32 and in the input's dtype


def tiny_net(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 10))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return net.to(dtype).eval()


def make(name, eps, norm):
    if name == "FGSM":
        return A.FGSM(eps=eps, norm=norm)
    if name in ("PGD", "BIM"):
        return getattr(A, name)(eps=eps, alpha=eps / 3, steps=3, norm=norm)
    if name == "CW":
        return A.CW(steps=4, lr=0.05, eps=eps)
    if name == "DeepFool":
        return A.DeepFool(steps=3, norm=norm, eps=eps)
    if name == "Transfer":
        return A.Transfer(A.PGD(eps=eps, alpha=eps / 3, steps=2, norm=norm), tiny_net(seed=7))
    if name == "Square":
        return A.Square(eps, norm, n_queries=15)
    if name == "AutoAttack":
        return A.AutoAttack(eps, norm, steps=3, n_queries=10)
    extra = dict(n_target_classes=2) if name == "APGDT" else {}
    return getattr(A, name)(eps, norm, steps=4, **extra)


@pytest.mark.parametrize("model_dtype", ["float32", "input"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_every_attack_keeps_the_threat_model_in_every_dtype(name, dtype, model_dtype):
    for norm in (["l2"] if name == "CW" else ["linf", "l2"]):
        eps = draw(f"{name}-{dtype}-{model_dtype}-{norm}", norm)
        model = tiny_net(torch.float32 if model_dtype == "float32" else dtype)
        g = torch.Generator().manual_seed(zlib.crc32(f"{name}{dtype}{norm}".encode()))
        x = torch.rand(6, 1, 14, 14, generator=g)
        x = nn.functional.interpolate(x, size=(28, 28)).to(dtype)   # plateaus: many equal pixels
        with torch.no_grad():
            y = model(x.to(next(model.parameters()).dtype)).argmax(1)
        atk = make(name, eps, norm)
        x0 = x.clone()
        x_adv = atk(model, x, y)
        assert torch.equal(x, x0)
        assert_in_threat_model(x_adv, x, eps, norm, f"{atk!r} on {dtype} input, {model_dtype} model")
        assert bool(torch.isfinite(x_adv.float()).all())


def test_half_inputs_are_attacked_in_float32():
    """A bf16 input gives the float32 input's result, rounded and refitted: nothing is lost to bf16
    arithmetic inside the attack (the iterates stay in float32)."""
    model = tiny_net()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 28, 28, generator=g).to(torch.bfloat16)
    with torch.no_grad():
        y = model(x.float()).argmax(1)
    atk = A.PGD(eps=0.1, alpha=0.02, steps=5)
    ref = atk(model, x.float(), y)
    out = atk(model, x, y)
    assert out.dtype == torch.bfloat16
    assert float((out.float() - ref).abs().max()) <= 2 ** -8 + 1e-7  # one bf16 rounding, at most
