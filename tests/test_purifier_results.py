"""The purifiers' recorded defense reports (docs/results/records; made with `advlab defense-report ... --record` on an H100
or on this CPU, as each record's `device` says):
they describe the library's current defaults, they are reproduced on CPU on the first 200 images of
the same test subset, and the issue's bars (>= 80% clean, >= 65% grey box under PGD-40 at Linf 0.1 on
>= 1000 test images) are checked against them (slow)."""
import json
from pathlib import Path

import pytest

from advlab import attacks, data, defenses, evaluate, zoo
from advlab.evaluation import records

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
CLEAN, GREY = "clean (defense)", "grey box (attack on classifier, then defense)"
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
# (defense class, purifier zoo entry, key of its report in records.evaluations(entry))
REPORTS = {"vaegan": (defenses.VAEGANPurifier, "fmnist/vaegan", "defense_report_vaegan_fmnist/vgg_linf0.1"),
           "lqvae": (defenses.LQVAE, "fmnist/lqvae", "defense_report_lqvae_fmnist/cnn_linf0.1")}


def _report(name):
    cls, entry, key = REPORTS[name]
    try:
        zoo.info(entry)
    except zoo.NotTrainedError:
        pytest.skip(f"{entry} is not trained")
    ev = records.evaluations(entry).get(key)
    assert ev is not None, f"run `advlab defense-report {name} --n 1000 --record`"
    return cls, ev


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_recorded_report_is_of_the_current_defaults_and_reproduced_on_cpu(name):
    cls, ev = _report(name)
    defense = cls.from_zoo("fashion_mnist")
    assert ev["defense"] == defense.describe(), "the record was made with other settings: measure again"
    assert ev[GREY]["n"] >= 1000 and ev["test_subset_seed"] == 0 and ev["sanity_passed"]
    x, y = data.batch("fashion_mnist", "test", n=ev[GREY]["n"], seed=0)
    x, y = x[:200], y[:200]
    atk = attacks.PGD(eps=0.1, alpha=0.01, steps=40, random_start=True, seed=0)
    assert repr(atk) == ev[GREY]["attack"]
    clean, grey = evaluate.accuracy(defense, x, y), evaluate.accuracy(defense, atk(defense.classifier, x, y), y)
    print(f"{name}: clean {clean:.3f} grey {grey:.3f} on 200; recorded {ev[CLEAN]['acc']:.3f} {ev[GREY]['acc']:.3f}")
    # a 200-image part of the 1000 (binomial sd ~3%) on another device: sampling noise only
    assert abs(clean - ev[CLEAN]["acc"]) < 0.08 and abs(grey - ev[GREY]["acc"]) < 0.08


def test_vaegan_meets_the_bars():
    _, ev = _report("vaegan")
    assert ev[CLEAN]["acc"] >= 0.80 and ev[GREY]["acc"] >= 0.65


def test_lqvae_meets_the_grey_box_bar():
    _, ev = _report("lqvae")
    assert ev[GREY]["acc"] >= 0.65


@pytest.mark.xfail(strict=True, reason="the 128-bit fmnist/lqvae purifies 79.2% of the report's 1000 images; "
                                       "on all 10,000 test images it reaches 80.4% (the next test)")
def test_lqvae_meets_the_clean_bar_on_the_report_subset():
    _, ev = _report("lqvae")
    assert ev[CLEAN]["acc"] >= 0.80


def test_lqvae_meets_the_clean_bar_on_the_full_test_set():
    """Measured live: the 1000-image subset estimates the clean accuracy with a standard deviation of
    ~1.3 points, the full test set with ~0.4; purifying 10,000 images takes seconds on one thread."""
    _report("lqvae")
    defense = defenses.LQVAE.from_zoo("fashion_mnist")
    x, y = data.batch("fashion_mnist", "test", n=None)
    acc = evaluate.accuracy(defense, x, y)
    print(f"LQ-VAE clean accuracy on all {len(x)} test images: {acc:.4f}")
    assert len(x) == 10000 and acc >= 0.80


def test_defense_gan_search_meets_the_bars_at_the_default_lr():
    """Defense-GAN's lr 0.1 was chosen on seed 0 and re-measured on seed 1 (purifier_sweep.py, H100)."""
    for seed in (0, 1):
        rows = json.loads((RESULTS / f"sweep_defense-gan_n1000_seed{seed}.json").read_text())["rows"]
        row = next(r for r in rows if (r["lr"], r["steps"], r["restarts"]) ==
                   (defenses.defense_gan.SEARCH_LR, 200, 10))
        assert row["clean"] >= 0.80 and row["grey_box"] >= 0.65, (seed, row)


def test_defense_gan_record_is_of_the_current_defaults_and_meets_the_bars():
    """The recorded report (CPU: a latent search costs ~0.6 s an image on one thread, so it is not re-run
    here; its clean and grey-box rows agree with the two H100 sweeps above)."""
    ev = records.evaluations("fmnist/wgan-gp")["defense_report_defense-gan_generator_fmnist/cnn_linf0.1"]
    assert ev["defense"] == defenses.DefenseGAN.from_zoo("fashion_mnist").describe()
    assert ev[GREY]["n"] >= 1000 and ev["test_subset_seed"] == 0 and ev["sanity_passed"]
    assert ev[CLEAN]["acc"] >= 0.80 and ev[GREY]["acc"] >= 0.65
    adaptive = next(v for k, v in ev.items() if k.startswith("adaptive"))
    assert "eot_iter=" in adaptive["attack"] and adaptive["n"] >= 100
    sweep = json.loads((RESULTS / "sweep_defense-gan_n1000_seed0.json").read_text())["rows"]
    row = next(r for r in sweep if (r["lr"], r["steps"], r["restarts"]) == (defenses.defense_gan.SEARCH_LR, 200, 10))
    # the same 1000 images, other random restarts (and an H100): sampling noise only
    assert abs(ev[CLEAN]["acc"] - row["clean"]) < 0.05 and abs(ev[GREY]["acc"] - row["grey_box"]) < 0.05
