#!/bin/sh
# SCorrSAN ablation in the spirit of the paper's Table 4/6 on the PF-WILLOW split, at a small budget (250 steps per
# run, every row trained from scratch with the same seed). Teacher-student rows use the 500-step baseline
# (runs/scorrsan_pfwillow_baseline/final.pt, from benchmarks/scorrsan_pfwillow.sh) as the offline teacher.
# One JSON per row: benchmarks/results/scorrsan/scorrsan_ablation_<row>.json. Run from the repository root.
# Usage: sh benchmarks/scorrsan_ablation.sh [architecture|teacher|all]
set -e
PY="${PYTHON:-python}"
export PYTHONPATH=src
CONFIG=configs/scorrsan_pfwillow_baseline.yaml
ST=configs/scorrsan_pfwillow_st.yaml
row() {  # row NAME CONFIG OVERRIDES...
    name=$1; config=$2; shift 2
    $PY benchmarks/scorrsan_train.py "$config" --set name=scorrsan_ablation_$name --set train.steps=250 "$@"
    $PY benchmarks/scorrsan_eval.py --protocol pf-willow --checkpoint runs/scorrsan_ablation_$name/final.pt \
        --json benchmarks/results/scorrsan/scorrsan_ablation_$name.json
}
PART=${1:-all}
if [ "$PART" = architecture ] || [ "$PART" = all ]; then
    row a0_plain $CONFIG --set model.sce=false --set model.upsample=1
    row a1_sce $CONFIG --set model.upsample=1
    row hr_only $CONFIG --set model.sce=false
    row a2_sce_hr $CONFIG
fi
if [ "$PART" = teacher ] || [ "$PART" = all ]; then
    row a6_ts_dilation_selection $ST
    row a5_ts_dilation $ST --set teacher_student.selection=null
    row a4_ts_no_denoise $ST --set teacher_student.dilation=0 --set teacher_student.selection=null
    row ts_dilation3 $ST --set teacher_student.dilation=3
    row ts_dilation15 $ST --set teacher_student.dilation=15
fi
