"""The GPU path beyond the attacks (issue 14): every purifier, AMP training, the benchmark's bf16 and fast
modes, and DistributedDataParallel with NCCL, on a real CUDA device. Marked `cuda`; every test skips where
CUDA is absent, so CI on a CPU is unchanged (tests/test_fake_cuda.py covers device mixing there).
`bash scripts/gpu_check.sh` runs them with the attacks' CUDA tests and the benchmarks.

ADVLAB_CUDA_TESTS_ON=cpu runs the same code on the CPU (no skip): a dry run of the tests' own logic on a
machine without a GPU, never a substitute for the GPU run.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

DEV = os.environ.get("ADVLAB_CUDA_TESTS_ON", "cuda")
ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(DEV == "cuda" and not torch.cuda.is_available(), reason="needs CUDA"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]

CHEAP = {"defense-gan": dict(steps=3, restarts=2), "vaegan": {}, "lqvae": {}, "carso": dict(n_samples=2),
         "mlvgm": {}, "cmap": dict(k=2, iters=2)}


def _on(t: torch.Tensor) -> bool:
    return t.device.type == torch.device(DEV).type


@pytest.mark.parametrize("name", sorted(CHEAP))
def test_purifier_runs_on_the_device_and_agrees_with_the_cpu(name):
    """purify, forward and the adaptive model's input gradient stay on the device and are finite; a
    deterministic purifier predicts as it does on the CPU (up to float rounding: 7 of 8 images)."""
    from advlab import data, purifiers, zoo
    assert set(CHEAP) == set(purifiers.names())
    try:
        defense = purifiers.get(name).from_zoo("fashion_mnist", device=DEV, **CHEAP[name])
    except zoo.NotTrainedError as e:
        pytest.skip(str(e).splitlines()[0])
    x, y = data.batch("fashion_mnist", "test", n=8, seed=0, device=DEV)
    torch.manual_seed(0)
    p, logits = defense.purify(x), defense(x)
    assert _on(p) and p.shape == x.shape and torch.isfinite(p).all()
    assert _on(logits) and logits.shape == (8, 10) and torch.isfinite(logits).all()
    xg = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(nn.functional.cross_entropy(defense.adaptive_model()(xg), y), xg)
    assert _on(grad) and torch.isfinite(grad).all()
    if not getattr(defense, "stochastic", False):
        cpu = purifiers.get(name).from_zoo("fashion_mnist", device="cpu", **CHEAP[name])
        if hasattr(cpu, "reseed"):
            cpu.reseed(0), defense.reseed(0)
        same = (cpu(x.cpu()).argmax(1) == defense(x).argmax(1).cpu()).sum().item()
        assert same >= 7, f"{name}: {same} of 8 predictions agree between {DEV} and the CPU"


def test_amp_training_runs_on_the_device():
    """A short bf16-autocast (amp=True) training keeps the weights on the device, finite, and learns."""
    from advlab.training.loop import TrainConfig, train
    cfg = TrainConfig(epochs=1, n_train=2048, n_test=512, batch_size=128, device=DEV, amp=True, seed=0)
    model, metrics = train(cfg, progress=False)
    params = list(model.parameters())
    assert all(_on(q) and torch.isfinite(q).all() for q in params)
    assert params[0].dtype == torch.float32                 # autocast, not a bf16 copy of the weights
    assert metrics["clean_acc"] > 0.5                       # 10 classes: chance is 0.1


def test_bench_bf16_and_fast_modes_keep_the_threat_model_and_the_accuracy():
    from advlab.evaluation import bench
    res = bench.bench_attacks(n=1000, steps=10, device=DEV, bf16=True, fast=True, repeats=3, verbose=False)
    ours = {k: v for k, v in res["violations"].items() if k.startswith("ours")}
    assert set(ours) >= {"ours", "ours_fast"} and not any(ours.values()), res["violations"]
    assert DEV == "cpu" or {"ours_bf16", "ours_fast"} <= set(res["robust_acc"])
    for k in ("ours_bf16", "ours_fast"):
        if k in res["robust_acc"]:
            assert abs(res["robust_acc"][k] - res["robust_acc"]["ours"]) <= 0.02, (k, res["robust_acc"])


@pytest.mark.skipif(DEV != "cuda" or torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_ddp_with_nccl_on_two_gpus_ends_with_identical_weights(tmp_path):
    from safetensors.torch import load_file
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path), "pgd", "cuda"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "world 2" in res.stdout
    w0, w1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
