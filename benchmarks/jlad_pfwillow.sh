#!/bin/sh
# JLAD on PF-WILLOW (docs/JLAD.md): the alignment network after joint training vs trained alone, both as Matchers on
# the 200 test pairs of the SCorrSAN image split (t2s, kp-bbox; the zero-shot, SFNet and SCorrSAN rows on the same
# pairs are in docs/SCORRSAN.md). Seeds 0, 1, 2 (`corrmark train --seed`); one JSON per row in benchmarks/results/jlad/.
# Run from the repository root; about 2 min of training per run on one core.
set -e
PY="${PYTHON:-python}"
export PYTHONPATH=src
for variant in joint alone; do
    for seed in 0 1 2; do
        if [ "$seed" = 0 ]; then run=jlad_pfwillow_$variant; seed_option=""
        else run=jlad_pfwillow_${variant}_seed$seed; seed_option="--seed $seed"; fi
        $PY -m corrmark train configs/jlad_pfwillow_$variant.yaml --resume --quiet $seed_option
        $PY -m corrmark eval pf-willow --root ../shared/data/pf-willow --split test --matcher jlad \
            --checkpoint runs/$run/final.pt --direction t2s --threshold kp-bbox \
            --json benchmarks/results/jlad/$run.json --quiet
    done
done
# where the alternation starts from: both seed-0 runs after the synthetic pretraining (step 300)
for variant in joint alone; do
    $PY -m corrmark eval pf-willow --root ../shared/data/pf-willow --split test --matcher jlad \
        --checkpoint runs/jlad_pfwillow_$variant/checkpoints/step_00000300.pt --direction t2s --threshold kp-bbox \
        --json benchmarks/results/jlad/jlad_pfwillow_${variant}_pretrain.json --quiet
done
# the per-category landmark protocol (regression per subclass fitted on its 5 training images, kp-bbox error)
for checkpoint in final.pt=jlad_pfwillow_joint_landmarks checkpoints/step_00000300.pt=jlad_pfwillow_joint_pretrain_landmarks; do
    $PY -m corrmark eval-landmarks pf-willow --root ../shared/data/pf-willow \
        --checkpoint runs/jlad_pfwillow_joint/${checkpoint%%=*} --json benchmarks/results/jlad/${checkpoint##*=}.json \
        --figure benchmarks/results/jlad/${checkpoint##*=}.jpg --quiet
done
