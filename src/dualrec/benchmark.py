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

from __future__ import annotations

import inspect
import json
import math
import shlex
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dualrec.evaluate import (
    RankingEvaluator,
    direction_accuracy,
    long_tail_targets,
    metrics_from_ranks,
    recommendation_bias,
)
from dualrec.graph import DualrecError, ProductGraph
from dualrec.split import TEST, TRAIN, VAL, EdgeSplit, cold_split, edge_split

KS = (5, 10, 20)
METRICS = tuple(f"{m}@{k}" for m in ("HitRate", "MRR") for k in KS)
QUICK_MAX_TEST_EDGES = 5000
QUICK_LARGE_PRODUCTS = 10_000
QUICK_DAEMON = {"epochs": 8, "patience": 3}
GNN_METHODS = ("graphsage", "lightgcn", "directed_gnn")
# The benchmark's training budget for the GNN baselines (about 40 s per fit on clothing; DAEMON
# gets 5 epochs via benchmarks/real_data.sh, about 1.5 min), so the three datasets x 3 seeds fit
# in 45 minutes on 2 cores. Measured on clothing seed 0 (val MRR@10): LightGCN 0.240 after 8 epochs,
# 0.267 after 20 (its default); DiGAE 0.104 vs 0.136; GraphSAGE 0.096 after 2 epochs, 0.104
# after 6; DAEMON 0.236 after 5 epochs, 0.267 after 10. Early stopping reads 5,000 val edges.
GNN_BUDGET = {
    "graphsage": {"epochs": 2, "max_val_edges": 5000},
    "lightgcn": {"epochs": 8, "max_val_edges": 5000},
    "directed_gnn": {"epochs": 8, "max_val_edges": 5000},
}
COLD_FRACTION = 0.1
# Methods run in the cold-start section; a value names the fallback a graph-only method gets
# (it has nothing to say about a product it never saw), None = the method handles new products.
COLD_METHODS = {
    "daemon": None,
    "daemon_embedding": None,
    "daemon_paper": None,
    "popularity": None,
    "text_similarity": None,
    "graphsage": None,
    "cooccurrence": "popularity",
    "cooccurrence_rerank": "popularity",
    "lightgcn": "popularity",
    "directed_gnn": "popularity",
}
DAEMON_ABLATIONS = {
    # DAEMON alone (retrieval by s_u . t_v), and dualrec's first stage: the default TrainConfig,
    # as `dualrec train` makes it, so the ablations vary exactly that stage. 2-hop hard negatives
    # were measured for the first stage (cellphones seed 0, reranker cross-fitted on halves of the
    # val queries: two-stage HR@10 / MRR@10 0.613 / 0.303 with 16 of them, 0.605 / 0.294 without;
    # clothing 0.686 / 0.382 vs 0.685 / 0.379) but cost DAEMON alone val MRR, so they stay off.
    "daemon_embedding": {},
    "daemon_no_similar": {"use_similar": False, "sim_weight": 0.0},  # no co-view augmentation at all
    "daemon_no_asym": {"asym_weight": 0.0},
    "daemon_shared": {"dual": False},
    "daemon_no_text": {},  # random features instead of text (see _daemon_runner)
    # the paper's form: metadata features only (no per-product embedding), in-batch negatives
    "daemon_paper": {"id_dim": 0, "in_batch_negatives": True},
}


# ---------------------------------------------------------------------- method interface
@dataclass
class BenchContext:
    """What a method gets for one seed. Only TRAIN edges may be learned from."""

    graph: ProductGraph  # the full graph (a method must read only ``train_mask`` edges)
    split: EdgeSplit
    x: torch.Tensor  # node features (text encoder)
    seed: int
    quick: bool
    encoder: str
    daemon_config: dict = field(default_factory=dict)  # TrainConfig overrides for every DAEMON variant
    unseen: torch.Tensor | None = None  # cold-start run: products that do not exist at training time
    cache: dict = field(default_factory=dict)  # models shared by methods of one seed (co-occurrence, DAEMON)

    @property
    def train_mask(self) -> torch.Tensor:
        return self.split.mask(TRAIN)

    @property
    def train_graph(self) -> ProductGraph:
        """Same products and co-view pairs, TRAIN co-purchase edges only."""
        return self.graph.subgraph_edges(self.train_mask)

    @property
    def val(self) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.split.mask(VAL)
        return self.graph.cp_src[m], self.graph.cp_dst[m]


@dataclass
class Fitted:
    """A trained method: row scores, pair scores, and what it cost."""

    score_fn: Callable[[torch.Tensor], torch.Tensor]
    pair_score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    train_seconds: float
    info: dict = field(default_factory=dict)


Runner = Callable[[BenchContext], Fitted]
_REGISTRY: dict[str, Runner] = {}


def register_method(name: str, runner: Runner) -> None:
    """Make ``name`` selectable with ``--methods``; ``runner(ctx) -> Fitted``."""
    _REGISTRY[name] = runner


def _call_filtered(fn, *args, **kwargs):
    """Call ``fn`` with only the keyword arguments it accepts."""
    params = inspect.signature(fn).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return fn(*args, **kwargs)
    return fn(*args, **{k: v for k, v in kwargs.items() if k in params})


def baseline_runner(cls, **init) -> Runner:
    """A runner for a class with the baseline interface (see :mod:`dualrec.baselines.popularity`).

    The model is built with ``seed`` (and, under ``quick``, ``epochs`` and ``patience`` capped at
    8 and 3) where its constructor accepts them, then fitted on the train-only graph with ``x`` and ``val`` where
    ``fit`` accepts them.
    """

    def run(ctx: BenchContext) -> Fitted:
        kw = dict(init, seed=ctx.seed)
        if ctx.quick:  # cap, never raise, the constructor's defaults
            params = inspect.signature(cls).parameters
            for k, cap in QUICK_DAEMON.items():
                default = kw.get(k, params[k].default if k in params else inspect.Parameter.empty)
                kw[k] = min(cap, default) if isinstance(default, (int, float)) else cap
        model = _call_filtered(cls, **kw)
        g = ctx.train_graph
        t0 = time.perf_counter()
        model = _call_filtered(model.fit, g, torch.ones(g.num_copurchase, dtype=torch.bool), x=ctx.x, val=ctx.val)
        secs = time.perf_counter() - t0
        info = {k: getattr(model, k) for k in ("params_", "info_") if hasattr(model, k)}
        return Fitted(model.score_fn, model.pair_score_fn, secs, info)

    return run


def _train_daemon(ctx: BenchContext, overrides: dict, random_features: bool = False):
    """DAEMON trained on ``ctx`` with the benchmark's settings and a variant's ``overrides``.

    Cached per seed and config: ``daemon`` (two stages) and ``daemon_embedding`` (its first stage
    alone) share one training, as they would in production.
    """
    from dualrec.train import TrainConfig, train

    d = {"seed": ctx.seed, "encoder": ctx.encoder, **(QUICK_DAEMON if ctx.quick else {}), **ctx.daemon_config}
    cfg = TrainConfig.from_dict({**d, **overrides})  # the variant's own switch wins
    key = ("daemon", json.dumps(asdict(cfg), sort_keys=True), random_features)
    if key not in ctx.cache:
        x = ctx.x
        if random_features:
            x = torch.randn(x.shape, generator=torch.Generator().manual_seed(ctx.seed))
        ctx.cache[key] = train(
            ctx.graph, x, cfg, split=ctx.split, progress=False, log=lambda m: None, unseen=ctx.unseen
        )
    return ctx.cache[key]


def _fit_cooccurrence(ctx: BenchContext):
    """The tuned co-occurrence model of ``ctx`` (cached: the rerankers start from it) and its fit time."""
    from dualrec.baselines import Cooccurrence

    if "cooccurrence" not in ctx.cache:
        g = ctx.train_graph
        t0 = time.perf_counter()
        model = Cooccurrence(seed=ctx.seed).fit(g, torch.ones(g.num_copurchase, dtype=torch.bool), val=ctx.val)
        ctx.cache["cooccurrence"] = (model, time.perf_counter() - t0)
    return ctx.cache["cooccurrence"]


class RowMemo:
    """Caches the score rows of an expensive ``score_fn`` (up to ``max_bytes``).

    The evaluation asks for a query's row up to three times (ranks, popularity bias, direction
    accuracy); a two-stage row costs candidate generation and a boosted-tree pass, so it is
    computed once. Rows beyond the budget are recomputed, never dropped.
    """

    def __init__(self, score_fn, num_products: int, max_bytes: int = 2 << 30):
        self.score_fn, self.n = score_fn, int(num_products)
        self.max_rows = max(0, int(max_bytes) // (4 * self.n))
        self.rows: dict[int, torch.Tensor] = {}

    def __call__(self, query: torch.Tensor) -> torch.Tensor:
        q = query.tolist()
        missing = sorted({u for u in q if u not in self.rows})
        fresh = {}
        if missing:
            got = self.score_fn(torch.tensor(missing, dtype=torch.long))
            fresh = dict(zip(missing, got))
            for u in missing[: max(0, self.max_rows - len(self.rows))]:
                self.rows[u] = fresh[u].clone()  # a view would keep the whole batch alive
        if not q:
            return torch.empty(0, self.n)
        return torch.stack([self.rows[u] if u in self.rows else fresh[u] for u in q])


def _cooccurrence_runner(ctx: BenchContext) -> Fitted:
    model, secs = _fit_cooccurrence(ctx)
    return Fitted(model.score_fn, model.pair_score_fn, secs, {"params_": model.params_, "info_": model.info_})


def _daemon_runner(overrides: dict, random_features: bool = False) -> Runner:
    def run(ctx: BenchContext) -> Fitted:
        res = _train_daemon(ctx, overrides, random_features)
        s, t = res.source, res.target
        return Fitted(
            lambda q: s[q] @ t.T,
            lambda u, v: (s[u] * t[v]).sum(-1),
            res.seconds,
            {"best_epoch": res.best_epoch, "epochs_run": len(res.history), "val_MRR@10": res.val_metrics.get("MRR@10")},
        )

    return run


def _rerank_runner(with_daemon: bool) -> Runner:
    """dualrec's two stages (``with_daemon``), or the same reranker on co-occurrence alone (the control)."""

    def run(ctx: BenchContext) -> Fitted:
        from dualrec.evaluate import pair_fn_from_score_fn
        from dualrec.rerank import fit_two_stage

        cooc, secs = _fit_cooccurrence(ctx)
        s = t = None
        info: dict = {"cooccurrence_seconds": round(secs, 3)}
        if with_daemon:
            res = _train_daemon(ctx, DAEMON_ABLATIONS["daemon_embedding"])  # shared: one training
            s, t, secs = res.source, res.target, secs + res.seconds
            info.update(
                best_epoch=res.best_epoch,
                epochs_run=len(res.history),
                daemon_val_MRR_at_10=res.val_metrics.get("MRR@10"),
                daemon_seconds=round(res.seconds, 3),
            )
        t0 = time.perf_counter()
        rr = fit_two_stage(
            ctx.graph, ctx.train_mask, *ctx.val, ctx.x, s, t, seed=ctx.seed, cooc=cooc, log=lambda m: None
        )
        secs += time.perf_counter() - t0
        info["reranker"] = rr.info_
        score_fn = RowMemo(rr.score_fn, ctx.graph.num_products)
        return Fitted(score_fn, pair_fn_from_score_fn(score_fn, ctx.graph.num_products), secs, info)

    return run


def _register_builtins() -> None:
    from dualrec.baselines import Popularity, TextSimilarity

    register_method("daemon", _rerank_runner(with_daemon=True))
    for name, over in DAEMON_ABLATIONS.items():
        register_method(name, _daemon_runner(over, random_features=name == "daemon_no_text"))
    register_method("popularity", baseline_runner(Popularity))
    register_method("cooccurrence", _cooccurrence_runner)
    register_method("cooccurrence_rerank", _rerank_runner(with_daemon=False))
    register_method("text_similarity", baseline_runner(TextSimilarity))


_register_builtins()


def _gnn_runner(name: str) -> tuple[Runner | None, str | None]:
    """The runner of a GNN baseline of ``dualrec.baselines.gnn``, or ``(None, why not)``."""
    try:
        import dualrec.baselines.gnn as gnn
    except ModuleNotFoundError as e:
        if e.name == "dualrec.baselines.gnn":
            return None, "dualrec.baselines.gnn does not exist yet"
        return None, f"dualrec.baselines.gnn could not be imported ({e})"
    except Exception as e:  # a broken plug-in must not stop the benchmark
        return None, f"dualrec.baselines.gnn could not be imported ({type(e).__name__}: {e})"
    for obj in vars(gnn).values():
        if inspect.isclass(obj) and getattr(obj, "name", None) == name and hasattr(obj, "fit"):
            return baseline_runner(obj, **GNN_BUDGET.get(name, {})), None
    return None, f"dualrec.baselines.gnn has no class with name = {name!r}"


def known_methods() -> list[str]:
    """Every name ``--methods`` accepts (whether or not its code is present)."""
    names = list(_REGISTRY)
    return names + [g for g in GNN_METHODS if g not in names]


def resolve_methods(methods: list[str] | str | None, log=print) -> dict[str, Runner]:
    """Runners for the requested names (default: all available), in the given order."""
    if methods is None or methods == "" or methods == []:
        names = known_methods()
    else:
        names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
        names = [m for m in names if m]
    unknown = [m for m in names if m not in known_methods()]
    if unknown:
        raise DualrecError(f"unknown method(s): {', '.join(unknown)}; choose from {', '.join(known_methods())}")
    if len(set(names)) != len(names):
        raise DualrecError("a method is listed twice in --methods")
    out: dict[str, Runner] = {}
    for m in names:
        if m in _REGISTRY:
            out[m] = _REGISTRY[m]
            continue
        runner, why = _gnn_runner(m)
        if runner is None:
            log(f"note: skipping {m}: {why}")
        else:
            out[m] = runner
    if not out:
        raise DualrecError("no method to run")
    return out


# ---------------------------------------------------------------------- evaluation
def evaluate_method(
    graph: ProductGraph,
    split: EdgeSplit,
    score_fn,
    pair_score_fn,
    part: int = TEST,
    max_edges: int | None = None,
    seed: int = 0,
    edge_mask: torch.Tensor | None = None,
    bias: bool = False,
) -> dict:
    """HitRate/MRR@{5,10,20} + direction accuracy of a method on one split part.

    Exactly :func:`dualrec.train.evaluate_embeddings` for any score function: the same
    subsample (``max_edges``, ``seed``), the same known-edge exclusion (TRAIN, and VAL for the
    test), the same one-way edges for direction. ``num_queries`` = edges evaluated and
    ``num_one_way`` = edges in the direction accuracy are added, and ``long_tail``: HitRate/MRR@10
    over the edges whose target is in the long tail (the lower 50 % of products by TRAIN
    in-degree, :func:`~dualrec.evaluate.long_tail_targets`). ``edge_mask`` evaluates those
    edges instead of the whole ``part`` (cold start); ``bias=True`` adds the popularity bias
    of the top-10 lists of the evaluated queries (:func:`~dualrec.evaluate.recommendation_bias`).
    """
    mask = split.mask(part) if edge_mask is None else edge_mask
    src, dst = graph.cp_src[mask], graph.cp_dst[mask]
    if src.numel() == 0:
        raise DualrecError("the split has no held-out edges to evaluate (the graph is too small)")
    if max_edges is not None and src.numel() > max_edges:
        keep = torch.randperm(src.numel(), generator=torch.Generator().manual_seed(seed))[:max_edges]
        src, dst = src[keep], dst[keep]
    known = split.mask(TRAIN) | (split.mask(VAL) if part == TEST else torch.zeros_like(mask))
    ex_src, ex_dst = graph.cp_src[known], graph.cp_dst[known]
    g, e = RankingEvaluator(graph.num_products, ks=KS).ranks(score_fn, src, dst, ex_src, ex_dst)
    out = metrics_from_ranks(g, e, KS)
    in_degree = torch.bincount(graph.cp_dst[split.mask(TRAIN)], minlength=graph.num_products)
    tail = long_tail_targets(in_degree)[dst]
    out["long_tail"] = metrics_from_ranks(g[tail], e[tail], (10,)) if tail.any() else None
    if bias:
        out["bias"] = recommendation_bias(score_fn, src, in_degree, 10, ex_src, ex_dst)
    one_way = ~graph.reciprocal_mask(src, dst)
    out["num_one_way"] = int(one_way.sum())
    out["direction_accuracy"] = (
        direction_accuracy(pair_score_fn, src[one_way], dst[one_way], graph.num_products)
        if one_way.any() and pair_score_fn is not None
        else float("nan")
    )
    return out


def popularity_fallback(fitted: Fitted, cold: torch.Tensor, in_degree: torch.Tensor) -> Fitted:
    """A graph-only method as it behaves for new products in practice.

    It knows nothing of a product it never saw: a cold query gets the most popular products
    (training in-degree), and a cold product is never recommended (it scores below every
    known product, all cold products tied).
    """
    pop = in_degree.float()

    def score_fn(q: torch.Tensor) -> torch.Tensor:
        s = fitted.score_fn(q).float().clone()
        cq = cold[q]
        if cq.any():
            s[cq] = pop
        s[:, cold] = s.min() - 1.0 if s.numel() else 0.0
        return s

    return Fitted(score_fn, None, fitted.train_seconds, {**fitted.info, "fallback": "popularity"})


# ---------------------------------------------------------------------- the run
def dataset_name(input: str | Path) -> str:
    p = Path(input)
    return p.name.split(".")[0] if p.is_file() else p.name


def _finite(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def aggregate(per_seed: dict[str, list[dict]]) -> dict:
    """``{method: {metric: mean, "direction_accuracy", "std": {...}, "train_seconds"}}``."""
    out = {}
    for name, runs in per_seed.items():
        entry, std = {}, {}
        for m in METRICS + ("direction_accuracy",):
            vals = np.array([r[m] for r in runs if _finite(r[m]) is not None], dtype=np.float64)
            if vals.size == 0:
                entry[m], std[m] = None, None
                continue
            entry[m] = float(vals.mean())
            std[m] = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
        entry["std"] = std
        entry["train_seconds"] = float(np.mean([r["train_seconds"] for r in runs]))
        for sub in ("long_tail", "bias", "as_target"):  # nested metric groups: mean (and std) over seeds
            got = [r[sub] for r in runs if r.get(sub)]
            if got:
                keys = [k for k in got[0] if k != "num_queries" and isinstance(got[0][k], (int, float))]
                vals = {k: np.array([g[k] for g in got], dtype=np.float64) for k in keys}
                entry[sub] = {k: float(v.mean()) for k, v in vals.items()}
                entry[sub]["std"] = {k: float(v.std(ddof=1)) if v.size > 1 else 0.0 for k, v in vals.items()}
                if "num_queries" in got[0]:  # how many edges the numbers rest on (mean over seeds)
                    entry[sub]["num_queries"] = float(np.mean([g["num_queries"] for g in got]))
        if any("fallback" in r for r in runs):
            entry["fallback"] = runs[0].get("fallback")
        out[name] = entry
    return out


def run_benchmark(
    format: str,
    input: str | Path,
    out: str | Path,
    seeds: int = 3,
    quick: bool = False,
    methods: list[str] | str | None = None,
    encoder: str = "minilm",
    options: dict | None = None,
    daemon_config: dict | None = None,
    command: str | None = None,
    progress: bool = True,
    cold_start: bool = True,
    cold_start_seeds: int = 1,
    log=print,
) -> dict:
    """Ingest ``input``, run every method on ``seeds`` splits, write ``out/results.*``; returns results.json's dict.

    ``options`` are the format's ingest options (as ``dualrec ingest --option``); ``daemon_config``
    overrides :class:`~dualrec.train.TrainConfig` fields of every DAEMON variant (after the quick
    caps, e.g. ``{"epochs": 20}``); ``seed``/``encoder`` are set by the benchmark. ``cold_start``
    adds the cold-start section (the methods of ``COLD_METHODS`` that were asked for, refitted
    on :func:`~dualrec.split.cold_split` of the first ``cold_start_seeds`` seeds: a second
    training per method and seed, so by default only the first seed).
    """
    from dualrec.features import ENCODERS, load_or_build_features
    from dualrec.ingest import FORMATS, load_source

    if format not in FORMATS:
        raise DualrecError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if encoder not in ENCODERS:
        raise DualrecError(f"unknown text encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
    if int(seeds) < 1:
        raise DualrecError(f"--seeds must be at least 1, got {seeds}")
    from dualrec.train import TrainConfig

    daemon_config = dict(daemon_config or {})
    bad = sorted(set(daemon_config) & {"seed", "encoder", "val_fraction", "test_fraction"})
    if bad:
        raise DualrecError(f"{', '.join(bad)} cannot be overridden: the benchmark sets them for every method")
    TrainConfig.from_dict(daemon_config)  # unknown fields: a clear error before any work
    runners = resolve_methods(methods, log)
    seed_list = [0] if quick else list(range(int(seeds)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if command is None:
        command = _command_line(
            format,
            input,
            out,
            seeds,
            quick,
            list(runners),
            encoder,
            options,
            daemon_config,
            cold_start,
            cold_start_seeds,
        )

    t0 = time.perf_counter()
    opts = {"progress": progress, **(options or {})}
    graph, report = load_source(format, input, **opts)
    if graph.num_copurchase == 0:
        raise DualrecError(f"{input} has no co-purchase edges: nothing to benchmark")
    dataset_dir = graph.save(out / "dataset")
    x = load_or_build_features(graph.products, dataset_dir, encoder, show_progress=progress)
    name = dataset_name(input)
    n = graph.num_products
    max_edges = QUICK_MAX_TEST_EDGES if quick and n > QUICK_LARGE_PRODUCTS else None
    log(
        f"{name}: {n} products, {graph.num_copurchase} co-purchase edges, {graph.num_similar} co-view pairs; "
        f"features {tuple(x.shape)} ({encoder}); methods {', '.join(runners)}; seeds {seed_list}"
        + (f"; at most {max_edges} test edges" if max_edges else "")
        + f"  [{time.perf_counter() - t0:.1f}s]"
    )

    run = {
        "dataset": name,
        "format": format,
        "input": str(input),
        "command": command,
        "quick": quick,
        "encoder": encoder,
        "options": options or {},
        "daemon_config": daemon_config,
        "max_test_edges": max_edges,
        "ingest_report": report,
        "split": {"val_fraction": 0.1, "test_fraction": 0.1},
        "started": _now(),
        "seeds": {},
        "failures": [],
    }
    per_seed: dict[str, list[dict]] = {m: [] for m in runners}
    cold_runners = {m: r for m, r in runners.items() if m in COLD_METHODS} if cold_start else {}
    per_seed_cold: dict[str, list[dict]] = {m: [] for m in cold_runners}
    failed: set[str] = set()
    results: dict = {}

    def attempt(s: int, label: str, fn):
        """Run one method; a failure is recorded and the method dropped, the others go on."""
        if label in failed:
            return None
        try:
            return fn()
        except (KeyboardInterrupt, DualrecError):
            raise
        except Exception as e:  # one broken method must not lose the others' results
            failed.add(label)
            msg = f"{type(e).__name__}: {e}"
            run["failures"].append({"seed": s, "method": label, "error": msg, "traceback": traceback.format_exc()})
            log(f"seed {s}  {label:<18} FAILED ({msg}); left out of the results")
            return None

    for s in seed_list:
        split = edge_split(graph, 0.1, 0.1, seed=s)
        ctx = BenchContext(graph, split, x, s, quick, encoder, daemon_config)
        seed_info = {"split": split.counts(), "methods": {}}
        run["seeds"][str(s)] = seed_info
        for m, runner in runners.items():

            def one(m=m, runner=runner):
                fitted = runner(ctx)
                te = time.perf_counter()
                metrics = evaluate_method(
                    graph, split, fitted.score_fn, fitted.pair_score_fn, TEST, max_edges, s, bias=True
                )
                return fitted, metrics, time.perf_counter() - te

            got = attempt(s, m, one)
            if got is None:
                continue
            fitted, metrics, eval_seconds = got
            row = {k: metrics[k] for k in METRICS}
            row["direction_accuracy"] = _finite(metrics["direction_accuracy"])
            row["train_seconds"] = round(float(fitted.train_seconds), 3)
            row["long_tail"], row["bias"] = metrics["long_tail"], metrics["bias"]
            per_seed[m].append(row)
            seed_info["methods"][m] = {
                **row,
                "eval_seconds": round(eval_seconds, 3),
                "num_test_edges": metrics["num_queries"],
                "num_one_way": metrics["num_one_way"],
                "info": _jsonable(fitted.info),
            }
            del fitted  # free the model before the next method
            d = row["direction_accuracy"]
            log(
                f"seed {s}  {m:<18} HR@10 {row['HitRate@10']:.4f}  MRR@10 {row['MRR@10']:.4f}  "
                f"dir {'  n/a' if d is None else f'{d:.3f}'}  train {row['train_seconds']:.1f}s  "
                f"eval {eval_seconds:.1f}s  ({metrics['num_queries']} test edges)"
            )
        if cold_runners and seed_list.index(s) < cold_start_seeds:
            cs = cold_split(graph, COLD_FRACTION, 0.1, seed=s)
            cctx = BenchContext(cs.graph, cs.split, x, s, quick, encoder, daemon_config, unseen=cs.cold)
            in_degree = torch.bincount(graph.cp_dst[cs.split.mask(TRAIN)], minlength=n)
            cold_info = {
                "cold_products": int(cs.cold.sum()),
                "query_edges": int(cs.query_mask().sum()),
                "target_edges": int(cs.target_mask().sum()),
                "methods": {},
            }
            seed_info["cold_start"] = cold_info
            for m, runner in cold_runners.items():

                def one_cold(m=m, runner=runner):
                    if COLD_METHODS[m]:
                        # A graph-only method's output here does not depend on its model: cold
                        # queries get the fallback, cold targets are never recommended. Not refitted.
                        pop = Fitted(lambda q: in_degree.float().expand(q.numel(), -1), None, 0.0)
                        fitted = popularity_fallback(pop, cs.cold, in_degree)
                    else:
                        fitted = runner(cctx)
                    te = time.perf_counter()
                    q = evaluate_method(
                        cs.graph, cs.split, fitted.score_fn, None, TEST, max_edges, s, edge_mask=cs.query_mask()
                    )
                    t = evaluate_method(
                        cs.graph, cs.split, fitted.score_fn, None, TEST, max_edges, s, edge_mask=cs.target_mask()
                    )
                    return fitted, q, t, time.perf_counter() - te

                got = attempt(s, f"{m} (cold start)", one_cold)
                if got is None:
                    continue
                fitted, q, t, eval_seconds = got
                row = {k: q[k] for k in METRICS}
                row.update(
                    direction_accuracy=None,
                    train_seconds=round(float(fitted.train_seconds), 3),
                    as_target={k: t[k] for k in METRICS},
                    fallback=COLD_METHODS[m],
                )
                per_seed_cold[m].append(row)
                cold_info["methods"][m] = {
                    **row,
                    "eval_seconds": round(eval_seconds, 3),
                    "info": _jsonable(fitted.info),
                }
                del fitted
                log(
                    f"seed {s}  {m + ' (cold)':<18} query HR@10 {row['HitRate@10']:.4f}  MRR@10 {row['MRR@10']:.4f}  "
                    f"as target HR@10 {t['HitRate@10']:.4f}  MRR@10 {t['MRR@10']:.4f}"
                    + (f"  [{COLD_METHODS[m]} fallback]" if COLD_METHODS[m] else "")
                    + f"  train {row['train_seconds']:.1f}s"
                )
        done = {m: r for m, r in per_seed.items() if r and m not in failed}
        results = {
            "dataset": name,
            "n_products": n,
            "n_edges": {"copurchase": graph.num_copurchase, "similar": graph.num_similar},
            "seeds": seed_list[: seed_list.index(s) + 1],
            "methods": aggregate(done),
        }
        cold_done = {m: r for m, r in per_seed_cold.items() if r and f"{m} (cold start)" not in failed}
        if cold_done:
            results["cold_start"] = aggregate(cold_done)
            run["cold_start_seeds"] = seed_list[:cold_start_seeds]
        run["finished_seeds"] = results["seeds"]
        write_outputs(out, results, run)
    if not results.get("methods"):
        raise DualrecError("every method failed; see run.json")
    run["finished"] = _now()
    run["seconds"] = round(time.perf_counter() - t0, 1)
    write_outputs(out, results, run)
    log(f"results written to {out / 'results.json'}, {out / 'results.md'} ({run['seconds']:.0f}s in all)")
    return results


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _command_line(
    format, input, out, seeds, quick, methods, encoder, options, daemon_config=None, cold_start=True, cold_start_seeds=1
) -> str:
    parts = ["dualrec", "benchmark", "--format", format, "--input", str(input), "--out", str(out)]
    parts += ["--quick"] if quick else ["--seeds", str(seeds)]
    if not cold_start:
        parts += ["--no-cold-start"]
    elif cold_start_seeds != 1:
        parts += ["--cold-start-seeds", str(cold_start_seeds)]
    parts += ["--methods", ",".join(methods), "--encoder", encoder]
    for k, v in (options or {}).items():
        parts += ["--option", f"{k}={v}"]
    for k, v in (daemon_config or {}).items():
        parts += ["--set", f"{k}={v}"]
    return " ".join(shlex.quote(p) for p in parts)


# ---------------------------------------------------------------------- outputs
def write_outputs(out: Path, results: dict, run: dict) -> None:
    """results.json, run.json, results.md and the two plots (rewritten after every seed)."""
    out = Path(out)
    (out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False))
    (out / "run.json").write_text(json.dumps(_jsonable(run), indent=2))
    (out / "results.md").write_text(results_markdown(results, run))
    plot_results(results, out)


def _pm(mean, std, digits=4) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def results_markdown(results: dict, run: dict) -> str:
    seeds = results["seeds"]
    lines = [
        f"# Benchmark: {results['dataset']}",
        "",
        f"- Command: `{run['command']}`",
        f"- Date: {run.get('finished') or run['started']}"
        + ("" if run.get("finished") else f" (partial: seeds {seeds} done)"),
        f"- Dataset: {results['dataset']} ({run['format']}), {results['n_products']:,} products, "
        f"{results['n_edges']['copurchase']:,} co-purchase edges, {results['n_edges']['similar']:,} co-view pairs; "
        f"text encoder {run['encoder']}",
        "- Protocol: per seed, `edge_split(graph, 0.1, 0.1, seed)`; methods learn from TRAIN edges (+ all co-view "
        "pairs), tune on VAL, are scored on TEST over all products with the query and the TRAIN/VAL edges "
        "excluded (tie-aware); direction accuracy on one-way TEST edges.",
        f"- Seeds: {seeds}; mean ± sample std over seeds" + (" (std 0 with one seed)" if len(seeds) == 1 else ""),
    ]
    if run.get("quick"):
        lines.append(
            f"- Quick mode: one seed, DAEMON at most {QUICK_DAEMON['epochs']} epochs "
            f"(patience {QUICK_DAEMON['patience']})"
            + (
                f"; TEST metrics on a seeded subsample of at most {run['max_test_edges']:,} test edges "
                f"(the same for every method)"
                if run.get("max_test_edges")
                else "; all test edges"
            )
        )
    if run.get("daemon_config"):
        lines.append(
            "- DAEMON TrainConfig overrides: " + ", ".join(f"{k}={v}" for k, v in run["daemon_config"].items())
        )
    counts = [v["split"] for v in run["seeds"].values()]
    if counts:
        lines.append(
            f"- Split (seed {seeds[0]}): {counts[0]['train']:,} train / {counts[0]['val']:,} val / "
            f"{counts[0]['test']:,} test edges"
        )
    lines += [
        "",
        "| method | HR@5 | HR@10 | HR@20 | MRR@5 | MRR@10 | MRR@20 | dir. acc. | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in results["methods"].items():
        cells = [_pm(m[k], m["std"][k]) for k in METRICS]
        cells.append(_pm(m["direction_accuracy"], m["std"]["direction_accuracy"], 3))
        cells.append(f"{m['train_seconds']:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += _bias_markdown(results)
    lines += _cold_markdown(results, run)
    if run.get("failures"):
        lines += ["", "Failed (left out):"]
        lines += [f"- {f['method']} (seed {f['seed']}): {f['error']}" for f in run["failures"]]
    lines += ["", "Plots: `hitrate_at_k.png`, `mrr_at_k.png`. Per-seed numbers, tuned settings: `run.json`.", ""]
    return "\n".join(lines)


def _bias_markdown(results: dict) -> list[str]:
    rows = [(name, m) for name, m in results["methods"].items() if m.get("long_tail") or m.get("bias")]
    if not rows:
        return []
    lines = [
        "",
        "## Long tail and popularity bias",
        "",
        "Long tail = test edges whose target is in the lower 50 % of products by training in-degree. "
        "head share@10 = share of all top-10 slots (over the test queries) taken by the 1 % most popular "
        "products; coverage@10 = distinct products recommended / all products. "
        "`daemon_no_similar` is DAEMON without the co-view augmentation.",
        "",
        "| method | long-tail edges | long-tail HR@10 | long-tail MRR@10 | head share@10 | coverage@10 "
        "| long-tail share@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in rows:
        lt, b = m.get("long_tail") or {}, m.get("bias") or {}
        cells = [f"{lt['num_queries']:,.0f}" if lt.get("num_queries") is not None else "n/a"]
        cells += [_pm(lt.get(k), (lt.get("std") or {}).get(k)) for k in ("HitRate@10", "MRR@10")]
        cells += [
            _pm(b.get(k), (b.get("std") or {}).get(k), 3)
            for k in ("head_share@10", "coverage@10", "long_tail_share@10")
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _cold_markdown(results: dict, run: dict) -> list[str]:
    cold = results.get("cold_start")
    if not cold:
        return []
    info = next((v["cold_start"] for v in run["seeds"].values() if "cold_start" in v), {})
    cold_seeds = run.get("cold_start_seeds", results["seeds"][:1])
    lines = [
        "",
        "## Cold start",
        "",
        f"Seeds {cold_seeds}: `cold_split(graph, {COLD_FRACTION}, 0.1, seed)` holds out {COLD_FRACTION:.0%} "
        "of the products "
        "entirely (their co-purchase edges and co-view pairs are removed from training and message passing; "
        "DAEMON gives them no per-product embedding and never samples them as negatives). *As query*: the cold "
        "product's own held-out out-edges, all products ranked. *As target*: held-out edges from a known product "
        "to a cold one: is the new product recommended? Methods marked *popularity fallback* know nothing of an "
        "unseen product: a cold query gets the best-sellers and a cold product is never recommended."
        + (
            f" Seed {results['seeds'][0]}: {info.get('cold_products', 0):,} cold products, "
            f"{info.get('query_edges', 0):,} query edges, {info.get('target_edges', 0):,} target edges."
            if info
            else ""
        ),
        "",
        "| method | query HR@5 | query HR@10 | query HR@20 | query MRR@10 | target HR@10 | target MRR@10 | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in cold.items():
        t = m.get("as_target") or {}
        label = name + (f" ({m['fallback']} fallback)" if m.get("fallback") else "")
        cells = [_pm(m[k], m["std"][k]) for k in ("HitRate@5", "HitRate@10", "HitRate@20", "MRR@10")]
        cells += [_pm(t.get(k), (t.get("std") or {}).get(k)) for k in ("HitRate@10", "MRR@10")]
        cells.append(f"{m['train_seconds']:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def plot_results(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for metric, fname in (("HitRate", "hitrate_at_k.png"), ("MRR", "mrr_at_k.png")):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
        for name, m in results["methods"].items():
            y = [m[f"{metric}@{k}"] for k in KS]
            e = [m["std"][f"{metric}@{k}"] or 0.0 for k in KS]
            ax.errorbar(KS, y, yerr=e, marker="o", capsize=3, label=name)
        ax.set_xticks(KS)
        ax.set_xlabel("k")
        ax.set_ylabel(f"{metric}@k")
        ax.set_title(f"{results['dataset']}: {metric}@k (mean ± std over {len(results['seeds'])} seed(s))")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / fname)
        plt.close(fig)


__all__ = [
    "run_benchmark",
    "evaluate_method",
    "register_method",
    "resolve_methods",
    "known_methods",
    "baseline_runner",
    "BenchContext",
    "Fitted",
    "aggregate",
    "write_outputs",
    "METRICS",
]
