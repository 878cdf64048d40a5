"""Item-item co-occurrence on the training graph (SAR / implicit / RP3beta style): a baseline of
the benchmark, and the graph half of the second stage (:mod:`dualrec.rerank` reads its
:meth:`Cooccurrence.kind_rows`, :meth:`Cooccurrence.score_fn` and :attr:`Cooccurrence.S`).

Score(u -> v) is a weighted count of short paths from ``u`` to ``v`` in the training graph
(``A`` = training co-purchase edges, directed; ``S`` = co-view pairs, symmetric):

============  ==================  ==============================================================
kind          path                meaning
============  ==================  ==============================================================
``direct``    u -> v              a training out-edge (fixed weight 1; excluded at evaluation)
``reverse``   u <- v              v -> u was bought (reciprocal pairs are common)
``sim``       u ~ v               co-viewed (a substitute)
``cp2``       u -> w -> v         co-purchase of a co-purchase
``sim_cp``    u ~ w -> v          co-view, then co-purchase (what buyers of a substitute bought)
``cp_sim``    u -> w ~ v          co-purchase, then co-view (substitutes of what was bought)
``sibling``   u <- x -> v         bought after the same product (SAR basket co-occurrence)
``cotarget``  u -> w <- v         lead to the same product
``cf3``       u -> w <- x -> v    item-based CF: x shares an out-neighbour with u (3 hops)
============  ==================  ==============================================================

Every hop matrix is row-normalised by the degree of its start node to the power ``gamma``
(0 = raw counts, 0.5 = cosine-like, 1 = random walk), every kind is rescaled so its mean
non-zero entry (on the tuning queries) is 1, and the sum is divided by the target's training
in-degree to the power ``alpha`` (0 = none, 0.5, 1 = lift-like; "RP3beta"). A tiny popularity
term ``eps * in-degree`` breaks ties (and ranks products no path reaches).

``gamma``, ``alpha`` and the kind weights are chosen on validation MRR@10 (the ``val`` edges
given to :meth:`Cooccurrence.fit`) with a small grid and coordinate ascent; without ``val``
the defaults are used. Everything is scipy.sparse: rows of a query chunk times a sparse
matrix, never a dense N x N matrix. ``cf3`` is skipped when its rows would be too dense.
:meth:`Cooccurrence.paths` gives the second stage each query's reachable products with every
kind's value, at a cost that follows the query's paths rather than the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from dualrec.graph import ProductGraph

KINDS = ("reverse", "sim", "cp2", "sim_cp", "cp_sim", "sibling", "cotarget", "cf3")
#: the (row-normalised) matrices each path kind multiplies, in order ("direct": u -> v itself)
_HOPS = {
    "direct": ("An",),
    "reverse": ("ATn",),
    "sim": ("Sn",),
    "cp2": ("An", "An"),
    "sim_cp": ("Sn", "An"),
    "cp_sim": ("An", "Sn"),
    "sibling": ("ATn", "An"),
    "cotarget": ("An", "ATn"),
    "cf3": ("An", "ATn", "An"),
}
GAMMAS = (0.0, 0.5, 1.0)
ALPHAS = (0.0, 0.5, 1.0)
WEIGHTS = (0.0, 0.25, 1.0, 4.0)


def _csr(row: np.ndarray, col: np.ndarray, w: np.ndarray, n: int) -> sp.csr_matrix:
    m = sp.csr_matrix((w.astype(np.float32), (row, col)), shape=(n, n), dtype=np.float32)
    m.sum_duplicates()
    return m


#: the matrices a fitted scorer reads (:meth:`Cooccurrence.arrays`)
_SERVED = ("An", "ATn", "Sn", "_R2")


def csr_view(arrays: dict[str, np.ndarray], name: str, n: int) -> sp.csr_matrix:
    """The (n x n) CSR matrix stored as ``name.data`` / ``.indices`` / ``.indptr``, without a copy
    (scipy keeps arrays of a valid index dtype). Its indices are checked against ``n``: scipy's
    C loops do not check them, so a damaged file would read out of bounds."""
    parts = (arrays[f"{name}.data"], arrays[f"{name}.indices"], arrays[f"{name}.indptr"])
    m = sp.csr_matrix(parts, shape=(n, n), copy=False)
    m.check_format(full_check=True)
    m.has_canonical_format = True  # stored canonical; a read-only array must not be re-sorted
    return m


def _row_norm(m: sp.csr_matrix, gamma: float) -> sp.csr_matrix:
    """D^-gamma M (D = row sums); rows without entries stay empty."""
    if gamma == 0:
        return m
    deg = np.asarray(m.sum(1)).ravel()
    scale = np.zeros_like(deg)
    ok = deg > 0
    scale[ok] = deg[ok] ** -gamma
    return (sp.diags(scale.astype(np.float32)) @ m).tocsr()


def _expand(ptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For CSR row pointers ``ptr`` and one row per item: (item of each entry, entry index)."""
    starts, lens = ptr[rows], ptr[rows + 1] - ptr[rows]
    item = np.repeat(np.arange(rows.size), lens)
    offset = np.arange(item.size) - np.repeat(np.cumsum(lens) - lens, lens)
    return item, np.repeat(starts, lens) + offset


def _hop(m: sp.csr_matrix, item: np.ndarray, rows: np.ndarray, w: np.ndarray | None):
    """One hop along ``m`` from ``rows`` (one per path, ``item`` = its query, ``w`` = its value so
    far): (query, reached column, value) per extended path."""
    it, j = _expand(m.indptr, rows)
    val = m.data[j] if w is None else w[it] * m.data[j]
    return item[it], m.indices[j].astype(np.int64), val


@dataclass
class Paths:
    """What :meth:`Cooccurrence.paths` found for a batch of queries: one entry per (query,
    product) pair that a path reaches, sorted by query then product."""

    row: np.ndarray  # position of the query in the batch
    col: np.ndarray  # product reached
    score: np.ndarray  # the combined co-occurrence score (as :meth:`Cooccurrence.score_fn`)
    linked: np.ndarray  # whether a path with a weight reaches it (else its score is the tie-breaker)
    values: np.ndarray  # (entries, kinds): each kind's value (unscaled)
    kinds: list[str]
    n: int  # products (columns)

    def find(self, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        """Entry of each (row, col) pair, -1 where no path reaches it."""
        n = np.int64(self.n)
        keys = self.row * n + self.col
        want = np.asarray(row, dtype=np.int64) * n + np.asarray(col, dtype=np.int64)
        if keys.size == 0:
            return np.full(want.size, -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(keys, want), keys.size - 1)
        return np.where(keys[pos] == want, pos, -1)


def _member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if sorted_keys.size == 0:
        return np.zeros(keys.size, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return sorted_keys[pos] == keys


class SparseRanker:
    """``(n_greater, n_equal)`` per held-out edge, as :meth:`RankingEvaluator.ranks` would give them,
    for scores ``P[r, v] + tb[v]`` (float32) with ``P`` sparse (rows = queries ``uq``, sorted) and
    ``tb`` a dense (N,) tie-breaker.

    Candidates: all products except the query, the ``ex_*`` pairs and the other held-out targets
    of the same query. Cost per call O(nnz(P) + #exclusions + N log N) instead of O(Q * N):
    products outside a row's support all score ``tb[v]`` and are counted from ``tb`` sorted once.
    The exclusions are prepared once, so tuning loops call :meth:`ranks` cheaply.
    """

    def __init__(
        self,
        uq: np.ndarray,
        src: np.ndarray,
        dst: np.ndarray,
        ex_src: np.ndarray,
        ex_dst: np.ndarray,
        n: int,
        max_expand: int = 1 << 24,
    ):
        self.uq, self.src, self.dst, self.n, self.max_expand = uq, src, dst, int(n), int(max_expand)
        R = uq.size
        self.r_edge = np.searchsorted(uq, src).astype(np.int64)
        keep = np.isin(ex_src, uq)
        self.x_keys = np.unique(
            np.concatenate(
                [
                    np.arange(R, dtype=np.int64) * n + uq,  # the query itself
                    np.searchsorted(uq, ex_src[keep]).astype(np.int64) * n + ex_dst[keep],
                    self.r_edge * n + dst,
                ]
            )
        )  # all held-out targets (the target itself is added back)
        self.t_keys = self.r_edge * n + dst

    def ranks(self, P: sp.csr_matrix, tb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, R = self.n, self.uq.size
        P = P.tocsr()
        if not P.has_sorted_indices:
            P.sort_indices()
        tb = np.asarray(tb, dtype=np.float32)
        sup_keys = np.repeat(np.arange(R, dtype=np.int64), np.diff(P.indptr)) * n + P.indices
        sup_f = P.data.astype(np.float32) + tb[P.indices]
        sup_excluded = _member(sup_keys, self.x_keys)
        xo_keys = self.x_keys[~_member(self.x_keys, sup_keys)]  # excluded, outside the support
        xo_tb = tb[xo_keys % n]
        xo_ptr = np.zeros(R + 1, dtype=np.int64)
        xo_ptr[1:] = np.cumsum(np.bincount(xo_keys // n, minlength=R))
        tb_sorted = np.sort(tb)

        # each target's score: in the support, or the tie-breaker alone
        if sup_keys.size:
            pos = np.minimum(np.searchsorted(sup_keys, self.t_keys), sup_keys.size - 1)
            s_t = np.where(sup_keys[pos] == self.t_keys, sup_f[pos], tb[self.dst]).astype(np.float32)
        else:
            s_t = tb[self.dst]

        r_edge = self.r_edge
        E = r_edge.size
        n_greater = np.empty(E, dtype=np.int64)
        n_equal = np.empty(E, dtype=np.int64)
        cum = np.cumsum((P.indptr[r_edge + 1] - P.indptr[r_edge]) + (xo_ptr[r_edge + 1] - xo_ptr[r_edge]))
        start = 0
        while start < E:  # chunks of edges with at most ~max_expand expanded entries
            done = int(cum[start - 1]) if start else 0
            stop = int(min(max(np.searchsorted(cum, done + self.max_expand, side="right"), start + 1), E))
            rows, s = r_edge[start:stop], s_t[start:stop]
            m = stop - start
            item, j = _expand(P.indptr, rows)
            f, t, x, si = sup_f[j], tb[P.indices[j]], sup_excluded[j], s[item]
            sup_gt = np.bincount(item[~x & (f > si)], minlength=m)
            sup_eq = np.bincount(item[~x & (f == si)], minlength=m)
            # products with tb > s that are NOT outside candidates: the support, and the excluded rest
            tb_gt = np.bincount(item[t > si], minlength=m)
            tb_eq = np.bincount(item[t == si], minlength=m)
            item, j = _expand(xo_ptr, rows)
            t, si = xo_tb[j], s[item]
            tb_gt += np.bincount(item[t > si], minlength=m)
            tb_eq += np.bincount(item[t == si], minlength=m)
            hi = np.searchsorted(tb_sorted, s, side="right")
            lo = np.searchsorted(tb_sorted, s, side="left")
            n_greater[start:stop] = sup_gt + (n - hi) - tb_gt
            n_equal[start:stop] = sup_eq + (hi - lo) - tb_eq
            start = stop
        return n_greater, n_equal


def sparse_ranks(
    P: sp.csr_matrix,
    tb: np.ndarray,
    uq: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    ex_src: np.ndarray,
    ex_dst: np.ndarray,
    max_expand: int = 1 << 24,
) -> tuple[np.ndarray, np.ndarray]:
    """One-off :class:`SparseRanker` call."""
    return SparseRanker(uq, src, dst, ex_src, ex_dst, P.shape[1], max_expand).ranks(P, tb)


class Cooccurrence:
    """Weighted path counts on the training graph; see the module docstring."""

    name = "cooccurrence"

    def __init__(
        self,
        max_tune_edges: int = 2000,
        max_tune_nnz: int = 30_000_000,
        use_cf3: bool = True,
        seed: int = 0,
        row_chunk: int = 1024,
    ):
        self.max_tune_edges = int(max_tune_edges)
        self.max_tune_nnz = int(max_tune_nnz)
        self.use_cf3 = use_cf3
        self.seed = seed
        self.row_chunk = int(row_chunk)
        self.params_: dict = {"gamma": 0.5, "alpha": 0.5, "weights": {k: (0.0 if k == "cf3" else 1.0) for k in KINDS}}
        self.tuning_: list[dict] = []
        self.info_: dict = {}
        self.An = None

    # ------------------------------------------------------------------ fit
    def fit(self, graph: ProductGraph, train_mask: torch.Tensor, x=None, val=None) -> "Cooccurrence":
        n = graph.num_products
        self.n = n
        src = graph.cp_src[train_mask].numpy()
        dst = graph.cp_dst[train_mask].numpy()
        w = graph.cp_weight[train_mask].numpy()
        self.A = _csr(src, dst, w, n)
        self.AT = self.A.T.tocsr()
        a, b, sw = graph.sim_a.numpy(), graph.sim_b.numpy(), graph.sim_weight.numpy()
        self.S = _csr(np.concatenate([a, b]), np.concatenate([b, a]), np.concatenate([sw, sw]), n)
        self.pop = np.asarray(self.A.sum(0)).ravel().astype(np.float64)  # training in-degree
        self._pop_unit = self.pop / self.pop.max() if self.pop.max() > 0 else self.pop
        self.cf3_enabled = self.use_cf3
        self.scales_ = {k: 1.0 for k in KINDS}

        if val is not None and len(val[0]) > 0:
            self._tune(torch.as_tensor(val[0]).long(), torch.as_tensor(val[1]).long(), graph, train_mask)
        else:
            self._set_gamma(self.params_["gamma"])
            self._eps = 1e-6
        self._prepare()
        return self

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict:
        """The fitted parameters as plain JSON data; :meth:`from_state` rebuilds the scorer from
        them and the same training graph (the matrices are not stored: they are the graph)."""
        return {
            "params": self.params_,
            "scales": self.scales_,
            "eps": float(self._eps),
            "cf3_ok": bool(self.cf3_enabled),
            "info": self.info_,
            "seed": self.seed,
            "row_chunk": self.row_chunk,
            "use_cf3": self.use_cf3,
        }

    @classmethod
    def from_state(cls, graph: ProductGraph, train_mask: torch.Tensor, state: dict) -> "Cooccurrence":
        c = cls(seed=int(state["seed"]), row_chunk=int(state["row_chunk"]), use_cf3=bool(state["use_cf3"]))
        c.fit(graph, train_mask)  # matrices of the training graph, default parameters
        c._set_state(state)
        c._set_gamma(c.params_["gamma"])
        c._prepare()
        return c

    def _set_state(self, state: dict) -> None:
        self.params_ = {
            "gamma": float(state["params"]["gamma"]),
            "alpha": float(state["params"]["alpha"]),
            "weights": {k: float(v) for k, v in state["params"]["weights"].items()},
        }
        self.scales_ = {k: float(v) for k, v in state["scales"].items()}
        self._eps, self.cf3_enabled = float(state["eps"]), bool(state["cf3_ok"])
        self.info_ = dict(state.get("info", {}))

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted scorer as plain arrays (the row-normalised hop matrices as CSR parts, the
        target scaling and the tie-breaker): stored in a model folder, :meth:`from_arrays` reads
        them memory-mapped, so a server's workers share one copy instead of each rebuilding the
        matrices from the graph."""
        out = {"col": self._col, "tb": self._tb}
        for name in _SERVED:
            m = getattr(self, name)
            m.sum_duplicates()  # canonical (sorted, no duplicates): read-only copies are never re-sorted
            out |= {f"{name}.indptr": m.indptr, f"{name}.indices": m.indices, f"{name}.data": m.data}
        return out

    @classmethod
    def from_arrays(cls, state: dict, arrays: dict[str, np.ndarray]) -> "Cooccurrence":
        """The scorer :meth:`arrays` stored (``arrays`` may be memory-mapped: nothing is copied),
        with :meth:`state`'s parameters. It scores and walks paths; it cannot be fitted again."""
        c = cls(seed=int(state["seed"]), row_chunk=int(state["row_chunk"]), use_cf3=bool(state["use_cf3"]))
        c._set_state(state)
        c.n = int(arrays["tb"].shape[0])
        for name in _SERVED:
            setattr(c, name, csr_view(arrays, name, c.n))
        c.A = c.AT = c.S = None  # the raw matrices are for fitting only
        c._gamma = c.params_["gamma"]
        c._set_weights()
        c._col, c._tb = arrays["col"], arrays["tb"]
        return c

    # ------------------------------------------------------------------ matrices
    def _set_gamma(self, gamma: float) -> None:
        self.An = _row_norm(self.A, gamma)
        self.ATn = _row_norm(self.AT, gamma)
        self.Sn = _row_norm(self.S, gamma)
        self._gamma = gamma

    def kind_rows(self, q: np.ndarray, kinds=KINDS) -> dict[str, sp.csr_matrix]:
        """Each path kind's (Q x N) rows for queries ``q`` under the current gamma (unscaled;
        divide by ``scales_[kind]`` for the values the combined score weighs)."""
        first = {m: getattr(self, m)[q] for m in {_HOPS[k][0] for k in kinds}}
        out = {}
        for k in kinds:
            m = first[_HOPS[k][0]]
            for h in _HOPS[k][1:]:
                m = m @ getattr(self, h)
            out[k] = m
        return {k: m.tocsr().astype(np.float32) for k, m in out.items()}

    def _colscale(self, alpha: float) -> np.ndarray:
        return ((self.pop + 1.0) ** -alpha).astype(np.float32)

    # ------------------------------------------------------------------ tuning
    def _tune(self, vs: torch.Tensor, vd: torch.Tensor, graph: ProductGraph, train_mask: torch.Tensor) -> None:
        from dualrec.evaluate import metrics_from_ranks

        if vs.numel() > self.max_tune_edges:
            keep = torch.randperm(vs.numel(), generator=torch.Generator().manual_seed(self.seed))[: self.max_tune_edges]
            vs, vd = vs[keep], vd[keep]
        uq = torch.unique(vs).numpy()
        ex_s, ex_d = graph.cp_src[train_mask].numpy(), graph.cp_dst[train_mask].numpy()
        ranker = SparseRanker(uq, vs.numpy(), vd.numpy(), ex_s, ex_d, self.n)

        # cf3 can be near-dense (hubs): estimate its size on a few rows before building it.
        if self.cf3_enabled:
            self._set_gamma(0.0)
            probe = uq[: min(64, uq.size)]
            est = self.kind_rows(probe, ("cf3",))["cf3"].nnz / max(1, probe.size) * uq.size
            if est > self.max_tune_nnz:
                self.cf3_enabled = False
                self.info_["cf3_skipped"] = f"estimated {est:.3g} non-zeros on the tuning rows > {self.max_tune_nnz}"
        kinds = tuple(k for k in KINDS if k != "cf3" or self.cf3_enabled)

        cache: dict = {}

        def rows_for(gamma):
            if gamma not in cache:
                cache.clear()  # keep one gamma's matrices in memory
                self._set_gamma(gamma)
                rows = self.kind_rows(uq, kinds)
                for m in rows.values():
                    m.sort_indices()  # sums of sorted CSR stay sorted: no re-sort per evaluation
                scales = {k: (float(m.data.mean()) if m.nnz else 1.0) for k, m in rows.items()}
                cache[gamma] = (rows, scales)
            return cache[gamma]

        def combine(gamma, alpha, weights):
            rows, scales = rows_for(gamma)
            P = sp.csr_matrix((uq.size, self.n), dtype=np.float32)
            for k in kinds:
                if weights.get(k, 0.0):
                    P = P + rows[k] * np.float32(weights[k] / scales[k])
            P = P.tocsr()
            P.data *= self._colscale(alpha)[P.indices]
            P.eliminate_zeros()
            pos = P.data[P.data > 0]
            eps = 1e-3 * float(pos.min()) if pos.size else 1.0
            return P, eps, scales

        def score(gamma, alpha, weights):
            P, eps, _ = combine(gamma, alpha, weights)
            tb = (eps * self._pop_unit).astype(np.float32)
            g, e = ranker.ranks(P, tb)
            m = metrics_from_ranks(torch.from_numpy(g), torch.from_numpy(e), (10,))["MRR@10"]
            self.tuning_.append({"gamma": gamma, "alpha": alpha, "weights": dict(weights), "val_MRR@10": m})
            return m

        p = {
            "gamma": self.params_["gamma"],
            "alpha": self.params_["alpha"],
            "weights": {k: self.params_["weights"].get(k, 0.0) for k in kinds},
        }

        def tune_norm(p, best):
            for g in GAMMAS:
                for a in ALPHAS:
                    if (g, a) == (p["gamma"], p["alpha"]) and best is not None:
                        continue
                    m = score(g, a, p["weights"])
                    if best is None or m > best:
                        best, p = m, {**p, "gamma": g, "alpha": a}
            return p, best

        p, best = tune_norm(p, None)
        for _ in range(2):  # coordinate ascent over the kind weights
            changed = False
            for k in kinds:
                for v in WEIGHTS:
                    if v == p["weights"][k]:
                        continue
                    wts = {**p["weights"], k: v}
                    if not any(wts.values()):
                        continue
                    m = score(p["gamma"], p["alpha"], wts)
                    if m > best:
                        best, p, changed = m, {**p, "weights": wts}, True
            if not changed:
                break
        p, best = tune_norm(p, best)

        _, eps, scales = combine(p["gamma"], p["alpha"], p["weights"])
        self._set_gamma(p["gamma"])
        self.scales_ = {k: scales.get(k, 1.0) for k in KINDS}
        self._eps = eps
        self.params_ = {
            "gamma": p["gamma"],
            "alpha": p["alpha"],
            "weights": {k: p["weights"].get(k, 0.0) for k in KINDS},
        }
        self.info_.update(
            {"val_MRR@10": best, "tuning_evaluations": len(self.tuning_), "tuning_edges": int(vs.numel())}
        )

    def _prepare(self) -> None:
        """Fold the chosen weights into two sparse right-hand matrices (see :meth:`_rows`)."""
        if self.An is None or self._gamma != self.params_["gamma"]:  # pragma: no cover - defensive
            self._set_gamma(self.params_["gamma"])
        c = self._set_weights()
        self._R2 = (self.Sn * np.float32(c["cp_sim"]) + self.ATn * np.float32(c["cotarget"])).tocsr()
        self._col = self._colscale(self.params_["alpha"])
        self._tb = (self._eps * self._pop_unit).astype(np.float32)

    def _set_weights(self) -> dict[str, float]:
        c = {k: self.params_["weights"].get(k, 0.0) / self.scales_.get(k, 1.0) for k in KINDS}
        if not self.cf3_enabled:
            c["cf3"] = 0.0
        self._c = c
        return c

    # ------------------------------------------------------------------ scoring
    def _rows(self, q: np.ndarray) -> sp.csr_matrix:
        """Path score P (Q x N, sparse, before the target scaling) for queries ``q``."""
        c = self._c
        RA, RS, RT = self.An[q], self.Sn[q], self.ATn[q]
        L = RA * np.float32(c["cp2"]) + RS * np.float32(c["sim_cp"]) + RT * np.float32(c["sibling"])
        if c["cf3"]:
            L = L + (RA @ self.ATn) * np.float32(c["cf3"])
        P = L @ self.An + RA @ self._R2
        P = P + RA + RT * np.float32(c["reverse"]) + RS * np.float32(c["sim"])  # direct weight 1
        return P.tocsr()

    def score_fn(self, query: torch.Tensor) -> torch.Tensor:
        q = query.cpu().numpy()
        out = np.empty((q.size, self.n), dtype=np.float32)
        for a in range(0, q.size, self.row_chunk):
            P = self._rows(q[a : a + self.row_chunk])
            out[a : a + self.row_chunk] = (P @ sp.diags(self._col)).toarray() + self._tb[None, :]
        return torch.from_numpy(out)

    def paths(self, q: np.ndarray, kinds=None) -> "Paths":
        """Every product that a path of a used kind reaches from each query in ``q``, with each
        kind's value and the combined score.

        The cost follows the paths walked (the queries' 1-, 2- and 3-hop neighbourhoods), not
        the catalogue: a single query walks the CSR arrays of the training graph, because
        scipy's row x matrix product allocates and clears work arrays of length N per call;
        a batch of queries goes through scipy's products (:meth:`kind_rows`), where that cost
        is shared. ``kinds`` (default: every enabled kind) are the values returned; the score
        always uses every kind with a weight. Values are as :meth:`kind_rows` gives them.
        """
        q = np.asarray(q, dtype=np.int64)
        kinds = [k for k in (KINDS if kinds is None else kinds) if k != "cf3" or self.cf3_enabled]
        c = self._c
        names = ["direct"] + [k for k in KINDS if (k in kinds or c.get(k, 0.0)) and (k != "cf3" or self.cf3_enabled)]
        w = np.array([1.0 if k == "direct" else c.get(k, 0.0) for k in names])
        if q.size <= 4:
            row, col, per = self._walk(q, names)
        else:
            row, col, per = self._aligned(self._products(q, names), names)
        raw = (per @ w).astype(np.float32)
        values = per[:, [names.index(k) for k in kinds]].astype(np.float32)
        return Paths(row, col, raw * self._col[col] + self._tb[col], raw > 0, values, list(kinds), int(self.n))

    @staticmethod
    def _aligned(mats: dict[str, sp.csr_matrix], names: list[str]):
        """(row, col, values) of the union of the kinds' supports, each kind's values aligned to it.

        Adding the pattern (counts >= 1, float64) to a kind keeps the pattern, so the difference
        is the kind's value at every entry of the union."""
        pattern = None
        for m in mats.values():
            ones = m.copy()
            ones.data = np.ones_like(ones.data, dtype=np.float64)
            pattern = ones if pattern is None else pattern + ones
        pattern = pattern.tocsr()
        pattern.sort_indices()
        per = np.empty((pattern.nnz, len(names)), dtype=np.float64)
        for j, k in enumerate(names):
            m = (pattern + mats[k].astype(np.float64)).tocsr()
            m.sort_indices()
            per[:, j] = m.data - pattern.data
        row = np.repeat(np.arange(pattern.shape[0], dtype=np.int64), np.diff(pattern.indptr))
        return row, pattern.indices.astype(np.int64), per

    def _products(self, q: np.ndarray, names: list[str]) -> dict[str, sp.csr_matrix]:
        return self.kind_rows(q, names)  # "direct" included: kind_rows reads the hops of _HOPS

    def _walk(self, q: np.ndarray, names: list[str]):
        """:meth:`_aligned`'s output for a few queries, from the CSR arrays: O(paths log paths)."""
        n = np.int64(self.n)
        walked: dict = {(): (np.arange(q.size, dtype=np.int64), q, None)}

        def walk(hops: tuple) -> tuple:  # paths along ``hops``; shared prefixes are walked once
            if hops not in walked:
                it, at, v = walk(hops[:-1])
                if len(hops) > 2:  # sum repeated (query, middle product) pairs before a third hop
                    uk, inv = np.unique(it * n + at, return_inverse=True)
                    it, at, v = uk // n, uk % n, np.bincount(inv, weights=v)
                walked[hops] = _hop(getattr(self, hops[-1]), it, at, v)
            return walked[hops]

        parts = {k: walk(_HOPS[k]) for k in names}
        keys = np.concatenate([parts[k][0] * n + parts[k][1] for k in names])
        kid = np.concatenate([np.full(parts[k][0].size, j, dtype=np.int64) for j, k in enumerate(names)])
        val = np.concatenate([parts[k][2] for k in names]).astype(np.float64)
        uk, inv = np.unique(keys, return_inverse=True)
        per = np.bincount(inv * len(names) + kid, weights=val, minlength=uk.size * len(names))
        return uk // n, uk % n, per.reshape(uk.size, len(names))

    def pair_score_fn(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        u, v = u.cpu().numpy(), v.cpu().numpy()
        out = np.empty(u.size, dtype=np.float64)
        if u.size == 0:
            return torch.from_numpy(out)
        order = np.argsort(u, kind="stable")
        su, sv = u[order], v[order]
        uq, inv = np.unique(su, return_inverse=True)
        vals = np.empty(u.size, dtype=np.float64)
        for a in range(0, uq.size, self.row_chunk):
            b = min(a + self.row_chunk, uq.size)
            sel = (inv >= a) & (inv < b)
            P = self._rows(uq[a:b])
            got = np.asarray(P[inv[sel] - a, sv[sel]]).ravel()
            vals[sel] = got * self._col[sv[sel]] + self._tb[sv[sel]]
        out[order] = vals
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return f"Cooccurrence({self.params_})"


__all__ = ["Cooccurrence", "KINDS"]
