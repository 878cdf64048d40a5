#!/usr/bin/env bash
# The real-data benchmark (issue 3): every issue method on amazon2014 clothing, cellphones and UCI
# retail, 3 seeds each, from the raw files (ingest and text features included). Every model trained
# to convergence: 3,821 s on the idle 2-core machine (2026-12-01). Results land in benchmarks/results/<dataset>/.
# The graph-only control, the cold-start section and the DAEMON ablations are in
# benchmarks/extras.sh.
# Usage: bash benchmarks/real_data.sh [DATA_DIR]   (default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
R=benchmarks/results
DR=${DUALREC:-.venv/bin/dualrec}
# daemon = dualrec as it ranks (DAEMON + co-occurrence candidates, reranked); daemon_embedding =
# its first stage alone (the same trained DAEMON, shared); then the issue's baselines.
MAIN=daemon,daemon_embedding,popularity,text_similarity,cooccurrence,graphsage,lightgcn,directed_gnn
# Every trained model runs until its validation MRR@10 stops improving (--converge: the GNN
# baselines' own epoch limits and patience; DAEMON's TrainConfig defaults, with patience 3 and
# early stopping read on 5,000 validation edges, as the baselines do).
DAEMON=(--converge --set patience=3 --set max_val_edges=5000)
RETAIL=(--option min_support=5 --option min_basket_support=10)
start=$SECONDS
$DR benchmark -f amazon2014 -i "$DATA/amazon2014/cellphones" -o $R/cellphones --seeds 3 --no-cold-start --methods $MAIN "${DAEMON[@]}"
$DR benchmark -f amazon2014 -i "$DATA/amazon2014/clothing" -o $R/clothing --seeds 3 --no-cold-start --methods $MAIN "${DAEMON[@]}"
$DR benchmark -f orders -i "$DATA/uci_online_retail/online_retail.parquet" -o $R/uci_retail --seeds 3 --no-cold-start --methods $MAIN "${DAEMON[@]}" "${RETAIL[@]}"
echo "real_data.sh: $((SECONDS - start)) s in all"
