#!/bin/sh
# Issue 16, lever 1: DINOv2 with overlapping patches (backbone dinov2_vits14_s7, patch stride 7) in the zero-shot
# `best` descriptor, PF-WILLOW all 900 pairs (t2s, kp-bbox), at 224 and 336 px, beside stride 14 at 224 px (stride
# 14 at 336 px is the default row, pf_willow_best_square_t2s.json). One JSON per row in benchmarks/results/zero_shot/; each
# records its seconds (s/image = (seconds - seconds_per_pair * 900) / 100 images).
set -e
PY="${PYTHON:-python}"
export PYTHONPATH=src
for SIZE in 224 336; do
  $PY -m corrmark eval pf-willow --root ../shared/data/pf-willow --direction t2s --threshold kp-bbox \
      --backbone dinov2_vits14_s7@norm+efficientnet_lite0 --layers 9 3,4 --image-size $SIZE \
      --json benchmarks/results/zero_shot/pf_willow_best_s7_${SIZE}_t2s.json --quiet
done
$PY -m corrmark eval pf-willow --root ../shared/data/pf-willow --direction t2s --threshold kp-bbox \
    --image-size 224 --json benchmarks/results/zero_shot/pf_willow_best_s14_224_t2s.json --quiet
