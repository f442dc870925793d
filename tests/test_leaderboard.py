"""The leaderboard (advlab.evaluation.leaderboard) built from a temporary records folder: a model
record, a defense_report record and an adaptive-evaluation record; every cell cites n and device."""
import json
import re

import pytest

from advlab.evaluation import leaderboard, records
from advlab.metrics import mcnemar_exact, wilson

PGD = "PGD(eps=0.1, norm='linf', steps=40)"


def _adaptive_result():
    """An adaptive_evaluation result as the records hold it (only the fields the leaderboard reads)."""
    own = lambda acc: {"vote": {"acc": acc, "robust": int(acc * 50), "n": 50, "ci95": [acc - 0.1, acc + 0.1]}}  # noqa: E731
    rows = [{"setting": "none", "key": k, "name": k.split("[")[0], "backward": b, "attack": f"{k}()", "own": own(a)}
            for k, b, a in (("apgd-ce[soft]", "soft", 0.3), ("apgd-ce[identity]", "identity", 0.5),
                            ("square", None, 0.6))]
    return {"kind": "adaptive_evaluation", "n": 50, "mode": "individual", "profile": "quick", "settings_run": ["none"],
            "clean": {"vote": {"acc": 0.8, "n": 50}}, "attacks": rows,
            "headline": {"acc": 0.28, "ci95": [0.17, 0.42], "what": "per-image worst case"},
            "strongest": {"attack": "apgd-ce[soft]"}, "purify_images_per_s": 900.0, "purify_speed_n": 32,
            "sanity": {"passed": True, "eps_curve": [{"eps": 0.1, "acc": 0.3, "n": 32}, {"eps": 0.95, "acc": 0.0, "n": 32}]}}


@pytest.fixture
def root(tmp_path):
    records.write_record("model", "fmnist/pgd-at", "pgd40_linf0.1",
                         {"attack": PGD, "n": 200, "clean_acc": 0.85, "robust_acc": 0.7}, attack=PGD, n=200, seed=0,
                         device="NVIDIA H100 80GB HBM3", root=tmp_path)
    report = {"classifier": "fmnist/cnn", "purify_images_per_s": 3000.0, "sanity_passed": True,
              "clean (classifier alone)": {"acc": 0.92, "n": 100, "attack": "-"},
              "clean (defense)": {"acc": 0.79, "n": 100, "attack": "-"},
              "undefended (attack on classifier)": {"acc": 0.0, "n": 100, "attack": PGD},
              "grey box (attack on classifier, then defense)": {"acc": 0.74, "n": 100, "attack": PGD},
              "adaptive (BPDA(purify, backward=soft) + classifier)": {"acc": 0.45, "n": 100, "attack": PGD},
              "sanity: adaptive at eps 0.1": {"acc": 0.5, "n": 20, "attack": PGD},
              "sanity: adaptive at eps 1": {"acc": 0.0, "n": 20, "attack": PGD}}
    records.write_record("defense", "lqvae+fmnist/cnn", "defense_report_linf0.1", report, attack=PGD, n=100, seed=0,
                         device="cpu (1 threads)", root=tmp_path)
    records.write_record("defense", "lqvae+fmnist/cnn", "adaptive_quick_linf0.1", _adaptive_result(), n=50, seed=0,
                         device="cpu (2 threads)", root=tmp_path)
    return tmp_path


def test_leaderboard_builds_from_records_and_every_cell_cites_n_and_device(root, tmp_path):
    board = leaderboard.build(root, reports=None)
    assert set(board["entries"]) == {"fmnist/pgd-at", "lqvae+fmnist/cnn", "fmnist/cnn (undefended)"}
    row = board["table"]["lqvae+fmnist/cnn"]
    assert row["clean"]["n"] == 100                         # clean: the measurement on the most images
    assert row["worst case"]["acc"] == 0.28 and row["APGD-CE"]["acc"] == 0.3   # min over backwards
    assert row["adaptive PGD-40"]["acc"] == 0.45 and row["grey box"]["device"] == "cpu, 1 thread"
    assert board["table"]["fmnist/pgd-at"]["PGD-40"]["device"] == "H100"
    out = tmp_path / "board"
    assert leaderboard.main(["--out", str(out), "--records", str(root), "--reports", "none"]) == 0
    md = (out / "leaderboard.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| entry")]
    assert len(table) == 3
    n_cells = 0
    for line in table:
        for cell in line.strip("|").split(" | ")[1:]:
            if "%" in cell or "img/s" in cell:
                n_cells += 1
                assert re.search(r"\(n (\d+|\?), (H100|cpu, \d threads?)\)$", cell.strip()), cell
    assert n_cells == 11
    saved = json.loads((out / "leaderboard.json").read_text())
    assert all(c["n"] and c["device"] for c in saved["cells"])
    assert all(c["attack"] for c in saved["cells"] if c["column"] not in ("clean",))
    for png in ("bars.png", "eps_curves.png", "throughput.png"):
        assert (out / png).stat().st_size > 1000


def _per_image_result(robust: list[int], subset: dict) -> dict:
    """A deterministic ensemble result whose images survive where robust[i] is 1 (one attack, codes 0 / 3)."""
    n = len(robust)
    return {"kind": "adaptive_evaluation", "n": n, "eps": 0.1, "stochastic": False, "settings_run": ["none"],
            "settings": {"none": {}}, "subset": subset,
            "headline": {"acc": sum(robust) / n, "robust": sum(robust), "n": n, "ci95": wilson(sum(robust), n)},
            "per_image": {"clean": [3] * n, "none": {"apgd-ce[exact]": [3 * r for r in robust]}}}


def test_paired_compares_records_on_the_same_images_only(tmp_path):
    sub = {"dataset": "fashion_mnist", "split": "test", "n": 40, "seed": 0}
    a = [1] * 30 + [0] * 10                    # 30 of 40
    b = [1] * 20 + [0] * 10 + [1] * 7 + [0] * 3  # 27 of 40: 10 images survive a only, 7 b only
    for name, rob, subset in (("fmnist/pgd-at", a, sub), ("fmnist/trades", b, sub),
                              ("fmnist/fgsm-at", a, sub | {"seed": 1})):          # other images: never paired
        records.write_record("model", name, "adaptive_full_linf0.1", _per_image_result(rob, subset), n=40, seed=0,
                             device="cpu", root=tmp_path)
    pairs = leaderboard.paired(tmp_path)
    assert len(pairs) == 1
    p = pairs[0]
    assert {p["a"], p["b"]} == {"fmnist/pgd-at", "fmnist/trades"} and p["both"] == 20 and p["neither"] == 3
    assert {p["a_only"], p["b_only"]} == {10, 7} and p["intervals_overlap"]
    assert p["p_value"] == mcnemar_exact(10, 7) > 0.05


def test_paired_on_the_recorded_ensembles_holds_the_course_s_classifiers():
    """The repository's records: fmnist/pgd-at and fmnist/trades are both on the fixed 1000 (lecture 11's example)."""
    pairs = {frozenset((r["a"], r["b"])): r for r in leaderboard.paired()}
    r = pairs[frozenset(("fmnist/pgd-at", "fmnist/trades"))]
    assert r["n"] == 1000 and r["both"] + r["a_only"] + r["b_only"] + r["neither"] == 1000
    ra = records.read_record("fmnist/pgd-at", "adaptive_full_linf0.1")["result"]["headline"]["robust"]
    assert (r["both"] + r["a_only"] if r["a"] == "fmnist/pgd-at" else r["both"] + r["b_only"]) == ra
