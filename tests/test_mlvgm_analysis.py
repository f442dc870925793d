"""The analyses of lecture 08 (advlab.purifiers.mlvgm.analysis): Spearman against scipy's, the level study
(a = 0 is the reconstruction, a resampled level changes the input), random alpha vectors scored like the
search, and the L2 success-rate curves (monotone, zero at a bound nothing can reach, bounds checked).
Tiny models, synthetic data."""
import math

import pytest
import torch
from scipy.stats import spearmanr

from advlab import data
from advlab.purifiers.mlvgm import analysis, schedules
from advlab.purifiers.mlvgm.purifier import MLVGM
from test_mlvgm import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("a, b", [([1, 2, 3], [3, 1, 2]), ([0.2, 0.9, 0.5, 0.5], [1, 2, 3, 4]),
                                  ([5, 4, 3, 2, 1], [1, 2, 3, 4, 5]), ([0.1, 0.7, 0.3, 0.2, 0.9, 0.4], [6, 2, 4, 1, 3, 5])])
def test_spearman_matches_scipy(a, b):
    assert math.isclose(analysis.spearman(a, b), spearmanr(a, b).statistic, abs_tol=1e-12)


def test_spearman_edge_cases():
    assert math.isnan(analysis.spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="^a, b: "):
        analysis.spearman([1, 2], [1, 2, 3])


def test_level_study_reconstructs_at_zero_and_is_seeded(linear_clf):
    m = tiny_model()
    x, y = data.batch("synthetic", "test", n=12, seed=0)
    rows = analysis.level_study(m, linear_clf, x, y, seed=3)
    assert [r["alphas"] for r in rows] == [list(a) for a in analysis.LEVEL_SETTINGS]
    with torch.no_grad():
        rec_acc = (linear_clf(m.decode_mixed(x, torch.zeros(3), 0.6, torch.Generator())).argmax(1) == y).float().mean()
    assert rows[0]["acc"] == round(rec_acc.item(), 4)
    assert rows == analysis.level_study(m, linear_clf, x, y, seed=3)


def test_spearman_study_scores_vectors_like_the_search(linear_clf):
    m = tiny_model()
    x, y = data.batch("synthetic", "test", n=10, seed=1)
    rows = analysis.spearman_study(m, linear_clf, x, y, n_vectors=5, eot=2, seed=4)
    assert len(rows) == 5 and len({tuple(r["alphas"]) for r in rows}) == 5
    r = rows[2]
    a = torch.tensor(r["alphas"])
    assert r["spearman"] == round(analysis.spearman(a, schedules.linear(3)), 4)
    assert math.isclose(r["acc"], schedules.eot_accuracy(m, linear_clf, x, y, a, 0.6, 2, 5), abs_tol=1e-4)


def test_l2_curves_are_monotone_and_start_at_zero_for_a_tiny_bound(linear_clf):
    m = tiny_model()
    x, y = data.batch("synthetic", "test", n=16, seed=2)
    d = MLVGM(m, linear_clf, seed=0).eval()
    rep = analysis.l2_curves(d, x, y, bounds=(1e-6, 2.0, 8.0), steps=3, eot=2, k=4)
    assert rep["success"] == sorted(rep["success"]) and rep["success"][0] == 0.0
    assert rep["n"] == 16 and rep["k"] == 4 and 0 <= rep["clean_acc"] <= 1
    clf_rep = analysis.l2_curves(linear_clf, x, y, bounds=(0.5, 30.0), steps=10)
    assert clf_rep["k"] == 1 and clf_rep["success"][-1] == 1.0          # a linear model falls at a large bound
    for bad in ((), (1.0, 0.5), (0.0, 1.0)):
        with pytest.raises(ValueError, match="^bounds: "):
            analysis.l2_curves(linear_clf, x, y, bounds=bad)
