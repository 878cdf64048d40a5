"""A faiss retrieval index over a model's TARGET embeddings (inner product = the model's score).

The embeddings are L2-normalised, so inner product = cosine = ``score(u -> v)``; a query is a
product's SOURCE embedding. Three kinds:

* ``exact`` — ``IndexFlatIP``: brute force, identical top-k to :class:`dualrec.retrieval.Recommender`.
* ``hnsw``  — ``IndexHNSWFlat`` (inner product; ``IndexHNSWSQ`` with 16-bit vectors for
  ``storage="float16"``); ``M`` fixed at build, ``efSearch`` tuned.
* ``ivf``   — ``IndexIVFFlat`` (inner product, flat coarse quantiser; ``IndexIVFScalarQuantizer``
  with 16-bit vectors for ``storage="float16"``); ``nlist`` fixed, ``nprobe`` tuned.

For the approximate kinds :meth:`RetrievalIndex.build` measures recall@10 against exact search
(a row tied with the 10th exact score counts: :func:`recall_at_k`) on a sample of real queries
(the model's source embeddings) and raises the search-time knob (``efSearch`` / ``nprobe``)
until the recall reaches ``target_recall`` (default 0.95); the measured recall is stored in
``index.json`` next to ``faiss.index``.

A model version's index lives in its ``index/`` folder (``dualrec index MODEL_DIR`` writes a new
version with it, :func:`write_model_index`). :func:`load_model_index` opens it when it matches
the model's embeddings (rows added later by cold start are appended in memory), else builds an
exact index in memory.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from dualrec.graph import DualrecError

__all__ = [
    "RetrievalIndex",
    "RowFilter",
    "KINDS",
    "recall_at_k",
    "load_model_index",
    "write_model_index",
    "INDEX_DIRNAME",
]

KINDS = ("exact", "hnsw", "ivf")
INDEX_DIRNAME = "index"
INDEX_FILE = "faiss.index"
META_FILE = "index.json"
FORMAT = 1
#: rows of the target matrix hashed into the fingerprint that ties an index to its model
_FP_ROWS = 4096

_HNSW_EF = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def _rows(x) -> np.ndarray:
    """A 2-d float32 or float16 array as it is (no float32 copy of a large float16 table: the
    build converts a chunk at a time); other dtypes become float32."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise DualrecError(f"embeddings must be a 2-d array, got shape {x.shape}")
    return x if x.dtype in (np.float16, np.float32) else x.astype(np.float32)


def _f32(x) -> np.ndarray:
    return np.ascontiguousarray(_rows(x), dtype=np.float32)


#: rows converted to float32 at a time while an index is built from a float16 table
_CHUNK = 65_536


def _add(index, t: np.ndarray) -> None:
    for a in range(0, len(t), _CHUNK):
        index.add(_f32(t[a : a + _CHUNK]))


def exact_top_k(t: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` largest ``q @ t.T`` per query (best first), ``t`` read a chunk at a time:
    the ground truth of a recall measurement without a second copy of the table."""
    q = _f32(q)
    k = min(k, len(t))
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    step = min(_CHUNK, max(1024, (1 << 24) // max(len(q), 1)))  # (a score block of at most 64 MiB)
    for a in range(0, len(t), step):
        s = q @ _f32(t[a : a + step]).T
        kk = min(k, s.shape[1])
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], axis=1)
        best_i = np.concatenate([best_i, top + a], axis=1)
        if best_s.shape[1] > k:
            keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, 1)


def fingerprint(target: np.ndarray, n: int | None = None) -> str:
    """Hash of the shape and the first rows of ``target[:n]``: detects an index built for other
    embeddings (a retrained model), while rows appended later (cold start) keep it valid."""
    n = len(target) if n is None else n
    head = np.ascontiguousarray(target[: min(n, _FP_ROWS)], dtype=np.float32)
    h = hashlib.sha1(f"{n}x{target.shape[1]}".encode())
    h.update(head.tobytes())
    return h.hexdigest()


def recall_at_k(approx: np.ndarray, exact: np.ndarray, k: int = 10, target=None, queries=None) -> float:
    """Mean |approx top-k ∩ exact top-k| / k over queries (-1 entries never count).

    With ``target`` (the indexed rows) and ``queries``, ties count: a returned row whose exact
    score reaches the query's k-th exact score is a hit even when exact search returned another
    row of that score. Catalogues hold duplicates (variants with the same text); by row identity
    alone their recall looks lower than it is, and a tuning loop chasing it would widen the
    search up to a full scan."""
    a, e = approx[:, :k], exact[:, :k]
    valid_e = e >= 0
    denom = int(valid_e.sum()) or 1
    if target is not None:
        q = _f32(queries)
        if len(q) != len(a):
            raise DualrecError(f"{len(q)} queries for {len(a)} result rows")
        last = np.where(valid_e.any(1), valid_e.sum(1) - 1, 0)
        kth = np.einsum("qd,qd->q", q, _f32(target[e[np.arange(len(e)), last]]))
        got = _f32(target[np.maximum(a, 0).ravel()]).reshape(*a.shape, -1)
        score = np.einsum("qd,qkd->qk", q, got)
        tol = 1e-5 * np.maximum(np.abs(kth), 1.0)  # float rounding between the index and this product
        hit = (a >= 0) & (score >= (kth - tol)[:, None]) & valid_e.any(1)[:, None]
        return float(np.minimum(hit.sum(1), valid_e.sum(1)).sum() / denom)
    hits = 0
    for ra, re in zip(a, e):
        re = re[re >= 0]
        hits += len(np.intersect1d(ra[ra >= 0], re, assume_unique=True))
    return hits / denom


class RowFilter:
    """The rows a search may return, as a faiss bitmap selector built once from a bool mask over
    the index's rows (:meth:`RetrievalIndex.search`'s ``allowed``): reused, a query's search does
    no O(N) work to filter."""

    def __init__(self, mask: np.ndarray):
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        self.n, self.count = int(mask.size), int(mask.sum())
        self._bits = np.packbits(mask, bitorder="little")  # faiss: bit (i & 7) of byte i >> 3; kept alive
        self.selector = faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(self._bits))


class RetrievalIndex:
    """A faiss index over target embeddings; row ``i`` of the index is product row ``i``.

    ``source`` (optional): the model's source embeddings, used by :meth:`recommend` to look up a
    query product's vector by row.
    """

    def __init__(
        self,
        index: faiss.Index,
        kind: str,
        params: dict | None = None,
        meta: dict | None = None,
        source: np.ndarray | None = None,
    ):
        if kind not in KINDS:
            raise DualrecError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
        self.index, self.kind = index, kind
        self.params = dict(params or {})
        self.meta = dict(meta or {})
        self.source = None if source is None else _f32(source)
        self._apply_search_params()

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        target,
        kind: str = "exact",
        *,
        queries=None,
        source=None,
        target_recall: float = 0.95,
        sample: int = 1000,
        seed: int = 0,
        log=None,
        storage: str = "float32",
        **params,
    ) -> "RetrievalIndex":
        """Index ``target`` (N, d). ``queries`` (default: ``source``, else ``target``) are the real
        query vectors whose random sample of ``sample`` rows measures recall@10 against exact
        search. ``params`` fix ``M`` / ``efConstruction`` / ``efSearch`` (hnsw) or ``nlist`` /
        ``nprobe`` (ivf); a search knob given explicitly is not tuned, only measured.
        ``storage="float16"`` (hnsw, ivf): the vectors in 16 bits (faiss's scalar quantiser), half
        the memory of a wide index, e.g. over text; ``target`` may then be float16 too, and no
        float32 copy of it is made."""
        if kind not in KINDS:
            raise DualrecError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
        if storage not in ("float32", "float16") or (storage == "float16" and kind == "exact"):
            raise DualrecError(f"storage {storage!r}: float32, or float16 for an hnsw or ivf index")
        if not 0.0 < target_recall <= 1.0:
            raise DualrecError("target recall must be in (0, 1]")
        allowed = {"exact": set(), "hnsw": {"M", "efConstruction", "efSearch"}, "ivf": {"nlist", "nprobe"}}[kind]
        unknown = set(params) - allowed
        if unknown:
            raise DualrecError(
                f"unknown {kind} index parameter(s): {', '.join(sorted(unknown))}"
                + (f" (known: {', '.join(sorted(allowed))})" if allowed else "")
            )
        log = log or (lambda m: None)
        t = _rows(target)
        n, d = t.shape
        if n == 0:
            raise DualrecError("cannot index zero products")
        src = None if source is None else _f32(source)
        q_all = _rows(queries) if queries is not None else (src if src is not None else t)
        if q_all.shape[1] != d:
            raise DualrecError(f"query dimension {q_all.shape[1]} != target dimension {d}")
        t0 = time.time()
        log(f"{kind}: indexing {n:,} products of dimension {d}")
        rng = np.random.default_rng(seed)
        # two disjoint samples of real queries: one tunes the search knob, the other measures the
        # recall that is reported (an unbiased estimate); small models share one sample
        pick = rng.choice(len(q_all), size=min(2 * sample, len(q_all)), replace=False)
        qs = _f32(q_all[np.sort(pick[:sample])])
        qe = _f32(q_all[np.sort(pick[sample:])]) if len(pick) > sample else qs
        params = {k: int(v) for k, v in params.items()}
        tuned, recall_tuning = None, None

        if kind == "exact":
            index = faiss.IndexFlatIP(d)
            _add(index, t)
            recall = 1.0
        else:
            kq = min(10, n)
            gt = exact_top_k(t, qs, kq)
            gt_eval = exact_top_k(t, qe, kq) if qe is not qs else gt
            if kind == "hnsw":
                M = params.setdefault("M", 32)
                params.setdefault("efConstruction", 80)
                if storage == "float16":
                    index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_fp16, M, faiss.METRIC_INNER_PRODUCT)
                else:
                    index = faiss.IndexHNSWFlat(d, M, faiss.METRIC_INNER_PRODUCT)
                index.hnsw.efConstruction = params["efConstruction"]
                _add(index, t)
                knob, grid = "efSearch", _HNSW_EF
            else:
                nlist = params.setdefault("nlist", _default_nlist(n))
                if nlist < 1 or nlist > n:
                    raise DualrecError(f"nlist must be in 1..{n}")
                quant = faiss.IndexFlatIP(d)
                if storage == "float16":
                    index = faiss.IndexIVFScalarQuantizer(
                        quant, d, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT, False
                    )  # codes of the vectors themselves, not of residuals: as exact as float16 allows
                else:
                    index = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
                train_rows = min(n, max(64 * nlist, 10_000))
                tr = t if train_rows == n else t[np.sort(rng.choice(n, size=train_rows, replace=False))]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    index.train(_f32(tr))
                _add(index, t)
                knob = "nprobe"
                grid = sorted(
                    {
                        min(nlist, g)
                        for g in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, nlist)
                    }
                )
            if knob in params:
                grid = [params[knob]]
            recall = 0.0
            for value in grid:
                _set_knob(index, kind, value)
                recall = recall_at_k(index.search(qs, kq)[1], gt, kq, target=t, queries=qs)
                log(f"{kind}: {knob}={value} recall@10={recall:.4f}")
                params[knob] = int(value)
                if recall >= target_recall:
                    break
            tuned = knob if len(grid) > 1 else None
            recall_tuning = recall
            if qe is not qs:
                recall = recall_at_k(index.search(qe, kq)[1], gt_eval, kq, target=t, queries=qe)
                log(f"{kind}: {knob}={params[knob]} recall@10 on {len(qe)} held-out queries={recall:.4f}")
            if recall < target_recall:
                log(
                    f"{kind}: measured recall@10 {recall:.4f} is below the target {target_recall} "
                    f"({knob}={params[knob]}{', the largest tried' if recall_tuning < target_recall else ''})"
                )
        meta = {
            "format": FORMAT,
            "kind": kind,
            "storage": storage,
            "metric": "inner_product",
            "params": params,
            "n": int(n),
            "dim": int(d),
            "recall_at_10": round(float(recall), 4),
            "recall_counts_ties": kind != "exact",  # (recall_at_k with target: a tie is a hit)
            "target_recall": target_recall,
            "target_met": bool(recall >= target_recall),
            "tuned": tuned,
            "recall_queries": int(len(qe)),
            "recall_heldout": qe is not qs,
            "recall_at_10_tuning": None if recall_tuning is None else round(float(recall_tuning), 4),
            "recall_query_source": "given" if queries is not None else ("source" if src is not None else "target"),
            "build_seconds": round(time.time() - t0, 2),
            "faiss": faiss.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "target_fingerprint": fingerprint(t),
        }
        return cls(index, kind, params, meta, source=src)

    def add(self, target) -> None:
        """Append target rows (e.g. cold-start products): they get the next row numbers."""
        t = _f32(target)
        if t.shape[1] != self.dim:
            raise DualrecError(f"vectors of dimension {t.shape[1]} added to an index of dimension {self.dim}")
        if self.meta.get("mmap"):  # faiss aborts the process on a write into a mapped index
            raise DualrecError("a memory-mapped index is read-only; load it without mmap to add rows")
        self.index.add(t)
        self.meta["n"] = int(self.index.ntotal)

    # -- properties ----------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def recall_at_10(self) -> float | None:
        return self.meta.get("recall_at_10")

    def _apply_search_params(self) -> None:
        if self.kind == "hnsw" and "efSearch" in self.params:
            _set_knob(self.index, "hnsw", self.params["efSearch"])
        elif self.kind == "ivf" and "nprobe" in self.params:
            _set_knob(self.index, "ivf", self.params["nprobe"])

    def _search_params(self, selector, share: float = 1.0):
        """faiss search parameters with ``selector``. ``share``: the fraction of rows it admits; an
        approximate search widens its search knob by ``1 / share`` (up to 4096 / all lists), since
        a filtered graph or list walk otherwise stops before it has met k admitted rows."""
        widen = 1.0 / max(share, 1e-6)
        if self.kind == "hnsw":
            ef = int(self.index.hnsw.efSearch)
            return faiss.SearchParametersHNSW(sel=selector, efSearch=int(min(max(ef, 4096), np.ceil(ef * widen))))
        if self.kind == "ivf":
            nprobe = int(self.index.nprobe)
            return faiss.SearchParametersIVF(sel=selector, nprobe=int(min(self.index.nlist, np.ceil(nprobe * widen))))
        return faiss.SearchParameters(sel=selector)

    # -- search ----------------------------------------------------------------------------------
    def search(
        self, query_vectors, k: int, chunk: int = 8192, below: int | None = None, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 (Q, k), indexes int64 (Q, k)), best first; missing slots (k > n, or an
        approximate index that found fewer) are index -1 with score -inf. ``below``: only rows
        ``< below`` are searched (faiss's ID selector: e.g. the catalogue a second stage was
        fitted on, without the products added since). ``allowed``: a bool mask over the rows, or a
        :class:`RowFilter` made from one once (a mask is turned into one per call: O(N)); only
        those rows are searched (an approximate search widens its knob by the share of rows
        admitted, :meth:`_search_params`; a ``RowFilter``'s rows are taken as they are)."""
        if k < 1:
            raise DualrecError("k must be at least 1")
        q = _f32(query_vectors)
        if q.shape[1] != self.dim:
            raise DualrecError(f"query dimension {q.shape[1]} != index dimension {self.dim}")
        kk = min(k, max(self.n, 1))
        D = np.full((len(q), k), -np.inf, dtype=np.float32)
        I = np.full((len(q), k), -1, dtype=np.int64)
        params = None
        if allowed is not None:
            if not isinstance(allowed, RowFilter):
                mask = np.asarray(allowed, dtype=bool)
                if below is not None and below < self.n and mask.shape == (self.n,):
                    mask = mask & (np.arange(self.n) < below)
                allowed = RowFilter(mask)
            if allowed.n != self.n:
                raise DualrecError(f"allowed must be a mask over the index's {self.n} rows (got {allowed.n})")
            kk = min(kk, max(allowed.count, 1))
            params = self._search_params(allowed.selector, allowed.count / max(self.n, 1))
        elif below is not None and below < self.n:
            kk = min(kk, max(int(below), 1))
            params = self._search_params(faiss.IDSelectorRange(0, int(below)), below / max(self.n, 1))
        for lo in range(0, len(q), chunk):
            d_, i_ = self.index.search(q[lo : lo + chunk], kk, params=params)
            I[lo : lo + chunk, :kk] = i_
            D[lo : lo + chunk, :kk] = np.where(i_ >= 0, d_, -np.inf)
        return D, I

    def recommend(
        self,
        source_rows: Sequence[int] | np.ndarray,
        k: int,
        exclude_self: bool = True,
        exclude: Sequence[int] | Sequence[Sequence[int]] | None = None,
        chunk: int = 8192,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k for the products at ``source_rows`` (rows of the model; query vectors are
        ``self.source[row]``), leaving out the query itself and ``exclude`` — either one list of
        rows for every query or one list per query. Over-fetches ``k + 1 + len(exclude)`` and
        filters. Shapes (Q, k'), k' = min(k, N - 1) with ``exclude_self`` (as
        :meth:`dualrec.retrieval.Recommender.topk_indices`); unfilled slots are -1 / -inf."""
        if self.source is None:
            raise DualrecError("this index has no source embeddings attached; pass source= to build/load")
        if k < 1:
            raise DualrecError("k must be at least 1")
        rows = np.asarray(source_rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self.source)):
            raise DualrecError("query row out of range")
        n = self.n
        per_query = exclude is not None and len(exclude) > 0 and not np.isscalar(exclude[0])
        if per_query:
            if len(exclude) != len(rows):
                raise DualrecError("exclude needs one list per query")
            ex_lists = [np.asarray(e, dtype=np.int64).reshape(-1) for e in exclude]
            n_ex = max((len(e) for e in ex_lists), default=0)
        else:
            common = np.asarray(exclude if exclude is not None else [], dtype=np.int64).reshape(-1)
            n_ex = len(common)
        kk = (min(k, n - 1) if n > 1 else 0) if exclude_self else min(k, n)
        out_s = np.full((len(rows), kk), -np.inf, dtype=np.float32)
        out_i = np.full((len(rows), kk), -1, dtype=np.int64)
        if kk == 0 or len(rows) == 0:
            return out_s, out_i
        fetch = min(n, kk + (1 if exclude_self else 0) + n_ex)
        for lo in range(0, len(rows), chunk):
            r = rows[lo : lo + chunk]
            D, I = self.search(self.source[r], fetch)
            bad = I < 0
            if exclude_self:
                bad |= I == r[:, None]
            if per_query:
                for j, e in enumerate(ex_lists[lo : lo + chunk]):
                    if len(e):
                        bad[j] |= np.isin(I[j], e)
            elif n_ex:
                bad |= np.isin(I, common)
            # stable: valid entries first, in their (best-first) order
            order = np.argsort(bad, axis=1, kind="stable")[:, :kk]
            s = np.take_along_axis(D, order, 1)
            i = np.take_along_axis(I, order, 1)
            gone = np.take_along_axis(bad, order, 1)
            out_s[lo : lo + chunk] = np.where(gone, -np.inf, s)
            out_i[lo : lo + chunk] = np.where(gone, -1, i)
        return out_s, out_i

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``faiss.index`` + ``index.json`` into ``directory`` (created if needed)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(d / INDEX_FILE))
        meta = {**self.meta, "kind": self.kind, "params": self.params, "n": self.n, "dim": self.dim}
        (d / META_FILE).write_text(json.dumps(meta, indent=2))
        return d

    @classmethod
    def load(cls, directory: str | Path, source=None, mmap: bool = False) -> "RetrievalIndex":
        """Read an index written by :meth:`save`. ``source``: the model's source embeddings (for
        :meth:`recommend`)."""
        d = Path(directory)
        if not (d / INDEX_FILE).exists() or not (d / META_FILE).exists():
            raise DualrecError(
                f"{d} is not a dualrec index (needs {INDEX_FILE} and {META_FILE}); "
                "build one with `dualrec index MODEL_DIR`"
            )
        try:
            meta = json.loads((d / META_FILE).read_text())
        except json.JSONDecodeError as e:
            raise DualrecError(f"{d / META_FILE} is not valid JSON: {e}") from e
        try:
            flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
            if mmap and meta.get("kind") == "ivf":  # faiss maps an IVF's lists only without IO_FLAG_MMAP
                flags &= ~faiss.IO_FLAG_MMAP
            index = faiss.read_index(str(d / INDEX_FILE), flags)
        except RuntimeError as e:
            raise DualrecError(f"cannot read {d / INDEX_FILE}: {str(e).splitlines()[0]}") from e
        if index.ntotal != meta.get("n") or index.d != meta.get("dim"):
            raise DualrecError(f"{d}: {INDEX_FILE} and {META_FILE} disagree (stale or partial index)")
        out = cls(index, meta["kind"], meta.get("params"), meta, source=source)
        out.meta["mmap"] = bool(mmap)
        return out


def _default_nlist(n: int) -> int:
    # ~4 sqrt(N) lists, at least ~39 training points per list (faiss' minimum)
    return int(max(1, min(4 * np.sqrt(n), n // 39, 65536)))


def _set_knob(index, kind: str, value: int) -> None:
    if kind == "hnsw":
        index.hnsw.efSearch = int(value)
    elif kind == "ivf":
        index.nprobe = int(value)


# -- model folders ---------------------------------------------------------------------------------


def write_model_index(
    model_dir: str | Path,
    kind: str = "exact",
    target_recall: float = 0.95,
    sample: int = 1000,
    seed: int = 0,
    log=None,
    wait: float = 60.0,
    progress: bool = False,
    **params,
) -> dict:
    """Build the index of a model folder's current version and write it as a new version
    (the same files plus ``index/``, see :mod:`dualrec.store`; precomputed lists are computed
    again with the new index). Returns the index metadata."""
    from dualrec.store import DEFAULT_KEEP, ModelStore

    log = log or (lambda m: None)
    store = ModelStore(model_dir)
    store.check_model()
    with store.lock(wait, "dualrec index"):
        parent = store.version()
        source, target = (_f32(a) for a in parent.embeddings())
        idx = RetrievalIndex.build(
            target, kind, source=source, target_recall=target_recall, sample=sample, seed=seed, log=log, **params
        )
        from dualrec.lists import LISTS_DIR, StoredLists, precompute_lists, save_lists

        stored = StoredLists.load(parent)
        with store.writer(parent) as w:
            w.link_all(except_={"model.json", INDEX_DIRNAME + "/", LISTS_DIR + "/"})
            idx.save(w.new_path(f"{INDEX_DIRNAME}/{META_FILE}").parent)
            info = {**parent.info, "index": idx.kind}
            if stored is not None:
                # the precomputed lists come from the first stage's candidates: computed again
                # with the new index, so stored and online lists stay the same
                from dualrec.rerank import load_model_reranker

                rr = load_model_reranker(parent, source, target, idx)
                n = int(stored.items.shape[0])
                log(f"precomputing the lists of {n:,} products with the new index")
                items, scores, linfo = precompute_lists(rr.known_top_k, n, stored.k, progress=progress)
                save_lists(w, items, scores, linfo)
                info["lists"] = {"k": stored.k, "seconds": linfo["seconds"]}
            v = w.commit(info, keep=DEFAULT_KEEP)
    return v.json(f"{INDEX_DIRNAME}/{META_FILE}")


def load_model_index(version, source: np.ndarray, target: np.ndarray, log=None) -> RetrievalIndex:
    """The index for a model version's embeddings: its ``index/`` when present and built for
    these embeddings (rows appended since, e.g. by cold start, are added in memory), otherwise an
    exact ``IndexFlatIP`` built in memory. ``log`` receives a line saying why a stored index was
    not used."""
    log = log or (lambda m: None)
    if version is not None and version.has(f"{INDEX_DIRNAME}/{INDEX_FILE}"):
        try:
            stored_n = version.json(f"{INDEX_DIRNAME}/{META_FILE}").get("n")
            # memory-mapped (shared by the server's workers) unless rows must be appended to it
            idx = RetrievalIndex.load(
                version.path(f"{INDEX_DIRNAME}/{INDEX_FILE}").parent, source=source, mmap=stored_n == len(target)
            )
            n0 = idx.n
            if idx.dim != target.shape[1]:
                raise DualrecError(f"index dimension {idx.dim} != embedding dimension {target.shape[1]}")
            if n0 > len(target):
                raise DualrecError(f"index has {n0} rows, the model {len(target)}")
            fp = idx.meta.get("target_fingerprint")
            if fp is not None and fp != fingerprint(target, n0):
                raise DualrecError("index was built for other embeddings (model retrained?)")
            if n0 < len(target):
                idx.add(target[n0:])
                idx.meta["appended_rows"] = int(len(target) - n0)
            return idx
        except DualrecError as e:
            log(f"ignoring the stored index: {e}; using exact search (rebuild with `dualrec index MODEL`)")
    idx = RetrievalIndex.build(target, "exact", source=source)
    idx.meta["in_memory"] = True
    return idx
