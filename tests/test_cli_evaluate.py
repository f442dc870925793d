"""`advlab evaluate`: robust accuracy of a zoo model in saved chunks, resumed after an
interruption, and recorded (evaluation.records) without touching the weights' checksum."""
import json

import torch

from advlab import attacks, cli, models, zoo
from advlab.evaluation import records


def test_evaluate_resumes_and_records(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADVLAB_ZOO", str(tmp_path / "zoo"))
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    zoo.save("fmnist/cnn", models.build("cnn", "fashion_mnist"), {"dataset": "fashion_mnist"}, {}, "test")
    sha = zoo.info("fmnist/cnn")["sha256"]
    argv = ["evaluate", "fmnist/cnn", "--n", "30", "--chunk", "10", "--steps", "2", "--threads", "1"]

    calls = []
    real = attacks.PGD._attack
    monkeypatch.setattr(attacks.PGD, "_attack", lambda self, *a: calls.append(1) or real(self, *a))
    assert cli.main(argv) == 0
    first = json.loads(capsys.readouterr().out)["fmnist/cnn"]["pgd2_linf0.1"]
    assert len(calls) == 3 and first["n"] == 30
    state = next((tmp_path / "build" / "eval").glob("*.json"))
    chunks = json.loads(state.read_text())["chunks"]
    assert sorted(chunks, key=int) == ["0", "10", "20"]

    del chunks["20"]  # as if interrupted before the last chunk
    data = json.loads(state.read_text()) | {"chunks": chunks}
    state.write_text(json.dumps(data))
    calls.clear()
    assert cli.main(argv + ["--record"]) == 0
    again = json.loads(capsys.readouterr().out)["fmnist/cnn"]["pgd2_linf0.1"]
    assert len(calls) == 1, "only the missing chunk is attacked again"
    assert again == first
    rec = zoo.info("fmnist/cnn")
    assert records.evaluations("fmnist/cnn")["pgd2_linf0.1"] == first and rec["sha256"] == sha
    assert "PGD(" in first["attack"] and 0 <= first["robust_acc"] <= first["clean_acc"] <= 1
