"""scripts/paper_tables.py's reuse of an earlier run's columns and its cache of adversarial examples."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "docs" / "results" / "paper004_n1000_seed0.json"


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("paper_tables", ROOT / "scripts" / "paper_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Args:
    def __init__(self, n=1000, seed=0, eps=0.1, reuse=None):
        self.n, self.seed, self.eps, self.reuse = n, seed, eps, reuse


class _CountingAttack:
    """Adds a constant; counts its calls; its repr names the constant (the cache key)."""

    def __init__(self, shift):
        self.shift, self.calls = shift, 0

    def __call__(self, clf, x, y):
        self.calls += 1
        return (x + self.shift).clamp(0, 1)

    def __repr__(self):
        return f"Shift(shift={self.shift})"


def test_reuse_takes_the_three_columns_of_every_row(tables):
    cols = tables.reused_columns(str(RECORDED), _Args())
    old = json.loads(RECORDED.read_text())
    assert len(cols) == len(old["white_box"]) - 1 + len(old["black_box"]) - 1   # all rows but the averages
    a = next(r for r in old["white_box"] if (r["Attack"], r["Model"]) == ("CW", "A"))
    assert cols[("CW", "A")] == {c: a[c] for c in ("Defense-GAN", "Madry", "Adv Tr")}
    assert set(cols[("CW", "B")]) == {"Defense-GAN"}          # Madry and Adv Tr exist for A alone
    assert "LQ-VAE" not in cols["A/B"] and "No defense" not in cols["A/B"]


def test_reuse_refuses_another_subset_or_attack(tables, tmp_path):
    with pytest.raises(SystemExit, match="n=1000 seed=0, not n=500"):
        tables.reused_columns(str(RECORDED), _Args(n=500))
    with pytest.raises(SystemExit, match="FGSM"):   # eps changes FGSM's repr
        tables.reused_columns(str(RECORDED), _Args(eps=0.2))
    old = json.loads(RECORDED.read_text())
    old["white_box"][-2]["attack"] = "PGD(steps=7)"
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(SystemExit, match="PGD\\(steps=7\\)"):
        tables.reused_columns(str(tmp_path / "old.json"), _Args())


def test_cache_returns_the_stored_examples_and_recomputes_on_another_attack(tables, tmp_path):
    pytest.importorskip("safetensors")
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([0, 1, 2])
    atk = _CountingAttack(0.25)
    first = tables.adversarial(atk, "fmnist/cnn", None, x, y, tmp_path, seed=0)
    again = tables.adversarial(atk, "fmnist/cnn", None, x, y, tmp_path, seed=0)
    assert atk.calls == 1 and torch.equal(first, again) and torch.equal(first, (x + 0.25).clamp(0, 1))
    other = _CountingAttack(0.5)       # same class name, so the same file: the metadata must tell them apart
    assert torch.equal(tables.adversarial(other, "fmnist/cnn", None, x, y, tmp_path, seed=0), (x + 0.5).clamp(0, 1))
    assert other.calls == 1
    assert tables.adversarial(atk, "fmnist/cnn", None, x, y, None, seed=0) is not None and atk.calls == 2
