#!/bin/sh
# SCorrSAN PF-WILLOW split protocol: baseline (= teacher), ST, MT, each evaluated on the 200 test pairs, plus the
# zero-shot references on the same pairs. One JSON per row in benchmarks/results/scorrsan/. Run from the repository root.
set -e
PY="${PYTHON:-python}"
export PYTHONPATH=src
[ "$1" = "--skip-baseline" ] || $PY benchmarks/scorrsan_train.py configs/scorrsan_pfwillow_baseline.yaml
$PY benchmarks/scorrsan_eval.py --protocol pf-willow --checkpoint runs/scorrsan_pfwillow_baseline/final.pt \
    --json benchmarks/results/scorrsan/scorrsan_pfwillow_baseline.json
$PY benchmarks/scorrsan_train.py configs/scorrsan_pfwillow_st.yaml
$PY benchmarks/scorrsan_eval.py --protocol pf-willow --checkpoint runs/scorrsan_pfwillow_st/final.pt \
    --json benchmarks/results/scorrsan/scorrsan_pfwillow_st.json
$PY benchmarks/scorrsan_train.py configs/scorrsan_pfwillow_mt.yaml
$PY benchmarks/scorrsan_eval.py --protocol pf-willow --checkpoint runs/scorrsan_pfwillow_mt/selected.pt \
    --json benchmarks/results/scorrsan/scorrsan_pfwillow_mt.json
$PY benchmarks/scorrsan_eval.py --protocol pf-willow --nn-preset best --json benchmarks/results/scorrsan/scorrsan_pfwillow_zero_shot_nn_best.json
$PY benchmarks/scorrsan_eval.py --protocol pf-willow --nn-preset fused-block8 --json benchmarks/results/scorrsan/scorrsan_pfwillow_zero_shot_nn_fused_block8.json
$PY benchmarks/scorrsan_eval.py --protocol pf-willow --untrained --json benchmarks/results/scorrsan/scorrsan_pfwillow_untrained.json
# the same baseline through the Matcher interface and the CLI (image by image; must equal the bank path)
$PY -m corrmark eval pf-willow --root ../shared/data/pf-willow --split test --matcher scorrsan \
    --checkpoint runs/scorrsan_pfwillow_baseline/final.pt --direction t2s --threshold kp-bbox \
    --json benchmarks/results/scorrsan/scorrsan_pfwillow_baseline_via_cli.json --quiet
