"""The training loop: one readable loop, config as a dataclass stored in every checkpoint.

Each epoch:

1. The training co-purchase edges (and similarity pairs) are split at random into
   *message-passing* edges and *target* edges (``target_fraction``). Targets are removed from
   the adjacency for that epoch, so the model can never read an answer off the graph; over
   epochs every training edge serves as both.
2. For mini-batches of target edges: a full-graph forward pass (sparse CSR aggregation) gives
   every product's source/target embedding, and the contrastive + asymmetric loss is taken on
   the batch. In the *history* mode (large catalogues, ``batching``) only the products the
   loss reads are computed, their neighbours' layer inputs read from a stored copy
   (:meth:`DAEMON.forward_rows`), so a step costs its batch, not the catalogue.
3. Validation: embeddings from all training edges, computed layer by layer; MRR@10 on the
   validation edges over all products (the same evaluator as the test). The best epoch is kept
   (early stopping with ``patience``). In the history mode this pass also refreshes the copy.
   On very large catalogues an "epoch" is a round of ``max_steps_per_epoch`` steps (``"auto"``:
   :func:`round_steps`), so validation, checkpoints and patience follow the steps, not whole
   passes over millions of edges; ``max_seconds`` ends training at a deadline.

Under ``torchrun`` (``dualrec train --workers N``) the workers split every history batch and
DistributedDataParallel averages their gradients; the first worker logs and checkpoints.

The loop writes only its checkpoint (``last.pt``, for ``resume``); the trained model goes into
a model folder through :mod:`dualrec.store` (see :func:`dualrec.pipeline.train_dataset`).
"""

from __future__ import annotations

import datetime
import math
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch.profiler import record_function
from tqdm.auto import tqdm

from dualrec.evaluate import RankingEvaluator, direction_accuracy
from dualrec.graph import DualrecError, ProductGraph, csr_adjacency
from dualrec.loss import asymmetric_loss, info_nce, two_hop_negatives
from dualrec.model import DAEMON, DualAdjacency
from dualrec.optim import RowAdam
from dualrec.split import TEST, TRAIN, VAL, EdgeSplit, edge_split

# Named ranges of a history step, for torch.profiler (benchmarks/train_profile.py attributes a
# step's time to them); without an active profiler a range costs about a microsecond.
PHASES = {
    "batch": "dualrec.step.batch",  # the step's products (ends of its edges and pairs, its negatives), deduplicated
    "forward": "dualrec.step.forward",  # DAEMON on those products, neighbours from the history
    "loss": "dualrec.step.loss",
    "backward": "dualrec.step.backward",
    "optimiser": "dualrec.step.optimiser",
    "history": "dualrec.step.history",  # the fresh layer inputs written back
}


@dataclass
class TrainConfig:
    # features
    encoder: str = "minilm"  # text encoder: "minilm" (default), "static" (fast, large catalogues) or "hash" (tests)
    # model
    hidden_channels: int = 128
    out_channels: int = 64
    num_layers: int = 2
    id_dim: int = 128  # >0: regularised per-product embeddings (beyond the paper; 0 = paper form)
    id_dropout: float = 0.5
    dropout: float = 0.1
    use_similar: bool = True
    dual: bool = True
    use_reverse: bool = False  # also aggregate along co-purchase edges read backwards (beyond the paper)
    # objective
    tau: float = 0.1
    num_negatives: int = 1024
    # >0: that many 2-hop co-purchase negatives per pair (beyond the paper). Measured on
    # cellphones (16 per pair, 10 epochs): val MRR@10 0.162 vs 0.169 without, so off (as a first
    # stage for the reranker they gained about 1 % HR@10 on cellphones val: see dualrec.benchmark.registry).
    hard_negatives: int = 0
    in_batch_negatives: bool = False  # True: over-penalises best-sellers without a logQ correction (measured)
    # weight of the contrastive term on co-viewed pairs. The co-view *edges* help in the
    # aggregation; the *loss* pulls co-viewed (often substitute) products together, which helps
    # where co-view is dense and hurts where it is not: 0.1 keeps most of the gain on Amazon
    # clothing and removes most of the loss on cellphones (0.5 before; the benchmark's
    # daemon_coview05 ablation, validation figures in its results)
    sim_weight: float = 0.1
    asym_weight: float = 1.0
    # batching: "full" = a full-graph forward pass per step; "history" = each step computes only
    # its batch's products, their neighbours read from stored per-layer embeddings (for catalogues
    # too large for full-graph steps); "auto" = history above HISTORY_FROM products
    batching: str = "auto"
    # target edges per history step: a step costs its batch, so many small steps are cheap, and
    # they learn more per epoch than the full-graph mode's few large ones (2048 costs less time
    # per edge at 1M products but learns less in 5 epochs on cellphones and clothing: 1024)
    history_batch_size: int = 1024
    # "bfloat16": a history step's forward pass and scores in bfloat16 (torch.autocast; the
    # softmax, the optimiser and the stored model stay float32); "auto" = bfloat16 in the history
    # mode on CPUs that compute it natively (AVX512-BF16, AMX), float32 elsewhere
    precision: str = "auto"
    # optimisation
    lr: float = 3e-3
    weight_decay: float = 0.0
    id_weight_decay: float = 1e-5  # L2 on the per-product embeddings only
    # the history mode's optimiser state for the per-product embeddings: "adam" (two float32
    # moments per weight: twice the table), "compact" (bfloat16 first moment, one second moment
    # per row: a quarter of the table; dualrec.optim.RowAdam), "auto" = compact where the full
    # state would take COMPACT_ID_STATE_FROM bytes or more (about 500k products at id_dim 128)
    id_optimizer: str = "auto"
    epochs: int = 40
    patience: int = 5
    # >0: no epoch starts once this many seconds have passed since the first one began (a nightly
    # retrain's deadline); the best epoch so far is kept, as under early stopping
    max_seconds: float = 0.0
    batch_size: int = 4096
    target_fraction: float = 0.3
    cold_fraction: float = 0.1  # share of products made edge-less (and id-less) per fold: cold-start practice
    # optimiser steps per epoch at most (0 = no cap). On millions of products a whole epoch is
    # thousands of steps, and the model can stop improving inside the first one while early stopping
    # waits ``patience`` whole epochs to see it: "auto" validates after every round_steps() steps
    # instead (each such epoch draws its targets from a fresh random fold), no cap on smaller graphs
    max_steps_per_epoch: int | str = "auto"
    min_steps_per_epoch: int = 32  # small graphs: the batch shrinks so an epoch has at least this many steps
    # validation edges per pass (a fixed random subsample). Each is ranked against every product,
    # so "auto" keeps a pass's scores near VAL_SCORES: 20,000 edges up to 200k products, fewer above
    max_val_edges: int | str = "auto"
    # split
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A validated config from a dict (a JSON file, ``--set`` options, a checkpoint)."""
        if not isinstance(d, dict):
            raise DualrecError("a training config must be a JSON object of TrainConfig fields")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise DualrecError(
                f"unknown training option(s): {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})"
            )
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> "TrainConfig":
        """Type and range of every field; one clear error naming the first bad setting."""
        for f in fields(self):
            v = getattr(self, f.name)
            kind, lo, hi, *word = _RULES[f.name]
            if word and v == word[0]:
                continue
            if kind is bool:
                if not isinstance(v, bool):
                    raise DualrecError(f"{f.name} must be true or false, got {v!r}")
                continue
            if kind is str:
                if v not in lo:
                    raise DualrecError(f"{f.name} must be one of {', '.join(lo)}, got {v!r}")
                continue
            ok_type = isinstance(v, int) if kind is int else isinstance(v, (int, float))
            try:
                finite = not (kind is float and ok_type) or math.isfinite(v)
            except OverflowError:  # an int too large for a float
                finite = False
            alt = f" or {word[0]!r}" if word else ""
            if isinstance(v, bool) or not ok_type or not finite:
                what = "an integer" if kind is int else "a finite number"
                raise DualrecError(f"{f.name} must be {what} in {_range_text(lo, hi)}{alt}, got {v!r}")
            if not _in_range(v, lo, hi):
                raise DualrecError(f"{f.name} must be in {_range_text(lo, hi)}{alt}, got {v!r}")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise DualrecError("val_fraction + test_fraction must be below 0.9")
        return self

    def diff(self, other: "TrainConfig | dict") -> dict:
        """``{field: (self's, other's)}`` for every field that differs."""
        o = other if isinstance(other, dict) else asdict(other)
        # a field newer than the stored config is at its default there (what the older code did)
        o = {**{k: v for k, v in asdict(TrainConfig()).items() if k not in o}, **o}
        return {k: (v, o.get(k)) for k, v in asdict(self).items() if o.get(k) != v}


# (type, low, high[, word]) of every TrainConfig field. A bound in a tuple is exclusive: (0,) means
# > 0. A word (e.g. "auto") is accepted besides the numbers.
_RULES: dict[str, tuple] = {
    "encoder": (str, ("minilm", "static", "hash"), None),
    "hidden_channels": (int, 1, 8192),
    "out_channels": (int, 1, 8192),
    "num_layers": (int, 1, 8),
    "id_dim": (int, 0, 8192),
    "id_dropout": (float, 0.0, (1.0,)),
    "dropout": (float, 0.0, (1.0,)),
    "use_similar": (bool, None, None),
    "dual": (bool, None, None),
    "use_reverse": (bool, None, None),
    "tau": (float, (0.0,), 100.0),
    "num_negatives": (int, 1, 1_000_000),
    "hard_negatives": (int, 0, 4096),
    "in_batch_negatives": (bool, None, None),
    "sim_weight": (float, 0.0, 1000.0),
    "asym_weight": (float, 0.0, 1000.0),
    "batching": (str, ("auto", "full", "history"), None),
    "history_batch_size": (int, 1, 100_000_000),
    "precision": (str, ("auto", "float32", "bfloat16"), None),
    "lr": (float, (0.0,), 10.0),
    "weight_decay": (float, 0.0, 10.0),
    "id_weight_decay": (float, 0.0, 10.0),
    "id_optimizer": (str, ("auto", "adam", "compact"), None),
    "epochs": (int, 1, 100_000),
    "patience": (int, 1, 100_000),
    "max_seconds": (float, 0.0, 10**9),
    "batch_size": (int, 1, 100_000_000),
    "target_fraction": (float, 0.02, 0.5),
    "cold_fraction": (float, 0.0, 0.9),
    "max_steps_per_epoch": (int, 0, 10**9, "auto"),
    "min_steps_per_epoch": (int, 1, 10**9),
    "max_val_edges": (int, 1, 10**9, "auto"),
    "val_fraction": (float, (0.0,), 0.5),
    "test_fraction": (float, 0.0, 0.5),
    "seed": (int, 0, 2**31 - 1),
}


def _in_range(v, lo, hi) -> bool:
    if lo is not None and (v <= lo[0] if isinstance(lo, tuple) else v < lo):
        return False
    if hi is not None and (v >= hi[0] if isinstance(hi, tuple) else v > hi):
        return False
    return True


def _range_text(lo, hi) -> str:
    left = f"({lo[0]}" if isinstance(lo, tuple) else f"[{lo}"
    right = f"{hi[0]})" if isinstance(hi, tuple) else f"{hi}]"
    return f"{left}, {right}"


#: a model whose weights take at least this many bytes keeps its best epoch's on disk (EarlyStopping)
SPILL_BEST_FROM = 256 * 2**20
#: id_optimizer "auto" keeps a compact state where the full one would take this many bytes or more
COMPACT_ID_STATE_FROM = 512 * 2**20


@dataclass
class EarlyStopping:
    """Early stopping on a validation score (higher is better), shared by DAEMON's loop and the
    GNN baselines': keeps the best epoch's weights and says when ``patience`` epochs in a row
    brought no gain. Its fields go into the training checkpoint as they are."""

    patience: int
    best: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    best_state: dict | None = None
    # With a folder, the best weights are written there (``best-<epoch>-<run>.pt``, at
    # ``best_path``) instead of being held in memory: a large catalogue's per-product table would
    # otherwise be held twice through every later epoch, its validation passes included. (The
    # run's own token: a new training in the same folder never overwrites the file that an
    # earlier run's checkpoint names.)
    spill_dir: Path | None = None
    best_path: Path | None = None
    run: str = field(default_factory=lambda: secrets.token_hex(4))

    def step(self, epoch: int, score: float, model: torch.nn.Module) -> bool:
        """Record an epoch's score; whether it improved (then its weights are kept)."""
        if score > self.best:
            self.best, self.best_epoch, self.bad_epochs = score, epoch, 0
            if self.spill_dir is None:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                self.best_path = Path(self.spill_dir) / f"best-{epoch}-{self.run}.pt"
                _atomic_save(model.state_dict(), self.best_path)
                self.best_state = None  # (the earlier files go in prune(), once no checkpoint names them)
            return True
        self.bad_epochs += 1
        return False

    def prune(self) -> None:
        """Remove the spilled weights of earlier best epochs."""
        if self.spill_dir is not None:
            for p in Path(self.spill_dir).glob("best-*.pt"):
                if p != self.best_path:
                    p.unlink(missing_ok=True)

    @property
    def stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def restore(self, model: torch.nn.Module) -> None:
        """Load the best epoch's weights into ``model`` (if any epoch was scored)."""
        state = self.best_state
        if state is None and self.best_path is not None:
            try:
                state = torch.load(self.best_path, weights_only=True)
            except Exception as e:  # a missing or damaged file: never a silently wrong model
                raise DualrecError(
                    f"cannot read the best epoch's weights {self.best_path} ({type(e).__name__})"
                ) from None
        if state is not None:
            model.load_state_dict(state)


@dataclass
class TrainResult:
    model: DAEMON | None  # None once written to a model folder (dualrec.pipeline.train_dataset)
    source: torch.Tensor
    target: torch.Tensor
    split: EdgeSplit
    history: list = field(default_factory=list)
    best_epoch: int = 0
    val_metrics: dict = field(default_factory=dict)
    seconds: float = 0.0
    version: str | None = None  # the model version written, when trained into a model folder
    batching: str = "full"  # how it was trained: "full" or "history" (see TrainConfig.batching)
    precision: str = "float32"  # of its training steps (see TrainConfig.precision)
    id_optimizer: str = "adam"  # the per-product embeddings' optimiser state (see TrainConfig.id_optimizer)


def build_model(config: TrainConfig, in_channels: int, num_nodes: int) -> DAEMON:
    return DAEMON(
        in_channels,
        config.hidden_channels,
        config.out_channels,
        config.num_layers,
        num_nodes=num_nodes,
        id_dim=config.id_dim,
        id_dropout=config.id_dropout,
        dropout=config.dropout,
        use_similar=config.use_similar,
        dual=config.dual,
        use_reverse=config.use_reverse,
    )


def distributed() -> tuple[int, int]:
    """``(rank, world size)`` of this process in a ``torch.distributed`` group (``(0, 1)`` alone)."""
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        return d.get_rank(), d.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int]:
    """Join the process group a launcher (``torchrun``) describes in the environment, if any.

    Training runs on the CPU, so the backend is gloo (it also carries the sparse gradients of
    the per-product embeddings).
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        # generous: the other workers wait while the first encodes the catalogue's text
        torch.distributed.init_process_group(backend="gloo", timeout=datetime.timedelta(hours=24))
    return distributed()


#: catalogues above this many products train in the history mode under ``batching="auto"``: it
#: learns more per epoch than full-graph steps on Amazon cellphones (10k products) and clothing
#: (23k) at the same or less time per epoch; below, full-graph steps are cheap and were as good on
#: validation (UCI retail, 4k products). benchmarks/README.md has the figures.
HISTORY_FROM = 10_000


#: ``max_steps_per_epoch="auto"``: an epoch of more steps is validated (and checkpointed) after
#: every ``max(ROUND_STEPS, products // 500)`` steps: a validation pass grows with the catalogue,
#: so the rounds grow with it
ROUND_STEPS = 2000
#: ``max_val_edges="auto"``: at most this many validation edges, fewer where the catalogue is so
#: large that a pass would rank more than VAL_SCORES (edge, product) pairs (above 200k products),
#: never fewer than MIN_VAL_EDGES
MAX_VAL_EDGES, MIN_VAL_EDGES, VAL_SCORES = 20_000, 2_000, 4 * 10**9


def round_steps(config: TrainConfig, num_products: int) -> int:
    """Optimiser steps an epoch may take (0 = all): what ``config.max_steps_per_epoch`` means here."""
    if config.max_steps_per_epoch != "auto":
        return config.max_steps_per_epoch
    return max(ROUND_STEPS, num_products // 500)


def val_edges(config: TrainConfig, num_products: int) -> int:
    """Validation edges per pass: what ``config.max_val_edges`` means for a catalogue of this size."""
    if config.max_val_edges != "auto":
        return config.max_val_edges
    return min(MAX_VAL_EDGES, max(MIN_VAL_EDGES, VAL_SCORES // max(1, num_products)))


def step_precision(config: TrainConfig, mode: str) -> str:
    """``"float32"`` or ``"bfloat16"``: what ``config.precision`` means for training in ``mode``."""
    if config.precision != "auto":
        return config.precision
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence getattr
    native = any(getattr(torch.cpu, f, lambda: False)() for f in probes)
    return "bfloat16" if mode == "history" and native else "float32"


def batching_mode(config: TrainConfig, num_products: int) -> str:
    """``"full"`` or ``"history"``: what ``config.batching`` means for a graph of this size."""
    if config.batching != "auto":
        return config.batching
    return "history" if num_products > HISTORY_FROM else "full"


def message_passing_adjacency(
    graph: ProductGraph,
    cp_mask: torch.Tensor,
    config: TrainConfig,
    sim_mask: torch.Tensor | None = None,
    transposes: bool = True,
) -> DualAdjacency:
    s, d, w = graph.cp_src[cp_mask], graph.cp_dst[cp_mask], graph.cp_weight[cp_mask]
    a, b, sw = graph.sim_a, graph.sim_b, graph.sim_weight
    if sim_mask is not None:
        a, b, sw = a[sim_mask], b[sim_mask], sw[sim_mask]
    if not config.use_similar:
        a = b = sw = None
    return DualAdjacency.build(graph.num_products, s, d, w, a, b, sw, symmetric=not config.dual, transposes=transposes)


@torch.no_grad()
def embed(
    model: DAEMON,
    x: torch.Tensor,
    adj: DualAdjacency,
    node_ids: torch.Tensor | None = None,
    history: list | None = None,
    history_dtype: torch.dtype = torch.float16,
    inner_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return model.inference(x, adj, node_ids, history=history, history_dtype=history_dtype, inner_dtype=inner_dtype)


def evaluate_embeddings(
    graph: ProductGraph,
    split: EdgeSplit,
    source: torch.Tensor,
    target: torch.Tensor,
    part: int = VAL,
    max_edges: int | None = None,
    seed: int = 0,
    show_progress: bool = False,
) -> dict:
    """HitRate/MRR@{5,10,20} over all products + direction accuracy for one split part."""
    mask = split.mask(part)
    src, dst = graph.cp_src[mask], graph.cp_dst[mask]
    if max_edges is not None and src.numel() > max_edges:
        keep = torch.randperm(src.numel(), generator=torch.Generator().manual_seed(seed))[:max_edges]
        src, dst = src[keep], dst[keep]
    # Known edges are not candidates: training edges, and for the test also validation edges.
    # (only the queries' own edges matter: a copy of every known edge would grow with the graph)
    known = graph.out_edges(torch.unique(src))
    lab = split.labels[known]
    known = known[(lab == TRAIN) | ((lab == VAL) if part == TEST else False)]
    ev = RankingEvaluator(graph.num_products)
    out = ev.eval(
        lambda q: source[q] @ target.T, src, dst, graph.cp_src[known], graph.cp_dst[known], show_progress=show_progress
    )
    one_way = ~graph.reciprocal_mask(src, dst)
    out["direction_accuracy"] = (
        direction_accuracy(lambda u, v: (source[u] * target[v]).sum(-1), src[one_way], dst[one_way])
        if one_way.any()
        else float("nan")
    )
    return out


def _batches(n: int, batch_size: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        yield perm[i : i + batch_size]


class _Step:
    """One optimiser step on a batch's embeddings: DAEMON's loss (contrastive on co-purchases and
    similar pairs, asymmetric on one-way edges), shared by the full-graph and the history mode."""

    def __init__(
        self, opt, sparse_opt, config: TrainConfig, one_way, neg_pool, bfloat16: bool = False, max_steps: int = 0
    ):
        self.opt, self.sparse_opt, self.config = opt, sparse_opt, config
        self.max_steps = max_steps  # per epoch (0 = no cap): round_steps()
        self.bfloat16 = bfloat16  # a history step's forward and loss under bfloat16 autocast
        self.one_way, self.neg_pool = one_way, neg_pool
        self.total, self.steps = 0.0, 0

    @property
    def full(self) -> bool:
        """The epoch has had its ``max_steps``."""
        return bool(self.max_steps) and self.steps >= self.max_steps

    def loss(self, s, t, src, dst, sa, sb, neg, one_way, hard=None) -> torch.Tensor:
        c = self.config
        loss = info_nce(s, t, src, dst, neg, c.tau, c.in_batch_negatives, row_neg=hard)
        if c.sim_weight and sa.numel():
            loss = loss + c.sim_weight * info_nce(
                s, t, torch.cat([sa, sb]), torch.cat([sb, sa]), neg, c.tau, c.in_batch_negatives
            )
        if c.asym_weight and c.dual:
            loss = loss + c.asym_weight * asymmetric_loss(s, t, src[one_way], dst[one_way], c.tau)
        return loss

    def update(self, loss: torch.Tensor) -> None:
        with record_function(PHASES["backward"]):
            self.opt.zero_grad()
            if self.sparse_opt is not None:
                self.sparse_opt.zero_grad()
            loss.backward()
        with record_function(PHASES["optimiser"]):
            self.opt.step()
            if self.sparse_opt is not None:
                self.sparse_opt.step()
            self.total += float(loss.detach())
        self.steps += 1

    def end_epoch(self) -> tuple[float, int]:
        out = (self.total, self.steps)
        self.total, self.steps = 0.0, 0
        return out


def _history_step(step: _Step, fwd, x, adj, node_ids, history, src, dst, sa, sb, neg, one_way, hard) -> None:
    """A step that computes only the batch's products (ends of its edges and pairs, negatives),
    their neighbours' layer inputs read from ``history``, which the step then refreshes."""
    with record_function(PHASES["batch"]):
        parts = [src, dst, sa, sb, neg] + ([hard.reshape(-1).clamp(min=0)] if hard is not None else [])
        rows, inv = torch.unique(torch.cat(parts), return_inverse=True)
        loc = torch.split(inv, [p.numel() for p in parts])
        local_hard = None if hard is None else torch.where(hard < 0, -1, loc[5].view_as(hard))
    # (the backward runs outside autocast, in the dtypes of the forward, as torch.amp advises)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=step.bfloat16):
        with record_function(PHASES["forward"]):
            # (through float32: the CPU's float16 -> bfloat16 conversion is several times slower)
            xr = x.index_select(0, rows).float()
            xr = xr.bfloat16() if step.bfloat16 else xr
            s, t, fresh = fwd(xr, adj, node_ids[rows], rows=rows, history=history)
        with record_function(PHASES["loss"]):
            loss = step.loss(s, t, loc[0], loc[1], loc[2], loc[3], loc[4], one_way, local_hard)
    step.update(loss)
    with torch.no_grad(), record_function(PHASES["history"]):
        for (hs, ht), (fs, ft) in zip(history, fresh):
            hs.index_copy_(0, rows, fs.detach().to(hs.dtype))
            if ht is not hs:
                ht.index_copy_(0, rows, ft.detach().to(ht.dtype))


def train(
    graph: ProductGraph,
    x: torch.Tensor,
    config: TrainConfig,
    checkpoint_dir: str | Path | None = None,
    split: EdgeSplit | None = None,
    resume: bool = False,
    progress: bool = True,
    log=print,
    unseen: torch.Tensor | None = None,
    data_fingerprint: str | None = None,
) -> TrainResult:
    """Train DAEMON on ``graph`` with features ``x``; early-stop on validation MRR@10.

    With ``checkpoint_dir``, the training state is written there every epoch (``last.pt``:
    tensors and plain data only) and ``resume=True`` continues from it; ``data_fingerprint``
    (of the graph and features) is stored with it, so a resume on other data is refused.
    ``unseen`` (an (N,) bool mask, for cold-start evaluation) marks products
    that do not exist yet at training time: they are never sampled as negatives and get no
    per-product embedding, exactly like products added later with ``add-products`` (their
    edges must already be outside the training split).
    """
    t0 = time.time()
    config.validate()
    torch.manual_seed(config.seed)
    n = graph.num_products
    if x.shape[0] != n:
        raise DualrecError(f"features have {x.shape[0]} rows for {n} products")
    if graph.num_copurchase == 0:
        raise DualrecError("the graph has no co-purchase edges to learn from")
    split = split or edge_split(graph, config.val_fraction, config.test_fraction, config.seed)
    train_mask = split.mask(TRAIN)
    train_idx = train_mask.nonzero().view(-1)
    # One-way = the reverse is not a *training* edge (held-out edges must not steer the loss).
    one_way = torch.zeros(graph.num_copurchase, dtype=torch.bool)
    one_way[train_idx] = ~graph.subgraph_edges(train_mask).reciprocal_mask()

    all_ids = torch.arange(n)
    if unseen is None:
        unseen = torch.zeros(n, dtype=torch.bool)
    if unseen.shape != (n,):
        raise DualrecError(f"unseen must be a mask over the {n} products")
    eval_ids = torch.where(unseen, -1, all_ids)
    neg_pool = (~unseen).nonzero().view(-1)

    mode = batching_mode(config, n)
    if mode == "history" and (config.num_layers > 2 or config.use_reverse):
        raise DualrecError(
            "the history mode trains models of at most 2 layers without use_reverse: deeper or reversed "
            "models would read a step's target edges through the stored embeddings (use --batching full)"
        )
    precision = step_precision(config, mode)
    if precision == "bfloat16" and mode != "history":
        raise DualrecError(
            "precision bfloat16 is for the history mode (--batching history); full-graph steps train in float32"
        )
    rank, world = distributed()
    if world > 1 and mode != "history":
        raise DualrecError(
            "several workers train in the history mode only (--batching history): in the full mode every "
            "worker would run DAEMON over the whole graph in every step"
        )
    if rank:  # the first worker reports and writes; the others train in step with it
        log, progress, checkpoint_dir = (lambda m: None), False, (checkpoint_dir if resume else None)
    model = build_model(config, x.shape[1], n)
    id_params = [p for name, p in model.named_parameters() if name.startswith("id_emb")]
    other = [p for name, p in model.named_parameters() if not name.startswith("id_emb")]
    groups = [{"params": other, "weight_decay": config.weight_decay}]
    sparse_opt = None
    if id_params and mode == "history":
        # A history step touches the id rows of its batch only: sparse gradients and a lazy Adam
        # update those rows, not all N (dense Adam would rewrite every row every step), with
        # the same L2 as dense Adam's weight decay, on those rows.
        model.id_emb.sparse = True
        full_state = 2 * sum(p.numel() * 4 for p in id_params)
        compact = config.id_optimizer == "compact" or (
            config.id_optimizer == "auto" and full_state >= COMPACT_ID_STATE_FROM
        )
        sparse_opt = RowAdam(id_params, lr=config.lr, weight_decay=config.id_weight_decay, compact=compact)
    elif id_params:
        groups.append({"params": id_params, "weight_decay": config.id_weight_decay})
    # (fused: one kernel over all the dense parameters instead of a dozen small ops per tensor)
    opt = torch.optim.Adam(groups, lr=config.lr, fused=True)

    out = Path(checkpoint_dir) if checkpoint_dir is not None else None
    history, start_epoch = [], 0
    # A large model's best weights wait on disk: in the checkpoint folder (the checkpoint names
    # the file) or, for a run without one and for the other workers, in a folder of its own.
    spill, own_dir = None, None
    if sum(v.numel() * v.element_size() for v in model.state_dict().values()) >= SPILL_BEST_FROM:
        if out is not None and rank == 0:
            spill = out
            out.mkdir(parents=True, exist_ok=True)
        else:  # (removed when training ends, or when the object is collected after an error)
            own_dir = tempfile.TemporaryDirectory(prefix="dualrec-best-")
            spill = Path(own_dir.name)
    stopper = EarlyStopping(config.patience, spill_dir=spill)
    if resume:
        ck = load_checkpoint(out)
        differ = config.diff(ck["config"])
        differ.pop("batching", None)  # "auto" and "history" can be one mode: the effective one is compared
        trained_as = ck.get("batching", "full")  # checkpoints older than the history mode: full-graph steps
        if trained_as != mode:
            raise DualrecError(
                f"cannot resume: the checkpoint was trained with batching {trained_as}, this run would use {mode} "
                f"(--batching {trained_as})"
            )
        if differ:
            shown = "; ".join(f"{k}: checkpoint {b!r}, now {a!r}" for k, (a, b) in sorted(differ.items()))
            raise DualrecError(f"cannot resume: the checkpoint was trained with other settings ({shown})")
        if data_fingerprint is not None and ck.get("data") not in (None, data_fingerprint):
            raise DualrecError(
                "cannot resume: the checkpoint was trained on another dataset (its products, edges or features differ)"
            )
        try:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            if sparse_opt is not None:
                sparse_opt.load_state_dict(ck["sparse_optimizer"])
                for group in sparse_opt.param_groups:  # older checkpoints: SparseAdam, its L2 in the loss
                    group["weight_decay"] = config.id_weight_decay
        except (RuntimeError, ValueError, KeyError) as e:
            raise DualrecError(f"cannot resume: the checkpoint does not fit this model ({e})") from e
        split = EdgeSplit.from_state_dict(ck["split"])
        history = ck["history"]
        best_path = out / ck["best_file"] if ck.get("best_file") else None
        stopper = EarlyStopping(
            config.patience, ck["best"], ck["best_epoch"], ck["bad_epochs"], ck["best_state"], spill, best_path
        )
        start_epoch = ck["epoch"] + 1
        torch.set_rng_state(ck["rng"])

    gen = torch.Generator().manual_seed(config.seed + 1000 * start_epoch)
    if config.hard_negatives:  # training out-edges as CSR (walks) and sorted keys (known pairs)
        tr_src, tr_dst = graph.cp_src[train_mask], graph.cp_dst[train_mask]
        hn_known = tr_src * n + tr_dst  # sorted: cp edges are kept sorted by (src, dst)
        tr_csr = csr_adjacency(tr_src, tr_dst, n)
        hn_ptr, hn_idx = tr_csr.crow_indices(), tr_csr.col_indices()
    full_adj = message_passing_adjacency(graph, train_mask, config, transposes=False)  # inference only
    # A 4096-edge batch is right for 100k+ training edges, but on a few thousand it would give 2
    # steps an epoch; the batch shrinks instead (no change where edges >= 32 x batch_size).
    wanted = config.history_batch_size if mode == "history" else config.batch_size
    batch_size = max(1, min(wanted, math.ceil(train_idx.numel() / max(1, config.min_steps_per_epoch))))
    folds = max(2, round(1 / config.target_fraction))
    # (a fold's batches are counted apart, so an epoch is a few steps more than edges / batch)
    epoch_steps = math.ceil(train_idx.numel() / batch_size)
    max_steps, n_val = round_steps(config, n), val_edges(config, n)
    capped = 0 < max_steps < epoch_steps
    log(
        f"batching: {mode} ({n:,} products"
        + (f"; auto picks history above {HISTORY_FROM:,})" if config.batching == "auto" else ")")
        + (f", steps in {precision}" if mode == "history" else "")
        + (", compact optimiser state for the per-product embeddings" if sparse_opt and sparse_opt.compact else "")
    )
    log(
        f"validation on {min(n_val, int(split.mask(VAL).sum())):,} edges"
        + (
            f" after every {max_steps:,} steps (an epoch would be {epoch_steps:,}; max_steps_per_epoch)"
            if capped
            else f" after every epoch of {epoch_steps:,} steps"
        )
    )
    layer_inputs = None
    # (stored in the steps' dtype: a float16 copy cost a conversion per read and per refresh)
    history_dtype = torch.bfloat16 if precision == "bfloat16" else torch.float16
    if mode == "history":  # every product's layer inputs, refreshed by each epoch's validation pass
        layer_inputs = []
        embed(model, x, full_adj, eval_ids, history=layer_inputs, history_dtype=history_dtype)
    # Data-parallel workers: each takes its share of every batch (the negatives are shared) and
    # DistributedDataParallel averages their gradients, so the replicas stay identical and a step
    # is close to one single-process step on the whole batch (each worker's own copy of the
    # stored embeddings differs from a single process's).
    fwd = model if world == 1 else torch.nn.parallel.DistributedDataParallel(model)
    step = _Step(opt, sparse_opt, config, one_way, neg_pool, bfloat16=precision == "bfloat16", max_steps=max_steps)
    bar = tqdm(
        range(start_epoch, config.epochs),
        desc="train",
        unit="epoch",
        disable=not progress,
        initial=start_epoch,
        total=config.epochs,
    )
    t_train = time.time()
    for epoch in bar:
        te, adj_seconds = time.time(), 0.0
        model.train()
        # 1. each training edge (and similar pair) is a loss target in exactly one fold; a
        #    fold's targets are removed from message passing while it is trained on.
        cp_fold = torch.randint(0, folds, (train_idx.numel(),), generator=gen)
        sim_fold = torch.randint(0, folds, (graph.num_similar,), generator=gen)
        for f in range(folds):
            if step.full:  # (a capped epoch: the remaining folds' adjacency is not even built)
                break
            tgt_idx = train_idx[cp_fold == f]
            mp_mask = train_mask.clone()
            mp_mask[tgt_idx] = False
            # Simulated cold start: these products lose every edge and their per-product
            # embedding for this fold, exactly like a product added after training.
            cold = (torch.rand(n, generator=gen) < config.cold_fraction) | unseen
            mp_mask &= ~(cold[graph.cp_src] | cold[graph.cp_dst])
            sim_mp = (sim_fold != f) & ~(cold[graph.sim_a] | cold[graph.sim_b])
            adj = None  # (the previous fold's is freed before this one is built)
            ta = time.time()
            adj = message_passing_adjacency(graph, mp_mask, config, sim_mp, transposes=layer_inputs is None)
            adj_seconds += time.time() - ta  # (a fixed cost per fold: benchmarks extrapolate steps without it)
            node_ids = torch.where(cold, -1, all_ids)
            sim_idx = (sim_fold == f).nonzero().view(-1)
            # 2. mini-batches of target edges, each with a full-graph forward pass
            n_batches = max(1, math.ceil(tgt_idx.numel() / batch_size))
            sim_per_batch = math.ceil(sim_idx.numel() / n_batches)
            sim_perm = sim_idx[torch.randperm(sim_idx.numel(), generator=gen)]
            for b, batch in enumerate(_batches(tgt_idx.numel(), batch_size, gen)):
                if step.full:
                    break
                e = tgt_idx[batch]
                src, dst = graph.cp_src[e], graph.cp_dst[e]
                sims = sim_perm[b * sim_per_batch : (b + 1) * sim_per_batch]
                sa, sb = graph.sim_a[sims], graph.sim_b[sims]
                if layer_inputs is None:
                    s, t = model(x, adj, node_ids)
                neg = neg_pool[torch.randint(0, neg_pool.numel(), (config.num_negatives,), generator=gen)]
                hard = (
                    two_hop_negatives(hn_ptr, hn_idx, src, hn_known, n, config.hard_negatives, gen)
                    if config.hard_negatives
                    else None
                )
                if layer_inputs is None:
                    step.update(step.loss(s, t, src, dst, sa, sb, neg, one_way[e], hard))
                    continue
                if world > 1:
                    mine = slice(rank, None, world)
                    e, src, dst, sa, sb = e[mine], src[mine], dst[mine], sa[mine], sb[mine]
                    hard = None if hard is None else hard[mine]
                _history_step(step, fwd, x, adj, node_ids, layer_inputs, src, dst, sa, sb, neg, one_way[e], hard)
        total, n_steps = step.end_epoch()
        train_seconds = time.time() - te
        adj = s = t = None  # not held through the validation pass, the peak memory of a large epoch
        # 3. validation on all products
        if layer_inputs is not None:
            layer_inputs.clear()  # the validation pass computes them anew
        s, t = embed(model, x, full_adj, eval_ids, history=layer_inputs, history_dtype=history_dtype)
        val = evaluate_embeddings(graph, split, s, t, VAL, n_val, config.seed)
        row = {
            "epoch": epoch,
            "loss": total / max(n_steps, 1),
            "steps": n_steps,
            "train_seconds": train_seconds,
            "adjacency_seconds": adj_seconds,
            "val_MRR@10": val["MRR@10"],
            "val_HitRate@10": val["HitRate@10"],
            "val_direction_accuracy": val["direction_accuracy"],
            "seconds": time.time() - te,
        }
        history.append(row)
        score = val["MRR@10"]
        if world > 1:  # every worker stops at the same epoch: the first worker's score decides
            score_t = torch.tensor([score], dtype=torch.float64)
            torch.distributed.broadcast(score_t, 0)
            score = float(score_t)
        improved = stopper.step(epoch, score, model)
        bar.set_postfix(loss=f"{row['loss']:.3f}", mrr10=f"{val['MRR@10']:.4f}")
        log(
            f"epoch {epoch:3d}  loss {row['loss']:.4f}  val MRR@10 {val['MRR@10']:.4f}  "
            f"HR@10 {val['HitRate@10']:.4f}  dir-acc {val['direction_accuracy']:.3f}  "
            f"{row['seconds']:.1f}s{'  *' if improved else ''}"
        )
        if out is not None and rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            _atomic_save(
                {
                    "config": asdict(config),
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "sparse_optimizer": None if sparse_opt is None else sparse_opt.state_dict(),
                    "batching": mode,
                    "split": split.state_dict(),
                    "history": history,
                    "best": stopper.best,
                    "best_epoch": stopper.best_epoch,
                    "bad_epochs": stopper.bad_epochs,
                    "best_state": stopper.best_state,
                    "best_file": None if stopper.best_path is None else stopper.best_path.name,
                    "epoch": epoch,
                    "rng": torch.get_rng_state(),
                    "data": data_fingerprint,
                },
                out / "last.pt",
            )
        stopper.prune()  # after the checkpoint: the one it replaced may have named an older file
        if stopper.stop:
            log(f"early stop: no val MRR@10 gain for {config.patience} epochs (best epoch {stopper.best_epoch})")
            break
        if config.max_seconds:
            late = torch.tensor([time.time() - t_train >= config.max_seconds], dtype=torch.uint8)
            if world > 1:  # every worker stops at the same epoch: the first worker's clock decides
                torch.distributed.broadcast(late, 0)
            if late.item():
                log(f"time limit: {config.max_seconds:,.0f} s of training reached (best epoch {stopper.best_epoch})")
                break
    bar.close()

    if world > 1:
        _check_replicas(model, world, log)
    layer_inputs = s = t = None  # freed before the best weights are read back (a large model's peak)
    stopper.restore(model)
    if own_dir is not None:
        own_dir.cleanup()
    if model.id_emb is not None:
        model.id_emb.sparse = False
    best_epoch = stopper.best_epoch
    # The final pass computes the embeddings as the validation passes did: the history mode's
    # layer inputs in its 16 bits (float32 ones would double the largest buffers of a big catalogue).
    s, t = embed(model, x, full_adj, eval_ids, inner_dtype=history_dtype if mode == "history" else None)
    result = TrainResult(
        model,
        s,
        t,
        split,
        history,
        best_epoch,
        evaluate_embeddings(graph, split, s, t, VAL, n_val, config.seed),
        time.time() - t0,
        batching=mode,
        precision=precision,
        id_optimizer="compact" if sparse_opt is not None and sparse_opt.compact else "adam",
    )
    return result


def _check_replicas(model: DAEMON, world: int, log) -> None:
    """The workers' models must be one model: compare a checksum per tensor across workers."""
    d = torch.distributed
    v = torch.stack([p.detach().double().sum() for p in model.state_dict().values()])
    lo, hi = v.clone(), v.clone()
    d.all_reduce(lo, op=d.ReduceOp.MIN)
    d.all_reduce(hi, op=d.ReduceOp.MAX)
    if not torch.allclose(lo, hi, rtol=1e-9, atol=1e-9):
        raise DualrecError("the workers' models differ after training (their gradients were not averaged)")
    log(f"{world} workers: their models are identical")


def load_checkpoint(checkpoint_dir: Path | None) -> dict:
    """The training state in ``checkpoint_dir/last.pt``, read without running code."""
    p = None if checkpoint_dir is None else Path(checkpoint_dir) / "last.pt"
    if p is None or not p.exists():
        raise DualrecError("nothing to resume: this model folder has no training checkpoint")
    try:
        ck = torch.load(p, weights_only=True)  # tensors and plain data only: no code runs
    except Exception as e:  # a corrupt file, or one holding objects: refused, never executed
        raise DualrecError(
            f"cannot read the training checkpoint ({type(e).__name__}); train again without --resume"
        ) from None
    if not isinstance(ck, dict) or "config" not in ck:
        raise DualrecError("the training checkpoint is not one dualrec wrote; train again without --resume")
    return ck


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
