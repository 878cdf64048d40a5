#!/usr/bin/env bash
# dualrec as a user runs it, on Amazon clothing: ingest -> train (DAEMON + the second stage) ->
# evaluate -> recommend -> HTTP load on `dualrec serve`, two-stage and one-stage (the same
# model without its second stage). DAEMON gets the benchmark's budget (5 epochs) so the numbers line
# up with benchmarks/results/clothing/ seed 0.
# Usage: bash benchmarks/cli_clothing.sh [DATA_DIR] [WORK_DIR]   (defaults ../shared/data, a temp dir)
# Writes benchmarks/results/cli_clothing/{model.json,evaluate.json,serve_load_*.json,query_latency.json,log.txt}.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
WORK=${2:-$(mktemp -d)}
OUT=benchmarks/results/cli_clothing
DR=${DUALREC:-.venv/bin/dualrec}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
{
start=$SECONDS
$DR ingest --format amazon2014 --input "$DATA/amazon2014/clothing" --out "$WORK/clothing" --option progress=false > /dev/null
echo "ingest: $((SECONDS - start)) s"
t=$SECONDS
$DR train "$WORK/clothing" --out "$WORK/model" --set epochs=5 --set patience=3 --set max_val_edges=5000 --quiet
echo "train (text encoding, DAEMON, second stage): $((SECONDS - t)) s"
t=$SECONDS
$DR evaluate "$WORK/model" --json "$OUT/evaluate.json"
echo "evaluate: $((SECONDS - t)) s"
$DR recommend "$WORK/model" B006WCB2QG --k 10
$PY benchmarks/serve_load.py --model "$WORK/model" --clients 8 --requests 1000 --warmup 50 \
  --out "$OUT/serve_load_two_stage.json" | tail -1
# the same model without its second stage: a copy whose new version leaves rerank/ out
cp -r "$WORK/model" "$WORK/model_one_stage" && $PY - "$WORK/model_one_stage" <<'PY'
import sys
from dualrec.store import ModelStore
s = ModelStore(sys.argv[1])
with s.lock(0):
    p = s.version()
    with s.writer(p) as w:
        w.link_all(except_={"rerank/", "model.json"})
        w.commit({**p.info, "ranker": "daemon"})
PY
$PY benchmarks/serve_load.py --model "$WORK/model_one_stage" --clients 8 --requests 1000 --warmup 50 \
  --out "$OUT/serve_load_one_stage.json" | tail -1
$PY benchmarks/query_latency.py "$WORK/model" --out "$OUT/query_latency.json"
$PY -c "import json, sys; from dualrec.store import open_version; print(json.dumps(open_version(sys.argv[1]).info, indent=2))" "$WORK/model" > "$OUT/model.json"
echo "cli_clothing.sh: $((SECONDS - start)) s in all"
} 2>&1 | tr '\r' '\n' | grep -v "it/s\]$\|s/it\]$\|it\]$" | tee "$OUT/log.txt"
