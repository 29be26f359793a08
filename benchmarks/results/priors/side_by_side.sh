#!/usr/bin/env bash
# Side by side on `test` (never tuned on): the patch prior against the whole-image prior, with the
# val-chosen params of brain128-cpu, at 128^2 (20 slices) and 256^2 (10 slices, CCDF only; then 4 slices,
# K = 1, every diffusion method: the 256-side-* tables, about 5 h on one CPU thread); CS-L1 and
# zero-filled at 256^2 (at 128^2 they are the published rows of benchmarks/results/open-brain-128).
# Needs data/open-brain-128 and data/open-brain-256 (mrdiff prep --open-brain ... --preset 256 --sets test).
set -euo pipefail
cd "$(dirname "$0")/../../.."
B="mrdiff bench --split test --accels 4,8 --masks random,poisson --params benchmarks/params/open-brain-128.yaml"
for p in brain-patch brain128-cpu; do
  $B --slices-per-volume 20 --data data/open-brain-128 --methods ccdf,dds --prior mrdiff/weights/$p.pt --out runs/side/128-$p
  $B --slices-per-volume 10 --data data/open-brain-256 --methods ccdf --prior mrdiff/weights/$p.pt --out runs/side/256-$p
done
$B --slices-per-volume 10 --data data/open-brain-256 --methods cs-l1,zf --out runs/side/256-classical
S="--slices-per-volume 4 --samples 1 --data data/open-brain-256"
for p in brain-patch brain128-cpu; do
  for m in random poisson; do
    $B $S --masks $m --methods dds,mcg,dps --prior mrdiff/weights/$p.pt --out runs/side/256-side-$m-$p
  done
  $B $S --methods ccdf --prior mrdiff/weights/$p.pt --out runs/side/256-side-ccdf-$p
done
$B $S --methods cs-l1,zf --out runs/side/256-side-classical
