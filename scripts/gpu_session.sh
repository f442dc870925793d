#!/usr/bin/env bash
# The GPU measurements of the zoo and the purifiers, as run on a lent GPU machine (session 4).
#   bash scripts/gpu_session.sh start SECONDS    # train, AutoAttack, reports, paper tables (background jobs)
#   bash scripts/gpu_session.sh sweep SECONDS    # the purifier settings searches and the LQ-VAE variants
#   bash scripts/gpu_session.sh confirm SECONDS  # the chosen defaults re-measured, paper tables again
#   bash scripts/gpu_session.sh honest SECONDS   # the adaptive ensembles a CPU cannot afford (CARSO, MLVGM, Defense-GAN)
#   bash scripts/gpu_session.sh generators SECONDS  # CMAP's consistency model retrained from scratch on the GPU
#   bash scripts/gpu_session.sh all SECONDS      # one session's GPU work at once (a 15-minute device budget):
#        CMAP's search and its ensemble on 100 images, TRADES retrained for 20 epochs and its ensemble record, the CARSO and MLVGM
#        ensembles on 1000 (resumable chunks), packed into $OUT when SECONDS run out or every job is done.
#        PROFILE=quick DEVICE=cpu runs the same jobs tiny, as a CPU smoke test of the script.
#   bash scripts/gpu_session.sh wait SECONDS     # wait (printing progress), then pack results into $OUT
# Needs the Fashion-MNIST .gz files in .carry/fmnist/ (ignored; named in the device call's carry), and for CMAP a
# pytorch-msssim wheel in .carry/wheels/ (`pip download --no-deps pytorch-msssim -d .carry/wheels`).
# start/sweep/confirm copy the tree to /tmp/gpuwork and the jobs write into that copy's zoo (weights,
# manifest) and build/{reports,eval,gpu}; `wait` and the end of each mode pack them into $OUT.
set -u
# the jobs run in a private copy of the tree: a later device call re-syncs the checkout itself
WORK=/tmp/gpuwork
if [ "${1:-}" = start ] || [ "${1:-}" = sweep ] || [ "${1:-}" = confirm ] || [ "${1:-}" = honest ] \
    || [ "${1:-}" = generators ] || [ "${1:-}" = all ]; then
  REPO=$(cd "$(dirname "$0")/.." && pwd)
  rm -rf $WORK && mkdir -p $WORK && tar -C "$REPO" --exclude=./.venv -cf - . | tar -C $WORK -xf -   # not a local venv
fi
cd $WORK || exit 1
export ADVLAB_DATA=${ADVLAB_DATA:-/tmp/advlab_data} PYTHONUNBUFFERED=1 PYTHONPATH=$WORK
LOG=build/gpu
ADV="python -m advlab.cli"
mkdir -p $LOG build/reports

setup() {
  mkdir -p $ADVLAB_DATA/FashionMNIST/raw
  for f in .carry/fmnist/*.gz; do
    b=$(basename "$f" .gz); gunzip -c "$f" > $ADVLAB_DATA/FashionMNIST/raw/$b
  done
  # evaluation-only runs may carry the t10k files alone: data.prepare_fashion_mnist(split="test") is content
  # wheels the device image lacks (pytorch-msssim for CMAP; papermill, torchattacks): carried in .carry/wheels
  if ls .carry/wheels/*.whl > /dev/null 2>&1; then pip install -q --no-deps .carry/wheels/*.whl; fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch, advlab; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
}

job() {  # job NAME COMMANDS...: run the commands in order in the background, in a new session
  local name=$1; shift
  setsid nohup bash -c "set -x; $*; echo JOB_DONE rc=\$?" > $LOG/$name.log 2>&1 < /dev/null &
}

start() {
  setup || exit 1
  # J1: VAE-GAN (paper 002), then its report and the 002 table
  job vaegan "$ADV train fmnist/vaegan --profile full --device cuda && \
    $ADV defense-report vaegan --n 1000 --sanity-n 200 --device cuda --record && \
    python scripts/paper_tables.py 002 --n 2000 --device cuda"
  # J2: LQ-VAE (paper 004), its report, then the 004 tables (they need fmnist/fgsm-at from J5)
  job lqvae "$ADV train fmnist/lqvae --profile full --device cuda && \
    $ADV defense-report lqvae --n 1000 --sanity-n 200 --device cuda --record && \
    while [ ! -f $LOG/fgsm-at.done ]; do sleep 5; done && \
    python scripts/paper_tables.py 004 --n 1000 --device cuda --dgan-batch 1000"
  # J3: AutoAttack standard on the adversarially trained zoo models
  job autoattack "$ADV evaluate fmnist/pgd-at --attack autoattack --n 1000 --chunk 1000 --device cuda --record && \
    $ADV evaluate fmnist/trades --attack autoattack --n 1000 --chunk 1000 --device cuda --record"
  # J4: Defense-GAN at the paper's L = 200, R = 10; BPDA through the generator with EoT
  job defensegan "$ADV defense-report defense-gan --n 1000 --backward generator --eot 4 --adaptive-n 500 \
    --sanity-n 100 --set batch_size=1000 --device cuda --record"
  # J5: fast FGSM-AT (paper 004's 'Adv Tr' column)
  job fgsm-at "$ADV train fmnist/fgsm-at --profile full --device cuda; touch $LOG/fgsm-at.done"
  waitfor "${1:-500}"
}

sweep() {
  setup || exit 1
  job sweep-dgan "python scripts/purifier_sweep.py defense-gan --n 1000 --device cuda"
  job sweep-vaegan "python scripts/purifier_sweep.py vaegan --n 1000 --device cuda"
  # LQ-VAE latent size x KL weight, each trained for the same shorter run
  for v in 64:0.1 128:0.1 64:0.01 128:0.01; do
    lat=${v%:*} kl=${v#*:} dir=/tmp/lqvae_${v/:/_}
    job lqvae_${v/:/_} "rm -rf $dir && cp -r advlab/zoo $dir && \
      $ADV train fmnist/lqvae --profile full --set iters=16000 latent_dim=$lat kl_weight=$kl --device cuda --out $dir && \
      ADVLAB_ZOO=$dir $ADV defense-report lqvae --n 1000 --sanity-n 100 --device cuda --out build/reports/lqvae_${v/:/_} && \
      cp $dir/manifest.json build/reports/lqvae_${v/:/_}/"
  done
  waitfor "${1:-500}"
}

confirm() {  # after the searches: the chosen defaults, re-measured, and the paper tables with them
  setup || exit 1
  job confirm-dgan-sweep "python scripts/purifier_sweep.py defense-gan --n 1000 --seed 1 --device cuda"
  job dgan-report "$ADV defense-report defense-gan --n 1000 --backward generator --eot 4 --adaptive-n 200 \
    --sanity-n 50 --set batch_size=1000 --device cuda --record"
  job vaegan-report "$ADV defense-report vaegan --n 1000 --sanity-n 200 --device cuda --record && \
    $ADV defense-report vaegan --n 1000 --seed 1 --sanity-n 200 --device cuda --out build/reports/seed1 && \
    python scripts/paper_tables.py 002 --n 2000 --device cuda"
  job paper004 "python scripts/paper_tables.py 004 --n 1000 --device cuda --dgan-batch 1000"
  waitfor "${1:-500}"
}

honest() {  # lecture 10's full protocol on the stochastic and search-based defenses (EoT 20, both randomness
  # settings): about 60 h on one CPU thread for CARSO alone (8 decoder + 9 classifier passes per step). Chunks are
  # cached under build/adaptive (packed), so a later session resumes where this one stopped.
  setup || exit 1
  job carso "$ADV adaptive carso --n 1000 --profile full --device cuda --out build/reports --record"
  # MLVGM as its recorded report chose it on validation (docs/results/mlvgm_fmnist_n1000_seed0.md)
  job mlvgm "$ADV adaptive mlvgm --classifier fmnist/pgd-at --set alphas=cosine --set scale=0.7 --n 1000 --profile full \
    --device cuda --out build/reports --record"
  job defensegan "$ADV adaptive defense-gan --n 200 --profile full --device cuda --out build/reports --record"
  waitfor "${1:-500}"
}

generators() {  # the zoo's consistency model (CMAP); its checkpoint lands in build/checkpoints (packed)
  setup || exit 1
  job consistency "$ADV train fmnist/consistency --profile full --device cuda"
  waitfor "${1:-500}"
}

all() {  # PROFILE / DEVICE: full / cuda by default; quick / cpu for a smoke test of the script
  local p=${PROFILE:-full} dev=${DEVICE:-cuda} n=1000 chk=""
  [ "$p" = quick ] && n=8 && chk="--sanity-n 4"
  if [ "$dev" = cuda ]; then setup || exit 1; fi
  # CMAP on the zoo's consistency model (trained on a CPU, 2026-12-05): its validation search, then its adaptive
  # ensemble on 100 images (the issue's floor; chunks resume from build/adaptive), the unrolled gradient on 16
  job cmap "python -m advlab.purifiers.cmap.search --device $dev \
      $([ $p = quick ] && echo --quick --n-val 4 --out build/reports || echo --n-val 200) && \
    $ADV adaptive cmap --n $([ $p = quick ] && echo 4 || echo 100) --profile $p $chk \
      --full-gradient-n $([ $p = quick ] && echo 1 || echo 16) --device $dev --out build/reports --record"
  job trades "$ADV train fmnist/trades --profile $p --set epochs=$([ $p = quick ] && echo 1 || echo 20) --device $dev && \
    $ADV evaluate fmnist/trades --attack autoattack --n $n --chunk 1000 --device $dev --record && \
    $ADV adaptive fmnist/trades --n $n --profile $p $chk --device $dev --out build/reports --record"
  job carso "$ADV adaptive carso --n $n --profile $p $chk --device $dev --out build/reports --record"
  job mlvgm "$ADV adaptive mlvgm --classifier fmnist/pgd-at --set alphas=cosine --set scale=0.7 --n $n --profile $p \
    $chk --device $dev --out build/reports --record"
  waitfor "${1:-500}"
}

waitfor() {
  local limit=$1 t0=$SECONDS
  while (( SECONDS - t0 < limit )); do
    local running=$(grep -L JOB_DONE $LOG/*.log 2>/dev/null | wc -l)
    (( running == 0 )) && break
    sleep 20
  done
  for f in $LOG/*.log; do echo "== $f"; tr '\r' '\n' < $f | grep -v '^\s*$' | tail -4; done
  if command -v nvidia-smi > /dev/null; then nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv; fi
  pack
}

pack() {
  [ -n "${OUT:-}" ] || return 0
  # weights files are named by their hash (zoo.save): read each one's name from its manifest
  for w in vaegan lqvae fgsm-at trades consistency; do
    f=$(python -c "from advlab import zoo; print(zoo.info('fmnist/$w')['file'])" 2>/dev/null) \
      && [ -f "advlab/zoo/$f" ] && cp "advlab/zoo/$f" $OUT/
  done
  for d in /tmp/lqvae_*; do
    f=$(ADVLAB_ZOO=$d python -c "from advlab import zoo; print(zoo.info('fmnist/lqvae')['file'])" 2>/dev/null) \
      && [ -f "$d/$f" ] && cp "$d/$f" $OUT/$(basename $d).safetensors
  done
  tar czf $OUT/results.tgz advlab/zoo/manifest.json build/reports build/eval build/adaptive build/cmap_search docs/results $LOG \
    $(ls advlab/zoo/weights/fmnist__consistency* build/checkpoints/fmnist__consistency* 2>/dev/null) 2>/dev/null
  ls -la $OUT
}

case "${1:-}" in
  start) start "${2:-500}" ;;
  sweep) sweep "${2:-500}" ;;
  confirm) confirm "${2:-500}" ;;
  honest) honest "${2:-500}" ;;
  generators) generators "${2:-500}" ;;
  all) all "${2:-500}" ;;
  wait) waitfor "${2:-500}" ;;
  *) echo "usage: $0 start|sweep|confirm|honest|generators|wait SECONDS" >&2; exit 2 ;;
esac
