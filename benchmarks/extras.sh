#!/usr/bin/env bash
# What benchmarks/real_data.sh leaves out, with the same DAEMON budget:
#  * control/: the second stage without DAEMON (cooccurrence_rerank), 3 seeds; co-occurrence is
#    run again as the anchor (it must match real_data.sh's to the digit);
#  * cold_start/: 10 % of the products held out with all their edges, and 10 % of the edges
#    between the others (seed 0); daemon_new0 / daemon_always / daemon_conf10 / daemon_conf30 = the
#    shipped ranking with no new-product slots / slots always filled / other new_min_confidence;
#    daemon_query_alone = new products' own lists by DAEMON alone (no text neighbours);
#  * ablations/: DAEMON variants (seed 0) next to daemon_embedding, the model they vary.
# Usage: bash benchmarks/extras.sh [DATA_DIR]   (default ../shared/data)
# Measured on the 2-core machine: control 1,036 s (partly contended); cold start, every model to
# convergence, 3,172 s for clothing and 2,266 s for cellphones (2026-12-01, contended by test runs
# for part of it); ablations, every variant to convergence: 2,346 s for cellphones (on a day this
# machine ran about 2x slower than usual); 4,142 s for clothing (2026-12-02).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
R=benchmarks/results
DR=${DUALREC:-.venv/bin/dualrec}
DAEMON=(--converge --set patience=3 --set max_val_edges=5000)  # as real_data.sh
RETAIL=(--option min_support=5 --option min_basket_support=10)
CTRL=cooccurrence_rerank,cooccurrence
COLD=daemon,daemon_new0,daemon_always,daemon_conf10,daemon_conf30,daemon_gate_text,daemon_gate_text10,daemon_gate_both,daemon_gate_both10,daemon_query_alone,daemon_embedding,popularity,text_similarity,text_neighbours,cooccurrence,graphsage
ABL=daemon_embedding,daemon_paper,daemon_no_similar,daemon_coview05,daemon_no_asym,daemon_shared,daemon_no_text
start=$SECONDS
$DR benchmark -f amazon2014 -i "$DATA/amazon2014/cellphones" -o $R/control/cellphones --seeds 3 --no-cold-start --methods $CTRL
$DR benchmark -f amazon2014 -i "$DATA/amazon2014/clothing" -o $R/control/clothing --seeds 3 --no-cold-start --methods $CTRL
$DR benchmark -f orders -i "$DATA/uci_online_retail/online_retail.parquet" -o $R/control/uci_retail --seeds 3 --no-cold-start --methods $CTRL "${RETAIL[@]}"
$DR benchmark -f amazon2014 -i "$DATA/amazon2014/cellphones" -o $R/cold_start/cellphones --seeds 1 --methods $COLD "${DAEMON[@]}"
$DR benchmark -f amazon2014 -i "$DATA/amazon2014/clothing" -o $R/cold_start/clothing --seeds 1 --methods $COLD "${DAEMON[@]}"
$DR benchmark -f amazon2014 -i "$DATA/amazon2014/cellphones" -o $R/ablations/cellphones --seeds 1 --no-cold-start --methods $ABL "${DAEMON[@]}"
$DR benchmark -f amazon2014 -i "$DATA/amazon2014/clothing" -o $R/ablations/clothing --seeds 1 --no-cold-start --methods $ABL "${DAEMON[@]}"
echo "extras.sh: $((SECONDS - start)) s in all"
