"""advlab.training.phenomena (lecture 03's recorded trade-off and catastrophic-overfitting runs): the command
at tiny settings writes a record with every model and both FGSM-AT runs, and its Markdown; the shipped
record was made with the module's default settings and holds what lecture 03's text relies on."""
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from advlab import resources
from advlab.training import phenomena

pytestmark = pytest.mark.usefixtures("one_thread")


def test_quick_command_writes_a_complete_record(tmp_path):
    assert phenomena.main(["--quick", "--threads", "1", "--out", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "at_phenomena.json").read_text())
    q = phenomena.QUICK
    assert rec["config"] == json.loads(json.dumps(asdict(q)))
    labels = [p["label"] for p in rec["frontier"]]
    assert labels == (["standard (eps 0)"] + [f"PGD-AT eps {e:g}" for e in q.sweep_eps]
                      + [f"TRADES beta {b:g}" for b in q.sweep_beta])
    for p in rec["frontier"]:
        assert 0 <= p["pgd_acc"] <= 1 and 0 <= p["clean_acc"] <= 1
    assert [r["random_init"] for r in rec["overfitting"]] == [False, True]
    steps_per_epoch = -(-q.co_train // 128)
    for r in rec["overfitting"]:
        assert [m["step"] for m in r["monitor"]] == list(range(q.co_every, q.co_epochs * steps_per_epoch + 1, q.co_every))
    md = (tmp_path / "at_phenomena.md").read_text()
    assert "| standard (eps 0) |" in md and "FGSM-AT, random start" in md
    assert "--quick" in rec["command"]


def test_shipped_record_shows_what_lecture_03_teaches():
    path = Path(resources.results_dir()) / "at_phenomena.json"
    if not path.exists():
        pytest.skip("no recorded run (python -m advlab.training.phenomena --threads 1)")
    rec = json.loads(path.read_text())
    assert rec["config"] == json.loads(json.dumps(asdict(phenomena.PhenomenaConfig())))
    pts = {p["label"]: p for p in rec["frontier"]}
    std = pts["standard (eps 0)"]
    robust = [p for p in rec["frontier"] if p["method"] != "standard"]
    # the trade-off: every adversarially trained model is more robust and less accurate than standard training
    assert all(p["pgd_acc"] > std["pgd_acc"] and p["clean_acc"] < std["clean_acc"] for p in robust)
    # catastrophic overfitting: the run started at x is flagged; at the flagged check its PGD accuracy is below half
    # its best while FGSM accuracy is at least what it was at the best check; at the end FGSM accuracy is far above
    # PGD accuracy (robustness against the one step it trains on only)
    plain = rec["overfitting"][0]
    assert plain["random_init"] is False and plain["flagged_step"] is not None
    mon = plain["monitor"]
    best = max(mon, key=lambda m: m["pgd_acc"])
    at_flag = next(m for m in mon if m["step"] == plain["flagged_step"])
    assert at_flag["pgd_acc"] < best["pgd_acc"] / 2 and at_flag["fgsm_acc"] >= best["fgsm_acc"]
    assert mon[-1]["fgsm_acc"] - mon[-1]["pgd_acc"] >= 0.3
