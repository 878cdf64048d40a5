#!/usr/bin/env bash
# Issue 14's quality check: DAEMON trained in the history mode (each step computes only its batch;
# the mode `auto` picks above 200,000 products) against full-graph steps (the mode of every other
# table here), under the protocol and budget of benchmarks/real_data.sh: 5 epochs, 3 seeds, test
# edges, all products ranked. Results land in benchmarks/results/history_parity/<dataset>-<mode>/.
# Usage: bash benchmarks/history_parity.sh [DATA_DIR]   (default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
R=benchmarks/results/history_parity
DR=${DUALREC:-.venv/bin/dualrec}
DAEMON=(--set epochs=5 --set patience=3 --set max_val_edges=5000)
start=$SECONDS
for ds in cellphones clothing; do
  for mode in history full; do
    $DR benchmark -f amazon2014 -i "$DATA/amazon2014/$ds" -o "$R/$ds-$mode" --seeds 3 --no-cold-start \
      --methods daemon_embedding "${DAEMON[@]}" --set batching=$mode
  done
done
echo "history_parity.sh: $((SECONDS - start)) s in all"
