"""`advlab adaptive` and `advlab leaderboard`: the CLI hands its words to the library's own parsers."""
from __future__ import annotations

import json

from advlab import cli


def test_adaptive_runs_a_quick_ensemble_and_writes_its_result(tmp_path, capsys, monkeypatch):
    argv = ["adaptive", "fmnist/cnn", "--n", "6", "--profile", "quick", "--sanity-n", "4",
            "--state", str(tmp_path / "state"), "--out", str(tmp_path / "out"), "--threads", "1"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "apgd-ce" in out and "square" in out
    (result,) = (tmp_path / "out").glob("fmnist__cnn_adaptive_quick_linf0.1_n6_seed0.json")
    res = json.loads(result.read_text())
    assert res["command"].startswith("advlab adaptive fmnist/cnn")
    assert 0.0 <= res["headline"]["acc"] <= 1.0 and len(res["headline"]["ci95"]) == 2
    # with --record the result (per image too) lives in the record alone: the .md next to it points there
    monkeypatch.setenv("ADVLAB_RECORDS", str(tmp_path / "records"))
    assert cli.main(argv[:-4] + ["--out", str(tmp_path / "out2"), "--threads", "1", "--record"]) == 0
    assert not list((tmp_path / "out2").glob("*.json"))
    (md,) = (tmp_path / "out2").glob("fmnist__cnn_adaptive_quick_linf0.1_n6_seed0.md")
    (rec,) = (tmp_path / "records").rglob("adaptive_quick_linf0.1.json")
    assert str(rec) in md.read_text() or rec.name in md.read_text()
    assert json.loads(rec.read_text())["result"]["per_image"] == res["per_image"]     # resumed from --state: same run


def test_adaptive_unknown_name_is_one_line_naming_both_kinds(capsys):
    assert cli.main(["adaptive", "no_such_defense", "--n", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("advlab adaptive: name: 'no_such_defense' is neither a purifier") and "lqvae" in err


def test_adaptive_bad_option_exits_2(capsys):
    assert cli.main(["adaptive", "lqvae", "--bogus"]) == 2
    assert "--bogus" in capsys.readouterr().err


def test_leaderboard_writes_table_json_and_plots(tmp_path, capsys):
    assert cli.main(["leaderboard", "--out", str(tmp_path)]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"leaderboard.md", "leaderboard.json"} <= names
    assert "fmnist/pgd-at" in (tmp_path / "leaderboard.md").read_text()


def test_adaptive_set_configures_the_purifier_and_is_refused_for_a_classifier(capsys):
    from advlab.evaluation.adaptive import load_target
    target, name, models = load_target("mlvgm", classifier="fmnist/pgd-at", settings={"alphas": "cosine", "scale": 0.7})
    assert name == "mlvgm+fmnist/pgd-at" and set(models) == {"fmnist/hvae", "fmnist/pgd-at"}
    assert target.schedule == "cosine" and target.scale == 0.7 and "scale=0.7" in target.describe()
    assert cli.main(["adaptive", "fmnist/cnn", "--n", "2", "--set", "scale=0.7"]) == 2
    err = capsys.readouterr().err
    assert "settings: ['scale']" in err and "only a purifier" in err
    assert cli.main(["adaptive", "mlvgm", "--n", "2", "--set", "no_such_setting=1"]) == 2
    assert "no_such_setting" in capsys.readouterr().err


def test_adaptive_saved_refuses_to_record(capsys):
    from advlab.evaluation import adaptive
    import pytest
    with pytest.raises(SystemExit) as e:
        adaptive.main(["fmnist/cnn", "--n", "4", "--saved", "--record"])
    assert e.value.code == 2 and "--saved" in capsys.readouterr().err
