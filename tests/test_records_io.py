"""evaluation.records: one json per (model or defense) x protocol; the migrated manifest evaluations;
records.evaluations(model) gives back the dict the manifest kept under `evaluations`."""
import json
from pathlib import Path

import pytest
import torch

from advlab import models, zoo
from advlab.evaluation import records

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "docs" / "results" / "records"
FIELDS = {"kind", "name", "protocol", "attack", "n", "seed", "device", "date", "commit", "dirty", "command", "models",
          "evaluations_key", "result"}


@pytest.fixture
def tmp_zoo(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLAB_ZOO", str(tmp_path / "zoo"))
    monkeypatch.delenv("ADVLAB_RECORDS", raising=False)
    torch.manual_seed(0)
    zoo.save("fmnist/mlp", models.build("mlp"), {"dataset": "fashion_mnist"}, {}, "test")
    return tmp_path


def test_write_read_list_roundtrip(tmp_zoo):
    sha = zoo.info("fmnist/mlp")["sha256"]
    result = {"attack": "PGD(...)", "n": 8, "clean_acc": 0.5, "robust_acc": 0.25}
    rec = records.write_record("model", "fmnist/mlp", "pgd2_linf0.1", result, attack="PGD(...)", n=8, seed=0,
                               device="cpu (1 threads)", models={"fmnist/mlp": sha}, command="advlab evaluate ...")
    path = tmp_zoo / "zoo" / "records" / "fmnist__mlp" / "pgd2_linf0.1.json"   # a private zoo keeps its records
    assert records.record_path("fmnist/mlp", "pgd2_linf0.1") == path and path.exists()
    assert set(rec) == FIELDS and records.read_record("fmnist/mlp", "pgd2_linf0.1") == rec
    assert rec["date"] and len(rec["commit"] or "x" * 40) == 40      # a checkout's commit (None outside git)
    assert records.list_records() == [rec] and records.list_records("defense") == []
    assert records.evaluations("fmnist/mlp") == {"pgd2_linf0.1": result}
    assert not list(path.parent.glob(".*"))                          # no temporary file left behind


def test_evaluations_leave_out_records_of_other_weights(tmp_zoo):
    old_sha = zoo.info("fmnist/mlp")["sha256"]
    records.write_record("model", "fmnist/mlp", "pgd2_linf0.1", {"robust_acc": 0.1}, models={"fmnist/mlp": old_sha})
    torch.manual_seed(1)
    zoo.save("fmnist/mlp", models.build("mlp"), {"dataset": "fashion_mnist"}, {}, "test")   # re-trained
    assert records.evaluations("fmnist/mlp") == {} and len(records.list_records()) == 1
    assert records.evaluations("fmnist/cnn") == {}                   # not trained in this zoo


def test_records_dir_precedence_and_the_error_outside_a_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("ADVLAB_ZOO", raising=False)
    monkeypatch.delenv("ADVLAB_RECORDS", raising=False)
    assert records.records_dir() == RECORDS
    monkeypatch.setenv("ADVLAB_ZOO", str(tmp_path / "z"))
    assert records.records_dir() == tmp_path / "z" / "records"
    monkeypatch.setenv("ADVLAB_RECORDS", str(tmp_path / "r"))
    assert records.records_dir() == tmp_path / "r" and records.records_dir(tmp_path) == tmp_path
    monkeypatch.delenv("ADVLAB_ZOO")
    monkeypatch.delenv("ADVLAB_RECORDS")
    monkeypatch.setattr(records, "REPO", tmp_path)                   # as if installed, not a checkout
    with pytest.raises(records.RecordError, match="ADVLAB_RECORDS"):
        records.records_dir()


def test_bad_arguments_and_corrupt_records(tmp_path):
    with pytest.raises(ValueError, match="^kind: "):
        records.write_record("leaderboard", "fmnist/mlp", "p", {}, root=tmp_path)
    with pytest.raises(ValueError, match="^name: "):
        records.write_record("model", "../x", "p", {}, root=tmp_path)
    with pytest.raises(ValueError, match="^protocol: "):
        records.write_record("model", "fmnist/mlp", "a/b", {}, root=tmp_path)
    with pytest.raises(ValueError, match="^result: "):
        records.write_record("model", "fmnist/mlp", "p", [0.5], root=tmp_path)
    with pytest.raises(FileNotFoundError, match="no record of 'fmnist/mlp'"):
        records.read_record("fmnist/mlp", "p", root=tmp_path)
    bad = tmp_path / "fmnist__mlp" / "p.json"
    bad.parent.mkdir()
    bad.write_text('{"kind": "mo')
    with pytest.raises(records.RecordError, match="p.json"):
        records.read_record("fmnist/mlp", "p", root=tmp_path)


def test_the_migrated_records_replace_the_manifest_evaluations(monkeypatch):
    monkeypatch.delenv("ADVLAB_ZOO", raising=False)
    monkeypatch.delenv("ADVLAB_RECORDS", raising=False)
    manifest = json.loads((ROOT / "advlab" / "zoo" / "manifest.json").read_text())
    assert not any("evaluations" in rec for rec in manifest.values())
    recs = records.list_records()
    assert len(recs) >= 10 and all(FIELDS <= set(r) for r in recs)
    for r in recs:   # every record names the weights it measured, and they are the zoo's
        assert all(zoo.same_weights(m, sha) for m, sha in r["models"].items()), r["name"]
    ev = records.evaluations("fmnist/pgd-at")
    assert ev["pgd40_linf0.1"]["robust_acc"] == 0.78 and ev["autoattack_linf0.1"]["robust_acc"] == 0.74
    assert set(records.evaluations("fmnist/lqvae")) == {"defense_report_lqvae_fmnist/cnn_linf0.1",
                                                        "defense_report_lqvae_soft_fmnist/cnn_linf0.1"}
    rec = records.read_record("fmnist/pgd-at", "pgd40_linf0.1")
    assert rec["commit"] is None and rec["n"] == 2000 and rec["seed"] == 0 and "PGD(" in rec["attack"]
