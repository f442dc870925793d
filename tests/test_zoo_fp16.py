"""The compact zoo: float16 storage of float32-trained weights (zoo.convert), the records that stay
attached to the converted model (zoo.same_weights), and the bundled zoo's conversion checks."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from advlab import zoo
from advlab.evaluation import records

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tmp_zoo(tmp_path):
    root = tmp_path / "zoo"
    root.mkdir()
    rec = zoo.info("fmnist/mlp")
    (root / "weights").mkdir()
    shutil.copy(zoo.ZOO_DIR / rec["file"], root / rec["file"])
    (root / "manifest.json").write_text(json.dumps({"fmnist/mlp": rec}))
    return root


def test_convert_halves_the_file_and_loads_upcast(tmp_zoo):
    old = zoo.info("fmnist/mlp", tmp_zoo)
    before = zoo.load("fmnist/mlp", root=tmp_zoo)
    new = zoo.convert("fmnist/mlp", torch.float16, check={"passed": True}, root=tmp_zoo)
    if old.get("dtype") == "float16":
        pytest.skip("the bundled fmnist/mlp is float16 already; convert returned it unchanged")
    assert new["dtype"] == "float16" and new["converted_from"]["sha256"] == old["sha256"]
    assert new["size_bytes"] < 0.55 * old["size_bytes"]
    assert not (tmp_zoo / old["file"]).exists(), "the float32 file is removed once the manifest points at the new one"
    assert new["config"] == old["config"] and new["metrics"] == old["metrics"] and new["command"] == old["command"]
    after = zoo.load("fmnist/mlp", root=tmp_zoo)
    for (k, a), b in zip(before.state_dict().items(), after.state_dict().values()):
        assert b.dtype == a.dtype, k                                  # upcast into the float32 model
        assert torch.equal(b, a.half().to(a.dtype)), k                # exactly the float16 rounding
    assert zoo.same_weights("fmnist/mlp", new["sha256"], tmp_zoo)
    assert zoo.same_weights("fmnist/mlp", old["sha256"], tmp_zoo)
    assert not zoo.same_weights("fmnist/mlp", "0" * 64, tmp_zoo)
    assert not zoo.same_weights("fmnist/mlp", None, tmp_zoo)                 # a record naming no weights
    again = zoo.convert("fmnist/mlp", torch.float16, root=tmp_zoo)   # idempotent
    assert again["sha256"] == new["sha256"]


def test_records_of_the_original_stay_attached_after_conversion(tmp_zoo, tmp_path):
    old_sha = zoo.info("fmnist/mlp", tmp_zoo)["sha256"]
    recs = tmp_path / "records"
    records.write_record("model", "fmnist/mlp", "p", {"robust_acc": 0.5}, attack="PGD", n=10, seed=0,
                         device="cpu", models={"fmnist/mlp": old_sha}, root=recs, evaluations_key=["fmnist/mlp", "p"])
    records.write_record("model", "fmnist/mlp", "q", {"robust_acc": 0.4}, attack="PGD", n=10, seed=0,
                         device="cpu", models={"fmnist/mlp": "f" * 64}, root=recs, evaluations_key=["fmnist/mlp", "q"])
    zoo.convert("fmnist/mlp", torch.float16, root=tmp_zoo)
    assert set(records.evaluations("fmnist/mlp", root=recs, zoo_root=tmp_zoo)) == {"p"}


def test_save_refuses_a_non_float_dtype(tmp_zoo):
    with pytest.raises(ValueError, match="dtype"):
        zoo.save("fmnist/mlp", zoo.load("fmnist/mlp", root=tmp_zoo), {}, {}, "x", root=tmp_zoo, dtype=torch.int8)


def test_bundled_conversions_passed_their_checks():
    """Every float16 entry of the bundled zoo was converted after its metrics moved by <= 0.2 points."""
    man = zoo.read_manifest(zoo.ZOO_DIR)
    for name, rec in man.items():
        if rec.get("dtype") != "float16":
            continue
        chk = rec["conversion_check"]
        assert chk["passed"] and chk["tolerance_points"] <= 0.2, name
        assert chk["metrics"] and all(abs(m["delta_points"]) <= chk["tolerance_points"] for m in chk["metrics"].values()), name
        assert rec["converted_from"]["sha256"] != rec["sha256"], name


def test_tracked_files_fit_the_size_budget():
    """All tracked files of the repository together stay under 30 MB (the zoo is a download for every clone).
    runs/ (unfinished CPU runs carried across machines, deleted when their result lands: runs/README.md) has a
    budget of its own, 8 MB, so that a carried training state does not count against the zoo's."""
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    sizes = {f: (ROOT / f).stat().st_size for f in files.decode().split("\0") if f and (ROOT / f).is_file()}
    carried = sum(v for f, v in sizes.items() if f.startswith("runs/"))
    total = sum(sizes.values()) - carried
    assert total < 30e6, f"tracked files outside runs/: {total / 1e6:.1f} MB, budget 30 MB"
    assert carried < 8e6, f"runs/: {carried / 1e6:.1f} MB, budget 8 MB (land or drop what it carries)"
