"""The adaptive evaluation (advlab.evaluation.adaptive): per-image worst case, the masking and sanity
checks on a deliberately masked defense, the four numbers of a stochastic defense, resume, sharding
over 2 gloo processes, and the unrolled Defense-GAN search. Toy models, quick profile, few images."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from advlab import data
from advlab.evaluation import adaptive
from advlab.purifiers.base import Purifier

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def linear_classifier(weights: dict | None = None) -> nn.Module:
    """Flatten + Linear(784, 10); trained for 150 Adam steps on 2000 Fashion-MNIST images when no
    weights are given (about 75% test accuracy, broken by eps 0.1: a useful toy)."""
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    if weights is None:
        x, y = data.batch("fashion_mnist", "train", n=2000, seed=1)
        g = torch.Generator().manual_seed(0)
        opt = torch.optim.Adam(clf.parameters(), 1e-2)
        for _ in range(150):
            j = torch.randint(0, len(x), (128,), generator=g)
            loss = nn.functional.cross_entropy(clf(x[j]), y[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        clf.load_state_dict(weights)
    return clf.eval()


class QuantPurifier(Purifier):
    """A deliberately masked defense: 4-level quantisation, no backward (autograd sees a zero gradient),
    and it claims its "exact" gradient is the one to attack."""
    differentiable = False
    backwards = ("exact",)

    def _purify(self, x, generator):
        return (x * 3).round() / 3


class NoisyPurifier(Purifier):
    """A stochastic defense: Gaussian noise (sigma 0.1) drawn from the defense's stream, then clipped."""
    stochastic = True
    backwards = ("exact", "identity")

    def _purify(self, x, generator):
        return (x + 0.1 * torch.randn(x.shape, generator=generator).to(x)).clamp(0, 1)


@pytest.fixture(scope="module")
def clf():
    return linear_classifier()


@pytest.fixture(scope="module")
def xy():
    return data.batch("fashion_mnist", "test", n=48, seed=0)


def run(target, xy, **kw):
    kw = {"state_dir": None, "progress": False, "chunk": 16, "speed_n": 0} | kw
    return adaptive.adaptive_evaluation(target, *xy, eps=0.1, profile="quick", **kw)


def test_worst_case_is_below_every_attack_and_robust_images_survived_all(clf, xy):
    res = run(NoisyPurifier(clf).eval(), xy, individual=True, randomness=("fresh",))
    per = res["per_image"]
    for rule, bit in adaptive.RULES.items():
        worst = res["settings"]["fresh"][rule]
        for row in res["attacks"]:
            assert worst["acc"] <= row["own"][rule]["acc"], (rule, row["key"])
            assert row["attacked"] == res["clean"]["vote"]["robust"]        # individual: all clean-correct
        for i, first in enumerate(worst["first_broken_by"]):
            survived = per["clean"][i] & bit and all(c[i] & bit for c in per["fresh"].values())
            assert (first is None) == bool(survived), i
        assert worst["robust"] == sum(f is None for f in worst["first_broken_by"])
        lo, hi = worst["ci95"]
        assert lo <= worst["acc"] <= hi
    for row in res["attacks"]:       # every row names its attack, settings, n, seed and backward
        assert {"attack", "settings", "n", "seed", "backward"} <= set(row) and row["n"] == 48
    assert {r["key"] for r in res["attacks"]} >= {"apgd-ce[exact]", "apgd-dlr[identity]", "pgd-eot[exact]",
                                                  "square", "transfer"}
    assert res["strongest"]["by"] == "own robust accuracy"


def test_masked_defense_is_caught_by_square_and_the_sanity_check(clf, xy):
    res = run(QuantPurifier(clf).eval(), xy)
    s = res["sanity"]
    assert not s["passed"]
    assert not s["large_eps"]["passed"] and s["large_eps"]["acc"] > 0.5      # stuck far above chance
    assert s["masking"]["square"]["beats_white_box"]
    assert s["gradients"]["exact"]["zero"] == s["gradients"]["exact"]["n"]
    assert any("masking" in m for m in s["messages"])
    assert s["masking"]["square"]["broke_after_white_box"] >= 2
    ind = run(QuantPurifier(clf).eval(), xy, individual=True)["sanity"]["masking"]["square"]
    assert ind["beats_white_box"] and ind["own_acc"] < ind["best_white_box_acc"]
    ok = run(clf, xy)                 # the undefended classifier passes every check
    assert ok["sanity"]["passed"], ok["sanity"]["messages"]
    assert ok["headline"]["acc"] < res["headline"]["acc"]


def test_stochastic_defense_gives_the_four_numbers_and_quotes_the_lowest(clf, xy):
    res = run(NoisyPurifier(clf).eval(), xy)
    four = [res["settings"][s][r]["acc"] for s in ("fresh", "fixed") for r in ("vote", "worst_of_n")]
    assert res["settings_run"] == ["fresh", "fixed"] and len(four) == 4
    for s in ("fresh", "fixed"):
        assert res["settings"][s]["worst_of_n"]["acc"] <= res["settings"][s]["vote"]["acc"]
    assert res["headline"]["acc"] == res["combined"]["worst_of_n"]["acc"] <= min(four)
    assert "worst-of-4" in res["headline"]["what"]
    eot = {r["setting"]: r["settings"].get("eot_iter") for r in res["attacks"] if r["name"] == "apgd-ce"}
    assert eot == {"fresh": 4, "fixed": 1}


def test_robust_per_image_counts_what_the_headline_counts(clf, xy):
    both = run(NoisyPurifier(clf).eval(), xy)                                  # stochastic, fresh and fixed
    fresh = run(NoisyPurifier(clf).eval(), xy, randomness=("fresh",))          # stochastic, one setting
    plain = run(clf, xy)                                                       # deterministic
    for res in (both, fresh, plain):
        flags = adaptive.robust_per_image(res)
        assert len(flags) == res["n"] and sum(flags) == res["headline"]["robust"]
    # every image robust in the combined headline is robust in each setting's own worst-of-N
    for s in ("fresh", "fixed"):
        firsts = both["settings"][s]["worst_of_n"]["first_broken_by"]
        assert all(f is None for f, ok in zip(firsts, adaptive.robust_per_image(both)) if ok)
    cmp = adaptive.paired_comparison(both, plain)
    a, b = adaptive.robust_per_image(both), adaptive.robust_per_image(plain)
    assert cmp["a_only"] == sum(x and not y for x, y in zip(a, b)) and cmp["b_only"] == sum(y and not x for x, y in zip(a, b))
    assert cmp["both"] + cmp["a_only"] + cmp["b_only"] + cmp["neither"] == 48
    with pytest.raises(ValueError, match="b: not on a's images"):
        adaptive.paired_comparison(both, plain | {"subset": {"n": 48, "seed": 1}})


def test_robust_per_image_matches_every_recorded_headline():
    """The records' per-image codes give back their headline counts (the paired comparisons of lectures 07, 08)."""
    files = sorted((ROOT / "docs/results/records").glob("*/adaptive_full_*.json"))
    assert files
    for f in files:
        res = json.loads(f.read_text())["result"]
        assert sum(adaptive.robust_per_image(res)) == res["headline"]["robust"], f


def test_mcnemar_exact_is_the_two_sided_binomial_test():
    scipy_stats = pytest.importorskip("scipy.stats")                           # the oracle
    from advlab.metrics import mcnemar_exact
    for a_only, b_only in ((0, 0), (0, 1), (3, 3), (0, 21), (5, 17), (40, 61), (130, 100)):
        n = a_only + b_only
        want = 1.0 if n == 0 else scipy_stats.binomtest(a_only, n, 0.5).pvalue
        assert mcnemar_exact(a_only, b_only) == pytest.approx(want, rel=1e-9, abs=1e-300), (a_only, b_only)
        assert mcnemar_exact(a_only, b_only) == mcnemar_exact(b_only, a_only)


def _comparable(res):
    return {k: res[k] for k in ("clean", "settings", "per_image", "headline", "sanity")}


def test_resume_after_an_interrupted_chunk_equals_an_uninterrupted_run(clf, xy, tmp_path, monkeypatch):
    target = NoisyPurifier(clf).eval()
    full = run(target, xy, randomness=("fresh",))

    def crash(start, data):
        if start == 16:
            raise KeyboardInterrupt("killed after the second chunk")
    with pytest.raises(KeyboardInterrupt):
        run(target, xy, randomness=("fresh",), state_dir=str(tmp_path), on_chunk=crash)
    calls = []
    orig = adaptive.run_chunk
    monkeypatch.setattr(adaptive, "run_chunk", lambda *a, **k: calls.append(a[3]) or orig(*a, **k))
    resumed = run(target, xy, randomness=("fresh",), state_dir=str(tmp_path))
    assert calls == [32]                      # only the missing chunk ran again
    assert _comparable(resumed) == _comparable(full)


def test_a_run_on_the_first_images_reuses_the_chunks_of_a_longer_run(clf, xy, tmp_path, monkeypatch):
    target = NoisyPurifier(clf).eval()
    head = tuple(t[:32] for t in xy)
    alone = run(target, head, randomness=("fresh",))                       # no store
    run(target, xy, randomness=("fresh",), state_dir=str(tmp_path))         # 48 images: chunks 0, 16, 32
    calls = []
    orig = adaptive.run_chunk
    monkeypatch.setattr(adaptive, "run_chunk", lambda *a, **k: calls.append(a[3]) or orig(*a, **k))
    reused = run(target, head, randomness=("fresh",), state_dir=str(tmp_path))
    assert calls == []                        # both chunks of the first 32 came from the longer run
    assert _comparable(reused) == _comparable(alone)
    other = tuple(torch.cat([t[:16], t[32:48]]) for t in xy)                # chunk 16 holds other images
    run(target, other, randomness=("fresh",), state_dir=str(tmp_path))
    assert calls == [16]


def test_saved_progress_reports_the_unbroken_run_of_saved_chunks(clf, xy, tmp_path):
    target = NoisyPurifier(clf).eval()
    run(target, xy, randomness=("fresh",), state_dir=str(tmp_path))         # chunks 0, 16, 32 saved
    (middle,) = tmp_path.rglob("16_*.json")
    middle.unlink()                                                          # as if a run were still on chunk 16
    prog = run(target, xy, randomness=("fresh",), state_dir=str(tmp_path), saved_only=True)
    assert (prog["n_done"], prog["chunks_done"], prog["chunks_saved"], prog["chunks"]) == (16, 1, 2, 3)
    first = run(target, tuple(t[:16] for t in xy), randomness=("fresh",))
    assert prog["headline"] == first["headline"] and prog["clean"] == first["clean"]
    text = adaptive.format_progress(prog)
    assert "16 of 48 images" in text and "not a result" in text
    with pytest.raises(ValueError, match="saved_only"):
        run(target, xy, saved_only=True)                                     # state_dir None


def test_two_gloo_processes_equal_one(clf, tmp_path):
    x, y = data.batch("fashion_mnist", "test", n=24, seed=3)
    torch.save({"x": x, "y": y, "weights": clf.state_dict()}, tmp_path / "inputs.pt")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "adaptive_worker.py"), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rank 1 of 2" in proc.stdout
    sharded = json.loads((tmp_path / "result.json").read_text())
    single = adaptive.adaptive_evaluation(NoisyPurifier(clf).eval(), x, y, eps=0.1, profile="quick", chunk=8,
                                          state_dir=None, progress=False, speed_n=0)
    single = json.loads(json.dumps(_comparable(single)))
    assert _comparable(sharded) == single


def test_unrolled_search_is_the_defense_with_its_exact_gradient():
    from advlab.defenses import DefenseGAN

    class LinearGen(nn.Module):
        latent_dim = 8

        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.W = nn.Parameter(torch.randn(784, 8, generator=g) * 8 ** 0.5)
            self.b = nn.Parameter(torch.zeros(784))

        def forward(self, z):
            return torch.sigmoid(z @ self.W.t() + self.b).view(-1, 1, 28, 28)

    torch.manual_seed(0)
    d = DefenseGAN(LinearGen().eval(), nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval(), steps=12,
                   restarts=3, lr=0.3).eval()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    u = adaptive.UnrolledSearch(d, segment=5)
    d.reseed(5)
    ref = d(x)
    d.reseed(5)
    assert torch.allclose(u(x), ref, atol=1e-5)               # same draws: the defense's own forward
    xg = x.clone().requires_grad_(True)
    d.reseed(5)
    g, = torch.autograd.grad(u(xg).logsumexp(1).sum(), xg)     # through 12 checkpointed search steps
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)) * 1e-3
    f = []
    for sign in (1, -1):
        d.reseed(5)
        with torch.no_grad():
            f.append(u(x + sign * v).logsumexp(1).sum())
    fd = float((f[0] - f[1]) / 2)
    assert g.abs().sum() > 0 and abs(fd - float((g * v).sum())) < 0.05 * abs(fd) + 1e-7
