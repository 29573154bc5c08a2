#!/usr/bin/env bash
# JLAD K = 10 on MTFL (docs/JLAD.md): training, then the AFLW landmark error of the checkpoints after synthetic
# pretraining (separate learning), after alternation round 1 and after round 2 (final), plus the fixed-grid baseline.
# Run from the repository root; ~20 min on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src
PY=${PYTHON:-python}
CONFIG=configs/jlad_mtfl_k10.yaml
RUN=runs/jlad_mtfl_k10
TEST_LIMIT=${TEST_LIMIT:-}   # empty: all 2,995 AFLW faces (the protocol); a number: a seeded subset

# 1. training (builds the cached feature bank of the 500 training faces x 2 views first): 300 synthetic pretraining
#    steps, then 2 rounds of 60 alignment-stage + 60 detection-stage steps (configs/jlad_mtfl_k10_long.yaml: docs/JLAD.md)
$PY -m corrmark train $CONFIG --quiet

# 2. evaluation (corrmark.eval.evaluate_landmarks on the images; one checkpoint alone is `corrmark eval-landmarks mtfl
#    --root ../shared/data/mtfl --fit-config $CONFIG --checkpoint ...`): step 300 = after pretraining, step 420 = after
#    round 1, final = after round 2; fixed-grid baseline = landmarks at fixed image fractions (framing alone)
$PY benchmarks/jlad_mtfl.py --config $CONFIG ${TEST_LIMIT:+--test-limit $TEST_LIMIT} --baseline fixed-grid \
    --checkpoint $RUN/checkpoints/step_00000300.pt=jlad_mtfl_k10_separate \
    --checkpoint $RUN/checkpoints/step_00000420.pt=jlad_mtfl_k10_round1 \
    --checkpoint $RUN/final.pt=jlad_mtfl_k10 \
    --figure benchmarks/results/jlad/jlad_mtfl_k10_aflw.jpg
