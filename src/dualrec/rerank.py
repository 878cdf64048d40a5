"""Second stage: rerank DAEMON's and the graph's candidates with a gradient-boosted pair model.

DAEMON's dual embeddings retrieve by one dot product; co-occurrence path counts
(:mod:`dualrec.cooccurrence`) see exact short paths that a low-dimensional dot product
smooths away. They miss different edges (on Amazon clothing the union of their top-10 lists holds
the held-out target for 0.71 of the edges, each alone for 0.56 and 0.67), so a production
recommender runs both and lets a small model decide per pair:

1. **Candidates** for a query ``u``: the ``n_daemon`` best products by ``s_u . t_v`` (from the
   retrieval index, :mod:`dualrec.index`) and the ``n_graph`` best by the co-occurrence score
   (from ``u``'s own paths, :meth:`~dualrec.cooccurrence.Cooccurrence.paths`, topped up by
   popularity); known out-neighbours and ``u`` itself excluded. Nothing is computed for the
   other products: a query costs the same in a catalogue of 10k or 10M.
2. **Features** of each pair ``(u, v)``: the DAEMON score, its rank and its gap to the query's
   best; the co-occurrence score and rank; each path kind's value (``u -> w -> v``,
   ``u ~ w -> v``, ... see ``KINDS``); the cosine of the text features; log degrees of ``u``
   and ``v``.
3. **Model**: LightGBM LambdaMART (``objective="binary"``: a pointwise scikit-learn
   classifier) fitted on the *validation* edges, whose features are computed on the training
   graph exactly as they are at test time. The query's other candidates are its negatives.
   For the evaluator, which ranks every product, products outside the candidate set keep
   DAEMON's order (co-occurrence's, without DAEMON) below every candidate
   (:meth:`CandidateReranker.score_fn`); a shop's list is :meth:`CandidateReranker.top_k`.

4. **New products** (added after the fit, or catalogue rows flagged with :meth:`~CandidateReranker.mark_new`)
   have no graph features, and the pair model, fitted on targets with purchase history, would
   rank them below every candidate. They get slots instead: up to ``new_slots`` of a query's best
   new products (by text, ordered with DAEMON, :meth:`CandidateReranker._new_for`) take positions
   ``new_position ..`` of its list and the others move down, where their gate score (DAEMON's
   score plus the list's gap, :meth:`CandidateReranker._new_gate`) reaches the
   ``new_min_confidence`` quantile of the validation co-purchases' (a slot costs the known
   products their hits at the list's end, so it goes where a new product is likely related and
   the product it displaces is not).
   Placement happens when a list is ranked, so neither adding products nor changing the slots
   refits anything.

Like every hyper-parameter of the benchmark, the reranker learns from validation edges only;
test edges are never seen. The ``cooccurrence_rerank`` baseline is the same reranker without
the DAEMON candidates and features, so the gain DAEMON brings is measured, not assumed.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, fields

import numpy as np
import scipy.sparse as sp
import torch

from dualrec.cooccurrence import KINDS, Cooccurrence, Paths, _expand, _member, csr_view
from dualrec.graph import DualrecError

#: version of what :meth:`CandidateReranker.save` writes
RERANK_FORMAT = 2
#: the second stage's folder in a model version (written by ``dualrec train``)
RERANK_DIR = "rerank"
#: its IVF index over the catalogue's text (large catalogues), inside RERANK_DIR
TEXT_INDEX_DIR = "text_index"
#: under RERANK_DIR: what the fitted second stage derived from the training graph (graph_arrays)
ARRAYS_DIR = "arrays"
_BUILD_LOCK = threading.Lock()
#: what a new product's gate reads (RerankConfig.new_gate)
GATES = ("daemon", "text", "both")


@dataclass
class RerankConfig:
    n_daemon: int = 100  # candidates from the embedding model
    n_graph: int = 100  # candidates from co-occurrence
    max_iter: int = 300  # boosting rounds (early-stopped on a held-out part of the val queries)
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    neg_per_query: int = 50  # negatives sampled per validation query for fitting (all positives kept)
    chunk: int = 512  # queries per batch of candidates (fit, top_k, the precomputed lists)
    chunk_elems: int = 1 << 24  # score_fn (the evaluator's dense rows): at most this many cells per chunk
    max_fit_queries: int = 50_000  # validation queries the model is fitted on (a seeded sample beyond)
    objective: str = "lambdarank"  # LightGBM LambdaMART, or "binary" (scikit-learn, pointwise)
    seed: int = 0
    # Room for new products (see "New products" in the module docstring): at most ``new_slots``
    # of them in a list, from position ``new_position`` (1-based) on; 0 slots: never.
    new_slots: int = 2
    new_position: int = 9
    new_daemon_weight: float = 0.05  # DAEMON's share of a new product's score (text ties are common)
    new_fetch: int = 50  # new products scored per query (the text-nearest ones)
    # A new product takes a slot only where its gate score (_new_gate: DAEMON's score of the pair
    # plus new_gap_weight times how much weaker the list's last covered place is than its first)
    # reaches this quantile of the validation co-purchases' gate scores: a slot goes where the
    # new product is likely related and the known product it pushes out is unlikely to be.
    # 0: the slots are always filled.
    new_min_confidence: float = 0.2
    new_gap_weight: float = 1.0  # fixed at fit time (the quantiles are read with it)
    # What says "likely related" in the gate: "daemon" (s_u . t_v), "text" (the text cosine of
    # the pair, which reads the same for a new product as for a known one: DAEMON's score of a
    # new target comes from metadata alone and sits below the known targets' it is compared with)
    # or "both" (the sum of the two standardised scores).
    new_gate: str = "daemon"
    # A product without history as the query (a new one): the products nearest to it by text that
    # have logged co-purchases lend it theirs (weighted by text cosine), ranked above DAEMON's
    # order; this many neighbours. 0: DAEMON alone ranks such a list.
    cold_neighbours: int = 20

    def __post_init__(self):
        if not 0.0 <= self.new_min_confidence <= 1.0:
            raise DualrecError(f"new_min_confidence must be in [0, 1] (got {self.new_min_confidence})")
        if self.new_gate not in GATES:
            raise DualrecError(f"new_gate must be one of {', '.join(GATES)} (got {self.new_gate!r})")
        if self.cold_neighbours < 0:
            raise DualrecError(f"cold_neighbours must be >= 0 (got {self.cold_neighbours})")
        if self.new_slots < 0 or self.new_position < 1 or self.new_fetch < 1:
            raise DualrecError(
                f"new_slots must be >= 0, new_position and new_fetch >= 1 "
                f"(got {self.new_slots}, {self.new_position}, {self.new_fetch})"
            )


class CandidateReranker:
    """Reranks the union of embedding and co-occurrence candidates (see the module docstring).

    Args:
        cooc: a fitted :class:`~dualrec.cooccurrence.Cooccurrence` on the training graph.
        source, target: (N, d) DAEMON embeddings (arrays or tensors; memory-mapped arrays are
            read in place), or ``None`` for the graph-only reranker.
        x: (N, F) node features (text, any float dtype, read in place), or ``None``.
        known_src, known_dst: training co-purchase edges: never candidates.
        index: the :class:`~dualrec.index.RetrievalIndex` over ``target`` that finds DAEMON's
            candidates (default: an exact one, built when first needed).

    Every step of a query reads the query's candidates only (about ``n_daemon + n_graph``
    products), never all N: DAEMON's candidates come from the index, co-occurrence's from the
    paths of the query (:meth:`~dualrec.cooccurrence.Cooccurrence.paths`) topped up by
    popularity, and every feature is a gather at the candidates. A query without history (a new
    product) searches the text of the products with history for its neighbours (:meth:`_cold_pool`):
    through the version's IVF text index on a large catalogue, by exact search on a small one.
    """

    def __init__(
        self,
        cooc: Cooccurrence,
        source,
        target,
        x,
        known_src: torch.Tensor,
        known_dst: torch.Tensor,
        config: RerankConfig | None = None,
        index=None,
        stored: dict[str, np.ndarray] | None = None,
    ):
        self.cfg = config or RerankConfig()
        self.cooc = cooc
        self.n = cooc.n
        self.s = self.t = None
        self.index = None
        if source is not None:
            self.set_embeddings(source, target, index)
        self.x = None if x is None else _array(x)
        n = self.n
        if stored is not None:  # what graph_arrays() gave at fit time (known_src/known_dst unused)
            self.known = csr_view(stored, "known", n)
            self.log_in, self.log_out, self.log_sim = stored["log_in"], stored["log_out"], stored["log_sim"]
            self.pop_order = stored["pop_order"]
        else:
            ks, kd = np.asarray(known_src, dtype=np.int64), np.asarray(known_dst, dtype=np.int64)
            self.known = sp.csr_matrix((np.ones(ks.size, dtype=bool), (ks, kd)), shape=(n, n))
            self.known.sum_duplicates()
            self.log_in = np.log1p(np.bincount(kd, minlength=n)).astype(np.float32)
            self.log_out = np.log1p(np.bincount(ks, minlength=n)).astype(np.float32)
            self.log_sim = np.log1p(np.diff(cooc.S.indptr)).astype(np.float32)
            # products by the co-occurrence tie-breaker (popularity), best first: the graph's
            # candidates when the paths of a query reach fewer than n_graph products
            self.pop_order = np.argsort(-cooc._tb, kind="stable")
        self._tb_max = float(cooc._tb.max()) if cooc._tb.size else 0.0
        self.kinds = [k for k in KINDS if k != "cf3" or cooc.cf3_enabled]
        self.model = None
        self.info_: dict = {}
        self.shown = None  # logged co-purchases put first by top_k/score_fn(known_first=True); None: `known`
        self._needs_text = self.x is not None  # whether it was fitted with text features
        self._marked = np.zeros(0, dtype=np.int64)  # catalogue rows flagged new (mark_new)
        self._pool = None  # (rows, is_new mask, faiss index over their text or None): see _new_pool
        self._cold = None  # {logged: (key, (search, CSR, size) or None)}: _cold_pool
        self.text_index = None  # IVF over the catalogue's unit text (build_text_index), or None

    def set_embeddings(self, source, target, index=None) -> None:
        """DAEMON's embeddings (rows ``n..`` are products added after the fit) and the index that
        searches ``target`` (default: an exact one, built when first needed)."""
        s, t = _array(source), _array(target)
        if s.shape != t.shape or s.shape[0] < self.n:
            raise DualrecError(f"the second stage covers {self.n} products; the embeddings have shape {s.shape}")
        if index is not None and index.n != t.shape[0]:
            raise DualrecError(f"the index has {index.n} rows, the embeddings {t.shape[0]}")
        self.s, self.t, self.index = s, t, index
        self._pool = None  # the new products may have changed

    def show_logged(self, src: np.ndarray, dst: np.ndarray) -> None:
        """The logged co-purchases ``src -> dst`` that a shop's lists put first (:attr:`shown`)."""
        n_all = self.num_products
        self.shown = sp.csr_matrix((np.ones(len(src), dtype=bool), (src, dst)), shape=(n_all, n_all))
        self.shown.sort_indices()

    def _index(self):
        if self.index is None:
            with _BUILD_LOCK:  # one exact index, even when threads ask at once
                if self.index is None:
                    from dualrec.index import RetrievalIndex

                    self.index = RetrievalIndex.build(self.t, "exact", source=self.s)
        return self.index

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

    def _excluded(self, q: np.ndarray, exclude=None) -> np.ndarray:
        """Sorted keys ``row * W + product`` (``W`` = :attr:`num_products`) that are never candidates:
        the query, its training out-neighbours and ``exclude[i]`` (rows named by the caller)."""
        W = np.int64(self.num_products)
        Q = q.size
        qc = np.minimum(q, self.n - 1)
        item, j = _expand(self.known.indptr, qc)
        inside = q[item] < self.n  # rows >= n (added later) have no training edges
        parts = [np.arange(Q, dtype=np.int64) * W + q, item[inside] * W + self.known.indices[j[inside]]]
        if exclude is not None:
            for i, e in enumerate(exclude):
                if len(e):
                    parts.append(i * W + np.asarray(e, dtype=np.int64))
        return np.unique(np.concatenate(parts))

    def _chunk(self, q: np.ndarray, exclude=None):
        """Candidates of queries ``q``: (row, col, features, paths), rows sorted, then columns.

        ``paths`` is the queries' :class:`~dualrec.cooccurrence.Paths` (graph scores of other pairs).
        """
        cfg, n = self.cfg, self.n
        q = np.asarray(q, dtype=np.int64)
        Q, W = q.size, np.int64(self.num_products)
        ex = self._excluded(q, exclude)
        paths = self.cooc.paths(np.minimum(q, n - 1) if Q else q, self.kinds)
        if Q and q.max() >= n:  # rows added after the fit reach nothing
            keep = q[paths.row] < n
            paths = Paths(
                paths.row[keep],
                paths.col[keep],
                paths.score[keep],
                paths.linked[keep],
                paths.values[keep],
                paths.kinds,
                paths.n,
            )

        # co-occurrence: the n_graph best products a weighted path reaches, then the most popular
        pk = paths.row * W + paths.col
        ok = paths.linked & ~_member(pk, ex)
        gr, gc, gs = paths.row[ok], paths.col[ok], paths.score[ok]
        top = _rank_in_row(gr, gs) <= cfg.n_graph
        keys = [gr[top] * W + gc[top]]
        have = np.bincount(gr[top], minlength=Q)
        short = np.flatnonzero(have < min(cfg.n_graph, n - 1))
        if short.size:
            n_ex = np.bincount(ex // W, minlength=Q)[short]
            m = int(min(n, 2 * cfg.n_graph + n_ex.max() + 1))
            fr = np.repeat(short, m)
            fk = fr * W + np.tile(self.pop_order[:m], short.size)
            fine = ~_member(fk, ex) & ~_member(fk, keys[0])
            fr, fk = fr[fine], fk[fine]
            nth = np.arange(fr.size) - np.searchsorted(fr, fr)  # position in the row (popularity order)
            keys.append(fk[nth < (cfg.n_graph - have)[fr]])

        # DAEMON: the index's n_daemon best products of the fitted catalogue
        if self.s is not None and Q:
            n_ex = np.bincount(ex // W, minlength=Q)
            # one search for the rows with few exclusions; a row with many (a hub's known
            # co-purchases) is searched on its own, so it does not widen the others' searches
            heavy = n_ex > 4 * cfg.n_daemon
            groups = [np.flatnonzero(~heavy)] + [np.array([i]) for i in np.flatnonzero(heavy)]
            for rows in groups:
                if not rows.size:
                    continue
                fetch = int(min(n, cfg.n_daemon + n_ex[rows].max()))
                _, I = self._index().search(np.asarray(self.s[q[rows]], dtype=np.float32), fetch, below=n)
                dr = np.repeat(rows.astype(np.int64), fetch)
                di = I.reshape(-1)
                dk = dr * W + di
                fine = (di >= 0) & (di < n) & ~_member(dk, ex)
                dr, dk = dr[fine], dk[fine]
                nth = np.arange(dr.size) - np.searchsorted(dr, dr)
                keys.append(dk[nth < cfg.n_daemon])
        ck = np.unique(np.concatenate(keys))
        if self.cfg.new_slots and self.s is not None and self._marked.size:
            ck = ck[~self.is_new(ck % W)]  # flagged new products come through their slots
        r, c = ck // W, ck % W
        return r, c, self._features(q, r, c, paths), paths

    def _features(self, q: np.ndarray, r: np.ndarray, c: np.ndarray, paths: Paths) -> np.ndarray:
        """The pair model's features of the candidate pairs ``(q[r], c)``: gathers at the candidates."""
        Q = q.size
        pos = paths.find(r, c)
        hit = pos >= 0
        g = self.cooc._tb[c].astype(np.float32)
        vals = np.zeros((r.size, len(self.kinds)), dtype=np.float32)
        if hit.any():  # pairs no path reaches keep the tie-breaker and zero path values
            g[hit] = paths.score[pos[hit]]
            vals[hit] = paths.values[pos[hit]]
        feats = [g, np.log1p(_rank_in_row(r, g)), g - _row_max(r, g, Q)[r]]
        for j, k in enumerate(self.kinds):
            feats.append(vals[:, j] / self.cooc.scales_.get(k, 1.0))
        u = q[r]
        feats += [self.log_in[c], self.log_out[c], self.log_sim[c], self.log_in[u], self.log_out[u], self.log_sim[u]]
        if self.x is not None:
            xq = _unit(self.x[q])
            feats.append(_rowdot(xq[r], _unit(self.x[c])))
        if self.s is not None:
            sq, tq = np.asarray(self.s[q], np.float32), np.asarray(self.t[q], np.float32)
            sc, tc = np.asarray(self.s[c], np.float32), np.asarray(self.t[c], np.float32)
            d = _rowdot(sq[r], tc)
            feats += [d, np.log1p(_rank_in_row(r, d)), d - _row_max(r, d, Q)[r]]
            # the other roles of the dual embeddings: v -> u (direction), and u, v as substitutes
            feats += [_rowdot(tq[r], sc), _rowdot(tq[r], tc), _rowdot(sq[r], sc)]
        return np.stack([np.asarray(f, dtype=np.float32) for f in feats], 1)

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
        if self.s is not None:
            self._fit_new_gate(vs, vd, rng)
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

    def _fit_new_gate(self, vs: np.ndarray, vd: np.ndarray, rng, max_queries: int = 2000) -> None:
        """The scale of the new products' gate (:meth:`_new_gate`), read on validation edges: the
        mean and spread of DAEMON's scores of real co-purchases and of the lists' gaps, and the
        quantiles of the co-purchases' gate scores (what ``new_min_confidence`` picks from)."""
        self.info_.pop("new_gate", None)  # a refit's own, or none
        uq = np.unique(vs)
        if uq.size > max_queries:
            uq = np.sort(rng.choice(uq, max_queries, replace=False))
        gap = np.full(self.num_products, np.nan)
        for a in range(0, uq.size, self._rows_per_chunk()):
            q = uq[a : a + self._rows_per_chunk()]
            r, c, z, _ = self._scored_known(q, None, known_first=False)
            gap[q] = self._list_gap(q, r, c, z)
        on = np.isin(vs, uq) & np.isfinite(gap[vs])
        d = _rowdot(np.asarray(self.s[vs[on]], np.float32), np.asarray(self.t[vd[on]], np.float32))
        g = gap[vs[on]]
        if d.size < 2:
            return  # too few to read a scale on: the slots are always filled
        stats = {
            "gap_weight": float(self.cfg.new_gap_weight),  # the quantiles hold for this weight
            "daemon_mean": float(d.mean()),
            "daemon_std": float(d.std()) or 1.0,
            "gap_mean": float(g.mean()),
            "gap_std": float(g.std()) or 1.0,
        }
        cos = None
        if self.x is not None:
            cos = _rowdot(_unit(self.x[vs[on]]), _unit(self.x[vd[on]]))
            stats.update(text_mean=float(cos.mean()), text_std=float(cos.std()) or 1.0)
        self.info_["new_gate"] = stats  # _new_gate reads it
        # the quantiles of every kind of gate, so a serving setting can switch kinds without a refit
        for kind in GATES if cos is not None else ("daemon",):
            score = self._new_gate(d, g, cos, kind)
            key = "quantiles" if kind == "daemon" else f"quantiles_{kind}"
            stats[key] = [round(float(v), 6) for v in np.quantile(score, np.linspace(0, 1, 101))]

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
        # as many threads as torch may use: the server sets 1 (its requests run side by side)
        return self.model.predict(F, num_iteration=self.model.best_iteration, num_threads=torch.get_num_threads())

    # ------------------------------------------------------------------ scoring
    def _rows_per_chunk(self) -> int:
        return max(1, self.cfg.chunk)

    @property
    def num_products(self) -> int:
        """Products ranked: the fitted catalogue plus any added since (rows of the embeddings)."""
        return self.n if self.t is None else self.t.shape[0]

    def ranks_alone(self, row: int) -> bool:
        """Whether DAEMON alone ranks for query ``row`` (a product without graph features: new)."""
        if row >= self.n:
            return True
        return bool(self.log_in[row] == 0 and self.log_out[row] == 0 and self.log_sim[row] == 0)

    def _alone(self, q: np.ndarray) -> np.ndarray:
        """Queries ranked by DAEMON alone (see :meth:`score_fn`): none for the graph-only reranker."""
        if self.s is None:
            return np.zeros(q.size, dtype=bool)
        qc = np.minimum(q, self.n - 1)
        return (q >= self.n) | ((self.log_in[qc] == 0) & (self.log_out[qc] == 0) & (self.log_sim[qc] == 0))

    def _check_rows(self, q: np.ndarray) -> None:
        if q.size and (q.min() < 0 or q.max() >= self.num_products):
            raise DualrecError(f"query rows must be in 0..{self.num_products - 1}")

    def _scored(self, q: np.ndarray, exclude=None, known_first: bool = True, new: bool = True):
        """The pair model's scores of ``q``'s candidates, the query's logged co-purchases above
        them (``known_first``) and its new products at their slots (``new``): ``(row, col, score,
        zmin)`` with rows sorted, ``zmin[i]`` the lowest candidate score of row ``i`` (the new
        products' scores are above ``zmin - 1``)."""
        r, c, z, zmin = self._scored_known(q, exclude, known_first)
        if new and self.cfg.new_slots and self.s is not None:
            r, c, z = self._place_new(q, r, c, z, exclude)
        return r, c, z, zmin

    def _scored_known(self, q: np.ndarray, exclude, known_first: bool):
        r, c, F, paths = self._chunk(q, exclude)
        z = np.asarray(self._predict(F), dtype=np.float32) if r.size else np.zeros(0, np.float32)
        Q = q.size
        zmin = -_row_max(r, -z, Q)
        if not known_first:
            return r, c, z, zmin
        W = np.int64(self.num_products)
        kr, kc = self._logged(q)
        kk = kr * W + kc
        fine = kc != q[kr]
        if exclude is not None:
            ex = np.unique(np.concatenate([[-1]] + [i * W + np.asarray(e, np.int64) for i, e in enumerate(exclude)]))
            fine &= ~_member(kk, ex)
        kr, kc, kk = kr[fine], kc[fine], kk[fine]
        if kk.size:
            cand = r * W + c
            drop = _member(cand, np.unique(kk))  # a logged pair shows as logged, not as a candidate
            r, c, z = r[~drop], c[~drop], z[~drop]
            kb = self._base(q, kr, kc, paths)
            zmax = _row_max(r, z, Q)
            zmax = np.where(np.isfinite(zmax), zmax, 0.0)
            kmin = -_row_max(kr, -kb, Q)
            ks = (kb - kmin[kr] + zmax[kr] + 1.0).astype(np.float32)
            r, c, z = np.concatenate([r, kr]), np.concatenate([c, kc]), np.concatenate([z, ks])
            o = np.lexsort((c, r))
            r, c, z = r[o], c[o], z[o]
        return r, c, z, zmin

    def _logged(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, product) of the logged co-purchases of queries ``q``: :attr:`shown`, else the
        training out-neighbours."""
        if self.shown is not None:
            kr, j = _expand(self.shown.indptr, q)
            return kr, self.shown.indices[j].astype(np.int64)
        inside = np.flatnonzero(q < self.n)
        kr, j = _expand(self.known.indptr, q[inside])
        return inside[kr], self.known.indices[j].astype(np.int64)

    def _base(self, q: np.ndarray, r: np.ndarray, c: np.ndarray, paths) -> np.ndarray:
        """The first stage's score of pairs ``(q[r], c)``: DAEMON's, or co-occurrence's."""
        if self.s is not None:
            return _rowdot(np.asarray(self.s[q], np.float32)[r], np.asarray(self.t[c], np.float32))
        cc = np.minimum(c, self.n - 1)
        pos = paths.find(r, cc)
        out = self.cooc._tb[cc].astype(np.float32)
        out[pos >= 0] = paths.score[pos[pos >= 0]]
        return out

    def score_fn(self, query: torch.Tensor, known_first: bool = False) -> torch.Tensor:
        """Scores ``(Q, N)`` of every product, for the evaluator (which ranks all products): the
        candidates by the pair model, the rest below them in the first stage's order. What a shop
        is shown, :meth:`top_k`, comes from the same candidates and never scores all N.

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
        self._check_rows(q)
        n_all = self.num_products
        out = torch.empty(q.size, n_all)
        alone = self._alone(q)
        if alone.any():
            iso = np.flatnonzero(alone)
            dense = np.asarray(self.s[q[iso]], np.float32) @ self._t32().T
            r, c, v = self._cold_scores(q[iso], logged=known_first)
            if r.size:  # the neighbours' co-purchases above DAEMON's order (as _cold_top_k)
                dense[r, c] = dense.max(1)[r] + 1.0 + v
            out[torch.from_numpy(iso)] = torch.from_numpy(dense)
        rest = np.flatnonzero(~alone)
        step = max(1, min(self._rows_per_chunk(), self.cfg.chunk_elems // max(1, n_all)))
        for a in range(0, rest.size, step):
            pos = rest[a : a + step]
            qq = q[pos]
            r, c, z, zmin = self._scored(qq, known_first=known_first)
            if self.s is not None:
                base = torch.from_numpy(np.asarray(self.s[qq], np.float32) @ self._t32().T)
            else:
                base = self.cooc.score_fn(torch.from_numpy(qq)).float()
            zmin = torch.from_numpy(np.where(np.isfinite(zmin), zmin, 0.0).astype(np.float32))
            # everything outside the candidates: below the lowest candidate, in the base order
            block = base - base.max(1, keepdim=True).values + zmin[:, None] - 1.0
            block[torch.from_numpy(r), torch.from_numpy(c)] = torch.from_numpy(z)
            out[torch.from_numpy(pos)] = block
        return out

    def _t32(self) -> np.ndarray:
        return np.asarray(self.t, dtype=np.float32)

    def top_k(self, rows, k: int, exclude=None, new: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indexes), each (Q, min(k, N - 1)): what a shop shows for query ``rows``:
        logged co-purchases first, then the reranked candidates with the new products at their
        slots (``new``), then (when ``k`` asks for more) the first stage's next best; never the
        query itself nor ``exclude[i]`` (rows). Unfilled slots are index -1 with score -inf. No
        step reads all N products where the version has a text index (:meth:`_cold_pool`)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        self._check_rows(rows)
        n_all = self.num_products
        kk = min(int(k), n_all - 1)
        out_s = np.full((rows.size, max(kk, 0)), -np.inf, dtype=np.float32)
        out_i = np.full((rows.size, max(kk, 0)), -1, dtype=np.int64)
        if kk <= 0 or rows.size == 0:
            return out_s, out_i
        if exclude is not None and len(exclude) != rows.size:
            raise DualrecError("exclude needs one list per query")
        alone = self._alone(rows)
        if alone.any():  # new products: their text neighbours' co-purchases, then DAEMON's order
            iso = np.flatnonzero(alone)
            ex = None if exclude is None else [exclude[i] for i in iso]
            out_s[iso], out_i[iso] = self._cold_top_k(rows[iso], kk, ex)
        rest = np.flatnonzero(~alone)
        step = self._rows_per_chunk()
        for a in range(0, rest.size, step):
            pos = rest[a : a + step]
            q = rows[pos]
            ex = None if exclude is None else [exclude[i] for i in pos]
            r, c, z, zmin = self._scored(q, ex, known_first=True, new=new)
            o = np.lexsort((c, -z, r))  # best first, ties in row order
            r, c, z = r[o], c[o], z[o]
            nth = np.arange(r.size) - np.searchsorted(r, r)
            sel = nth < kk
            out_s[pos[r[sel]], nth[sel]] = z[sel]
            out_i[pos[r[sel]], nth[sel]] = c[sel]
            short = np.flatnonzero(np.bincount(r[sel], minlength=q.size) < kk)
            if short.size:  # k beyond the candidates: the first stage's next best
                self._fill(q, pos, short, r, c, zmin, out_s, out_i, kk, ex)
        return out_s, out_i

    def _fill(self, q, pos, short, r, c, zmin, out_s, out_i, kk, exclude) -> None:
        for i in short.tolist():
            have = c[r == i]
            skip = [have, [] if exclude is None else np.asarray(exclude[i], np.int64)]
            if self.cfg.new_slots and self.s is not None:
                skip.append(self.new_rows())  # new products come through their slots only
            skip = np.concatenate(skip).astype(np.int64)
            need = kk - have.size
            # scores as score_fn gives them: base - (the row's best base) + lowest candidate - 1
            if self.s is not None:
                s, idx = self._index().recommend([q[i]], need, exclude=[skip])
                s, idx = s[0], idx[0]
                best = float(self._index().search(np.asarray(self.s[q[i : i + 1]], np.float32), 1)[0][0, 0])
            else:  # co-occurrence's order: the products its paths reach, then by popularity
                p = self.cooc.paths(q[i : i + 1], [])
                drop = np.append(skip, q[i])
                o = np.argsort(-p.score, kind="stable")
                pc, ps = p.col[o], p.score[o]
                keep = p.linked[o] & ~np.isin(pc, drop)
                pc, ps = pc[keep][:need], ps[keep][:need]
                pop = self.pop_order[: need + drop.size + pc.size + 1]
                pop = pop[~np.isin(pop, np.concatenate([drop, pc]))][: need - pc.size]
                idx = np.concatenate([pc, pop]).astype(np.int64)
                s = np.concatenate([ps, self.cooc._tb[pop]]).astype(np.float32)
                best = float(max(p.score.max() if p.score.size else -np.inf, self._tb_max))
            ok = idx >= 0
            s, idx = s[ok], idx[ok]
            if idx.size:
                z0 = zmin[i] if np.isfinite(zmin[i]) else 0.0
                out_s[pos[i], have.size : have.size + idx.size] = s - best + z0 - 1.0
                out_i[pos[i], have.size : have.size + idx.size] = idx

    # ------------------------------------------------------------------ new products as queries
    def _cold_pool(self, logged: bool = True):
        """(search, co-purchase CSR, number of products searched) over the products with
        co-purchases, or None (no text features, or turned off): ``search(unit_text, k)`` gives
        (cosines, product rows, -1 where none) of the nearest such products by text.

        ``logged``: every logged co-purchase (:meth:`_logged`'s, what a shop shows); otherwise the
        training edges only (the evaluator's :meth:`score_fn`, which must not read held-out
        edges). The version's stored IVF index over the catalogue's text (:attr:`text_index`,
        written at training above ``TEXT_INDEX_FROM`` products) is searched where there is one,
        restricted to those products: no step reads all N. Otherwise an index of those products
        is built on first use, and again when the edges or the catalogue change: exact up to
        200k of them, 8-bit scalar-quantised codes above (a quarter of the memory)."""
        M = self.shown if (logged and self.shown is not None) else self.known
        key = (id(M), None if self.x is None else self.x.shape[0], self.cfg.cold_neighbours > 0, id(self.text_index))
        got = (self._cold or {}).get(logged)
        if got is not None and got[0] == key:
            return got[1]
        with _BUILD_LOCK:
            got = (self._cold or {}).get(logged)
            if got is not None and got[0] == key:  # built by another thread meanwhile
                return got[1]
            pool = None
            if self.x is not None and self.cfg.cold_neighbours > 0:
                has = np.diff(M.indptr) > 0
                has = has[: self.x.shape[0]]
                if has.any() and self.text_index is not None:
                    ti = self.text_index
                    allowed = np.zeros(ti.n, dtype=bool)
                    m = min(ti.n, has.size)
                    allowed[:m] = has[:m]
                    pool = (self._stored_search(ti, allowed), M, int(allowed.sum()))
                elif has.any():
                    pool = (self._built_search(np.flatnonzero(has)), M, int(has.sum()))
            self._cold = {**(self._cold or {}), logged: (key, pool)}
        return pool

    @staticmethod
    def _stored_search(index, allowed: np.ndarray):
        from dualrec.index import RowFilter

        only = RowFilter(allowed)  # built once per pool: a query filters in O(its search)

        def search(xq: np.ndarray, k: int):
            return index.search(xq, k, allowed=only)

        return search

    def _built_search(self, rows: np.ndarray):
        import faiss

        d = self.x.shape[1]
        if rows.size > 200_000:
            index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
            sample = np.random.default_rng(0).choice(rows, min(rows.size, 100_000), replace=False)
            index.train(_unit(self.x[np.sort(sample)]))
        else:
            index = faiss.IndexFlatIP(d)
        for a in range(0, rows.size, 65_536):
            index.add(_unit(self.x[rows[a : a + 65_536]]))

        def search(xq: np.ndarray, k: int):
            cos, j = index.search(xq, k)
            return cos, np.where(j >= 0, rows[np.maximum(j, 0)], -1)

        return search

    def build_text_index(self, log=print) -> None:
        """An IVF index over the catalogue's unit text (:attr:`text_index`): what a new product as
        query searches for its neighbours with history, in time that does not grow with N. IVF,
        not HNSW: text clusters well, and an HNSW graph over millions of wide vectors takes far
        longer to build than IVF's k-means and list assignment (benchmarks/cold_query_scale.py).
        Written into the version by :meth:`save`; its recall against exact search is measured and
        stored (:meth:`~dualrec.index.RetrievalIndex.build`)."""
        from dualrec.index import RetrievalIndex

        if self.x is None:
            raise DualrecError("the second stage has no text features to index")
        # 16-bit unit vectors made a chunk at a time, 16-bit vectors in the index: a float32 copy
        # of the text beside an index of float32 vectors ran a 5M-product training out of memory
        unit = np.empty(self.x.shape, np.float16)
        for a in range(0, self.x.shape[0], 65_536):
            unit[a : a + 65_536] = _unit(self.x[a : a + 65_536])
        self.text_index = RetrievalIndex.build(unit, "ivf", log=log, storage="float16")
        self._cold = None

    def _cold_scores(
        self, q: np.ndarray, exclude=None, logged: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, product, score) for queries ``q`` without history: ``cold_neighbours`` products
        nearest by text (cosine > 0, with logged co-purchases, never the query) each lend their
        logged co-purchases, weighted by the cosine; a product's weight is the sum. Score = that
        weight plus a DAEMON tie-break below 1e-3 (``s_u . t_v`` scaled within the row's products),
        so near-equal weights are ordered by DAEMON. Never the query or ``exclude[i]``.
        ``logged``: see :meth:`_cold_pool`."""
        empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
        pool = self._cold_pool(logged)
        if pool is None or not q.size:
            return empty
        it, c, w = self._lent(q, pool)
        if not it.size:
            return empty
        W = np.int64(self.num_products)
        key, inv = np.unique(it * W + c, return_inverse=True)
        weight = np.bincount(inv, weights=w)
        r, c = key // W, key % W
        drop = c == q[r]
        if exclude is not None:
            ex = [i * W + np.asarray(x, np.int64) for i, x in enumerate(exclude) if len(x)]
            if ex:
                drop |= _member(key, np.unique(np.concatenate(ex)))
        r, c, weight = r[~drop], c[~drop], weight[~drop]
        if not r.size:
            return empty
        d = _rowdot(np.asarray(self.s[q], np.float32)[r], np.asarray(self.t[c], np.float32)).astype(np.float64)
        lo, hi = -_row_max(r, -d, q.size), _row_max(r, d, q.size)
        tie = 1e-3 * (d - lo[r]) / np.maximum(hi[r] - lo[r], 1e-12) * 0.999
        return r, c, weight + tie

    def _lent(self, q: np.ndarray, pool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query position, product, cosine) for every co-purchase a neighbour lends to ``q``:
        its ``cold_neighbours`` text-nearest products of ``pool`` (cosine > 0, never the query)."""
        search, M, size = pool
        K = int(min(self.cfg.cold_neighbours, size))
        ok_q = np.flatnonzero(q < self.x.shape[0])
        if not ok_q.size:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
        cos, nb = search(_unit(self.x[q[ok_q]]), K + 1)  # one more: the query may be among them
        good = (nb >= 0) & (cos > 0) & (nb != q[ok_q][:, None])
        good &= np.cumsum(good, 1) <= K
        pr, pc = np.nonzero(good)
        it, e = _expand(M.indptr, nb[pr, pc])
        return ok_q[pr[it]].astype(np.int64), M.indices[e].astype(np.int64), cos[pr, pc][it].astype(np.float64)

    def _cold_top_k(self, q: np.ndarray, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`top_k` for queries without history: :meth:`_cold_scores`' products first, best
        first, then DAEMON's from the retrieval index (scores: those products' above DAEMON's)."""
        base_s, base_i = self._index().recommend(q, k, exclude=exclude)
        r, c, v = self._cold_scores(q, exclude)
        if not r.size:
            return base_s, base_i
        top = np.where(np.isfinite(base_s[:, 0]), base_s[:, 0], 0.0) if k else np.zeros(q.size)
        z = (top[r] + 1.0 + v).astype(np.float32)
        ok = base_i >= 0
        br = np.repeat(np.arange(q.size), k)[ok.reshape(-1)]
        bc, bz = base_i[ok], base_s[ok]
        W = np.int64(self.num_products)
        dup = _member(br * W + bc, np.unique(r * W + c))
        r2, c2, z2 = np.concatenate([r, br[~dup]]), np.concatenate([c, bc[~dup]]), np.concatenate([z, bz[~dup]])
        o = np.lexsort((c2, -z2, r2))
        r2, c2, z2 = r2[o], c2[o], z2[o]
        nth = np.arange(r2.size) - np.searchsorted(r2, r2)
        sel = nth < k
        out_s = np.full((q.size, k), -np.inf, dtype=np.float32)
        out_i = np.full((q.size, k), -1, dtype=np.int64)
        out_s[r2[sel], nth[sel]], out_i[r2[sel], nth[sel]] = z2[sel], c2[sel]
        return out_s, out_i

    def cold_reasons(self, query: int, items) -> dict[int, str]:
        """Why a product without history (``query``) gets ``items`` from its text neighbours: how
        many of them bought each, and the closest one's similarity (items lent by none: absent)."""
        pool = self._cold_pool()
        if pool is None:
            return {}
        _, c, w = self._lent(np.array([query], dtype=np.int64), pool)
        out = {
            int(v): (int((c == v).sum()), float(w[c == v].max()))
            for v in np.intersect1d(c, np.asarray(items, dtype=np.int64).reshape(-1)).tolist()
        }
        return {
            v: f"bought after {n} product{'s' if n > 1 else ''} with a similar description (text similarity {b:.2f})"
            for v, (n, b) in out.items()
        }

    # ------------------------------------------------------------------ new products
    def mark_new(self, rows) -> None:
        """Flag catalogue rows (``< n``) as new products (the cold-start benchmark's unseen ones).
        With slots (``new_slots > 0``) they reach a list only through them, never as ordinary
        candidates. Products added after the fit (rows ``>= n``) always are new."""
        rows = np.unique(np.asarray(rows, dtype=np.int64).reshape(-1))
        if rows.size and (rows.min() < 0 or rows.max() >= self.n):
            raise DualrecError(f"new catalogue rows must be in 0..{self.n - 1}")
        self._marked, self._pool = rows, None

    def new_rows(self) -> np.ndarray:
        """Every new product's row: the flagged catalogue rows, then the rows added since the fit."""
        return np.concatenate([self._marked, np.arange(self.n, self.num_products, dtype=np.int64)])

    def with_config(self, **changes) -> "CandidateReranker":
        """The same fitted reranker with other serving settings (e.g. ``new_slots``): a shallow
        copy that shares the pair model and the arrays."""
        import copy
        from dataclasses import replace

        other = copy.copy(self)
        other.cfg = replace(self.cfg, **changes)
        return other

    def known_top_k(self, rows, k: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`top_k` without the new-product slots: what a version stores (:mod:`dualrec.lists`);
        :meth:`with_new` adds the slots when a stored list is served."""
        return self.top_k(rows, k, new=False)

    def with_new(self, rows, scores: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stored lists ``(scores, items)`` (Q, k) (:meth:`known_top_k`) with the new products at
        their slots, as :meth:`top_k` gives them. A query ranked by DAEMON alone (a product
        without history) keeps its list: the slots belong to the two-stage ranking."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not (self.cfg.new_slots and self.s is not None and self.new_rows().size and rows.size):
            return scores, items
        two = np.flatnonzero(~self._alone(rows))
        out_s, out_i = scores.copy(), items.copy()
        if not two.size:
            return out_s, out_i
        k = items.shape[1]
        ok = (items[two] >= 0) & ~self.is_new(np.maximum(items[two], 0))  # a new product only in its slot
        r = np.repeat(np.arange(two.size, dtype=np.int64), k)[ok.reshape(-1)]
        r, c, z = self._place_new(rows[two], r, items[two][ok].astype(np.int64), scores[two][ok].astype(np.float32))
        o = np.lexsort((c, -z, r))
        r, c, z = r[o], c[o], z[o]
        nth = np.arange(r.size) - np.searchsorted(r, r)
        sel = nth < k
        out_s[two], out_i[two] = -np.inf, -1
        out_s[two[r[sel]], nth[sel]] = z[sel]
        out_i[two[r[sel]], nth[sel]] = c[sel]
        return out_s, out_i

    def is_new(self, items) -> np.ndarray:
        """Whether each product row is a new one (:meth:`new_rows`)."""
        return self._new_pool()[1][np.asarray(items, dtype=np.int64)]

    def _new_pool(self):
        """(rows, is_new (num_products,) bool, faiss index over their unit text vectors or None).

        Rebuilt when products were added: exact inner-product search over the new products only
        (they are few next to the catalogue, and the pool changes with every ``add-products``)."""
        pool = self._pool
        if pool is not None and pool[1].size == self.num_products:
            return pool
        with _BUILD_LOCK:
            rows = self.new_rows()
            is_new = np.zeros(self.num_products, dtype=bool)
            is_new[rows] = True
            index = None
            if self.x is not None and rows.size and self.x.shape[0] >= self.num_products:
                import faiss

                index = faiss.IndexFlatIP(self.x.shape[1])
                index.add(_unit(self.x[rows]))
            self._pool = pool = (rows, is_new, index)
        return pool

    def _new_for(self, q: np.ndarray, exclude=None, gap=None) -> tuple[np.ndarray, np.ndarray]:
        """The ``new_slots`` best new products for each query (``(Q, new_slots)`` rows, -1 where
        none): the ``new_fetch`` nearest by text, ordered by text cosine plus ``new_daemon_weight``
        times DAEMON's standardised score among them; only those whose gate score
        (:meth:`_new_gate`, with the query lists' ``gap``, :meth:`_list_gap`; the mean gap when
        ``None``) reaches :meth:`_new_threshold`; never the query, its logged co-purchases or
        ``exclude[i]``. Without text features DAEMON alone orders the whole pool."""
        cfg = self.cfg
        rows, _, index = self._new_pool()
        m = cfg.new_slots
        out = np.full((q.size, m), -1, dtype=np.int64)
        if not rows.size or not m or not q.size or (index is None and self.s is None):
            return out
        fetch = int(min(rows.size, cfg.new_fetch + m))
        cos = None
        if index is not None:
            cos, j = index.search(_unit(self.x[q]), fetch)
            ok = j >= 0
            cand = np.where(ok, rows[np.maximum(j, 0)], -1)
            score = np.where(ok, cos, -np.inf).astype(np.float32)
        else:
            cand = np.broadcast_to(rows, (q.size, rows.size)).copy()
            score = np.zeros(cand.shape, dtype=np.float32)
        if self.s is not None:
            tc = np.asarray(self.t[np.maximum(cand, 0).reshape(-1)], np.float32).reshape(*cand.shape, -1)
            d = np.einsum("qd,qkd->qk", np.asarray(self.s[q], np.float32), tc)
            if index is None:
                score = d
            else:
                mu = np.nanmean(np.where(cand >= 0, d, np.nan), 1, keepdims=True)
                sd = np.nanstd(np.where(cand >= 0, d, np.nan), 1, keepdims=True)
                score = score + cfg.new_daemon_weight * (d - mu) / np.maximum(sd, 1e-6)
            kind = self._gate_kind() if cos is not None else "daemon"
            thr = self._new_threshold(kind)
            if thr > -np.inf:
                g = self._new_gate(d, None if gap is None else np.asarray(gap, np.float64)[:, None], cos, kind)
                score = np.where(g >= thr, score, -np.inf)
        W = np.int64(self.num_products)
        kr, kc = self._logged(q)
        ex = [np.arange(q.size, dtype=np.int64) * W + q, kr * W + kc]
        if exclude is not None:
            ex += [i * W + np.asarray(e, np.int64) for i, e in enumerate(exclude) if len(e)]
        row = np.repeat(np.arange(q.size, dtype=np.int64), cand.shape[1])
        bad = (cand.reshape(-1) < 0) | _member(row * W + cand.reshape(-1), np.unique(np.concatenate(ex)))
        score = np.where(bad.reshape(cand.shape), -np.inf, score)
        top = np.argsort(-score, axis=1, kind="stable")[:, :m]
        got = np.take_along_axis(cand, top, 1)
        fine = np.isfinite(np.take_along_axis(score, top, 1))
        out[:, : got.shape[1]] = np.where(fine, got, -1)
        return out

    def _gate_kind(self) -> str:
        """The gate in use: ``cfg.new_gate`` where the fit recorded its scale (a second stage fitted
        without text features, or before the text gate existed, has DAEMON's only)."""
        kind = self.cfg.new_gate
        st = self.info_.get("new_gate", {})
        return kind if kind == "daemon" or f"quantiles_{kind}" in st else "daemon"

    def _new_gate(self, d: np.ndarray, gap, cos=None, kind: str | None = None) -> np.ndarray:
        """The gate score of new products with DAEMON scores ``d`` and text cosines ``cos`` in lists
        with gaps ``gap`` (:meth:`_list_gap`; ``None``: the mean gap), each standardised on the
        validation edges: ``z(d)`` (gate ``"daemon"``), ``z(cos)`` (``"text"``) or their sum
        (``"both"``), plus ``new_gap_weight * z(gap)``. A high score says the new product is likely
        related; a wide gap says the place it takes holds a product the pair model is far less
        sure of than of its first (that is where a slot costs the known products least)."""
        st = self.info_["new_gate"]
        kind = kind or self._gate_kind()
        out = 0.0
        if kind in ("daemon", "both"):
            out = out + (np.asarray(d, np.float64) - st["daemon_mean"]) / st["daemon_std"]
        if kind in ("text", "both"):
            out = out + (np.asarray(cos, np.float64) - st["text_mean"]) / st["text_std"]
        if gap is not None:
            z = (np.asarray(gap, np.float64) - st["gap_mean"]) / st["gap_std"]
            out = out + st.get("gap_weight", self.cfg.new_gap_weight) * np.nan_to_num(z, nan=0.0)
        return out

    def _new_threshold(self, kind: str | None = None) -> float:
        """The gate score a new product needs for a slot: the ``new_min_confidence`` quantile of
        the validation co-purchases' gate scores (``-inf`` with 0, or for a second stage fitted
        before the gate was recorded)."""
        kind = kind or self._gate_kind()
        qs = self.info_.get("new_gate", {}).get("quantiles" if kind == "daemon" else f"quantiles_{kind}")
        if not self.cfg.new_min_confidence or not qs:
            return -np.inf
        return float(np.interp(self.cfg.new_min_confidence, np.linspace(0.0, 1.0, len(qs)), qs))

    def _list_gap(self, q: np.ndarray, r: np.ndarray, c: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Per query of a scored list ``(r, c, z)``: the pair model's score of its best candidate
        minus that of the candidate at the last place the slots cover (``new_position +
        new_slots - 1``, or the list's last); the query's logged co-purchases (listed first by
        :meth:`top_k`) are not candidates and are left out. NaN for an empty list."""
        W = np.int64(self.num_products)
        kr, kc = self._logged(q)
        cand = ~_member(r * W + c, np.unique(kr * W + kc)) if kr.size else np.ones(r.size, dtype=bool)
        r, z = r[cand], z[cand].astype(np.float64)
        o = np.lexsort((-z, r))
        r, z = r[o], z[o]
        gap = np.full(q.size, np.nan)
        if not r.size:
            return gap
        first = np.searchsorted(r, np.arange(q.size))
        count = np.bincount(r, minlength=q.size)
        at = first + np.minimum(count, self.cfg.new_position + max(self.cfg.new_slots, 1) - 1) - 1
        has = count > 0
        gap[has] = z[first[has]] - z[at[has]]
        return gap

    def _place_new(self, q, r, c, z, exclude=None):
        """Add each query's new products to its scored list ``(r, c, z)`` (rows sorted) with scores
        that put them at positions ``new_position, new_position + 1, ...`` (after the whole list
        when it is shorter), between the scores of their neighbours. Where those neighbours tie,
        the entries from ``new_position`` on are lowered by a small step first, so the new
        products' positions are exact (their order among themselves does not change)."""
        gap = self._list_gap(q, r, c, z) if self._new_threshold() > -np.inf else None
        new = self._new_for(q, exclude, gap)
        if not new.size or (new < 0).all():
            return r, c, z
        Q, m, p = q.size, new.shape[1], self.cfg.new_position - 1
        o = np.lexsort((c, -z, r))
        rs, zs = r[o], z[o].astype(np.float64)
        nth = np.arange(rs.size) - np.searchsorted(rs, rs)
        above = np.full(Q, np.nan)  # the score the new products go below (nan: they go first)
        below = np.full(Q, np.nan)  # ... and above (nan: the list is shorter than new_position)
        above[rs[nth == p - 1]] = zs[nth == p - 1]
        below[rs[nth == p]] = zs[nth == p]
        last = np.full(Q, np.nan)
        if rs.size:
            ends = np.r_[np.flatnonzero(np.diff(rs)), rs.size - 1]
            last[rs[ends]] = zs[ends]
        step = np.arange(1, m + 1) / (m + 1)
        # between the entries at p - 1 and p; above the first for p = 0; after a shorter list's last
        hi = np.where(np.isnan(above), below + 1.0, above)
        lo = below
        short = np.isnan(below)
        hi[short] = np.nan_to_num(last[short], nan=0.0)
        lo[short] = hi[short] - 1.0
        tie = ~short & (hi - lo < 1e-4 * (1.0 + np.abs(hi)))
        if tie.any():
            delta = 1e-3 * (1.0 + np.abs(hi))
            z = z.copy()
            moved = o[(nth >= p) & tie[rs]]
            z[moved] = (z[moved] - delta[r[moved]]).astype(z.dtype)
            lo = np.where(tie, hi - delta, lo)
        nz = (hi[:, None] - step[None, :] * (hi - lo)[:, None]).astype(np.float32)
        keep = new >= 0
        nr = np.repeat(np.arange(Q, dtype=np.int64), m)[keep.reshape(-1)]
        r2, c2, z2 = np.concatenate([r, nr]), np.concatenate([c, new[keep]]), np.concatenate([z, nz[keep]])
        o = np.lexsort((c2, r2))
        return r2[o], c2[o], z2[o]

    # ------------------------------------------------------------------ persistence
    def graph_arrays(self) -> dict[str, np.ndarray]:
        """Everything the fitted second stage derived from the training graph (co-occurrence's
        matrices, the known pairs, degrees, the popularity order) as plain arrays: :meth:`load`
        maps them from the model folder, so a served model needs neither the graph nor a private
        copy of them per worker."""
        k = self.known
        k.sum_duplicates()
        return {f"cooc.{name}": a for name, a in self.cooc.arrays().items()} | {
            "known.indptr": k.indptr,
            "known.indices": k.indices,
            "known.data": k.data,
            "log_in": self.log_in,
            "log_out": self.log_out,
            "log_sim": self.log_sim,
            "pop_order": self.pop_order,
        }

    def save(self, writer, prefix: str = RERANK_DIR) -> None:
        """Write the fitted reranker into a model version (:class:`~dualrec.store.VersionWriter`):
        the pair model in LightGBM's text format, everything else as JSON. Nothing is pickled.

        What it derived from the training graph goes into ``arrays/`` (:meth:`graph_arrays`); the
        embeddings and text features are not stored again: they are the version's
        ``source``/``target`` and ``features.npy``, and :meth:`load` takes them back.
        """
        if self.model is None:
            raise DualrecError("the reranker is not fitted; call fit() first")
        if not hasattr(self.model, "model_to_string"):
            raise DualrecError("only the LightGBM reranker (objective='lambdarank') can be saved in a model folder")
        text = self.model.model_to_string(num_iteration=self.model.best_iteration)
        writer.new_path(f"{prefix}/booster.txt").write_text(text)
        if self.text_index is not None:
            from dualrec.index import META_FILE

            self.text_index.save(writer.new_path(f"{prefix}/{TEXT_INDEX_DIR}/{META_FILE}").parent)
        for name, a in self.graph_arrays().items():
            writer.save_array(f"{prefix}/{ARRAYS_DIR}/{name}.npy", a)
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
        x,
        prefix: str = RERANK_DIR,
        index=None,
    ) -> "CandidateReranker":
        """The reranker of a model version (:class:`~dualrec.store.ModelVersion`), with its
        embeddings (which may have gained rows for products added since, see
        :mod:`dualrec.coldstart`), the text features of its catalogue and (optional) the
        retrieval index over ``target``."""
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
        known = {k: v for k, v in state["config"].items() if k in {f.name for f in fields(RerankConfig)}}
        # a folder from before these settings keeps the ranking it was fitted and stored with
        known.setdefault("cold_neighbours", 0)
        known.setdefault("new_min_confidence", 0.0)
        known.setdefault("new_gate", "daemon")
        cfg = RerankConfig(**known)
        if version.has(f"{prefix}/{ARRAYS_DIR}/pop_order.npy"):
            # memory-mapped: the server's workers share one copy (graph_arrays)
            folder = f"{prefix}/{ARRAYS_DIR}/"
            stored = {
                rel[len(folder) : -len(".npy")]: version.array(rel, mmap=True)
                for rel in sorted(version.files)
                if rel.startswith(folder) and rel.endswith(".npy")
            }
            cooc_arrays = {k[len("cooc.") :]: v for k, v in stored.items() if k.startswith("cooc.")}
            try:
                cooc = Cooccurrence.from_arrays(state["cooccurrence"], cooc_arrays)
                rr = cls(cooc, source, target, None, None, None, cfg, index, stored=stored)
            except (KeyError, ValueError) as e:
                raise DualrecError(f"the second stage's stored arrays are incomplete or damaged ({e})") from e
            if cooc.n != n or len(rr.pop_order) != n:
                raise DualrecError(f"the second stage covers {n} products; its stored arrays {cooc.n}")
        else:  # a folder from before the arrays were stored: rebuilt from the training graph
            graph = version.graph(["id"])  # the edges; the catalogue's text is not needed here
            if graph.num_products != n:
                raise DualrecError(f"the second stage covers {n} products, the training graph {graph.num_products}")
            train = version.split().mask(TRAIN)
            cooc = Cooccurrence.from_state(graph, train, state["cooccurrence"])
            rr = cls(cooc, source, target, None, graph.cp_src[train], graph.cp_dst[train], cfg, index)
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
        from dualrec.index import INDEX_FILE, RetrievalIndex

        if rr.x is not None and version.has(f"{prefix}/{TEXT_INDEX_DIR}/{INDEX_FILE}"):
            # memory-mapped: the server's workers share it
            ti = RetrievalIndex.load(version.path(f"{prefix}/{TEXT_INDEX_DIR}/{INDEX_FILE}").parent, mmap=True)
            if ti.n != n or ti.dim != rr.x.shape[1]:
                raise DualrecError(
                    f"the second stage's text index has {ti.n} rows of dimension {ti.dim}; "
                    f"the catalogue {n} of {rr.x.shape[1]}: train the model again"
                )
            rr.text_index = ti
        return rr

    def set_text_features(self, x) -> None:
        """The text features of the fitted catalogue, as at fit time (read in place: a
        memory-mapped array stays on disk; rows are normalised when gathered)."""
        if not self._needs_text:
            return
        if x is None or x.shape[0] < self.n:
            raise DualrecError(f"the reranker needs the text features of its {self.n} products")
        self.x, self._pool, self._cold = _array(x), None, None


def ranker_name(reranker: CandidateReranker | None, row: int | None = None) -> str:
    """How a model ranks: ``"two-stage"`` with its second stage, ``"daemon"`` without; with
    ``row``, how that query's list is ranked (a new product's: ``"neighbours"``, its text
    neighbours' co-purchases then DAEMON's order, or DAEMON's alone without text features)."""
    if reranker is None:
        return "daemon"
    if row is not None and reranker.s is not None and reranker.ranks_alone(row):
        return "neighbours" if reranker._cold_pool() is not None else "daemon"
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
    index=None,
) -> CandidateReranker:
    """Fit dualrec's second stage on a graph's training edges and validation edges.

    Co-occurrence is fitted on the training co-purchase edges (and every co-view pair) and tuned
    on the validation edges, unless a fitted ``cooc`` is given; then the reranker learns from the
    same validation edges. ``source``/``target`` ``None`` gives the graph-only control.
    """
    if cooc is None:
        cooc = Cooccurrence(seed=seed).fit(graph, train_mask, val=(val_src, val_dst))
    cfg = config or RerankConfig(seed=seed)
    rr = CandidateReranker(cooc, source, target, x, graph.cp_src[train_mask], graph.cp_dst[train_mask], cfg, index)
    return rr.fit(val_src, val_dst, log=log, progress=progress)


def load_model_reranker(version, source, target, index=None) -> CandidateReranker | None:
    """The second stage of a model version (:class:`~dualrec.store.ModelVersion`), or ``None``
    when it has none.

    Everything it reads is in the version: the training graph and split, the features of the
    catalogue, and every logged co-purchase edge, which :meth:`CandidateReranker.score_fn`
    puts first (the dataset's, val/test included, and those given to ``add-products``).
    """
    if not version.has_reranker:
        return None
    x = version.features(mmap=True)
    rr = CandidateReranker.load(version, source, target, x, index=index)
    rr.show_logged(*version.logged_edges("copurchase"))
    return rr


def _array(a) -> np.ndarray:
    """A float array read in place where possible (a tensor's memory, a memory-mapped file)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        a = (a if a.dtype in (torch.float16, torch.float32) else a.float()).numpy()
    a = np.asarray(a)
    if a.dtype not in (np.float16, np.float32):
        a = a.astype(np.float32)
    return a


def _unit(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def _row_max(r: np.ndarray, v: np.ndarray, rows: int) -> np.ndarray:
    """Largest ``v`` per row ``r`` (``-inf`` for a row without entries)."""
    out = np.full(rows, -np.inf, dtype=np.float64)
    np.maximum.at(out, r, v)
    return out


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
