#!/usr/bin/env bash
# Issue 16: "C3 beats its baseline" over three seeds (docs/C3.md). Seeds 1 and 2 of the two cropped-face K = 10 runs
# that decide it: C3 with the cycle as its only cross-image term (configs/c3_mtfl_k10_crop_cycle_only.yaml) and its
# self-reconstruction baseline (configs/c3_mtfl_k10_crop_baseline.yaml); seed 0 of both is in docs/C3.md already.
# Each run: `--seed N` -> runs/<name>_seed<N>; then the AFLW error (regression fitted on 1,000 cropped training faces).
# About 20 min per run on 2 idle CPU cores. Needs runs/data/mtfl_center65 (benchmarks/mtfl_center_crop.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src
PY=${PYTHON:-python}
for seed in 1 2; do
  for name in c3_mtfl_k10_crop_cycle_only c3_mtfl_k10_crop_baseline; do
    $PY -m corrmark train configs/$name.yaml --seed $seed --quiet --resume
    $PY benchmarks/c3_mtfl.py --threads 2 --quiet --train-limit 1000 --root runs/data/mtfl_center65 \
        --checkpoint runs/${name}_seed$seed/final.pt=${name}_seed$seed
  done
done
