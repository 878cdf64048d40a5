"""GNN baselines: GraphSAGE (symmetric, features), LightGCN (IDs, BPR), a DiGAE-style directed GNN.

Each baseline gets a fair shot against DAEMON: the same training edges, a full-graph sparse
forward pass per optimiser step over mini-batches of target edges, seeded initialisation and
sampling, and early stopping on validation MRR@10 (the same :class:`RankingEvaluator`,
excluding training edges) with the best epoch's weights kept. After :meth:`fit` the final
embeddings are stored, so scoring is one matrix product (``score_fn``) or a row-wise dot
product (``pair_score_fn``), as for :class:`~dualrec.baselines.Popularity`.

* :class:`GraphSAGEBaseline` (``"graphsage"``): PyG ``GraphSAGE`` (2 layers, mean aggregation)
  on the same product features as DAEMON, over the *undirected* training co-purchase graph
  plus the similarity edges; one embedding per product, trained with DAEMON's contrastive loss
  (:func:`dualrec.loss.info_nce` with ``s = t``, including the similarity term) and DAEMON's
  fold scheme (a fold's target edges are removed from message passing while it is trained
  on). Score = cosine, symmetric: it cannot tell u -> v from v -> u.
* :class:`LightGCNBaseline` (``"lightgcn"``): PyG ``LightGCN`` (ID embeddings only, no
  features) on the undirected training co-purchase (item-item) graph, BPR loss with uniform
  random negatives. Score = dot product, symmetric.
* :class:`DirectedGNNBaseline` (``"directed_gnn"``): a DiGAE-style (Kollias et al., 2022) dual
  source/target GNN on the directed training co-purchase graph, without features (learnable
  per-product inputs, i.e. DiGAE with identity features) and without similarity edges:
  ``s(v)`` aggregates the target representations of v's out-neighbours, ``t(v)`` the source
  representations of v's in-neighbours (mean aggregation, DiGAE's ``alpha=1, beta=0``; no
  self-loops by default, see the class); decoder ``s_u . t_v`` trained with binary
  cross-entropy against one uniformly random target per positive. Score = ``s_u . t_v``,
  directed.

Defaults (epochs, learning rates, ``max_val_edges=10000``) were chosen on the validation edges
of amazon2014 clothing (23k products, 204k training edges) so that each fit takes about 2-3
minutes on 2 CPU cores; all are constructor arguments.

All message passing is sparse (``torch.sparse_csr`` adjacencies, no dense ``N x N``); memory
is ``O(N * dim + E)`` during training, and scoring is chunked by the evaluator.

Example::

    m = GraphSAGEBaseline(seed=0).fit(graph, split.mask(TRAIN), x, val=(val_src, val_dst))
    RankingEvaluator(graph.num_products).eval(m.score_fn, test_src, test_dst, known_src, known_dst)
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dualrec.evaluate import RankingEvaluator
from dualrec.graph import DualrecError, ProductGraph
from dualrec.loss import info_nce
from dualrec.train import EarlyStopping

__all__ = ["GraphSAGEBaseline", "LightGCNBaseline", "DirectedGNNBaseline"]


# ---------------------------------------------------------------------- sparse helpers
def _csr(row: Tensor, col: Tensor, n: int, value: Tensor | None = None) -> Tensor:
    """``n x n`` CSR matrix with entries ``[row, col] = value`` (1 if None); pairs must be unique."""
    value = torch.ones(row.numel(), dtype=torch.float32) if value is None else value.to(torch.float32)
    order = torch.argsort(row * n + col)
    crow = torch.zeros(n + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=n), 0)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col[order], value[order], size=(n, n), check_invariants=False)


def _unique_pairs(row: Tensor, col: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Distinct ``(row, col)`` pairs without self-loops."""
    key = torch.unique(row * n + col)
    r, c = key // n, key % n
    keep = r != c
    return r[keep], c[keep]


def _undirected(n: int, *pairs: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Both directions of all given pairs, deduplicated (a reciprocal or co-viewed pair counts once)."""
    a = torch.cat([p[0] for p in pairs] + [p[1] for p in pairs])
    b = torch.cat([p[1] for p in pairs] + [p[0] for p in pairs])
    return _unique_pairs(a, b, n)


def _mean_csr(row: Tensor, col: Tensor, n: int, self_loops: bool) -> Tensor:
    """Row-normalised (mean over ``col`` for each ``row``) CSR adjacency, optionally with self-loops."""
    row, col = _unique_pairs(row, col, n)
    if self_loops:
        ar = torch.arange(n)
        row, col = torch.cat([row, ar]), torch.cat([col, ar])
    deg = torch.bincount(row, minlength=n).to(torch.float32)
    return _csr(row, col, n, 1.0 / deg[row].clamp(min=1.0))


def _batches(n: int, batch_size: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        yield perm[i : i + batch_size]


# ---------------------------------------------------------------------- shared fit loop
class _GNNBaseline:
    """Shared loop: seeded fit, per-epoch validation MRR@10, best-epoch weights, final embeddings.

    Subclasses implement ``_setup`` (model, optimiser, adjacencies), ``_train_epoch`` (returns
    ``(mean loss, steps)``) and ``_embed`` (final ``(source, target)`` embeddings, no grad).
    """

    name = "gnn"

    def __init__(
        self,
        epochs: int,
        lr: float,
        dim: int,
        batch_size: int,
        patience: int,
        max_val_edges: int | None,
        seed: int,
        log: Callable[[str], None] | None,
    ):
        if epochs < 1:
            raise DualrecError(f"epochs must be >= 1, got {epochs}")
        self.epochs, self.lr, self.dim, self.batch_size = int(epochs), float(lr), int(dim), int(batch_size)
        self.patience, self.max_val_edges, self.seed = int(patience), max_val_edges, int(seed)
        self.log = log
        self.history: list[dict] = []
        self.best_epoch = -1
        self.fit_seconds = 0.0
        self.source: Tensor | None = None
        self.target: Tensor | None = None

    # .................................................................. to implement
    def _setup(self, graph: ProductGraph, train_mask: Tensor, x: Tensor | None, gen: torch.Generator) -> None:
        raise NotImplementedError

    def _train_epoch(self, gen: torch.Generator) -> tuple[float, int]:
        raise NotImplementedError

    def _embed(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    # .................................................................. fit
    def fit(
        self, graph: ProductGraph, train_mask: Tensor, x: Tensor | None = None, val: tuple[Tensor, Tensor] | None = None
    ) -> "_GNNBaseline":
        """Train on the co-purchase edges where ``train_mask`` is true; early-stop on ``val`` MRR@10.

        Args:
            graph: the product graph (similarity pairs are side information, never held out).
            train_mask: (E,) bool over ``graph.cp_src``: the edges the model may see.
            x: (N, F) product features (used by GraphSAGE only; ignored by the ID-only models).
            val: ``(src, dst)`` validation edges; without them the last epoch is kept.
        """
        t0 = time.time()
        n = graph.num_products
        train_mask = torch.as_tensor(train_mask, dtype=torch.bool)
        if train_mask.numel() != graph.num_copurchase:
            raise DualrecError(f"train_mask has {train_mask.numel()} entries for {graph.num_copurchase} edges")
        if not bool(train_mask.any()):
            raise DualrecError("no training co-purchase edges to learn from")
        self.history, self.best_epoch = [], -1
        with torch.random.fork_rng(devices=[]):  # seeded, without disturbing the caller's RNG
            torch.manual_seed(self.seed)
            gen = torch.Generator().manual_seed(self.seed)
            self._setup(graph, train_mask, x, gen)
            ev = val_src = val_dst = None
            if val is not None:
                val_src, val_dst = (torch.as_tensor(v, dtype=torch.long).reshape(-1) for v in val)
                if self.max_val_edges and val_src.numel() > self.max_val_edges:
                    keep = torch.randperm(val_src.numel(), generator=torch.Generator().manual_seed(self.seed))
                    keep = keep[: self.max_val_edges]
                    val_src, val_dst = val_src[keep], val_dst[keep]
                ev = RankingEvaluator(n, ks=(10,))
                ex_src, ex_dst = graph.cp_src[train_mask], graph.cp_dst[train_mask]
            stopper = EarlyStopping(self.patience)
            for epoch in range(self.epochs):
                te = time.time()
                loss, steps = self._train_epoch(gen)
                row = {"epoch": epoch, "loss": loss, "steps": steps, "train_seconds": time.time() - te}
                if ev is not None:
                    s, t = self._embed()
                    m = ev.eval(lambda q: s[q] @ t.T, val_src, val_dst, ex_src, ex_dst)
                    row["val_MRR@10"], row["val_HitRate@10"] = m["MRR@10"], m["HitRate@10"]
                    stopper.step(epoch, m["MRR@10"], self.model)
                row["seconds"] = time.time() - te
                self.history.append(row)
                if self.log is not None:
                    val_txt = f"  val MRR@10 {row['val_MRR@10']:.4f}  HR@10 {row['val_HitRate@10']:.4f}" if ev else ""
                    self.log(f"{self.name} epoch {epoch:3d}  loss {loss:.4f}{val_txt}  {row['seconds']:.1f}s")
                if ev is not None and stopper.stop:
                    break
            stopper.restore(self.model)
            self.best_epoch = stopper.best_epoch if stopper.best_state is not None else len(self.history) - 1
            self.source, self.target = self._embed()
        self._release()
        self.fit_seconds = time.time() - t0
        return self

    def _release(self) -> None:
        """Drop training-only state (adjacencies, optimiser); the final embeddings stay."""
        for attr in ("opt", "_adj", "_data"):
            if hasattr(self, attr):
                setattr(self, attr, None)

    # .................................................................. scoring
    def _check_fitted(self) -> None:
        if self.source is None:
            raise DualrecError(f"{self.name}: call fit() before scoring")

    def score_fn(self, query: Tensor) -> Tensor:
        """Scores ``(Q, N)`` of every product for each query product."""
        self._check_fitted()
        return self.source[query] @ self.target.T

    def pair_score_fn(self, u: Tensor, v: Tensor) -> Tensor:
        """Scores ``(E,)`` of the directed pairs ``u[i] -> v[i]``."""
        self._check_fitted()
        return (self.source[u] * self.target[v]).sum(-1)


def _folds(train_idx: Tensor, target_fraction: float, gen: torch.Generator):
    """DAEMON's fold scheme: yields ``(fold id, target edge indexes, fold of each edge)``.

    ``target_fraction = 0``: one fold whose targets are all training edges, which then also stay
    in message passing (the standard LightGCN / GAE setting).
    """
    if target_fraction <= 0:
        yield -1, train_idx, None
        return
    folds = max(2, round(1 / target_fraction))
    fold = torch.randint(0, folds, (train_idx.numel(),), generator=gen)
    for f in range(folds):
        yield f, train_idx[fold == f], fold


# ---------------------------------------------------------------------- GraphSAGE
class GraphSAGEBaseline(_GNNBaseline):
    """Symmetric GNN on the same features: PyG ``GraphSAGE`` + DAEMON's contrastive loss.

    Args:
        epochs, lr, batch_size, patience: optimisation (early stopping on val MRR@10).
        dim: output embedding width; ``hidden`` the hidden width; ``num_layers`` hops.
        tau, num_negatives, in_batch_negatives, sim_weight: :func:`dualrec.loss.info_nce` as in
            DAEMON (co-purchase term + ``sim_weight`` x similarity term; uniform negatives only;
            ``sim_weight`` 0.5, DAEMON's default before 0.1, kept so that the baseline's measured
            figures stand).
        target_fraction: share of training edges removed from message passing per fold.
        use_similar: add the similarity pairs to the (undirected) message-passing graph.
        max_val_edges: validation subsample per epoch (speed); ``seed``: init and sampling.
    """

    name = "graphsage"

    def __init__(
        self,
        epochs: int = 6,
        lr: float = 3e-3,
        dim: int = 64,
        hidden: int = 128,
        num_layers: int = 2,
        dropout: float = 0.1,
        tau: float = 0.1,
        num_negatives: int = 1024,
        in_batch_negatives: bool = False,
        sim_weight: float = 0.5,
        use_similar: bool = True,
        target_fraction: float = 0.3,
        batch_size: int = 2048,
        patience: int = 2,
        max_val_edges: int | None = 10000,
        seed: int = 0,
        log: Callable[[str], None] | None = None,
    ):
        super().__init__(epochs, lr, dim, batch_size, patience, max_val_edges, seed, log)
        self.hidden, self.num_layers, self.dropout = int(hidden), int(num_layers), float(dropout)
        self.tau, self.num_negatives, self.in_batch_negatives = float(tau), int(num_negatives), in_batch_negatives
        self.sim_weight, self.use_similar, self.target_fraction = float(sim_weight), use_similar, float(target_fraction)

    def _setup(self, graph, train_mask, x, gen):
        from torch_geometric.nn.models import GraphSAGE

        if x is None:
            raise DualrecError("graphsage needs the product features x")
        x = torch.as_tensor(x, dtype=torch.float32)
        if x.dim() != 2 or x.shape[0] != graph.num_products:
            raise DualrecError(f"features have shape {tuple(x.shape)}; expected ({graph.num_products}, F)")
        self.x, self.graph, self.train_mask = x, graph, train_mask
        self.train_idx = train_mask.nonzero().view(-1)
        self.model = GraphSAGE(x.shape[1], self.hidden, self.num_layers, self.dim, dropout=self.dropout, aggr="mean")
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        self._adj = self._adjacency(train_mask, None)

    def _adjacency(self, cp_mask: Tensor, sim_mask: Tensor | None) -> Tensor:
        g = self.graph
        pairs = [(g.cp_src[cp_mask], g.cp_dst[cp_mask])]
        if self.use_similar:
            a, b = (g.sim_a, g.sim_b) if sim_mask is None else (g.sim_a[sim_mask], g.sim_b[sim_mask])
            pairs.append((a, b))
        row, col = _undirected(g.num_products, *pairs)
        return _csr(row, col, g.num_products)  # symmetric, so it is its own transpose (adj_t)

    def _train_epoch(self, gen):
        g, n = self.graph, self.graph.num_products
        self.model.train()
        total, steps = 0.0, 0
        use_sim = self.use_similar and self.sim_weight > 0 and g.num_similar > 0
        sim_fold = None
        for f, tgt_idx, _ in _folds(self.train_idx, self.target_fraction, gen):
            if f < 0:
                adj, sim_idx = self._adj, torch.arange(g.num_similar)
            else:
                if sim_fold is None:
                    folds = max(2, round(1 / self.target_fraction))
                    sim_fold = torch.randint(0, folds, (g.num_similar,), generator=gen)
                mp = self.train_mask.clone()
                mp[tgt_idx] = False
                adj = self._adjacency(mp, sim_fold != f)
                sim_idx = (sim_fold == f).nonzero().view(-1)
            n_batches = max(1, math.ceil(tgt_idx.numel() / self.batch_size))
            sim_per_batch = math.ceil(sim_idx.numel() / n_batches) if use_sim else 0
            sim_perm = sim_idx[torch.randperm(sim_idx.numel(), generator=gen)] if use_sim else sim_idx
            for b, batch in enumerate(_batches(tgt_idx.numel(), self.batch_size, gen)):
                e = tgt_idx[batch]
                z = F.normalize(self.model(self.x, adj), dim=-1)
                neg = torch.randint(0, n, (self.num_negatives,), generator=gen)
                loss = info_nce(z, z, g.cp_src[e], g.cp_dst[e], neg, self.tau, self.in_batch_negatives)
                sims = sim_perm[b * sim_per_batch : (b + 1) * sim_per_batch]
                if use_sim and sims.numel():
                    sa, sb = g.sim_a[sims], g.sim_b[sims]
                    loss = loss + self.sim_weight * info_nce(
                        z, z, torch.cat([sa, sb]), torch.cat([sb, sa]), neg, self.tau, self.in_batch_negatives
                    )
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                total += float(loss.detach())
                steps += 1
        return total / max(steps, 1), steps

    @torch.no_grad()
    def _embed(self):
        self.model.eval()
        z = F.normalize(self.model(self.x, self._adj), dim=-1)
        return z, z

    def _release(self):
        super()._release()
        self.x = self.graph = self.train_mask = self.train_idx = None


# ---------------------------------------------------------------------- LightGCN
class LightGCNBaseline(_GNNBaseline):
    """PyG ``LightGCN`` on the undirected training item-item co-purchase graph, BPR loss.

    Args:
        epochs, lr, batch_size, patience: optimisation; an epoch visits every undirected
            training pair in both orientations once.
        dim: embedding width (64); ``num_layers``: propagation hops (3).
        num_negatives: uniform random negatives per positive (BPR averaged over them).
        lambda_reg: L2 on the layer-0 embeddings of the batch (``LightGCN.recommendation_loss``).
        target_fraction: 0 (default, standard LightGCN): all training edges propagate; > 0:
            DAEMON's fold scheme.
    """

    name = "lightgcn"

    def __init__(
        self,
        epochs: int = 20,
        lr: float = 2e-2,
        dim: int = 64,
        num_layers: int = 3,
        num_negatives: int = 4,
        lambda_reg: float = 1e-4,
        target_fraction: float = 0.0,
        batch_size: int = 8192,
        patience: int = 3,
        max_val_edges: int | None = 10000,
        seed: int = 0,
        log: Callable[[str], None] | None = None,
    ):
        super().__init__(epochs, lr, dim, batch_size, patience, max_val_edges, seed, log)
        self.num_layers, self.num_negatives = int(num_layers), int(num_negatives)
        self.lambda_reg, self.target_fraction = float(lambda_reg), float(target_fraction)

    def _setup(self, graph, train_mask, x, gen):
        from torch_geometric.nn.models import LightGCN

        self.graph, self.train_mask = graph, train_mask
        self.model = LightGCN(graph.num_products, self.dim, self.num_layers)
        for conv in self.model.convs:  # we pass a pre-normalised adjacency: D^-1/2 A D^-1/2
            conv.normalize = False
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        # Positives: undirected training pairs, both orientations (the score is symmetric).
        self.pos_src, self.pos_dst = _undirected(
            graph.num_products, (graph.cp_src[train_mask], graph.cp_dst[train_mask])
        )
        self._adj = self._adjacency(torch.ones(self.pos_src.numel(), dtype=torch.bool))

    def _adjacency(self, keep: Tensor) -> Tensor:
        n = self.graph.num_products
        row, col = self.pos_src[keep], self.pos_dst[keep]
        deg = torch.bincount(row, minlength=n).to(torch.float32)
        dinv = deg.pow(-0.5).masked_fill(deg == 0, 0.0)
        return _csr(row, col, n, dinv[row] * dinv[col])

    def _forward(self, adj: Tensor) -> Tensor:
        return self.model.get_embedding(adj)

    def _train_epoch(self, gen):
        n = self.graph.num_products
        self.model.train()
        total, steps = 0.0, 0
        idx = torch.arange(self.pos_src.numel())
        # Folds are drawn over the *undirected* pairs: u -> v and v -> u leave message passing together.
        key = torch.minimum(self.pos_src, self.pos_dst) * n + torch.maximum(self.pos_src, self.pos_dst)
        _, pair_id = torch.unique(key, return_inverse=True)
        pair_idx = torch.arange(int(pair_id.max()) + 1)
        for f, tgt_pairs, fold in _folds(pair_idx, self.target_fraction, gen):
            if f < 0:
                adj, tgt = self._adj, idx
            else:
                in_fold = fold[pair_id] == f
                adj, tgt = self._adjacency(~in_fold), idx[in_fold]
            for batch in _batches(tgt.numel(), self.batch_size, gen):
                e = tgt[batch]
                u, v = self.pos_src[e], self.pos_dst[e]
                w = torch.randint(0, n, (e.numel(), self.num_negatives), generator=gen)
                emb = self._forward(adj)
                q = emb[u]
                pos = (q * emb[v]).sum(-1)
                neg = (q[:, None, :] * emb[w]).sum(-1)
                node_id = torch.unique(torch.cat([u, v, w.reshape(-1)]))
                loss = self.model.recommendation_loss(
                    pos[:, None].expand_as(neg).reshape(-1),
                    neg.reshape(-1),
                    node_id=node_id,
                    lambda_reg=self.lambda_reg,
                )
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                total += float(loss.detach())
                steps += 1
        return total / max(steps, 1), steps

    @torch.no_grad()
    def _embed(self):
        self.model.eval()
        z = self._forward(self._adj)
        return z, z

    def _release(self):
        super()._release()
        self.graph = self.train_mask = self.pos_src = self.pos_dst = None


# ---------------------------------------------------------------------- directed GNN (DiGAE-style)
class DiGAEEncoder(nn.Module):
    """Dual source/target encoder with learnable per-product inputs (DiGAE with identity features).

    Layer 1 reads the input tables directly (for identity features ``A X W = A W``, so ``W`` is
    a per-product table)::

        s1 = relu(A_out t0 + b),  t1 = relu(A_in s0 + b')
        s_{l+1} = A_out (t_l W_t^l),  t_{l+1} = A_in (s_l W_s^l)   (ReLU between layers)

    with ``A_out`` / ``A_in`` the mean over out- / in-neighbours (optionally plus self-loops).
    """

    def __init__(
        self, num_nodes: int, hidden: int = 64, out_channels: int = 64, num_layers: int = 2, init_std: float = 0.1
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        self.init_std = init_std
        dims = [hidden] * num_layers + [out_channels]
        self.s0 = nn.Embedding(num_nodes, dims[1])  # layer 1 has no weight matrix: dims[1] wide
        self.t0 = nn.Embedding(num_nodes, dims[1])
        self.bias_s = nn.Parameter(torch.zeros(self.s0.embedding_dim))
        self.bias_t = nn.Parameter(torch.zeros(self.t0.embedding_dim))
        self.lin_s = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(1, num_layers))
        self.lin_t = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(1, num_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.s0.weight, std=self.init_std)
        nn.init.normal_(self.t0.weight, std=self.init_std)
        nn.init.zeros_(self.bias_s)
        nn.init.zeros_(self.bias_t)
        for lin in list(self.lin_s) + list(self.lin_t):
            lin.reset_parameters()

    def forward(self, a_out: Tensor, a_in: Tensor) -> tuple[Tensor, Tensor]:
        s = torch.sparse.mm(a_out, self.t0.weight) + self.bias_s
        t = torch.sparse.mm(a_in, self.s0.weight) + self.bias_t
        for lin_s, lin_t in zip(self.lin_s, self.lin_t):
            s, t = F.relu(s), F.relu(t)
            s, t = torch.sparse.mm(a_out, lin_t(t)), torch.sparse.mm(a_in, lin_s(s))
        return s, t


class DirectedGNNBaseline(_GNNBaseline):
    """DiGAE-style directed GNN: ID inputs, co-purchase edges only, BCE with random negatives.

    Args:
        epochs, lr, batch_size, patience: optimisation (early stopping on val MRR@10).
        dim: embedding width; ``hidden``: width of the input tables and hidden layer.
        num_layers: hops (DiGAE: 2).
        num_negatives: uniformly random targets per positive (DiGAE: 1), scored ``s_u . t_w``.
        self_loops: add self-loops before the mean aggregation. DiGAE's default is on, but with
            free per-product inputs a self-loop lets ``s_u . t_v`` memorise the training edges
            (``t0_v`` reaches ``s_u`` directly): on clothing validation MRR@10 after 20 epochs
            was 0.037 with self-loops and 0.148 without, so the default is off. Without them a
            product with no training out-edges has a constant source embedding.
        target_fraction: 0 (default, the GAE setting): all training edges propagate; > 0:
            DAEMON's fold scheme (0.3 gave a lower validation MRR@10 on clothing: 0.121).
    """

    name = "directed_gnn"

    def __init__(
        self,
        epochs: int = 20,
        lr: float = 2e-2,
        dim: int = 64,
        hidden: int = 64,
        num_layers: int = 2,
        num_negatives: int = 1,
        self_loops: bool = False,
        target_fraction: float = 0.0,
        batch_size: int = 4096,
        patience: int = 3,
        max_val_edges: int | None = 10000,
        seed: int = 0,
        log: Callable[[str], None] | None = None,
    ):
        super().__init__(epochs, lr, dim, batch_size, patience, max_val_edges, seed, log)
        self.hidden, self.num_layers, self.num_negatives = int(hidden), int(num_layers), int(num_negatives)
        self.self_loops, self.target_fraction = self_loops, float(target_fraction)

    def _setup(self, graph, train_mask, x, gen):
        self.graph, self.train_mask = graph, train_mask
        self.train_idx = train_mask.nonzero().view(-1)
        self.model = DiGAEEncoder(graph.num_products, self.hidden, self.dim, self.num_layers)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        self._adj = self._adjacency(train_mask)

    def _adjacency(self, cp_mask: Tensor) -> tuple[Tensor, Tensor]:
        g, n = self.graph, self.graph.num_products
        s, d = g.cp_src[cp_mask], g.cp_dst[cp_mask]
        return _mean_csr(s, d, n, self.self_loops), _mean_csr(d, s, n, self.self_loops)

    def _train_epoch(self, gen):
        g, n = self.graph, self.graph.num_products
        self.model.train()
        total, steps = 0.0, 0
        for f, tgt_idx, _ in _folds(self.train_idx, self.target_fraction, gen):
            if f < 0:
                adj = self._adj
            else:
                mp = self.train_mask.clone()
                mp[tgt_idx] = False
                adj = self._adjacency(mp)
            for batch in _batches(tgt_idx.numel(), self.batch_size, gen):
                e = tgt_idx[batch]
                u, v = g.cp_src[e], g.cp_dst[e]
                w = torch.randint(0, n, (e.numel(), self.num_negatives), generator=gen)
                s, t = self.model(*adj)
                q = s[u]
                pos = (q * t[v]).sum(-1)
                neg = (q[:, None, :] * t[w]).sum(-1)
                loss = F.binary_cross_entropy_with_logits(
                    pos, torch.ones_like(pos)
                ) + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                total += float(loss.detach())
                steps += 1
        return total / max(steps, 1), steps

    @torch.no_grad()
    def _embed(self):
        self.model.eval()
        return self.model(*self._adj)

    def _release(self):
        super()._release()
        self.graph = self.train_mask = self.train_idx = None
