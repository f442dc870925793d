"""CARSO's reported search (advlab.purifiers.carso.search): the validation split never overlaps the
training images of the search's runs, every variant builds a valid config, unknown names are named,
and the recorded search (docs/results/carso_search.json) is what format_search renders."""
import json
from pathlib import Path

import pytest
import torch

from advlab import data
from advlab.purifiers.carso import search
from advlab.purifiers.carso.train import check_config

ROOT = Path(__file__).resolve().parent.parent


def test_validation_split_is_disjoint_from_the_training_images():
    xv, yv = search.validation_split(200)
    xt, _ = data.batch("fashion_mnist", "train", n=search.N_TRAIN, seed=0)
    # an image of the validation split found among the training images would be a leak (Fashion-MNIST has a
    # few exact duplicates, hence a small tolerance)
    train_keys = {hash(row.numpy().tobytes()) for row in (xt * 255).round().to(torch.uint8).flatten(1)}
    hits = sum(hash(row.numpy().tobytes()) in train_keys for row in (xv * 255).round().to(torch.uint8).flatten(1))
    assert hits <= 3, f"{hits} of 200 validation images are training images of the search"
    assert len(yv) == 200


@pytest.mark.parametrize("name", list(search.VARIANTS))
def test_every_variant_is_a_valid_config(name):
    cfg = search.config(name, iters=10, pool_pgd_n=10, pool_fgsm_n=10)
    check_config(cfg)
    assert cfg.n_train == search.N_TRAIN
    for k, v in search.VARIANTS[name].items():
        assert getattr(cfg, k) == v


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="name: unknown variant 'nope'"):
        search.config("nope", 1, 1, 1)
    with pytest.raises(ValueError, match="nope"):
        search.main(["--variants", "paper,nope", "--out", "/nonexistent"])


def test_recorded_search_renders():
    path = ROOT / "docs" / "results" / "carso_search.json"
    if not path.exists():
        pytest.skip("no recorded search")
    rep = json.loads(path.read_text())
    md = search.format_search(rep)
    assert (ROOT / "docs" / "results" / "carso_search.md").read_text() == md
    for v in rep["variants"]:
        assert v["name"] in search.VARIANTS and f"| {v['name']} |" in md
        r = v["results"]
        for key in ("clean", "grey_box", "apgd_ce20_probe"):
            assert 0 <= r[key]["defense"] <= 1 and 0 <= r[key]["classifier"] <= 1
