#!/usr/bin/env bash
# Issue 16, lever 3: is JLAD's alignment field a good enough teacher for the alternation? The field's keypoint
# transfer between two different faces (the semantic pairs the rounds train on), per checkpoint of
# configs/jlad_mtfl_k10_crop.yaml: step 900 (synthetic pretraining only = zoo jlad_mtfl_k10), 1100 (after alignment
# round 1 and its detection stage), final (round 2); beside the zero-shot `best` matcher on the same pairs.
# Pairs: 200 seeded pairs of the centre-cropped MTFL training faces (what the rounds see) and 200 of the AFLW test
# faces; t2s, kp-bbox and inter-ocular PCK (eyes 0,1), per pair. Needs runs/data/mtfl_center65
# (benchmarks/mtfl_center_crop.py) and the training run (`corrmark train configs/jlad_mtfl_k10_crop.yaml`).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src
PY=${PYTHON:-python}
RUN=runs/jlad_mtfl_k10_crop
OUT=benchmarks/results/jlad
PAIRS=${PAIRS:-200}
evaluate() {  # dataset-label root split label matcher-args...
  local set=$1 root=$2 split=$3 label=$4; shift 4
  $PY -m corrmark eval aflw-pairs --root "$root" --split "$split" --eyes 0,1 --limit "$PAIRS" --quiet \
      --json "$OUT/jlad_alignment_${set}_${label}.json" "$@"
}
for set in mtfl aflw; do
  if [ $set = mtfl ]; then root=runs/data/mtfl_center65 split=train; else root=../shared/data/mtfl split=test; fi
  evaluate $set $root $split zero_shot_best
  evaluate $set $root $split step900 --matcher jlad --checkpoint $RUN/checkpoints/step_00000900.pt
  evaluate $set $root $split step1100 --matcher jlad --checkpoint $RUN/checkpoints/step_00001100.pt
  evaluate $set $root $split final --matcher jlad --checkpoint $RUN/final.pt
done
