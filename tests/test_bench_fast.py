"""`advlab bench attacks --fast` (issue 14): the fast mode is timed next to fp32 only when asked, and every
output of the benchmark is checked against the threat model. On a CPU the mode is channels_last alone;
the speed bars are GPU measurements (scripts/gpu_check.sh)."""
from __future__ import annotations

import json

import torch

from advlab.evaluation import bench


def test_violations_counts_images_outside_the_ball_or_the_box():
    x = torch.full((4, 1, 2, 2), 0.5)
    adv = x.clone()
    adv[1, 0, 0, 0] += 0.1 + 1e-6       # just outside eps 0.1
    adv[2, 0, 1, 1] = 1.0 + 1e-6        # outside [0, 1] (and the ball)
    adv[3] += 0.1                       # on the sphere: inside
    assert bench.violations(x, adv, 0.1 + 1e-7) == 2
    assert bench.violations(x, x, 0.0) == 0
    assert abs(bench.excess(x, adv, 0.1) - 0.4) < 1e-5            # pixel 1.0 + 1e-6 lies 0.5 + 1e-6 from 0.5
    assert bench.excess(x, x, 0.0) == 0.0


def test_fast_mode_is_timed_checked_and_reported(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["attacks", "--n", "32", "--steps", "2", "--fast", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert {"ours", "ours_fast", "fwdbwd"} <= set(res["median_seconds"])
    assert res["fast_mode"] == "channels_last, cudnn.benchmark"          # CPU: no bf16 autocast
    assert res["violations"]["ours_fast"] == 0 and res["violations"]["ours"] == 0
    assert res["max_excess"]["ours_fast"] == 0.0 and res["max_excess"]["ours"] == 0.0
    assert 0 <= res["robust_acc"]["ours_fast"] <= res["clean_acc"]
    assert res["ratio_fast_vs_fp32"] > 0
    text = capsys.readouterr().out
    assert "advlab PGD-2 fast" in text and "threat-model violations" in text
    plain = tmp_path / "plain.json"
    bench.main(["attacks", "--n", "16", "--steps", "1", "--json", str(plain)])
    assert "ours_fast" not in json.loads(plain.read_text())["median_seconds"]    # never on by itself


def test_gpu_bars_read_a_result():
    res = {"ratio_ours_vs_fwdbwd": 1.02, "ratio_ours_vs_torchattacks": 1.01, "ratio_fast_vs_torchattacks": 0.5,
           "robust_acc": {"ours": 0.70, "ours_fast": 0.706}, "violations": {"ours": 0, "ours_fast": 0, "torchattacks": 9}}
    bars = bench.gpu_bars(res)
    assert [b["ok"] for b in bars.values()] == [True, False, True, False, True]
    assert bars["torchattacks / fast PGD (speed-up)"]["value"] == 2.0
    assert bars["|fast - fp32| robust accuracy, points"]["value"] == 0.6
    missing = bench.gpu_bars({"ratio_ours_vs_fwdbwd": 1.0, "robust_acc": {"ours": 0.7}, "violations": {}})
    assert missing["torchattacks / fast PGD (speed-up)"] == {"value": None, "bar": ">= 1.8", "ok": False}
