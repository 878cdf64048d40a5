#!/usr/bin/env bash
# The history mode's two optimiser states for the per-product embeddings (TrainConfig.id_optimizer):
# Adam's, which the Amazon datasets get by default, and the compact one that `auto` picks for
# catalogues above about 500k products, forced here on the real data to measure what it costs.
# `daemon_embedding`, 3 seeds, to convergence (the budget of real_data.sh). Results land in
# benchmarks/results/id_optimizer/<dataset>-<state>/. About 20 minutes per state on cellphones
# (2026-12-01, a day this machine ran about 2x slower than usual).
# Usage: DATASETS="cellphones clothing" bash benchmarks/id_optimizer_parity.sh [DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
R=benchmarks/results/id_optimizer
DR=${DUALREC:-.venv/bin/dualrec}
DAEMON=(--converge --set patience=3 --set max_val_edges=5000)
start=$SECONDS
for ds in ${DATASETS:-cellphones clothing}; do
  for state in adam compact; do
    $DR benchmark -f amazon2014 -i "$DATA/amazon2014/$ds" -o "$R/$ds-$state" --seeds 3 --no-cold-start \
      --methods daemon_embedding "${DAEMON[@]}" --set id_optimizer=$state
  done
done
echo "id_optimizer_parity.sh: $((SECONDS - start)) s in all"
