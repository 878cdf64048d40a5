"""The methods of the benchmark: a registry of runners by name (DAEMON and its ablations, the
second stage with and without DAEMON, the baselines), their budgets and the cold-start rules."""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from dualrec.errors import DualrecError
from dualrec.evaluate import KS, RowMemo
from dualrec.graph import ProductGraph
from dualrec.split import TRAIN, VAL, EdgeSplit

METRICS = tuple(f"{m}@{k}" for m in ("HitRate", "MRR") for k in KS)

QUICK_MAX_TEST_EDGES = 5000

QUICK_LARGE_PRODUCTS = 10_000

QUICK_DAEMON = {"epochs": 8, "patience": 3}

GNN_METHODS = ("graphsage", "lightgcn", "directed_gnn")

# A short training budget for the GNN baselines (about 40 s per fit on clothing), for quick
# comparisons; `--converge` (benchmarks/real_data.sh) lifts the epoch caps, so every model trains
# until its validation score stops improving. Measured on clothing seed 0 (val MRR@10): LightGCN 0.240 after 8 epochs,
# 0.267 after 20 (its default); DiGAE 0.104 vs 0.136; GraphSAGE 0.096 after 2 epochs, 0.104
# after 6; DAEMON 0.236 after 5 epochs, 0.267 after 10. Early stopping reads 5,000 val edges.
GNN_BUDGET = {
    "graphsage": {"epochs": 2, "max_val_edges": 5000},
    "lightgcn": {"epochs": 8, "max_val_edges": 5000},
    "directed_gnn": {"epochs": 8, "max_val_edges": 5000},
}

COLD_FRACTION = 0.1
# The cold-start split also holds out this share of the edges between known products (as
# edge_split's test part), to measure what the room given to new products costs them.
COLD_WARM_FRACTION = 0.1
# Second-stage variants by the room new products get (`daemon` = the defaults of RerankConfig:
# 2 slots, new_min_confidence 0.2): the same trained models, only the placement differs.
NEW_PRODUCT_VARIANTS = {
    "daemon_new0": {"new_slots": 0},  # no room: the ranking before new products had slots
    "daemon_always": {"new_min_confidence": 0.0},  # both slots filled in every list
    "daemon_conf10": {"new_min_confidence": 0.1},
    "daemon_conf30": {"new_min_confidence": 0.3},
    "daemon_query_alone": {"cold_neighbours": 0},  # a new product's own list by DAEMON alone
    # the gate read from the pair's text cosine, or from text and DAEMON together (RerankConfig.new_gate)
    "daemon_gate_text": {"new_gate": "text"},
    "daemon_gate_text10": {"new_gate": "text", "new_min_confidence": 0.1},
    "daemon_gate_both": {"new_gate": "both"},
    "daemon_gate_both10": {"new_gate": "both", "new_min_confidence": 0.1},
}

# Methods run in the cold-start section; a value names the fallback a graph-only method gets
# (it has nothing to say about a product it never saw), None = the method handles new products.
COLD_METHODS = {
    "daemon": None,
    **{name: None for name in NEW_PRODUCT_VARIANTS},
    "daemon_embedding": None,
    "daemon_paper": None,
    "popularity": None,
    "text_similarity": None,
    "text_neighbours": None,
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
    "daemon_coview05": {"sim_weight": 0.5},  # the co-view loss weight before 0.1 (the default until 2026-12)
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
    # True: the GNN baselines train until validation stops improving (their own epoch limits and
    # patience) instead of GNN_BUDGET's epoch caps; DAEMON's budget is daemon_config's
    converge: bool = False

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
    8 and 3; under ``converge``, without the ``epochs`` of ``init``) where its constructor accepts
    them, then fitted on the train-only graph with ``x`` and ``val`` where ``fit`` accepts them.
    """

    def run(ctx: BenchContext) -> Fitted:
        kw = dict(init, seed=ctx.seed)
        if ctx.converge:
            kw.pop("epochs", None)
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


def _rerank_runner(with_daemon: bool, serving: dict | None = None) -> Runner:
    """dualrec's two stages (``with_daemon``), or the same reranker on co-occurrence alone (the
    control). ``serving`` overrides RerankConfig's serving settings (the room given to new
    products, the unseen ones of a cold-start run); the fitted second stage is shared by the
    variants of one seed."""

    def run(ctx: BenchContext) -> Fitted:
        from dualrec.evaluate import pair_fn_from_score_fn

        rr, secs, info = _fit_rerank(ctx, with_daemon)
        if serving:
            rr = rr.with_config(**serving)
        score_fn = RowMemo(rr.score_fn, ctx.graph.num_products)
        return Fitted(score_fn, pair_fn_from_score_fn(score_fn, ctx.graph.num_products), secs, info)

    return run


def _fit_rerank(ctx: BenchContext, with_daemon: bool):
    """The second stage of ``ctx`` (cached per seed), its fit time and what it reports."""
    key = ("rerank", with_daemon)
    if key in ctx.cache:
        return ctx.cache[key]
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
    rr = fit_two_stage(ctx.graph, ctx.train_mask, *ctx.val, ctx.x, s, t, seed=ctx.seed, cooc=cooc, log=lambda m: None)
    secs += time.perf_counter() - t0
    info["reranker"] = rr.info_
    if ctx.unseen is not None and with_daemon:
        rr.mark_new(torch.nonzero(ctx.unseen).flatten().numpy())  # as add-products would make them
    ctx.cache[key] = (rr, secs, info)
    return ctx.cache[key]


def _register_builtins() -> None:
    from dualrec.baselines import Popularity, TextNeighbours, TextSimilarity

    register_method("daemon", _rerank_runner(with_daemon=True))
    for name, serving in NEW_PRODUCT_VARIANTS.items():
        register_method(name, _rerank_runner(with_daemon=True, serving=serving))
    for name, over in DAEMON_ABLATIONS.items():
        register_method(name, _daemon_runner(over, random_features=name == "daemon_no_text"))
    register_method("popularity", baseline_runner(Popularity))
    register_method("cooccurrence", _cooccurrence_runner)
    register_method("cooccurrence_rerank", _rerank_runner(with_daemon=False))
    register_method("text_similarity", baseline_runner(TextSimilarity))
    register_method("text_neighbours", baseline_runner(TextNeighbours))
    from dualrec.baselines.gnn import DirectedGNNBaseline, GraphSAGEBaseline, LightGCNBaseline

    for cls in (GraphSAGEBaseline, LightGCNBaseline, DirectedGNNBaseline):
        register_method(cls.name, baseline_runner(cls, **GNN_BUDGET.get(cls.name, {})))


_register_builtins()


def known_methods() -> list[str]:
    """Every name ``--methods`` accepts."""
    return list(_REGISTRY)


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
    if not names:
        raise DualrecError("no method to run")
    return {m: _REGISTRY[m] for m in names}


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
