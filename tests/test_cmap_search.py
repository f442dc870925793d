"""advlab.purifiers.cmap.search: the settings it visits, the choice rule, and a run on a tiny untrained model
(every row measured, cached and resumed, the Markdown)."""
import json

import pytest
import torch
import torch.nn as nn

from advlab.purifiers.cmap import search
from advlab.purifiers.cmap.model import ConsistencyModel

pytestmark = pytest.mark.usefixtures("one_thread")


def test_points_are_one_at_a_time_around_the_centre():
    pts = search.points()
    assert len(pts) == len({json.dumps(p, sort_keys=True) for p in pts}) == 17
    assert search.CENTRE in pts
    for p in pts:
        changed = {k for k in p if p[k] != search.CENTRE[k]}
        assert len(changed) <= 1 or changed == {"iters", "beta"}
    assert {p["k"] for p in pts} == {4, 8, 16}
    for beta in (0.0, search.CENTRE["beta"]):   # the iteration curve with and without the distribution term
        assert sorted(p["iters"] for p in pts if p["beta"] == beta and p["k"] == 8 and p["lam"] == 1.0) == search.ITERS


def test_choose_prefers_grey_box_above_the_clean_bar():
    rows = [{"clean_acc": 0.9, "grey_box_acc": 0.3}, {"clean_acc": 0.82, "grey_box_acc": 0.5},
            {"clean_acc": 0.7, "grey_box_acc": 0.9}]
    assert search.choose(rows) == rows[1]
    low = [{"clean_acc": 0.5, "grey_box_acc": 0.4}, {"clean_acc": 0.6, "grey_box_acc": 0.1}]
    assert search.choose(low) == low[1]


def test_run_measures_caches_and_resumes(tmp_path, monkeypatch):
    torch.manual_seed(0)
    gen = ConsistencyModel(width=8, emb_dim=16).eval()
    torch.manual_seed(1)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    settings = [{"k": 2, "iters": 2, "lam": 1.0, "beta": 0.1}, {"k": 2, "iters": 3, "lam": 0.0, "beta": 0.0}]
    rep = search.run(gen, clf, x, y, settings, state_dir=tmp_path, progress=False)
    assert [{k: r[k] for k in ("k", "iters", "lam", "beta")} for r in rep["rows"]] == settings
    for r in rep["rows"]:
        assert 0 <= r["clean_acc"] <= 1 and 0 <= r["grey_box_acc"] <= 1 and r["seconds_per_image"] > 0
    assert len(list(tmp_path.glob("*.json"))) == 2
    # a rerun reads the saved rows instead of searching again
    monkeypatch.setattr(search, "measure", lambda *a, **k: pytest.fail("measured again"))
    again = search.run(gen, clf, x, y, settings, state_dir=tmp_path, progress=False)
    assert again["rows"] == rep["rows"] and again["chosen"] == search.choose(rep["rows"])
    assert rep["measured_here"] == 2 and again["measured_here"] == 0
    rep |= {"command": "python -m advlab.purifiers.cmap.search --n-val 6", "device": "cpu", "seconds": 1.0}
    md = search.format_markdown(rep)
    assert "| 2 | 3 | 0 | 0 |" in md and "from the cache" not in md
    assert "1 points this call measured; the other 1 came from the cache" in search.format_markdown(rep | {"measured_here": 1})
    assert ("no point reaches 80% clean" in md) == (rep["chosen"]["clean_acc"] < 0.8)


def test_iteration_axis_and_the_markdown_mark_the_recorded_choice():
    row = lambda k, it, lam, beta, clean, grey: {"k": k, "iters": it, "lam": lam, "beta": beta, "clean_acc": clean,
                                                 "grey_box_acc": grey, "seconds_per_image": 0.1 * it}
    c = search.CENTRE
    rows = [row(c["k"], 200, c["lam"], 0.1, 0.9, 0.2), row(c["k"], 25, c["lam"], 0.1, 0.85, 0.7),
            row(c["k"], 100, c["lam"], 0.1, 0.95, 0.4), row(c["k"], 100, c["lam"], 0.0, 0.95, 0.4),   # beta 0: one count
            row(16, 25, c["lam"], 0.1, 0.99, 0.9)]                                                    # another K
    axis = search.iteration_axis({"rows": rows})
    assert axis == {0.1: [(25, 0.85, 0.7), (100, 0.95, 0.4), (200, 0.9, 0.2)]}   # sorted by count, the centre's K only
    rep = {"rows": rows, "classifier_alone": {"clean_acc": 0.9, "grey_box_acc": 0.0}, "n_val": 40, "command": "c",
           "device": "cpu", "seconds": 60.0, "grey_box_attack": "PGD", "clean_bar": 0.8, "chosen": rows[1]}
    md = search.format_markdown(rep)
    assert md.startswith("# CMAP") and not search.format_markdown(rep, heading=False).startswith("#")
    assert md.count("(chosen)") == 1 and f"| {c['k']} | 25 | {c['lam']:g} | 0.1 **(chosen)** |" in md
    assert "highest at 25 iterations (70.0%), 20.0% at 200" in md


def _tiny():
    torch.manual_seed(0)
    gen = ConsistencyModel(width=8, emb_dim=16).eval()
    torch.manual_seed(1)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    return gen, clf, x, torch.tensor([0, 1, 2, 3, 4])


def test_search_at_gives_the_images_of_separate_runs():
    from advlab.purifiers.cmap.purifier import CMAP
    gen, clf, x, _ = _tiny()
    long = CMAP(gen, clf, k=3, iters=6, batch_size=2, seed=0)     # batches of 2: the draws span the chunks
    snaps = long.search_at(x, [0, 2, 6])
    assert set(snaps["seconds"]) == {0, 2, 6} and snaps["seconds"][6] >= snaps["seconds"][2] > 0
    for t in (0, 2, 6):
        short = CMAP(gen, clf, k=3, iters=t, batch_size=2, seed=0)
        assert torch.equal(snaps[t], short.search(x).images), t
    with pytest.raises(ValueError, match="at:"):
        long.search_at(x, [7])


def test_run_reads_an_iteration_axis_from_one_search(monkeypatch):
    gen, clf, x, y = _tiny()
    settings = [{"k": 2, "iters": t, "lam": 1.0, "beta": 0.0} for t in (1, 3, 4)] + [
        {"k": 2, "iters": 3, "lam": 0.5, "beta": 0.0}]
    rep = search.run(gen, clf, x, y, settings, progress=False)
    calls = []
    real = search.measure
    monkeypatch.setattr(search, "measure", lambda d, *a, **k: calls.append(d.iters) or real(d, *a, **k))
    for s, row in zip(settings, rep["rows"]):       # each row equals the separate run of its setting
        alone = search.run(gen, clf, x, y, [s], progress=False)["rows"][0]
        assert {k: alone[k] for k in ("clean_acc", "grey_box_acc")} == {k: row[k] for k in ("clean_acc", "grey_box_acc")}
        assert {k: row[k] for k in s} == s
    assert calls == [1, 3, 4, 3]


def test_main_runs_one_axis_into_its_own_file_and_chooses_nothing(tmp_path, capsys):
    argv = ["--quick", "--n-val", "2", "--axes", "iters", "--out", str(tmp_path), "--state", str(tmp_path / "s")]
    assert search.main(argv) == 0
    rep = json.loads((tmp_path / "cmap_search_iters.json").read_text())
    assert rep["chosen"] is None and rep["axes"] == ["iters"] and not (tmp_path / "cmap_search.json").exists()
    assert sorted({(r["iters"], r["beta"]) for r in rep["rows"]}) == [(2, 0.0), (2, 0.1), (4, 0.0), (4, 0.1)]
    md = (tmp_path / "cmap_search_iters.md").read_text()
    assert "nothing chosen" in md and "Chosen" not in md and "95% CI" in md
    with pytest.raises(SystemExit):
        search.main(["--axes", "depth"])
    assert "--axes" in capsys.readouterr().err


def test_cmap_defaults_are_the_recorded_choice_and_its_clean_record_is_of_them():
    """CMAP's constructor defaults are the setting the complete search recorded in docs/results chose, and the
    clean record on the fixed 1000 was made with them: a new search (more validation images, a GPU) fails this
    until the defaults and the record follow it."""
    import inspect

    from advlab.evaluation import records
    from advlab.purifiers.cmap.purifier import CMAP
    rep = json.loads((records.REPO / "docs/results/cmap_search.json").read_text())
    assert rep["chosen"] is not None and rep["n_val"] >= 40
    defaults = {k: inspect.signature(CMAP).parameters[k].default for k in ("k", "iters", "lam", "beta")}
    assert defaults == {k: rep["chosen"][k] for k in defaults}, "CMAP's defaults are not the recorded search's choice"
    clean = json.loads((records.REPO / "docs/results/records/cmap+fmnist__cnn/defense_report_clean.json").read_text())
    assert clean["result"]["defense"] == CMAP.from_zoo("fashion_mnist").describe(), "measure the clean rows again"
