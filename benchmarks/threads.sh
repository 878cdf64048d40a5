#!/usr/bin/env bash
# Two dualrec trainings at once on the 2 cores: with the default threads (all cores each) and with
# --threads 1 each, against one alone. Writes benchmarks/results/threads.json.
# Usage: bash benchmarks/threads.sh   (about 2 minutes; run it with nothing else on the machine)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
D="$ROOT/.venv/bin/dualrec"
W="$(mktemp -d)"
cd "$W"
"$ROOT/.venv/bin/python" -c "from dualrec.synthetic import make_store; make_store(n_products=4000, seed=1).save('data')"
run() { /usr/bin/time -f "%e" "$D" -q $1 train data --out "$2" --encoder hash --epochs 4 --set patience=10 --no-rerank \
        --quiet > /dev/null 2> "$2.time"; }
run "" alone
(run "" a1 & run "" a2 & wait)
(run "--threads 1" b1 & run "--threads 1" b2 & wait)
t() { tail -1 "$1.time"; }
cat > "$ROOT/benchmarks/results/threads.json" <<JSON
{"command": "bash benchmarks/threads.sh", "date": "$(date '+%Y-%m-%d %H:%M')", "machine": "$(uname -m), $(nproc) cores",
 "workload": "dualrec train: synthetic store of 4,000 products, hash features, 4 epochs, no second stage",
 "alone_seconds": $(t alone), "two_default_threads_seconds": [$(t a1), $(t a2)],
 "two_threads_1_seconds": [$(t b1), $(t b2)]}
JSON
cat "$ROOT/benchmarks/results/threads.json"
rm -rf "$W"
