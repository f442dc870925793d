#!/usr/bin/env bash
# Run every course notebook, then validate the executed copies with nbval.
#
#   scripts/run_notebook_tests.sh [OUTDIR]          (default OUTDIR: build/notebook-tests)
#
# Step 1 (papermill): `python -m advlab.course run --kind all --profile quick --out OUTDIR` executes
#   notebooks/, solutions/ and exercises/ (blanks may only raise NotImplementedError) into
#   OUTDIR/{notebooks,solutions,exercises}/, results into OUTDIR/results/. It prints a line per
#   executed code cell (`[notebooks/NN_x.ipynb] cell k/n done in T s (S s so far)  first line`), so a
#   long lecture shows where it is, and starts its kernels with a quiet log (advlab.course.KERNEL_ARGUMENTS:
#   no "Kernel is running over TCP without encryption" warning per notebook from ipykernel).
# Step 2 (nbval): pytest re-executes each executed notebook in a fresh kernel and compares every
#   output with the stored one (after tests/nbval_sanitize.cfg), so the same SEED must give the
#   same numbers.
# Environment: PYTHON (default .venv/bin/python if present, else python3), ONLY (e.g. "00,01"),
#   PROFILE (default quick), DEVICE (default cpu), PROGRESS (cells | bar | none; default cells),
#   JOBS (notebooks at once in the papermill step, default 1; with more, kernels get OMP_NUM_THREADS=1).
#   ADVLAB_ZOO / ADVLAB_DATA are passed through.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-build/notebook-tests}"
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"; elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
PROFILE="${PROFILE:-quick}"
DEVICE="${DEVICE:-cpu}"
PROGRESS="${PROGRESS:-cells}"
# JOBS notebooks at once in the papermill step (default 1), each kernel then with one torch thread, and
# nbval re-runs them with the same one thread. On a 2-core machine JOBS=2 gains nothing (measured: each
# notebook ran twice as long); it is for machines with more cores.
JOBS="${JOBS:-1}"
if (( JOBS > 1 )); then export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"; fi
ONLY_ARGS=()
[[ -n "${ONLY:-}" ]] && ONLY_ARGS=(--only "$ONLY")

echo "== papermill: executing notebooks into $OUT (profile=$PROFILE, device=$DEVICE)"
t0=$SECONDS
"$PY" -m advlab.course run --kind all --profile "$PROFILE" --device "$DEVICE" --out "$OUT" --progress "$PROGRESS" \
  --jobs "$JOBS" "${ONLY_ARGS[@]}"
t1=$SECONDS

mapfile -t EXECUTED < <(ls "$OUT"/notebooks/*.ipynb "$OUT"/solutions/*.ipynb "$OUT"/exercises/*.ipynb 2>/dev/null)
if [[ -n "${ONLY:-}" ]]; then
  pattern="^($(echo "$ONLY" | sed 's/,/|/g'))_"
  mapfile -t EXECUTED < <(printf '%s\n' "${EXECUTED[@]}" | while read -r f; do [[ "$(basename "$f")" =~ $pattern ]] && echo "$f"; done)
fi
echo "== nbval: validating ${#EXECUTED[@]} executed notebooks"
"$PY" -m pytest -p tests.nbval_semicolon --nbval "${EXECUTED[@]}" --nbval-sanitize-with tests/nbval_sanitize.cfg \
  --nbval-cell-timeout 900 -p no:cacheprovider -q
t2=$SECONDS
echo "== notebook tests passed: papermill $((t1 - t0)) s, nbval $((t2 - t1)) s"
