"""`advlab defense-report`, `advlab train --set` and zoo records whose sizes differ from the registry's."""
import json

import pytest
import torch

from advlab import cli, evaluate, models, zoo
from advlab.evaluation import records
from advlab.purifiers.lqvae.model import build_lqvae

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch):
    """A zoo in tmp_path with an untrained classifier and LQ-VAE (latent 16), and tmp_path as cwd."""
    monkeypatch.setenv("ADVLAB_ZOO", str(tmp_path / "zoo"))
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    zoo.save("fmnist/cnn", models.build("cnn", "fashion_mnist"), {"dataset": "fashion_mnist"}, {}, "test")
    zoo.save("fmnist/lqvae", build_lqvae(latent_dim=16), {"dataset": "fashion_mnist", "latent_dim": 16}, {}, "test")
    return tmp_path


def test_zoo_builds_the_recorded_sizes_not_the_registry_defaults(tiny_zoo):
    m = zoo.load("fmnist/lqvae")              # the registry says latent_dim=128; the record says 16
    assert m.latent_dim == 16 and m.encode(torch.rand(2, 1, 28, 28))[0].shape == (2, 16)
    assert zoo.build("fmnist/lqvae").latent_dim == 128


def test_defense_report_writes_json_markdown_and_the_record(tiny_zoo, capsys):
    argv = ["defense-report", "lqvae", "--n", "12", "--steps", "2", "--adaptive-n", "6", "--sanity-n", "4",
            "--speed-n", "8", "--device", "cpu", "--threads", "1", "--record"]
    assert cli.main(argv) == 0
    out = tiny_zoo / "build" / "reports" / "lqvae_fmnist__cnn_n12_seed0"
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["n"] == 12 and rep["adaptive"]["n"] == 6 and all(r["n"] == 4 for r in rep["sanity"]["rows"])
    assert "steps=2" in rep["grey_box"]["attack"] and rep["purify_speed"]["images_per_s"] > 0
    md = out.with_suffix(".md").read_text()
    assert "| images |" in md and "images/s" in md and md in capsys.readouterr().out
    ev = records.evaluations("fmnist/lqvae")["defense_report_lqvae_fmnist/cnn_linf0.1"]
    grey = ev["grey box (attack on classifier, then defense)"]
    assert grey["acc"] == rep["grey_box"]["acc"] and grey["n"] == 12 and "PGD(" in grey["attack"]
    assert ev["sanity_passed"] == rep["sanity"]["passed"]
    # the command that reproduces it, also when called as cli.main([...]) or `python -m advlab.cli`
    assert rep["command"] == ev["command"] == "advlab " + " ".join(argv)


def test_speed_only_prints_the_throughput_and_writes_nothing(tiny_zoo, capsys):
    assert cli.main(["defense-report", "lqvae", "--n", "8", "--speed-n", "8", "--speed-only", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "images/s on cpu" in out and "LQVAE(" in out and not (tiny_zoo / "build" / "reports").exists()


def test_defense_report_settings_reach_the_defense(tiny_zoo, capsys):
    # issue 15: an unknown setting was a TypeError traceback ("unexpected keyword"); now one line naming it, exit 2
    assert cli.main(["defense-report", "lqvae", "--n", "4", "--set", "no_such_setting=1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--set no_such_setting" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="NAME=VALUE"):
        cli._setting("steps")
    assert cli._setting("lr=0.1") == ("lr", 0.1) and cli._setting("space=latent") == ("space", "latent")


def test_train_set_overrides_the_profile(tiny_zoo, capsys):
    argv = ["train", "fmnist/lqvae", "--profile", "quick", "--set", "iters=2", "latent_dim=8",
            "--out", str(tiny_zoo / "q"), "--threads", "1"]
    assert cli.main(argv) == 0
    rec = zoo.info("fmnist/lqvae", root=tiny_zoo / "q")
    assert rec["config"]["latent_dim"] == 8 and rec["config"]["iters"] == 2
    assert "iters=2" in rec["command"] and "latent_dim=8" in rec["command"]   # the command reproduces it
    assert zoo.load("fmnist/lqvae", root=tiny_zoo / "q").latent_dim == 8


def test_adaptive_n_limits_only_the_adaptive_row(tiny_zoo):
    from advlab import attacks, data, defenses
    d = defenses.LQVAE.from_zoo("fashion_mnist")
    x, y = data.batch("fashion_mnist", "test", n=10, seed=0)
    rep = evaluate.defense_report(d, x, y, attack=attacks.FGSM(eps=0.1), adaptive_n=3, sanity_eps=(1.0,),
                                  sanity_margin=1.0)
    assert rep["grey_box"]["n"] == 10 and rep["adaptive"]["n"] == 3 and rep["sanity"]["rows"][0]["n"] == 10
    with pytest.raises(ValueError, match="^adaptive_n: "):
        evaluate.defense_report(d, x, y, adaptive_n=0)


def test_clean_only_resumes_from_its_chunks_and_matches_the_full_report(tiny_zoo, capsys):
    argv = ["defense-report", "lqvae", "--n", "12", "--clean-only", "--chunk", "5", "--speed-n", "4",
            "--device", "cpu", "--threads", "1", "--record"]
    assert cli.main(argv) == 0
    out = tiny_zoo / "build" / "reports" / "lqvae_fmnist__cnn_clean_n12_seed0"
    rep = json.loads(out.with_suffix(".json").read_text())
    assert len(rep["correct"]) == 12 and rep["clean (defense)"]["acc"] == sum(rep["correct"]) / 12
    lo, hi = rep["clean (defense)"]["ci95"]
    assert lo <= rep["clean (defense)"]["acc"] <= hi and rep["purify_images_per_s"] > 0
    chunks = sorted((tiny_zoo / "build" / "clean").glob("*/[0-9]*.json"))
    assert [c.stem for c in chunks] == ["0", "10", "5"]
    # a chunk's result is saved: poison one and the rerun reads it back instead of computing it
    stored = json.loads(chunks[2].read_text())
    stored["data"]["correct"] = [not c for c in stored["data"]["correct"]]
    chunks[2].write_text(json.dumps(stored))
    assert cli.main(argv) == 0
    again = json.loads(out.with_suffix(".json").read_text())
    assert again["correct"][5:10] == [not c for c in rep["correct"][5:10]] and again["correct"][:5] == rep["correct"][:5]
    # the same images through the full report (LQ-VAE is deterministic): the same clean accuracy
    assert cli.main(["defense-report", "lqvae", "--n", "12", "--steps", "1", "--adaptive-n", "2", "--sanity-n", "2",
                     "--speed-n", "4", "--device", "cpu", "--threads", "1"]) == 0
    full = json.loads((tiny_zoo / "build" / "reports" / "lqvae_fmnist__cnn_n12_seed0.json").read_text())
    assert full["clean"]["defense"]["acc"] == pytest.approx(rep["clean (defense)"]["acc"])
    assert full["clean"]["classifier"]["acc"] == pytest.approx(rep["clean (classifier alone)"]["acc"])
    # the record the leaderboard reads: a clean cell and the throughput
    from advlab.evaluation import leaderboard
    cells, _, speeds = leaderboard.read_records()
    assert any(c["entry"] == "lqvae+fmnist/cnn" and c["column"] == "clean" and c["n"] == 12 for c in cells)
    assert any(s["entry"] == "lqvae+fmnist/cnn" for s in speeds)
