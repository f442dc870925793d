#!/usr/bin/env bash
# The GPU check of issue 14, one command on a GPU machine (budget: under 5 minutes on one H100):
#   1. the PGD benchmark (advlab bench attacks: k fwd+bwd floor, ours, torchattacks, bf16, fast) on
#      fmnist/cnn and fmnist/vgg, 10,000 test images, PGD-20, median of 5 (then OUTDIR/bench.done);
#   2. every CUDA test (pytest -m cuda: the attacks on CUDA in every dtype, every purifier, AMP training,
#      the benchmark's bf16 and fast modes, DDP with NCCL where two GPUs exist);
#   3. one json, OUTDIR/gpu_check.json: device, torch, the test counts, each benchmark and each bar of
#      advlab.evaluation.bench.GPU_BARS with its value; a table of the same on stdout.
#     bash scripts/gpu_check.sh [OUTDIR]                         # default build/gpu_check
#     DEVICE=cpu N=256 REPEATS=3 bash scripts/gpu_check.sh DIR   # a smoke test of the script on a CPU
# Needs torchattacks for its column (pip install --no-deps torchattacks==3.5.1; carry the wheel to a device).
set -u
OUTDIR=${1:-build/gpu_check}
DEVICE=${DEVICE:-cuda} N=${N:-10000} STEPS=${STEPS:-20} REPEATS=${REPEATS:-5} PY=${PYTHON:-python}
cd "$(dirname "$0")/.." || exit 1
mkdir -p "$OUTDIR"
t0=$SECONDS
for m in cnn vgg; do   # the timings first, while the machine is quietest (gpu_session.sh all waits for them)
  echo "== bench fmnist/$m ($(date -u +%H:%M:%S))"
  $PY -m advlab.cli bench attacks --model fmnist/$m --n "$N" --steps "$STEPS" --repeats "$REPEATS" --device "$DEVICE" \
    --bf16 --fast --json "$OUTDIR/bench_$m.json" 2>&1 | tee "$OUTDIR/bench_$m.log"
done
touch "$OUTDIR/bench.done"
echo "== pytest -m cuda ($(date -u +%H:%M:%S))"
$PY -m pytest -q -m cuda -p no:cacheprovider --junitxml "$OUTDIR/pytest_cuda.xml" tests > "$OUTDIR/pytest_cuda.log" 2>&1
echo "pytest exit $? in $((SECONDS - t0)) s; the last lines:"; tail -3 "$OUTDIR/pytest_cuda.log"
$PY - "$OUTDIR" "$((SECONDS - t0))" <<'PY'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
import torch
from advlab.evaluation.bench import gpu_bars
out, seconds = Path(sys.argv[1]), int(sys.argv[2])
suite = ET.parse(out / "pytest_cuda.xml").getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
tests = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
failed = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
          if c.find("failure") is not None or c.find("error") is not None]
cuda = torch.cuda.is_available()
res = {"device": torch.cuda.get_device_name(0) if cuda else "cpu (no CUDA: the cuda tests skip)", "cuda": cuda,
       "gpus": torch.cuda.device_count(), "torch": torch.__version__, "seconds": seconds,
       "cuda_tests": tests | {"passed": tests["tests"] - tests["failures"] - tests["errors"] - tests["skipped"],
                              "failed": failed},
       "bench": {}, "bars": {}}
for f in sorted(out.glob("bench_*.json")):
    b = json.loads(f.read_text())
    res["bench"][b["model"]] = b
    res["bars"][b["model"]] = gpu_bars(b)
(out / "gpu_check.json").write_text(json.dumps(res, indent=2) + "\n")
t = res["cuda_tests"]
print(f"\n{res['device']}, torch {res['torch']}, {seconds} s: cuda tests {t['passed']} passed, {t['failures']} failed, "
      f"{t['errors']} errors, {t['skipped']} skipped" + ("".join(f"\n  FAILED {n}" for n in failed)))
print("| model | bar | value | ok |\n|---|---|---:|---|")
for model, bars in res["bars"].items():
    for label, b in bars.items():
        v = "n/a" if b["value"] is None else f"{b['value']:.3g}"
        print(f"| {model} | {label} {b['bar']} | {v} | {'yes' if b['ok'] else 'NO'} |")
print(f"wrote {out / 'gpu_check.json'}")
PY
