"""Attacks on CUDA (issue 14): every attack keeps the device and the threat model with fp32, bf16 and
fp16 inputs, bf16 and fp16 models, under a caller's torch.autocast and with amp=True; a CPU batch into
a CUDA model comes back on the CPU; the steps of PGD and APGD make no host synchronisation.

Marked `cuda`; every test skips where torch.cuda.is_available() is False (CI on CPU is unchanged).
`pytest -m cuda` runs them on a GPU machine (tiny models: seconds).
"""
from __future__ import annotations

import random
import warnings
import zlib

import pytest
import torch
import torch.nn as nn

import advlab.attacks as A
from advlab.attacks.apgd import apgd_run
from advlab.attacks.base import ce_loss

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]

NAMES = ["FGSM", "PGD", "BIM", "CW", "DeepFool", "Transfer", "APGD", "APGDT", "FAB", "Square", "AutoAttack"]
CASES = {  # input dtype, model dtype, caller's autocast, amp=True
    "fp32": (torch.float32, torch.float32, False, False),
    "bf16-input": (torch.bfloat16, torch.float32, False, False),
    "bf16-model": (torch.bfloat16, torch.bfloat16, False, False),
    "fp16-model": (torch.float16, torch.float16, False, False),
    "fp32-autocast": (torch.float32, torch.float32, True, False),
    "fp32-amp": (torch.float32, torch.float32, False, True),
}


def tiny_net(dtype=torch.float32, seed=0, device="cuda"):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 14 * 14, 10))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return net.to(device=device, dtype=dtype).eval()


def make(name, eps, norm, **common):
    if name == "FGSM":
        return A.FGSM(eps=eps, norm=norm, **common)
    if name in ("PGD", "BIM"):
        return getattr(A, name)(eps=eps, alpha=eps / 3, steps=3, norm=norm, **common)
    if name == "CW":
        return A.CW(steps=4, lr=0.05, eps=eps, **common)
    if name == "DeepFool":
        return A.DeepFool(steps=3, norm=norm, eps=eps, **common)
    if name == "Transfer":
        return A.Transfer(A.PGD(eps=eps, alpha=eps / 3, steps=2, norm=norm, **common), tiny_net(seed=7))
    if name == "Square":
        return A.Square(eps, norm, n_queries=15, **common)
    if name == "AutoAttack":
        return A.AutoAttack(eps, norm, steps=3, n_queries=10, **common)
    extra = dict(n_target_classes=2) if name == "APGDT" else {}
    return getattr(A, name)(eps, norm, steps=4, **extra, **common)


def assert_in_threat_model(x_adv, x, eps, norm, what=""):
    assert x_adv.device == x.device and x_adv.dtype == x.dtype and x_adv.shape == x.shape, what
    assert not x_adv.requires_grad
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0, what
    for label, dt in (("input dtype", x.dtype), ("float32", torch.float32), ("float64", torch.float64)):
        d = (x_adv.to(dt) - x.to(dt)).flatten(1)
        size = float((d.abs().amax(1) if norm == "linf" else d.norm(dim=1)).max())
        assert size <= eps, f"{what}: {norm} perturbation {size!r} > eps {eps!r} computed in {label}"


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", NAMES)
def test_every_attack_keeps_device_and_threat_model(name, case):
    in_dt, model_dt, autocast, amp = CASES[case]
    for norm in (["l2"] if name == "CW" else ["linf", "l2"]):
        rng = random.Random(zlib.crc32(f"{name}-{case}-{norm}".encode()))
        eps = rng.uniform(0.01, 0.3) if norm == "linf" else rng.uniform(0.2, 3.0)
        model = tiny_net(model_dt)
        g = torch.Generator().manual_seed(rng.randrange(2 ** 31))
        x = torch.rand(12, 1, 28, 28, generator=g).to("cuda", in_dt)
        with torch.no_grad():
            y = model(x.to(model_dt)).argmax(1)
        atk = make(name, eps, norm, amp=amp)
        x0 = x.clone()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            x_adv = atk(model, x, y)
        assert torch.equal(x, x0), "x was modified"
        assert_in_threat_model(x_adv, x, eps, norm, f"{atk!r}, {case}")


@pytest.mark.parametrize("name", ["PGD", "APGD", "Square", "AutoAttack"])
def test_a_cpu_batch_into_a_cuda_model_comes_back_on_the_cpu(name):
    model = tiny_net()
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (6,), generator=torch.Generator().manual_seed(1), dtype=torch.int32)
    x_adv = make(name, 0.1, "linf")(model, x, y)
    assert_in_threat_model(x_adv, x, 0.1, "linf", name)


def test_cuda_and_cpu_agree():
    """The same attack on the same model gives about the same robust accuracy on both devices (float
    kernels differ, and APGD reads its found count one step late on CUDA, which only moves *when*
    finished rows leave the batch)."""
    torch.manual_seed(0)
    model_cpu = tiny_net(device="cpu")
    model_gpu = tiny_net(device="cuda")
    x = torch.rand(128, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model_cpu(x).argmax(1)
    for atk in (A.PGD(eps=0.05, alpha=0.01, steps=10), A.APGD(0.05, steps=20)):
        acc = {}
        for dev, m in (("cpu", model_cpu), ("cuda", model_gpu)):
            xa = atk(m, x.to(dev), y.to(dev))
            with torch.no_grad():
                acc[dev] = (m(xa).argmax(1) == y.to(dev)).float().mean().item()
        assert abs(acc["cpu"] - acc["cuda"]) <= 0.1, (repr(atk), acc)


def _sync_count(fn) -> int:
    """How many synchronising CUDA operations fn makes (torch's sync debug mode, as warnings)."""
    torch.cuda.synchronize()
    old = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(old)
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("keep_best", [False, True])
def test_pgd_steps_make_no_host_sync(norm, keep_best):
    """The number of synchronisations does not grow with the number of steps: none per step."""
    model = tiny_net()
    x = torch.rand(32, 1, 28, 28, device="cuda")
    with torch.no_grad():
        y = model(x).argmax(1)
    counts = {}
    for steps in (1, 2, 8):  # steps=1: warm-up (lazy cuDNN / cuBLAS initialisation may synchronise)
        atk = A.PGD(eps=0.1 if norm == "linf" else 1.0, alpha=0.02, steps=steps, norm=norm, random_start=False,
                    keep_best=keep_best)
        counts[steps] = _sync_count(lambda: atk._attack(model, x.clone(), y, torch.Generator()))
    assert counts[2] == counts[8], counts


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_step_makes_no_host_sync(norm):
    model = tiny_net()
    x = torch.rand(32, 1, 28, 28, device="cuda")
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = 0.05 if norm == "linf" else 0.5

    def run(steps):
        return lambda: apgd_run(model, x, x.clone(), y, ce_loss, lambda z, t: z.argmax(1) != t, eps, norm, steps,
                                early_stop=False)
    counts = {steps: _sync_count(run(steps)) for steps in (1, 3, 12)}  # steps=1: warm-up
    assert counts[3] == counts[12], counts
