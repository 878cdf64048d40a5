"""Second stage: rerank DAEMON's and the graph's candidates with a gradient-boosted pair model.

DAEMON's dual embeddings retrieve by one dot product; co-occurrence path counts
(:mod:`dualrec.cooccurrence`) see exact short paths that a low-dimensional dot product
smooths away. They miss different edges (on Amazon clothing the union of their top-10 lists holds
the held-out target for 0.71 of the edges, each alone for 0.56 and 0.67), so a production
recommender runs both and lets a small model decide per pair:

1. **Candidates** for a query ``u``: the ``n_daemon`` best products by ``s_u . t_v`` and the
   ``n_graph`` best by the co-occurrence score (known out-neighbours and ``u`` itself excluded).
2. **Features** of each pair ``(u, v)``: the DAEMON score, its rank and its gap to the query's
   best; the co-occurrence score and rank; each path kind's value (``u -> w -> v``,
   ``u ~ w -> v``, ... see ``KINDS``); the cosine of the text features; log degrees of ``u``
   and ``v``.
3. **Model**: LightGBM LambdaMART (``objective="binary"``: a pointwise scikit-learn
   classifier) fitted on the *validation* edges, whose features are computed on the training
   graph exactly as they are at test time. The query's other candidates are its negatives.
   Products outside the candidate set keep DAEMON's order (co-occurrence's, without DAEMON)
   below every candidate.

Like every hyper-parameter of the benchmark, the reranker learns from validation edges only;
test edges are never seen. The ``cooccurrence_rerank`` baseline is the same reranker without
the DAEMON candidates and features, so the gain DAEMON brings is measured, not assumed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import scipy.sparse as sp
import torch

from dualrec.cooccurrence import KINDS, Cooccurrence
from dualrec.graph import DualrecError
from dualrec.topk import masked_topk

#: version of what :meth:`CandidateReranker.save` writes
RERANK_FORMAT = 2
#: the second stage's folder in a model version (written by ``dualrec train``)
RERANK_DIR = "rerank"


@dataclass
class RerankConfig:
    n_daemon: int = 100  # candidates from the embedding model
    n_graph: int = 100  # candidates from co-occurrence
    max_iter: int = 300  # boosting rounds (early-stopped on a held-out part of the val queries)
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    neg_per_query: int = 50  # negatives sampled per validation query for fitting (all positives kept)
    chunk: int = 512  # queries per scoring chunk (fewer on big catalogues: see _rows_per_chunk)
    chunk_elems: int = 1 << 24  # at most this many (query, product) cells per chunk
    max_fit_queries: int = 50_000  # validation queries the model is fitted on (a seeded sample beyond)
    objective: str = "lambdarank"  # LightGBM LambdaMART, or "binary" (scikit-learn, pointwise)
    seed: int = 0


class CandidateReranker:
    """Reranks the union of embedding and co-occurrence candidates (see the module docstring).

    Args:
        cooc: a fitted :class:`~dualrec.cooccurrence.Cooccurrence` on the training graph.
        source, target: (N, d) DAEMON embeddings, or ``None`` for the graph-only reranker.
        x: (N, F) node features (text), or ``None``.
        known_src, known_dst: training co-purchase edges: never candidates.
    """

    def __init__(
        self,
        cooc: Cooccurrence,
        source: torch.Tensor | None,
        target: torch.Tensor | None,
        x: torch.Tensor | None,
        known_src: torch.Tensor,
        known_dst: torch.Tensor,
        config: RerankConfig | None = None,
    ):
        self.cfg = config or RerankConfig()
        self.cooc = cooc
        self.n = cooc.n
        self.s = None if source is None else source.detach().float()
        self.t = None if target is None else target.detach().float()
        self.x = None if x is None else torch.nn.functional.normalize(torch.as_tensor(x).float(), dim=1)
        n = self.n
        ks, kd = known_src.numpy(), known_dst.numpy()
        self.known = sp.csr_matrix((np.ones(ks.size, dtype=bool), (ks, kd)), shape=(n, n))
        self.log_in = np.log1p(np.bincount(kd, minlength=n)).astype(np.float32)
        self.log_out = np.log1p(np.bincount(ks, minlength=n)).astype(np.float32)
        self.log_sim = np.log1p(np.diff(cooc.S.indptr)).astype(np.float32)
        self.kinds = [k for k in KINDS if k != "cf3" or cooc.cf3_enabled]
        self.model = None
        self.info_: dict = {}
        self.shown = None  # logged co-purchases put first by score_fn(known_first=True); None: `known`
        self._needs_text = self.x is not None  # whether it was fitted with text features

    # ------------------------------------------------------------------ features
    @property
    def feature_names(self) -> list[str]:
        names = ["graph_score", "graph_rank", "graph_gap"] + [f"path_{k}" for k in self.kinds]
        names += ["log_in_v", "log_out_v", "log_sim_v", "log_in_u", "log_out_u", "log_sim_u"]
        if self.x is not None:
            names.append("text_cos")
        if self.s is not None:
            names += [
                "daemon_score",
                "daemon_rank",
                "daemon_gap",
                "daemon_reverse",
                "daemon_target_sim",
                "daemon_source_sim",
            ]
        return names

    def _chunk(self, q: np.ndarray):
        """Candidates of queries ``q``: (row, col, features, base rows).

        The base rows (Q, N) order the products outside the candidates: DAEMON's scores, or
        co-occurrence's for the graph-only reranker.
        """
        cfg, n = self.cfg, self.n
        Q = q.size
        # Dense (Q, N) work in torch: its element-wise ops and top-k use both cores.
        kq = self.known[q]
        exclude = torch.zeros(Q, n, dtype=torch.bool)
        exclude[torch.from_numpy(np.repeat(np.arange(Q), np.diff(kq.indptr))), torch.from_numpy(kq.indices)] = True
        exclude[torch.arange(Q), torch.from_numpy(q)] = True
        G = self.cooc.score_fn(torch.from_numpy(q)).float()
        Gm = G.masked_fill(exclude, -math.inf)
        cand = torch.zeros(Q, n, dtype=torch.bool)
        cand.scatter_(1, Gm.topk(min(cfg.n_graph, n - 1), dim=1).indices, True)
        D = Dm = base = None
        if self.s is not None:
            # Products added after the fit (cold start) are columns n.. of the embeddings: they
            # are never candidates (no graph features), but keep DAEMON's order in the base rows.
            base = self.s[torch.from_numpy(q)] @ self.t.T
            D = base[:, :n]
            Dm = D.masked_fill(exclude, -math.inf)
            cand.scatter_(1, Dm.topk(min(cfg.n_daemon, n - 1), dim=1).indices, True)
        cand &= ~exclude
        rt, ct = cand.nonzero(as_tuple=True)  # row-major: rows sorted
        r, c = rt.numpy().copy(), ct.numpy().copy()  # writeable: scipy indexing needs it

        feats = []
        g = G[rt, ct].numpy()
        g_rank = _rank_in_row(r, g)
        g_max = Gm.max(1).values.numpy()
        feats += [g, np.log1p(g_rank), g - g_max[r]]
        kr = self.cooc.kind_rows(q, self.kinds)
        for k in self.kinds:
            m = kr[k]
            m.sort_indices()  # canonical rows: scipy looks pairs up by binary search (2-3x faster)
            feats.append(np.asarray(m[r, c]).ravel() / self.cooc.scales_.get(k, 1.0))
        u = q[r]
        feats += [self.log_in[c], self.log_out[c], self.log_sim[c], self.log_in[u], self.log_out[u], self.log_sim[u]]
        # Pair dot products as (Q, d) @ (d, N) products read at the candidates: cheaper than
        # gathering two (pairs, d) matrices (the text features are 384 wide).
        tq = torch.from_numpy(q)
        if self.x is not None:
            feats.append((self.x[tq] @ self.x.T)[rt, ct].numpy())
        if D is not None:
            d = D[rt, ct].numpy()
            feats += [d, np.log1p(_rank_in_row(r, d)), d - Dm.max(1).values.numpy()[r]]
            # the other roles of the dual embeddings: v -> u (direction), and u, v as substitutes
            s, t = self.s[:n], self.t[:n]
            feats += [(t[tq] @ s.T)[rt, ct].numpy(), (t[tq] @ t.T)[rt, ct].numpy(), (s[tq] @ s.T)[rt, ct].numpy()]
        F = np.stack([np.asarray(f, dtype=np.float32) for f in feats], 1)
        return r, c, F, (G if base is None else base)

    # ------------------------------------------------------------------ fit
    def fit(
        self, val_src: torch.Tensor, val_dst: torch.Tensor, log=print, progress: bool = False
    ) -> "CandidateReranker":
        cfg, n = self.cfg, self.n
        vs, vd = val_src.numpy(), val_dst.numpy()
        if vs.size == 0:
            raise DualrecError(
                "the reranker needs validation edges to learn from; the split has none (the graph is too small)"
            )
        pos = sp.csr_matrix((np.ones(vs.size, dtype=bool), (vs, vd)), shape=(n, n))
        uq = np.unique(vs)
        rng = np.random.default_rng(cfg.seed)
        if uq.size > cfg.max_fit_queries:
            uq = np.sort(rng.choice(uq, cfg.max_fit_queries, replace=False))
        step = self._rows_per_chunk()
        Xs, ys, gs, found = [], [], [], 0
        from tqdm.auto import tqdm

        for a in tqdm(range(0, uq.size, step), desc="second stage: fit features", unit="chunk", disable=not progress):
            q = uq[a : a + step]
            r, c, F, _ = self._chunk(q)
            y = np.asarray(pos[q[r], c]).ravel()
            found += int(y.sum())
            # all positives, and a random sample of each query's other candidates
            keep = y | (rng.random(r.size) < cfg.neg_per_query / max(1.0, r.size / q.size))
            has_pos = np.bincount(r[y], minlength=q.size) > 0
            keep &= has_pos[r]  # a query with no positive candidate teaches nothing
            Xs.append(F[keep])
            ys.append(y[keep])
            gs.append(np.bincount(r[keep], minlength=q.size))
        X, y, groups = np.concatenate(Xs), np.concatenate(ys), np.concatenate(gs)
        groups = groups[groups > 0]
        self._fit_model(X, y, groups)
        self.info_ = {
            "val_edges": int(vs.size),
            "val_edges_in_candidates": found,
            "candidate_recall": found / max(1, vs.size),
            "rows": int(y.size),
            "positives": int(y.sum()),
            "features": self.feature_names,
            **self.info_,
        }
        log(
            f"reranker: {y.size} rows, {int(y.sum())} positives; {found / max(1, vs.size):.3f} of the val "
            f"edges are candidates; {self.info_.get('iterations')} rounds"
        )
        return self

    def _fit_model(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
        cfg = self.cfg
        if cfg.objective == "lambdarank":
            import lightgbm as lgb

            # Early stopping reads a seeded random 10 % of the query groups. (The last 10 % by
            # product id, as before, is not a sample: on UCI retail it stopped the model after
            # 2 to 47 rounds.)
            cut = int(len(groups) * 0.9)
            if cut < 1 or cut >= len(groups):
                raise DualrecError(
                    f"the reranker needs validation queries with a held-out edge among their "
                    f"candidates; found {len(groups)} (the graph is too small)"
                )
            held = np.zeros(len(groups), dtype=bool)
            held[np.random.default_rng(cfg.seed).permutation(len(groups))[cut:]] = True
            row_held = np.repeat(held, groups)  # rows are grouped by query, in order
            train = lgb.Dataset(X[~row_held], y[~row_held].astype(np.float32), group=groups[~held])
            valid = lgb.Dataset(X[row_held], y[row_held].astype(np.float32), group=groups[held], reference=train)
            params = {
                "objective": "lambdarank",
                "learning_rate": cfg.learning_rate,
                "num_leaves": cfg.max_leaf_nodes,
                "min_data_in_leaf": 50,
                "metric": "map",
                "eval_at": [10],
                "lambdarank_truncation_level": 20,
                "verbose": -1,
                "seed": cfg.seed,
                "num_threads": torch.get_num_threads(),
                "deterministic": True,
                "force_row_wise": True,
            }
            self.model = lgb.train(
                params, train, cfg.max_iter, valid_sets=[valid], callbacks=[lgb.early_stopping(20, verbose=False)]
            )
            self.info_["iterations"] = int(self.model.best_iteration)
        else:
            from sklearn.ensemble import HistGradientBoostingClassifier

            self.model = HistGradientBoostingClassifier(
                max_iter=cfg.max_iter,
                learning_rate=cfg.learning_rate,
                max_leaf_nodes=cfg.max_leaf_nodes,
                early_stopping=True,
                validation_fraction=0.1,
                n_iter_no_change=20,
                random_state=cfg.seed,
            )
            self.model.fit(X, y)
            self.info_["iterations"] = int(self.model.n_iter_)

    def _predict(self, F: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise DualrecError("the reranker is not fitted; call fit() first")
        if hasattr(self.model, "decision_function"):  # scikit-learn (objective="binary")
            return self.model.decision_function(F)
        return self.model.predict(F, num_iteration=self.model.best_iteration)

    # ------------------------------------------------------------------ scoring
    def _rows_per_chunk(self) -> int:
        """A chunk holds about a dozen dense (rows x N) arrays: bound the rows by ``chunk_elems``."""
        return max(1, min(self.cfg.chunk, self.cfg.chunk_elems // max(1, self.n)))

    @property
    def num_products(self) -> int:
        """Products scored: the fitted catalogue plus any added since (rows of the embeddings)."""
        return self.n if self.t is None else self.t.shape[0]

    def ranks_alone(self, row: int) -> bool:
        """Whether DAEMON alone ranks for query ``row`` (a product without graph features: new)."""
        if row >= self.n:
            return True
        return bool(self.log_in[row] == 0 and self.log_out[row] == 0 and self.log_sim[row] == 0)

    def score_fn(self, query: torch.Tensor, known_first: bool = False) -> torch.Tensor:
        """Scores ``(Q, N)``: candidates by the pair model, above the rest in the base order.

        A query with no training edge and no co-view pair (a new product) has no graph
        features; the pair model was fitted on products that have them, so such a query is
        ranked by DAEMON alone (measured on cellphones cold queries, DAEMON at 10 epochs: HR@10
        0.044 through the pair model, 0.072 by DAEMON). So is a product added after the fit
        (row ``>= n``).

        ``known_first``: the query's known co-purchases (training out-neighbours) are never
        candidates, since the model learns to find *new* edges. The evaluation excludes them;
        a shop shows them, so with this flag they are ranked above every candidate, in
        DAEMON's (or co-occurrence's) order. So are the other logged ones in :attr:`shown`
        (set by :func:`load_model_reranker`: every co-purchase edge of the dataset, and those
        given to ``add-products``), when it is set.
        """
        q = query.cpu().numpy().astype(np.int64)
        n_all = self.num_products
        if q.size and (q.min() < 0 or q.max() >= n_all):
            raise DualrecError(f"query rows must be in 0..{n_all - 1}")
        out = torch.empty(q.size, n_all)
        qc = np.minimum(q, self.n - 1)  # rows >= n are isolated by definition (masked just below)
        isolated = (q >= self.n) | ((self.log_in[qc] == 0) & (self.log_out[qc] == 0) & (self.log_sim[qc] == 0))
        pos = None
        if self.s is not None and isolated.any():
            iso = np.nonzero(isolated)[0]
            out[torch.from_numpy(iso)] = self.s[torch.from_numpy(q[iso])] @ self.t.T
            pos = torch.from_numpy(np.nonzero(~isolated)[0])
            q = q[pos.numpy()]
        step = self._rows_per_chunk()
        for a in range(0, q.size, step):
            qq = q[a : a + step]
            r, c, F, base = self._chunk(qq)
            rt, ct = torch.from_numpy(r), torch.from_numpy(c)
            z = torch.from_numpy(np.asarray(self._predict(F), dtype=np.float32))
            # everything outside the candidates: below the lowest candidate, in the base order
            zmin = torch.zeros(qq.size).scatter_reduce(0, rt, z, "amin")
            block = base - base.max(1, keepdim=True).values + zmin[:, None] - 1.0
            block[rt, ct] = z
            if known_first:
                kq = (self.known if self.shown is None else self.shown)[qq]
                kr = torch.from_numpy(np.repeat(np.arange(qq.size), np.diff(kq.indptr)))
                kc = torch.from_numpy(kq.indices.astype(np.int64))
                if kc.numel():
                    zmax = torch.zeros(qq.size).scatter_reduce(0, rt, z, "amax")
                    kb = base[kr, kc]
                    kmin = torch.full((qq.size,), math.inf).scatter_reduce(0, kr, kb, "amin")
                    block[kr, kc] = kb - kmin[kr] + zmax[kr] + 1.0
            out[slice(a, a + qq.size) if pos is None else pos[a : a + qq.size]] = block
        return out

    def top_k(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indexes), each (Q, min(k, N - 1)): what a shop shows for query ``rows``:
        known co-purchases first, then the reranked candidates; never the query itself."""
        kk = min(k, self.num_products - 1)
        if kk <= 0:
            return np.zeros((len(rows), 0), np.float32), np.zeros((len(rows), 0), np.int64)
        rows = np.asarray(rows, dtype=np.int64)
        step = max(1, self.cfg.chunk_elems // max(1, self.num_products))  # bounded dense rows
        vals, idx = [], []
        for a in range(0, rows.size, step):
            q = torch.from_numpy(rows[a : a + step])
            v, i = masked_topk(self.score_fn(q, known_first=True), kk, q)
            vals.append(v.numpy())
            idx.append(i.numpy())
        return np.concatenate(vals), np.concatenate(idx)

    # ------------------------------------------------------------------ persistence
    def save(self, writer, prefix: str = RERANK_DIR) -> None:
        """Write the fitted reranker into a model version (:class:`~dualrec.store.VersionWriter`):
        the pair model in LightGBM's text format, everything else as JSON. Nothing is pickled.

        The co-occurrence matrices, embeddings and text features are not stored: they are the
        version's training graph, ``source``/``target`` and ``features.npy``, and :meth:`load`
        takes them back.
        """
        if self.model is None:
            raise DualrecError("the reranker is not fitted; call fit() first")
        if not hasattr(self.model, "model_to_string"):
            raise DualrecError("only the LightGBM reranker (objective='lambdarank') can be saved in a model folder")
        text = self.model.model_to_string(num_iteration=self.model.best_iteration)
        writer.new_path(f"{prefix}/booster.txt").write_text(text)
        writer.save_json(
            f"{prefix}/rerank.json",
            {
                "format": RERANK_FORMAT,
                "config": asdict(self.cfg),
                "n": int(self.n),
                "kinds": self.kinds,
                "has_daemon": self.s is not None,
                "has_text": bool(self._needs_text),
                "info": self.info_,
                "cooccurrence": self.cooc.state(),
            },
        )

    @classmethod
    def load(
        cls,
        version,
        source: torch.Tensor | None,
        target: torch.Tensor | None,
        x: torch.Tensor | None,
        prefix: str = RERANK_DIR,
    ) -> "CandidateReranker":
        """The reranker of a model version (:class:`~dualrec.store.ModelVersion`), with its
        embeddings (which may have gained rows for products added since, see
        :mod:`dualrec.coldstart`) and the text features of its catalogue."""
        import lightgbm as lgb

        from dualrec.split import TRAIN

        state = version.json(f"{prefix}/rerank.json")
        if state.get("format") != RERANK_FORMAT:
            raise DualrecError(
                f"the second stage of version {version.name} has format {state.get('format')!r}; "
                f"this dualrec reads {RERANK_FORMAT}: train the model again"
            )
        n = int(state["n"])
        if state["has_daemon"] != (source is not None):
            raise DualrecError(
                f"the second stage was fitted {'with' if state['has_daemon'] else 'without'} DAEMON embeddings"
            )
        if source is not None and (source.shape != target.shape or source.shape[0] < n):
            raise DualrecError(f"the second stage covers {n} products; the embeddings have {source.shape[0]} rows")
        graph = version.graph()
        if graph.num_products != n:
            raise DualrecError(f"the second stage covers {n} products, the training graph {graph.num_products}")
        train = version.split().mask(TRAIN)
        cooc = Cooccurrence.from_state(graph, train, state["cooccurrence"])
        known = {k: v for k, v in state["config"].items() if k in {f.name for f in fields(RerankConfig)}}
        rr = cls(cooc, source, target, None, graph.cp_src[train], graph.cp_dst[train], RerankConfig(**known))
        if rr.kinds != list(state["kinds"]):
            raise DualrecError("the second stage's path kinds do not match its co-occurrence model")
        try:
            rr.model = lgb.Booster(model_str=version.path(f"{prefix}/booster.txt").read_text())
        except lgb.basic.LightGBMError as e:
            raise DualrecError(f"cannot read the second stage's pair model ({str(e)[:200]})") from e
        rr.info_ = dict(state.get("info", {}))
        rr._needs_text = bool(state["has_text"])
        if rr._needs_text:
            rr.set_text_features(x)
        return rr

    def set_text_features(self, x: torch.Tensor | None) -> None:
        """The (unnormalised) text features of the fitted catalogue, as at fit time."""
        if not self._needs_text:
            return
        if x is None or x.shape[0] < self.n:
            raise DualrecError(f"the reranker needs the text features of its {self.n} products")
        self.x = torch.nn.functional.normalize(torch.as_tensor(x[: self.n]).float(), dim=1)


def ranker_name(reranker: CandidateReranker | None, row: int | None = None) -> str:
    """How a model ranks: ``"two-stage"`` with its second stage, ``"daemon"`` without; with
    ``row``, how that query's list is ranked (a new product's by DAEMON alone)."""
    if reranker is None or (row is not None and reranker.ranks_alone(row)):
        return "daemon"
    return "two-stage"


def fit_two_stage(
    graph,
    train_mask: torch.Tensor,
    val_src: torch.Tensor,
    val_dst: torch.Tensor,
    x: torch.Tensor | None,
    source: torch.Tensor | None,
    target: torch.Tensor | None,
    seed: int = 0,
    cooc: Cooccurrence | None = None,
    config: RerankConfig | None = None,
    log=print,
    progress: bool = False,
) -> CandidateReranker:
    """Fit dualrec's second stage on a graph's training edges and validation edges.

    Co-occurrence is fitted on the training co-purchase edges (and every co-view pair) and tuned
    on the validation edges, unless a fitted ``cooc`` is given; then the reranker learns from the
    same validation edges. ``source``/``target`` ``None`` gives the graph-only control.
    """
    if cooc is None:
        cooc = Cooccurrence(seed=seed).fit(graph, train_mask, val=(val_src, val_dst))
    cfg = config or RerankConfig(seed=seed)
    rr = CandidateReranker(cooc, source, target, x, graph.cp_src[train_mask], graph.cp_dst[train_mask], cfg)
    return rr.fit(val_src, val_dst, log=log, progress=progress)


def load_model_reranker(
    version, source: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray
) -> CandidateReranker | None:
    """The second stage of a model version (:class:`~dualrec.store.ModelVersion`), or ``None``
    when it has none.

    Everything it reads is in the version: the training graph and split, the features of the
    catalogue, and every logged co-purchase edge, which :meth:`CandidateReranker.score_fn`
    puts first (the dataset's, val/test included, and those given to ``add-products``).
    """
    if not version.has_reranker:
        return None
    x = torch.from_numpy(np.asarray(version.features(), dtype=np.float32))
    rr = CandidateReranker.load(version, torch.as_tensor(np.asarray(source)), torch.as_tensor(np.asarray(target)), x)
    src, dst = version.logged_edges("copurchase")
    n_all = rr.num_products
    rr.shown = sp.csr_matrix((np.ones(src.size, dtype=bool), (src, dst)), shape=(n_all, n_all))
    return rr


def _rank_in_row(r: np.ndarray, v: np.ndarray) -> np.ndarray:
    """1-based rank of ``v`` among the entries with the same row ``r`` (``r`` sorted), best = 1.

    Among the candidates, not all products: for a method's own top-k candidates the two agree,
    and the others are ranked after them either way.
    """
    order = np.lexsort((-v, r))
    start = np.searchsorted(r, r[order], side="left")  # r is sorted (np.nonzero order)
    out = np.empty(r.size, dtype=np.float32)
    out[order] = np.arange(r.size) - start + 1
    return out


__all__ = [
    "CandidateReranker",
    "RerankConfig",
    "RERANK_DIR",
    "RERANK_FORMAT",
    "fit_two_stage",
    "load_model_reranker",
    "ranker_name",
]
