#!/usr/bin/env bash
# Fill .carry/ (ignored by git) with what a device run needs and the device image lacks; name `.carry` in
# the device call's carry. A call may carry 64 MiB in all, the tracked tree included (about 29 MB).
#   .carry/fmnist/   Fashion-MNIST .gz files from Debian's dataset-fashion-mnist: the t10k files (4.4 MB) for
#                    evaluation runs; TRAIN=1 adds the train files, recompressed with xz (22.7 MB), for training runs
#   .carry/wheels/   Python 3.12 manylinux wheels: pytorch-msssim and torchattacks (CMAP's SSIM, the benchmark's
#                    oracle; without their dependencies), and papermill, ipykernel and ipywidgets with those of
#                    their dependencies that the device image does not hold (the course run on CUDA)
# On the device: pip install -q --no-index --no-deps .carry/wheels/*.whl (scripts/gpu_session.sh's setup).
#     bash scripts/prepare_carry.sh            # then: du -sh .carry
set -eu
cd "$(dirname "$0")/.."
SRC=${FMNIST_GZ:-/usr/share/datasets/fashion-mnist}
rm -rf .carry/wheels && mkdir -p .carry/fmnist .carry/wheels
cp "$SRC"/t10k-*.gz .carry/fmnist/
rm -f .carry/fmnist/train-*
if [ "${TRAIN:-0}" = 1 ]; then   # xz: 22.7 MB against gzip's 26, what lets the tree, the wheels and these fit 64 MiB
  for f in "$SRC"/train-*.gz; do gunzip -c "$f" | xz -9e -T2 > .carry/fmnist/$(basename "$f" .gz).xz; done
fi
PIP="${PYTHON:-python3} -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d .carry/wheels"
$PIP --no-deps pytorch-msssim torchattacks==3.5.1
$PIP papermill ipykernel ipywidgets
# the device image's packages (KINDS.md of the device tool, as read on 2026-11-17): not carried again
PRESENT="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer click cloudpickle colorama contourpy cycler filelock fonttools frozenlist fsspec h11
httpcore httpx idna iniconfig jinja2 joblib kiwisolver markdown markdown-it-py markupsafe matplotlib mdurl
multidict numpy packaging pandas pillow pip pluggy prometheus-client propcache protobuf psutil pygments pyparsing
pytest python-dateutil pyyaml regex requests rich scipy setuptools six tqdm typing-extensions urllib3 wheel yarl
zipp torch torchvision triton safetensors sympy mpmath networkx nvidia-ml-py"
for w in .carry/wheels/*.whl; do
  name=$(basename "$w" | cut -d- -f1 | tr 'A-Z_.' 'a-z--')
  for p in $PRESENT; do [ "$name" = "$p" ] && rm -f "$w" && break; done
done
# what executing a notebook never imports (the debugger, completion, the classic notebook's widget extension):
# 12.5 MB that would push the tree, the wheels and the train files over 64 MiB
rm -f .carry/wheels/debugpy-*.whl .carry/wheels/jedi-*.whl .carry/wheels/parso-*.whl .carry/wheels/widgetsnbextension-*.whl
# one version of each package, or pip refuses the whole install
ls .carry/wheels | cut -d- -f1 | sort | uniq -d | sed 's/^/two versions of: /' | grep . && exit 1
ls .carry/wheels
du -sh .carry .carry/*
# the device call refuses more than 64 MiB (the tracked tree and the carry together): say so here, not there
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carry=$(du -sb .carry | cut -f1)
echo "tracked tree $((tree / 1000000)) MB + .carry $((carry / 1000000)) MB of the 67 MB (64 MiB) a device call carries"
(( tree + carry < 64 * 1024 * 1024 )) || { echo "too large for one device call" >&2; exit 1; }
