#!/usr/bin/env bash
# advlab, from a fresh clone to results in one command:
#   bash run.sh course   set everything up, then execute the course (quick profile) into build/
#   bash run.sh test     set everything up, then run the tests (unit, notebooks with papermill, nbval,
#                        the website built from the executed notebooks and checked in headless Chromium)
# Environment knobs: PROFILE=quick|full (course), ADVLAB_VENV (default .venv), ADVLAB_DATA (data folder),
# PYTHON (interpreter used to create the venv, default python3).
set -euo pipefail
cd "$(dirname "$0")"
JOB=${1:-course}
VENV=${ADVLAB_VENV:-.venv}
PY="$VENV/bin/python"
say() { printf '\n== %s\n' "$*"; }

setup() {
  if [ ! -x "$PY" ]; then
    say "creating virtual environment $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
  fi
  if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
    say "installing torch 2.14.1 / torchvision 0.29.1"
    "$PY" -m pip install -q torch==2.14.1 torchvision==0.29.1
  fi
  say "installing advlab (editable) with its test extras"
  "$PY" -m pip install -q -e ".[dev]"
  if ! "$PY" -c "import torchattacks" 2>/dev/null; then
    # test oracle; 3.5.1 pins an old requests that conflicts with JupyterLab, so no deps
    "$PY" -m pip install -q --no-deps torchattacks==3.5.1
  fi
  "$PY" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" >/dev/null
  say "looking for Fashion-MNIST"
  if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    if ! "$PY" -c "from advlab import data; import sys; sys.exit(0 if (data.data_root()/'FashionMNIST'/'raw'/'t10k-labels-idx1-ubyte').exists() else 1)"; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
    fi
  fi
  "$VENV/bin/advlab" data prepare   # Debian package, ADVLAB_DATA or a torchvision download; else says what to do
  if [ "$JOB" = test ] && ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's chromium (the website's browser check)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
}

case "$JOB" in
  course)
    setup
    say "executing the course (profile ${PROFILE:-quick})"
    "$VENV/bin/advlab" course run --profile "${PROFILE:-quick}" --out build
    ;;
  test)
    setup
    say "unit tests, exercise sync, notebooks (papermill) and their validation (nbval)"
    "$PY" -m pytest -q -ra --durations=15 -m "not notebooks" -p no:cacheprovider tests
    scripts/run_notebook_tests.sh build/notebook-tests   # papermill (lectures, solutions, exercises), then nbval
    say "the course website from the executed notebooks (Jupyter Book), checked in headless Chromium"
    "$VENV/bin/advlab" course site --executed build/notebook-tests --out build/site --check
    ;;
  *)
    echo "usage: bash run.sh course|test" >&2; exit 2 ;;
esac
