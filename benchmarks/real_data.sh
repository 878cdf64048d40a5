#!/usr/bin/env bash
# The real-data benchmark (issues 3 and 4): every method on clothing, cellphones and UCI retail,
# 3 seeds (UCI retail: 1), cold start on seed 0; then the DAEMON ablations (seed 0). Results land in
# benchmarks/results/<dataset>/ and benchmarks/results/<dataset>_ablations/.
# Usage: bash benchmarks/real_data.sh [DATA_DIR]   (default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
R=benchmarks/results
DR=${DUALREC:-.venv/bin/dualrec}
# The one-stage methods. The committed folders cellphones/, clothing/, uci_retail/ and
# *_ablations/ were made at commit 7bf12bc, when `daemon` named DAEMON alone: today's
# `daemon_embedding` (same code and config). Re-running this line writes it under the new name.
MAIN=daemon_embedding,popularity,text_similarity,cooccurrence,graphsage,lightgcn,directed_gnn
# dualrec as it ranks (DAEMON + co-occurrence candidates, reranked), its graph-only control, and
# co-occurrence again as the anchor that ties the two runs together (it must match exactly).
TWO=daemon,cooccurrence_rerank,cooccurrence
ABL=daemon_paper,daemon_no_similar,daemon_no_asym,daemon_shared,daemon_no_text
DAEMON=(--set epochs=10 --set patience=3)
RETAIL=(--option min_support=5 --option min_basket_support=10)

$DR benchmark -f amazon2014 -i "$DATA/amazon2014/cellphones" -o $R/cellphones --seeds 3 --methods $MAIN "${DAEMON[@]}"
$DR benchmark -f amazon2014 -i "$DATA/amazon2014/clothing" -o $R/clothing --seeds 3 --methods $MAIN "${DAEMON[@]}"
$DR benchmark -f amazon2014 -i "$DATA/amazon2014/cellphones" -o $R/two_stage/cellphones --seeds 3 --methods $TWO "${DAEMON[@]}"
$DR benchmark -f amazon2014 -i "$DATA/amazon2014/clothing" -o $R/two_stage/clothing --seeds 3 --methods $TWO "${DAEMON[@]}"
$DR benchmark -f orders -i "$DATA/uci_online_retail/online_retail.parquet" -o $R/two_stage/uci_retail --seeds 3 --no-cold-start --methods $TWO "${DAEMON[@]}" "${RETAIL[@]}"
$DR benchmark -f amazon2014 -i "$DATA/amazon2014/cellphones" -o $R/cellphones_ablations --seeds 1 --methods $ABL "${DAEMON[@]}"
$DR benchmark -f amazon2014 -i "$DATA/amazon2014/clothing" -o $R/clothing_ablations --seeds 1 --methods daemon_paper,daemon_no_similar "${DAEMON[@]}"
# UCI retail: one seed and no cold-start section (it has no co-view data), to stay within the
# session's time; pass --seeds 3 for the full protocol.
$DR benchmark -f orders -i "$DATA/uci_online_retail/online_retail.parquet" -o $R/uci_retail --seeds 1 --no-cold-start --methods $MAIN "${DAEMON[@]}" "${RETAIL[@]}"
