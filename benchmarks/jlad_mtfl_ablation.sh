#!/usr/bin/env bash
# JLAD on MTFL -> AFLW (docs/JLAD.md): K = 30, the Table 1 ablation (error after each of 4 alternation rounds) and the
# Table 2/4-style switches (without uncertainty module, without self-similarity). All share the feature bank of
# configs/jlad_mtfl_k10_long.yaml (1,000 faces x 3 views) and its schedule (900 pretraining steps, 100 + 100 steps per
# round), so round r ends at step 900 + 200 r. Run from the repository root; ~5-7 min of training per run on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src
PY=${PYTHON:-python}
ck() { printf 'runs/%s/checkpoints/step_%08d.pt=%s' "$1" "$2" "$3"; }

$PY -m corrmark train configs/jlad_mtfl_k30.yaml --quiet
$PY benchmarks/jlad_mtfl.py --config configs/jlad_mtfl_k30.yaml \
    --checkpoint "$(ck jlad_mtfl_k30 900 jlad_mtfl_k30_separate)" \
    --checkpoint "$(ck jlad_mtfl_k30 1100 jlad_mtfl_k30_round1)" \
    --checkpoint runs/jlad_mtfl_k30/final.pt=jlad_mtfl_k30 --figure benchmarks/results/jlad/jlad_mtfl_k30_aflw.jpg

$PY -m corrmark train configs/jlad_mtfl_k10_rounds4.yaml --quiet
$PY benchmarks/jlad_mtfl.py --config configs/jlad_mtfl_k10_rounds4.yaml \
    --checkpoint "$(ck jlad_mtfl_k10_rounds4 900 jlad_mtfl_k10_rounds4_separate)" \
    --checkpoint "$(ck jlad_mtfl_k10_rounds4 1100 jlad_mtfl_k10_rounds4_round1)" \
    --checkpoint "$(ck jlad_mtfl_k10_rounds4 1300 jlad_mtfl_k10_rounds4_round2)" \
    --checkpoint "$(ck jlad_mtfl_k10_rounds4 1500 jlad_mtfl_k10_rounds4_round3)" \
    --checkpoint runs/jlad_mtfl_k10_rounds4/final.pt=jlad_mtfl_k10_rounds4_round4

for variant in no_uncertainty no_selfsim; do
    $PY -m corrmark train configs/jlad_mtfl_k10_$variant.yaml --quiet
    $PY benchmarks/jlad_mtfl.py --config configs/jlad_mtfl_k10_$variant.yaml \
        --checkpoint "$(ck jlad_mtfl_k10_$variant 900 jlad_mtfl_k10_${variant}_separate)" \
        --checkpoint runs/jlad_mtfl_k10_$variant/final.pt=jlad_mtfl_k10_$variant
done
