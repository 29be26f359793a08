#!/usr/bin/env bash
# One call on a lent GPU (about 9 minutes): the device check, then the two priors trained for the same
# GPU time from scratch (the patch prior brain-patch-cpu and the whole-image brain128-cpu
# architecture), each exported as fp16 EMA weights. Everything lands in $OUT (<= 8 files, <= 16 MiB).
#
#   OUT=/tmp/out bash benchmarks/gpu_session.sh            # on the GPU machine
#   TINY=1 OUT=/tmp/out bash benchmarks/gpu_session.sh     # a few CPU steps of everything, to test it here
#   PATCH_INIT=mrdiff/weights/brain-patch.pt IMAGE=0 TRAIN_MIN=6 OUT=... bash benchmarks/gpu_session.sh
#       continues the shipped patch prior (the training campaign of issue 14) and skips the whole-image run
#
# The GPU machine has its own torch; the few pure-Python packages it lacks travel as wheels in .whl/
# (fastmri, sigpy, PyWavelets, runstats, nibabel, and pandas/requests with their dependencies for
# fastmri.data), and the training images are built there by
# `mrdiff prep --images-only` from the raw Colin27 / MNI152 volumes carried in .carry/shared-data.
# Both folders are git-ignored; a new session rebuilds them before the call (and names both in `carry`):
#   echo /.carry/ >> .git/info/exclude; mkdir -p .carry/shared-data
#   cp -r ../shared/data/colin27-t1 ../shared/data/mni152-2009a .carry/shared-data/
#   python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     fastmri==0.3.0 sigpy PyWavelets nibabel pandas requests urllib3 idna certifi charset_normalizer pytz tzdata
#   python3 -m pip wheel -q --no-deps runstats==2.0.0 -w .whl     # runstats has no wheel on PyPI
set -u
: "${OUT:?set OUT to the output folder}"
mkdir -p "$OUT" /tmp/gpu-session
export PYTHONUNBUFFERED=1
LOG=/tmp/gpu-session
PY=${PY:-python3}
TRAIN_MIN=${TRAIN_MIN:-2.6}      # training minutes per prior
CHECK_S=${CHECK_S:-150}          # device-check budget
DEVICE=cuda
SRC=${SRC:-.carry/shared-data}
if [ "${TINY:-0}" = 1 ]; then
  TRAIN_MIN=0.15; CHECK_S=20; DEVICE=cpu
  TINY_SET=(--set train.batch_size=8 --set data.patches_per_image=4 --set train.workers=2 --set train.val_every=10 --set train.val_images=2)
else
  TINY_SET=()
  if ls .whl/*.whl >/dev/null 2>&1; then
    # all of them: fastmri.data (masks, metrics) also imports pandas and requests, which need pytz,
    # tzdata, urllib3, idna, certifi and charset_normalizer; none of these is on the GPU machine
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site:$PWD
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$LOG/nvidia-smi.txt" 2>&1
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}

# 1. training images (CPU, in the background while the device check runs on the GPU)
for res in 256 128; do
  $PY -m recon.cli prep --open-brain "$SRC" --out /tmp/brain-images-$res --preset $res --sets train,val \
    --images-only --no-progress > "$LOG/prep-$res.log" 2>&1 &
done

# 2. device check
if [ "${TINY:-0}" = 1 ]; then CHECK_ARGS=(--tiny); else CHECK_ARGS=(); fi
timeout $((CHECK_S + 40)) $PY -m benchmarks.device_check --out "$OUT" --budget-s "$CHECK_S" "${CHECK_ARGS[@]}" \
  > "$LOG/device_check.log" 2>&1
echo "device check: exit $?" >> "$LOG/summary.txt"
wait

# 3. the two priors, same minutes each, from scratch; fp16 EMA exported to $OUT
train_prior() {  # name config data extra-args...
  local name=$1 config=$2 data=$3; shift 3
  rm -rf "/tmp/run-$name"
  timeout $(python3 -c "print(int($TRAIN_MIN * 60 + 120))") $PY -m recon.cli train --config "$config" \
    --data "$data" --out "/tmp/run-$name" --device $DEVICE --set train.max_minutes=$TRAIN_MIN \
    --set train.preview_every=0 --set train.ckpt_every=500 "$@" "${TINY_SET[@]}" > "$LOG/train-$name.log" 2>&1
  echo "train $name: exit $?" >> "$LOG/summary.txt"
  cp "/tmp/run-$name/log.jsonl" "$LOG/train-$name.jsonl" 2>/dev/null
  $PY - "$name" <<'EOF' >> "$LOG/summary.txt" 2>&1
import sys, os
from mrdiff.priors.checkpoint import export_prior, load_checkpoint
import torch
name = sys.argv[1]
state = load_checkpoint(f"/tmp/run-{name}/last.pt")
meta = {"elapsed_s": state["elapsed_s"], "history": state.get("history", []), "trained_on": "gpu-session"}
sha = export_prior(state, os.path.join(os.environ["OUT"], f"{name}.pt"), meta=meta, dtype=torch.float16)
print(f"exported {name}: step {state['step']}, {state['elapsed_s']:.0f} s, sha256 {sha}")
EOF
}
INIT_ARGS=()
[ -n "${PATCH_INIT:-}" ] && INIT_ARGS=(--init "$PATCH_INIT")
train_prior patch brain-patch-cpu /tmp/brain-images-256 --set train.batch_size=96 --set train.lr=6e-4 \
  --set train.workers=14 --set train.val_every=500 --set train.val_images=16 --set train.threads=0 "${INIT_ARGS[@]}"
[ "${IMAGE:-1}" = 1 ] && train_prior image brain128-cpu /tmp/brain-images-128 --set train.batch_size=64 --set train.lr=6e-4 \
  --set train.workers=14 --set train.val_every=500 --set train.val_images=16 --set train.threads=0 \
  --set train.precision=bf16 --set train.max_steps=1000000

tar -czf "$OUT/logs.tar.gz" -C "$LOG" . 2>/dev/null
cat "$LOG/summary.txt"
