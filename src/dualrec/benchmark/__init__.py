"""The benchmark harness: every method on the same splits, scored by the same evaluator.

``dualrec benchmark --format F --input PATH --out DIR [--seeds N] [--quick] [--methods a,b]``
(or :func:`run_benchmark`) writes::

    DIR/results.json      {"dataset", "n_products", "n_edges": {"copurchase", "similar"}, "seeds",
                           "methods": {NAME: {"HitRate@k", "MRR@k" (k = 5, 10, 20),
                                              "direction_accuracy" (float or null),
                                              "std": {METRIC: float}, "train_seconds",
                                              "long_tail": {"HitRate@10", "MRR@10", "std"},
                                              "bias": {"head_share@10", "coverage@10",
                                                       "long_tail_share@10", "std"}}},
                           "cold_start": {NAME: {the same metrics for cold queries,
                                                 "as_target": {the metrics for cold targets},
                                                 "fallback": "popularity" (graph-only methods)}}}
    DIR/results.md        the table (mean ± std over seeds), the command line and the date
    DIR/hitrate_at_k.png  HitRate@k vs k per method;  DIR/mrr_at_k.png: MRR@k vs k
    DIR/run.json          everything else: per-seed metrics, test-edge counts, tuned settings, failures
    DIR/dataset/          the ingested dataset folder (and its cached features)

Protocol, per seed ``s``: ``edge_split(graph, 0.1, 0.1, seed=s)``. Every method sees only the
TRAIN co-purchase edges (and all co-view pairs): baselines are fitted on
``graph.subgraph_edges(train)``, DAEMON is trained with that split passed explicitly. A method
may tune on the VAL edges (it is handed them). It is reported on the TEST edges with
:class:`~dualrec.evaluate.RankingEvaluator` over all products, the query and the known (TRAIN
and VAL) edges excluded, and direction accuracy on the TEST edges whose reverse is not an edge
of the graph -- :func:`evaluate_method`, the same computation as
:func:`dualrec.train.evaluate_embeddings` does for DAEMON, here for every method. Mean and
standard deviation (sample std, 0 for one seed) over the seeds.

Cold start (``cold_start=True``, the first ``cold_start_seeds`` seeds): :func:`~dualrec.split.cold_split`
holds out 10 % of the products with all their edges and co-view pairs; the methods of
``COLD_METHODS`` are refitted on what is left and scored with the cold product as the query
(its held-out out-edges) and as the target (held-out edges into it from known products).
Graph-only methods know nothing of an unseen product: they get the popularity fallback
(:func:`popularity_fallback`), labelled so.

Selection bias: every method's TEST edges are also scored on the *long tail* (targets in the
lower 50 % by training in-degree), and its top-10 lists for the test queries are measured for
popularity bias (share of slots taken by the 1 % most popular products, catalogue coverage).

``quick``: one seed, DAEMON capped at 8 epochs (patience 3), and on datasets of more than
10,000 products at most 5,000 test edges (a seeded subsample, the same for every method).

Methods: ``daemon`` is dualrec as it ranks: DAEMON and co-occurrence propose candidates, a
LambdaMART model fitted on the VAL edges reranks them (:mod:`dualrec.rerank`).
``daemon_embedding`` is its first stage alone, the same trained DAEMON (retrieval by
``s_u . t_v``, the paper's form of recommending; the ablations vary it), ``cooccurrence_rerank``
the same second stage without DAEMON: the control that tells what DAEMON adds to the reranker.
The GNN baselines train with ``GNN_BUDGET``, DAEMON with ``daemon_config`` (the scripts in
``benchmarks/`` give every learned model a similar budget).

Methods are looked up by name in a registry (:func:`register_method`); the GNN baselines of
``dualrec.baselines.gnn`` and the DAEMON ablations plug in by name. A method that fails is
reported (printed, in run.json and results.md) and left out of the results; the others go on.
"""

from dualrec.benchmark.registry import (
    COLD_FRACTION,
    COLD_METHODS,
    DAEMON_ABLATIONS,
    GNN_BUDGET,
    GNN_METHODS,
    METRICS,
    BenchContext,
    Fitted,
    baseline_runner,
    known_methods,
    popularity_fallback,
    register_method,
    resolve_methods,
)
from dualrec.benchmark.report import plot_results, results_markdown, write_outputs
from dualrec.benchmark.run import aggregate, dataset_name, run_benchmark
from dualrec.evaluate import KS, RowMemo, evaluate_method

__all__ = [
    "run_benchmark",
    "evaluate_method",
    "register_method",
    "resolve_methods",
    "known_methods",
    "baseline_runner",
    "BenchContext",
    "Fitted",
    "RowMemo",
    "aggregate",
    "dataset_name",
    "popularity_fallback",
    "plot_results",
    "results_markdown",
    "write_outputs",
    "KS",
    "METRICS",
    "GNN_BUDGET",
    "GNN_METHODS",
    "COLD_FRACTION",
    "COLD_METHODS",
    "DAEMON_ABLATIONS",
]
