#!/usr/bin/env bash
# The real-data benchmark (issue 3): every issue method on amazon2014 clothing, cellphones and UCI
# retail, 3 seeds each, from the raw files (ingest and text features included). 2,052 s on
# the idle 2-core machine. Results land in benchmarks/results/<dataset>/.
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
# DAEMON's training budget (the GNN baselines get a similar one: GNN_BUDGET in dualrec/benchmark/registry.py).
DAEMON=(--set epochs=5 --set patience=3 --set max_val_edges=5000)
RETAIL=(--option min_support=5 --option min_basket_support=10)
start=$SECONDS
$DR benchmark -f amazon2014 -i "$DATA/amazon2014/cellphones" -o $R/cellphones --seeds 3 --no-cold-start --methods $MAIN "${DAEMON[@]}"
$DR benchmark -f amazon2014 -i "$DATA/amazon2014/clothing" -o $R/clothing --seeds 3 --no-cold-start --methods $MAIN "${DAEMON[@]}"
$DR benchmark -f orders -i "$DATA/uci_online_retail/online_retail.parquet" -o $R/uci_retail --seeds 3 --no-cold-start --methods $MAIN "${DAEMON[@]}" "${RETAIL[@]}"
echo "real_data.sh: $((SECONDS - start)) s in all"
