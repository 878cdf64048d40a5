#!/usr/bin/env bash
# The text encoders' quality on real data (issue 14, features at scale): the same benchmark as
# real_data.sh on amazon2014 clothing (seed 0, the same DAEMON budget), once with MiniLM (the
# default) and once with the static encoder distilled from it (`--encoder static`), which
# encodes many times faster. Its speed is in benchmarks/encode_scale.py. Results land in
# benchmarks/results/encoders/<encoder>/; make_readme.py puts the comparison in
# benchmarks/README.md.
# Usage: bash benchmarks/encoders.sh [DATA_DIR]   (default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
R=benchmarks/results/encoders
DR=${DUALREC:-.venv/bin/dualrec}
METHODS=daemon,daemon_embedding,text_similarity,cooccurrence_rerank
DAEMON=(--set epochs=5 --set patience=3 --set max_val_edges=5000)
start=$SECONDS
for enc in minilm static; do
  $DR benchmark -f amazon2014 -i "$DATA/amazon2014/clothing" -o $R/$enc --seeds 1 --cold-start-seeds 1 \
    --methods $METHODS --encoder $enc "${DAEMON[@]}"
done
echo "encoders.sh: $((SECONDS - start)) s in all"
