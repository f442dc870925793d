"""Issue 15: a damaged zoo gives a clear error naming the model (zoo.ZooRecordError, a ValueError),
and zoo.save switches the manifest only once the new weights are safely on disk."""
import json

import pytest
import torch
from safetensors.torch import load_file

from advlab import models, zoo
from advlab.zoo import atomic


@pytest.fixture
def root(tmp_path):
    torch.manual_seed(0)
    zoo.save("fmnist/mlp", models.build("mlp"), {}, {}, "test", root=tmp_path / "zoo")
    return tmp_path / "zoo"


def _edit(root, change):
    man = json.loads((root / "manifest.json").read_text())
    change(man)
    (root / "manifest.json").write_text(json.dumps(man))


def test_a_record_without_sha256_is_refused(root):
    _edit(root, lambda m: m["fmnist/mlp"].pop("sha256"))
    with pytest.raises(zoo.ZooRecordError, match="'fmnist/mlp'.*no sha256"):
        zoo.load("fmnist/mlp", root=root)


def test_a_truncated_manifest_names_the_model_and_the_file(root):
    text = (root / "manifest.json").read_text()
    (root / "manifest.json").write_text(text[: len(text) // 2])
    for call in (zoo.load, zoo.info):
        with pytest.raises(zoo.ZooRecordError, match="'fmnist/mlp'.*manifest.json is not valid json"):
            call("fmnist/mlp", root=root)


def test_weights_of_another_architecture_are_refused(root):
    _edit(root, lambda m: m.__setitem__("fmnist/cnn", dict(m["fmnist/mlp"])))
    with pytest.raises(zoo.ZooRecordError, match="'fmnist/cnn'.*another architecture"):
        zoo.load("fmnist/cnn", root=root)


@pytest.mark.parametrize("absolute", [False, True])
def test_a_file_outside_the_zoo_folder_is_refused_even_when_its_sha256_matches(root, absolute):
    rec = zoo.info("fmnist/mlp", root=root)
    outside = root.parent / "outside.safetensors"
    (root / rec["file"]).rename(outside)
    assert zoo.sha256_file(outside) == rec["sha256"]
    _edit(root, lambda m: m["fmnist/mlp"].__setitem__("file", str(outside) if absolute else "../outside.safetensors"))
    with pytest.raises(zoo.ZooRecordError, match="'fmnist/mlp'.*outside the zoo folder"):
        zoo.load("fmnist/mlp", root=root)


def test_save_names_weights_by_sha256_and_removes_the_old_file_after_the_switch(root):
    old = zoo.info("fmnist/mlp", root=root)
    assert old["file"] == f"weights/fmnist__mlp-{old['sha256'][:12]}.safetensors"
    torch.manual_seed(1)
    new = zoo.save("fmnist/mlp", models.build("mlp"), {}, {}, "test", root=root)
    assert new["sha256"] != old["sha256"] and zoo.sha256_file(root / new["file"]) == new["sha256"]
    assert not (root / old["file"]).exists() and [p.name for p in (root / "weights").iterdir()] == [new["file"][8:]]


def test_a_crash_between_the_weights_and_the_manifest_leaves_the_old_model(root, monkeypatch):
    before = zoo.load("fmnist/mlp", root=root).state_dict()

    def crash(point):
        if point == "zoo.save:weights-written":
            raise KeyboardInterrupt(point)
    monkeypatch.setattr(atomic, "pause_point", crash)
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        zoo.save("fmnist/mlp", models.build("mlp"), {}, {}, "test", root=root)
    after = zoo.load("fmnist/mlp", root=root).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    for f in (root / "weights").iterdir():            # both weights files are whole
        assert load_file(f) and not f.name.startswith(".")
