#!/bin/sh
# SCorrSAN faces protocol: MTFL training faces -> the seeded 1,000 AFLW test pairs; baseline (= teacher), ST, MT,
# and the untrained pipeline / zero-shot matcher references. One JSON per row in benchmarks/results/scorrsan/.
set -e
PY="${PYTHON:-python}"
export PYTHONPATH=src
$PY benchmarks/scorrsan_train.py configs/scorrsan_faces_baseline.yaml
$PY benchmarks/scorrsan_eval.py --protocol faces --checkpoint runs/scorrsan_faces_baseline/final.pt \
    --json benchmarks/results/scorrsan/scorrsan_faces_baseline.json
$PY benchmarks/scorrsan_eval.py --protocol faces --untrained --json benchmarks/results/scorrsan/scorrsan_faces_untrained.json
# the zero-shot matcher image by image is slow (336 px, two backbones): first 200 pairs of the same list
$PY benchmarks/scorrsan_eval.py --protocol faces --nn-preset best --limit 200 \
    --json benchmarks/results/scorrsan/scorrsan_faces_zero_shot_nn_best_first200.json
$PY benchmarks/scorrsan_eval.py --protocol faces --nn-preset fused-block8 --limit 200 \
    --json benchmarks/results/scorrsan/scorrsan_faces_zero_shot_nn_fused_block8_first200.json
$PY benchmarks/scorrsan_train.py configs/scorrsan_faces_st.yaml
$PY benchmarks/scorrsan_eval.py --protocol faces --checkpoint runs/scorrsan_faces_st/final.pt \
    --json benchmarks/results/scorrsan/scorrsan_faces_st.json
# MT (600 steps)
$PY benchmarks/scorrsan_train.py configs/scorrsan_faces_mt.yaml
$PY benchmarks/scorrsan_eval.py --protocol faces --checkpoint runs/scorrsan_faces_mt/selected.pt \
    --json benchmarks/results/scorrsan/scorrsan_faces_mt.json
# same-budget reference for ST (600 steps) and the first-200-pairs rows beside the zero-shot matcher
$PY benchmarks/scorrsan_train.py configs/scorrsan_faces_baseline.yaml --set name=scorrsan_faces_baseline_600 --set train.steps=600
$PY benchmarks/scorrsan_eval.py --protocol faces --checkpoint runs/scorrsan_faces_baseline_600/final.pt \
    --json benchmarks/results/scorrsan/scorrsan_faces_baseline_600.json
$PY benchmarks/scorrsan_eval.py --protocol faces --checkpoint runs/scorrsan_faces_baseline/final.pt --limit 200 \
    --json benchmarks/results/scorrsan/scorrsan_faces_baseline_first200.json
$PY benchmarks/scorrsan_eval.py --protocol faces --untrained --limit 200 \
    --json benchmarks/results/scorrsan/scorrsan_faces_untrained_first200.json
# the fine descriptor (EfficientNet stage 2 first: a 28 x 28 grid), same data and budget as the baseline
$PY benchmarks/scorrsan_train.py configs/scorrsan_faces_fine_baseline.yaml
$PY benchmarks/scorrsan_eval.py --protocol faces --checkpoint runs/scorrsan_faces_fine_baseline/final.pt \
    --json benchmarks/results/scorrsan/scorrsan_faces_fine_baseline.json
$PY benchmarks/scorrsan_eval.py --protocol faces --untrained --json benchmarks/results/scorrsan/scorrsan_faces_fine_untrained.json \
    --untrained-options '{"backbone": "efficientnet_lite0+dinov2_vits14@norm", "layers": [[2, 3, 4], [9]], "upsample": 2}'
