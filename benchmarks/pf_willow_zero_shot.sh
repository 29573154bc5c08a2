#!/usr/bin/env bash
# Zero-shot PF-WILLOW rows of docs/BENCHMARKS.md: every config in configs/zero_shot/, both directions, all 900 pairs.
# Usage: benchmarks/pf_willow_zero_shot.sh PATH/TO/pf-willow [CONFIG_NAME ...]
# Writes benchmarks/results/zero_shot/pf_willow_<config>_<direction>.json; benchmarks/make_table.py turns them into the table.
set -euo pipefail
root=${1:?give the PF-WILLOW root}
shift
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  names=($(cd configs/zero_shot && ls pf_willow_*.yaml | sed 's/^pf_willow_//; s/\.yaml$//'))
fi
for name in "${names[@]}"; do
  for direction in s2t t2s; do
    corrmark eval --config "configs/zero_shot/pf_willow_${name}.yaml" --root "$root" --direction "$direction" \
      --quiet --json "benchmarks/results/zero_shot/pf_willow_${name}_${direction}.json"
  done
done
