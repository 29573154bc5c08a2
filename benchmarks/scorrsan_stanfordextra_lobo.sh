#!/bin/sh
# SCorrSAN StanfordExtra leave-one-breed-out (docs/SCORRSAN.md, protocol 3): 4 folds, one per breed of
# ../shared/data/stanfordextra-sample. Per fold: train on the other 3 breeds, test on the ordered pairs within the
# held-out breed (t2s, kp-bbox, per pair); the zero-shot matcher and the untrained pipeline on the same pairs.
# Then the mean over folds of every row (fold mean and pairs-weighted, benchmarks/scorrsan_fold_mean.py).
# One JSON per row: benchmarks/results/scorrsan/scorrsan_stanfordextra_lobo_<breed|mean>_<row>.json. Run from the repo root.
# Usage: sh benchmarks/scorrsan_stanfordextra_lobo.sh [baseline|st|all|zero-shot]
#   baseline: baseline per fold + zero-shot references; st: ST per fold (teacher = that fold's baseline).
set -e
PY="${PYTHON:-python}"
export PYTHONPATH=src
BREEDS="border_terrier golden_retriever rhodesian_ridgeback weimaraner"
OUT=benchmarks/results/scorrsan/scorrsan_stanfordextra_lobo
evaluate() {  # evaluate BREED ROW ARGS...
    breed=$1; row=$2; shift 2
    $PY benchmarks/scorrsan_eval.py --protocol stanfordextra --held-out-breed "$breed" "$@" \
        --json "${OUT}_${breed}_$row.json"
}
train() {  # train BREED VARIANT OVERRIDES...
    breed=$1; variant=$2; shift 2
    $PY benchmarks/scorrsan_train.py configs/scorrsan_stanfordextra_$variant.yaml --set data.held_out_breed="$breed" \
        --set name=scorrsan_stanfordextra_lobo_${breed}_$variant "$@"
    evaluate "$breed" "$variant" --checkpoint runs/scorrsan_stanfordextra_lobo_${breed}_$variant/final.pt
}
mean() {  # mean ROW: one JSON over the 4 folds of that row
    files=""
    for breed in $BREEDS; do files="$files ${OUT}_${breed}_$1.json"; done
    $PY benchmarks/scorrsan_fold_mean.py --json "${OUT}_mean_$1.json" $files
}
zero_shot() {  # zero_shot BREED: the zero-shot matcher rows of one fold
    evaluate "$1" zero_shot_nn_best --nn-preset best
    evaluate "$1" zero_shot_nn_fused_block8 --nn-preset fused-block8
}
PART=${1:-all}
if [ "$PART" = baseline ] || [ "$PART" = all ]; then
    for breed in $BREEDS; do
        train "$breed" baseline
        evaluate "$breed" untrained --untrained
        zero_shot "$breed"
    done
    mean baseline
    mean untrained
fi
if [ "$PART" = zero-shot ]; then  # only the zero-shot matcher rows
    for breed in $BREEDS; do zero_shot "$breed"; done
fi
if [ "$PART" = baseline ] || [ "$PART" = all ] || [ "$PART" = zero-shot ]; then
    mean zero_shot_nn_best
    mean zero_shot_nn_fused_block8
fi
if [ "$PART" = st ] || [ "$PART" = all ]; then
    for breed in $BREEDS; do
        train "$breed" st --set teacher_student.teacher=runs/scorrsan_stanfordextra_lobo_${breed}_baseline/final.pt
    done
    mean st
fi
