"""The benchmark on real data (../shared/data, Amazon 2014 cellphones), the real MiniLM path, --quick.

Skipped with a reason when the data folder is absent (a fresh clone); runs in CI.
"""

import json
from pathlib import Path

import pytest

from dualrec.benchmark import run_benchmark

pytestmark = pytest.mark.realdata

REAL_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
CELLPHONES = REAL_DATA / "amazon2014" / "cellphones"


def test_daemon_beats_cooccurrence_popularity_and_text_on_cellphones(tmp_path):
    if not (CELLPHONES / "product.txt.gz").is_file():
        pytest.skip(f"real data not found at {CELLPHONES} (../shared/data relative to the repo root)")
    lines = []
    res = run_benchmark(
        "amazon2014",
        CELLPHONES,
        tmp_path / "bench",
        quick=True,
        methods="daemon,cooccurrence_rerank,cooccurrence,popularity,text_similarity",
        encoder="minilm",
        progress=False,
        # history mode (above 10,000 products): 8 epochs x 80 steps of 1,024 edges, a few minutes
        daemon_config={"max_steps_per_epoch": 80},
        log=lines.append,
    )
    print("\n".join(lines))
    m = res["methods"]
    assert res["dataset"] == "cellphones" and res["n_products"] == 10_429 and res["seeds"] == [0]
    # the two stages (DAEMON + co-occurrence candidates, reranked) beat the strongest baseline
    assert m["daemon"]["HitRate@10"] > m["cooccurrence"]["HitRate@10"]
    assert m["daemon"]["MRR@10"] > m["cooccurrence"]["MRR@10"]
    # ... and DAEMON lifts the second stage it ships in (the same reranker without it: the control)
    assert m["daemon"]["HitRate@10"] > m["cooccurrence_rerank"]["HitRate@10"]
    assert m["daemon"]["MRR@10"] > m["cooccurrence_rerank"]["MRR@10"]
    assert m["daemon"]["HitRate@10"] > m["popularity"]["HitRate@10"]
    assert m["daemon"]["HitRate@10"] > m["text_similarity"]["HitRate@10"]
    assert m["text_similarity"]["direction_accuracy"] == 0.5
    run = json.loads((tmp_path / "bench" / "run.json").read_text())
    assert run["max_test_edges"] == 5000  # > 10k products: a seeded subsample of the test edges
    assert run["seeds"]["0"]["methods"]["daemon"]["num_test_edges"] == 5000
    assert "at most 5,000 test edges" in (tmp_path / "bench" / "results.md").read_text()
    # cold start (10 % of products unseen in training): DAEMON embeds a new query from its metadata
    # through what it learned on the graph; text similarity alone does worse
    cold = res["cold_start"]
    assert cold["daemon"]["HitRate@10"] > cold["text_similarity"]["HitRate@10"]
    # ... and the shipped ranking recommends new products to known ones (their slots)
    assert cold["daemon"]["as_target"]["HitRate@10"] > 0
