#!/usr/bin/env bash
# Issue 15's quality check: dualrec's ranking (`daemon`) and the control (`cooccurrence_rerank`)
# with the sparse second stage (candidates from the index and the query's paths, features at the
# candidates only), under the protocol and budget of benchmarks/real_data.sh and extras.sh, whose
# results (benchmarks/results/{clothing,cellphones} and control/) were measured with the dense one
# until 2026-11-30. The dense second stage is gone; its figures are frozen in
# benchmarks/results/sparse_parity/<dataset>/dense.json, and make_readme.py compares with those. They
# were measured with that day's DAEMON defaults (5 epochs, co-view loss weight 0.5, full-graph
# steps), which this script's run then shared; a run with later defaults compares more than the
# second stage.
# 1,230 s on the idle 2-core machine. Results land in benchmarks/results/sparse_parity/<dataset>/.
# Usage: bash benchmarks/sparse_parity.sh [DATA_DIR]   (default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
R=benchmarks/results/sparse_parity
DR=${DUALREC:-.venv/bin/dualrec}
DAEMON=(--set epochs=5 --set patience=3 --set max_val_edges=5000)
start=$SECONDS
for ds in clothing cellphones; do
  $DR benchmark -f amazon2014 -i "$DATA/amazon2014/$ds" -o "$R/$ds" --seeds 3 --no-cold-start \
    --methods daemon,cooccurrence_rerank "${DAEMON[@]}"
done
echo "sparse_parity.sh: $((SECONDS - start)) s in all"
