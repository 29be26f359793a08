#!/usr/bin/env bash
# Reproduce benchmarks/results/open-brain-128 on CPU (about 25 min on a quiet 2-core machine, much longer under contention).
#
#   benchmarks/run_open_brain.sh [classical|sweep|table|nfe|publish|all]...
#
# classical: classical + supervised rows on `test` (no prior needed), plus the real-undersampled figure
# sweep:     diffusion hyper-parameters and NFE on `val` -> benchmarks/params/open-brain-128.yaml
# table:     every row on `test` (reuses finished classical cells), real-undersampled figure
# nfe:       diffusion rows at NFE 5-200 (CCDF and DDS also 1000) on 2 `val` slices, random 4x, K = 1
#            (PSNR-versus-NFE curves; published to benchmarks/results/nfe-val by `publish`)
# publish:   copy tables, figures and cell JSONs (not the reconstructions) into the repository
# commit:    git-commit the published results and the params file (only those paths)
# Every stage resumes: rerunning skips finished cells. Environment: DATA, RUN, SLICES, MRDIFF, PYTHON, PRIOR
# (a prior checkpoint; default: the shipped default prior, mrdiff/weights/brain-patch.pt since 2026-11-30;
# the published open-brain-128 table used PRIOR=mrdiff/weights/brain128-cpu.pt).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data/open-brain-128}
RUN=${RUN:-runs/bench/open-brain-128}
SLICES=${SLICES:-20}
MRDIFF=${MRDIFF:-.venv/bin/mrdiff}
PYTHON=${PYTHON:-.venv/bin/python}
PUB=benchmarks/results/open-brain-128
NFE_PUB=benchmarks/results/nfe-val
CLASSICAL=zf,sense,cs-l1,cs-tv,unet,varnet
DIFFUSION=pocs,ilvr,ccdf,mcg,repaint,dps,dds
GRID=(--masks random,equispaced,poisson --accels 4,8 --slices-per-volume "$SLICES" --seeds 1)
export OMP_NUM_THREADS=1

# cells BENCH_JSON [real]: the cell keys a bench run wrote (of its real-data grid with "real")
cells() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); d = d[sys.argv[2]] if len(sys.argv) > 2 else d; print(" ".join(d.get("cells", [])))' "$@"; }

bench() { echo "[$(date -u +%H:%M:%S)] mrdiff bench $*"; nice -n 10 "$MRDIFF" bench "$@"; }

stage() {
  case "$1" in
    classical) bench --data "$DATA" --split test --methods "$CLASSICAL" "${GRID[@]}" --out "$RUN/test" \
                 --real "$DATA/real-undersampled" ;;
    sweep) bench --sweep --data "$DATA" --split val --methods "$DIFFUSION" --masks random --accels 8 \
             --slices-per-volume 2 --nfe 10,20 --out "$RUN/sweep" --params-out benchmarks/params/open-brain-128.yaml \
             ${PRIOR:+--prior "$PRIOR"} ;;
    table) bench --data "$DATA" --split test --methods "$CLASSICAL,$DIFFUSION" "${GRID[@]}" --out "$RUN/test" \
             --real "$DATA/real-undersampled" ${PRIOR:+--prior "$PRIOR"} ;;
    nfe) for rows in "$DIFFUSION:5,10,20,50,100,200" "ccdf,dds:1000" "zf,cs-l1:10"; do
           bench --data "$DATA" --split val --methods "${rows%%:*}" --masks random --accels 4 --samples 1 \
             --slices-per-volume 2 --nfe "${rows##*:}" --out "$RUN/nfe-val" ${PRIOR:+--prior "$PRIOR"}
         done ;;
    publish)
      if [ -d "$RUN/nfe-val/cells" ]; then
        "$PYTHON" -m benchmarks.nfe_curves "$RUN/nfe-val" --out "$NFE_PUB"
        rm -rf "$NFE_PUB/cells" && cp -r "$RUN/nfe-val/cells" "$NFE_PUB/cells"
      fi
      for sub in test:. sweep:sweep-val; do
        src="$RUN/${sub%%:*}"; dst="$PUB/${sub##*:}"
        [ -f "$src/results.md" ] || continue
        rm -rf "$dst/cells" "$dst/real-cells"  # no stale cells of an earlier prior or parameter set
        mkdir -p "$dst/cells"
        cp "$src"/results.md "$src"/results.csv "$src"/metrics_per_volume.csv "$src"/bench.json "$dst"/
        cp "$src"/*.png "$dst"/ 2>/dev/null || true
        # only this grid's cells (bench.json lists them), not leftovers of earlier grids in the run directory
        for key in $(cells "$src/bench.json"); do cp "$src/cells/$key.json" "$dst/cells/"; done
        if [ -d "$src/real/cells" ]; then
          mkdir -p "$dst/real-cells"
          for key in $(cells "$src/bench.json" real); do cp "$src/real/cells/$key.json" "$dst/real-cells/"; done
        fi
      done ;;
    commit)
      paths=("$PUB" "$NFE_PUB")
      if [ -f benchmarks/params/open-brain-128.yaml ]; then paths+=(benchmarks/params/open-brain-128.yaml); fi
      for _ in 1 2 3 4 5 6; do
        git add "${paths[@]}" && git commit -q -m "E: benchmark results for open-brain-128 (run_open_brain.sh)" \
          -- "${paths[@]}" && break
        sleep 5
      done ;;
    all) for s in classical sweep table nfe publish; do stage "$s"; done ;;
    *) echo "unknown stage $1" >&2; exit 2 ;;
  esac
}

for s in "${@:-all}"; do stage "$s"; done
