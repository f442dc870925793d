"""The zoo's front end: list by robust accuracy from the records, load by name (classifiers and
defenses), register one's own checkpoint, user zoos stacked on top of the bundled one."""
import json

import pytest
import torch

from advlab import models, purifiers, zoo
from advlab.evaluation import records


def test_list_reads_the_records_and_sorts_by_robust_accuracy():
    rows = zoo.list(dataset="fashion_mnist", threat_model="Linf")
    by_name = {r["name"]: r for r in rows}
    # every row's robust number is a recorded one: the ensemble's worst case where it has run
    pgd_at = records.read_record("fmnist/pgd-at", "adaptive_full_linf0.1")["result"]
    assert by_name["fmnist/pgd-at"]["attack"] == "worst case"
    assert by_name["fmnist/pgd-at"]["robust"] == pytest.approx(pgd_at["headline"]["acc"])
    assert by_name["fmnist/pgd-at"]["ci95"] == pytest.approx(pgd_at["headline"]["ci95"])
    assert by_name["lqvae+fmnist/cnn"]["kind"] == "defense"
    robust = [r["robust"] for r in rows if r["robust"] is not None]
    assert robust == sorted(robust, reverse=True) and len(robust) >= 6
    assert [r for r in rows if r["robust"] is None] == rows[len(robust):]        # unmeasured last
    # generators are parts of defenses, not classifiers to list
    assert "fmnist/wgan-gp" not in by_name and "fmnist/cnn" in by_name
    assert {r["kind"] for r in zoo.list(kind="classifier")} == {"classifier"}
    # no L2 record exists: no robust number under L2, clean accuracies still listed
    assert all(r["robust"] is None for r in zoo.list(threat_model="L2"))


def test_list_leaves_out_records_of_other_weights(tmp_path):
    root = tmp_path / "records"
    src = records.records_dir() / "fmnist__pgd-at"
    (root / "fmnist__pgd-at").mkdir(parents=True)
    rec = json.loads((src / "pgd40_linf0.1.json").read_text())
    rec["models"]["fmnist/pgd-at"] = "0" * 64                       # weights the zoo no longer has
    (root / "fmnist__pgd-at" / "pgd40_linf0.1.json").write_text(json.dumps(rec))
    rows = {r["name"]: r for r in zoo.list(records_root=root)}
    assert rows["fmnist/pgd-at"]["robust"] is None and rows["fmnist/pgd-at"]["clean"] is None


def test_load_model_classifier_and_defense():
    clf = zoo.load_model("fmnist/pgd-at", dataset="fashion_mnist", threat_model="Linf")
    assert isinstance(clf, models.SmallCNN) and not clf.training
    d = zoo.load_model("lqvae+fmnist/cnn")
    assert isinstance(d, purifiers.LQVAE)
    x = torch.rand(2, 1, 28, 28)
    assert d(x).shape == (2, 10)


@pytest.mark.parametrize("kwargs, word", [
    (dict(name="fmnist/cnn", dataset="mnist"), "dataset"),
    (dict(name="fmnist/cnn", threat_model="L3"), "threat_model"),
    (dict(name="nope+fmnist/cnn"), "name"),
    (dict(name="fmnist/nope"), "name"),
    (dict(name=""), "name"),
])
def test_load_model_errors_name_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        zoo.load_model(**kwargs)


def test_register_then_load_from_a_stacked_user_zoo(tmp_path, monkeypatch):
    monkeypatch.delenv("ADVLAB_ZOO", raising=False)
    torch.manual_seed(0)
    net = models.build("cnn")
    rec = zoo.register("me/cnn", net, root=tmp_path / "myzoo", metrics={"clean_acc": 0.5})
    assert rec["entry"]["arch"] == "cnn" and (tmp_path / "myzoo" / rec["file"]).exists()
    assert rec["sha256"] == zoo.sha256_file(tmp_path / "myzoo" / rec["file"])
    assert "me/cnn" not in zoo.names()                                   # not stacked yet
    back = zoo.load_model("me/cnn", root=tmp_path / "myzoo")
    for a, b in zip(back.state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)
    monkeypatch.setenv("ADVLAB_ZOO", str(tmp_path / "myzoo"))
    assert "me/cnn" in zoo.names() and "fmnist/cnn" in zoo.names()
    assert isinstance(zoo.load_model("me/cnn"), models.SmallCNN)
    assert isinstance(zoo.load("fmnist/cnn"), models.SmallCNN)            # the bundled zoo is still there
    assert "me/cnn" in {r["name"] for r in zoo.list()}


def test_a_user_zoo_wins_over_the_bundled_one_and_order_matters(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    torch.manual_seed(1)
    zoo.register("me/net", models.build("mlp"), root=a)
    zoo.register("me/net", models.build("cnn"), root=b)
    monkeypatch.setenv("ADVLAB_ZOO", f"{a}:{b}")
    assert isinstance(zoo.load("me/net"), models.MLP)
    monkeypatch.setenv("ADVLAB_ZOO", f"{b}:{a}")
    assert isinstance(zoo.load("me/net"), models.SmallCNN)
    # a model trained into a user zoo hides the bundled weights of the same name, in that folder only
    clf = zoo.load("fmnist/cnn")
    zoo.save("fmnist/cnn", models.build("cnn"), {}, {}, "test", root=b)
    assert not torch.equal(zoo.load("fmnist/cnn").state_dict()["features.0.weight"], clf.state_dict()["features.0.weight"])
    monkeypatch.setenv("ADVLAB_ZOO", str(a))
    assert torch.equal(zoo.load("fmnist/cnn").state_dict()["features.0.weight"], clf.state_dict()["features.0.weight"])


@pytest.mark.parametrize("kwargs, word", [
    (dict(name="fmnist/cnn"), "name"),                 # bundled names are not overwritten
    (dict(name="no-slash"), "name"),
    (dict(arch="mlp"), "arch"),                        # the weights do not fit an MLP
    (dict(arch="nonesuch"), "arch"),
    (dict(model="not a model"), "model"),
    (dict(dataset="cifar10"), "dataset"),
])
def test_register_errors_name_the_argument(tmp_path, kwargs, word):
    kw = dict(name="me/x", model=models.build("cnn"), root=tmp_path) | kwargs
    with pytest.raises(ValueError, match=word):
        zoo.register(kw.pop("name"), kw.pop("model"), **kw)


def test_register_needs_a_folder_and_never_writes_the_bundled_zoo(monkeypatch):
    monkeypatch.delenv("ADVLAB_ZOO", raising=False)
    with pytest.raises(ValueError, match="root"):
        zoo.register("me/x", models.build("cnn"))
    with pytest.raises(ValueError, match="root"):
        zoo.register("me/x", models.build("cnn"), root=zoo.ZOO_DIR)


def build_tiny(width=4):
    """A builder outside advlab, for the test below."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, width))


def test_a_user_zoo_never_imports_a_builder_module_by_itself(tmp_path, monkeypatch):
    import sys
    net = build_tiny(3)
    zoo.register("me/tiny", net, root=tmp_path, arch=f"{__name__}:build_tiny", arch_kwargs={"width": 3})
    assert isinstance(zoo.load_model("me/tiny", root=tmp_path), torch.nn.Sequential)   # imported here: fine
    rec = json.loads((tmp_path / "manifest.json").read_text())
    rec["me/tiny"]["entry"]["builder"] = "some_unimported_module:make"
    (tmp_path / "manifest.json").write_text(json.dumps(rec))
    assert "some_unimported_module" not in sys.modules
    with pytest.raises(zoo.ZooRecordError, match="import some_unimported_module"):
        zoo.load_model("me/tiny", root=tmp_path)
    assert "some_unimported_module" not in sys.modules
