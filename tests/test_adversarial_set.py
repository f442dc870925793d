"""evaluation.adversarial_set: chunked, resumable, cached adversarial images keyed by (model sha256,
attack repr, subset, chunk); a resumed run equals an uninterrupted one, and a changed key misses."""
import json

import pytest
import torch

from advlab import attacks
from advlab.evaluation import adversarial_set

pytestmark = pytest.mark.usefixtures("one_thread")
SUBSET = {"dataset": "synthetic", "split": "test", "n": 10, "seed": 0}


class Counting:
    """Wraps an attack, counts its calls; fail_at=k raises on the k-th call (an interrupted run)."""

    def __init__(self, attack, fail_at=None):
        self.attack, self.fail_at, self.calls = attack, fail_at, 0

    def __call__(self, model, x, y):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("interrupted in the middle of a chunk")
        return self.attack(model, x, y)

    def __repr__(self):
        return repr(self.attack)


@pytest.fixture
def setup(linear_clf):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(10, 1, 28, 28, generator=g), torch.randint(0, 10, (10,), generator=g)
    return linear_clf, x, y, attacks.PGD(eps=0.1, alpha=0.02, steps=3, random_start=True, seed=0)


def craft(model, x, y, atk, folder, sha="a" * 64, chunk=4):
    return adversarial_set.craft(model, x, y, atk, model_sha256=sha, subset=SUBSET, chunk=chunk, folder=folder,
                                 name="toy", progress=False)


def test_resume_after_an_interrupted_chunk_equals_an_uninterrupted_run(setup, tmp_path):
    model, x, y, pgd = setup
    whole = craft(model, x, y, Counting(pgd), tmp_path / "a")
    broken = Counting(pgd, fail_at=2)                    # chunk 0 done, interrupted inside chunk 4
    with pytest.raises(KeyboardInterrupt):
        craft(model, x, y, broken, tmp_path / "b")
    index = json.loads(next((tmp_path / "b").glob("*.json")).read_text())
    assert list(index["chunks"]) == ["0"]
    again = Counting(pgd)
    resumed = craft(model, x, y, again, tmp_path / "b")
    assert again.calls == 2 and torch.equal(resumed, whole)     # chunks 4 and 8 only
    cached = Counting(pgd)
    assert torch.equal(craft(model, x, y, cached, tmp_path / "b"), whole) and cached.calls == 0
    assert (resumed - x).abs().max() <= 0.1 + 1e-6 and resumed.shape == x.shape


def test_a_changed_model_attack_subset_or_chunk_misses_the_cache(setup, tmp_path):
    model, x, y, pgd = setup
    craft(model, x, y, Counting(pgd), tmp_path)
    for change in (dict(sha="b" * 64), dict(atk=attacks.PGD(eps=0.1, alpha=0.02, steps=3, random_start=True, seed=1)),
                   dict(chunk=5), dict(x=x.flip(0))):
        args = dict(model=model, x=x, y=y, atk=pgd, folder=tmp_path) | change
        counted = Counting(args.pop("atk"))
        craft(atk=counted, **args)
        assert counted.calls >= 1, change
    assert len(list(tmp_path.glob("*.json"))) == 5


def test_one_chunk_equals_the_attack_itself(setup, tmp_path):
    model, x, y, pgd = setup
    x_adv = adversarial_set.craft(model, x, y, pgd, model_sha256="a" * 64, folder=tmp_path, progress=False)
    assert torch.equal(x_adv, pgd(model, x, y))


def test_a_corrupt_index_or_chunk_warns_and_is_crafted_again(setup, tmp_path):
    model, x, y, pgd = setup
    whole = craft(model, x, y, Counting(pgd), tmp_path)
    index = next(tmp_path.glob("*.json"))
    index.write_text(index.read_text()[:20])            # truncated resume file
    again = Counting(pgd)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        assert torch.equal(craft(model, x, y, again, tmp_path), whole)
    assert again.calls == 3
    chunk = index.with_suffix("") / "4.safetensors"
    chunk.write_bytes(chunk.read_bytes()[:50])          # truncated chunk
    again = Counting(pgd)
    with pytest.warns(RuntimeWarning, match="unreadable"):
        assert torch.equal(craft(model, x, y, again, tmp_path), whole)
    assert again.calls == 1


def test_bad_arguments_name_themselves(setup, tmp_path):
    model, x, y, pgd = setup
    with pytest.raises(ValueError, match="^model_sha256: "):
        adversarial_set.craft(model, x, y, pgd, model_sha256="", folder=tmp_path)
    with pytest.raises(ValueError, match="^chunk: "):
        adversarial_set.craft(model, x, y, pgd, model_sha256="a", chunk=0, folder=tmp_path)
