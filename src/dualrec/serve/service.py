"""The recommender service behind the HTTP API: one model folder, loaded once.

:class:`RecommenderService` holds a model folder's products, source/target embeddings and a
retrieval index (``MODEL_DIR/index`` when present and valid, else an exact faiss flat index
built in memory) and answers ``related``, ``related_batch``, ``product``, ``incoming``,
``search`` and ``health`` with plain JSON-safe dicts (NaN -> None, numpy scalars -> Python).

It is immutable once built. :class:`ServiceHolder` keeps the current service; :meth:`swap`
builds a new one completely and then replaces a single reference, so a request that took
``holder.service`` once sees either the old model or the new one, never a mix.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from dualrec.errors import DualrecError
from dualrec.explain import SCORE_LABELS
from dualrec.ids import IdIndex
from dualrec.index import RetrievalIndex, load_model_index
from dualrec.lists import StoredLists
from dualrec.rerank import load_model_reranker, ranker_name
from dualrec.store import open_version

__all__ = ["RecommenderService", "ServiceHolder", "MAX_K", "META_COLUMNS", "jsonable"]

#: largest k accepted for related / incoming / batch requests
MAX_K = 1000
#: metadata attached to every recommended product, when the catalogue has the column
META_COLUMNS = ("title", "category", "brand", "price")
_SEARCH_COLUMNS = ("title", "category")


def jsonable(v: Any) -> Any:
    """A JSON-safe Python value: NaN/inf/NA -> None, numpy scalars -> int/float/bool,
    timestamps -> ISO strings, arrays -> lists; anything else unknown -> str."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, (np.ndarray, list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(v, (pd.Timestamp, _dt.datetime, _dt.date)):
        return v.isoformat()
    return str(v)


def _release_free_memory() -> None:
    """Hand the heap that loading freed (Parquet buffers, the graph's temporaries, the search
    text's intermediate strings) back to the system: glibc and Arrow keep it otherwise, and each
    server worker would hold it for its lifetime."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        pass
    pa.default_memory_pool().release_unused()  # Arrow's own allocator keeps what the strings freed


def _gatherable(column: pd.Series):
    """A catalogue column that a list's rows are gathered from in O(k): text as one contiguous
    Arrow array (an object array would hold a Python string per product in every server worker;
    a chunked Arrow column concatenates its chunks on every take), anything else as NumPy."""
    arr = column.array
    if hasattr(arr, "__arrow_array__"):
        a = arr.__arrow_array__()
        return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
    return column.to_numpy()


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= MAX_K:
        raise DualrecError(f"k must be an integer in 1..{MAX_K}, got {k!r}")
    return int(k)


class RecommenderService:
    """Answers queries about one model folder; build with :meth:`load`."""

    def __init__(
        self,
        model_dir: Path,
        products: pd.DataFrame,
        source: np.ndarray,
        target: np.ndarray,
        index: RetrievalIndex,
        info: dict | None = None,
        reranker=None,
        version: str | None = None,
        lists=None,
    ):
        if source.shape != target.shape or len(products) != len(target):
            raise DualrecError(
                f"products ({len(products)}), source {source.shape} and target {target.shape} do not line up"
            )
        if "id" not in products.columns:
            raise DualrecError("the catalogue has no 'id' column")
        self.model_dir = Path(model_dir)
        self.version = version
        self.products = products.reset_index(drop=True)
        self.source, self.target, self.index = source, target, index
        # The second stage (dualrec.rerank), when the model folder has one: related products are
        # its reranked candidates (known co-purchases first); without it, the index's top-k.
        self.reranker = reranker
        self.info = dict(info or {})
        ids = self.products["id"].astype(str)
        self.ids = ids.to_numpy(dtype=object)
        self._pos = IdIndex(ids, require_unique=True)
        from dualrec.retrieval import Recommender

        # the one recommendation path (precomputed lists, second stage, index), shared with the CLI
        self.ranking = Recommender(
            self.products, source, target, reranker=reranker, index=index, lists=lists, ids=self._pos
        )
        self.meta_columns = [c for c in META_COLUMNS if c in self.products.columns]
        self._meta = {c: _gatherable(self.products[c]) for c in self.meta_columns}
        # Arrow strings: a buffer per column instead of a Python object per product (a large
        # catalogue's search text costs each server worker several times less) and search runs
        # pyarrow's vectorised regex
        text = "string[pyarrow]"
        self._ids_lower = ids.astype(text).str.lower()
        hay = self._ids_lower
        for c in _SEARCH_COLUMNS:
            if c in self.products.columns:
                hay = hay + " " + self.products[c].astype(text).fillna("").str.lower()
        self._haystack = hay
        self.loaded_at = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._explainer = None

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(
        cls, model_dir: str | Path, log: Callable[[str], None] | None = None, version: str | None = None
    ) -> "RecommenderService":
        """The model folder's current version (or the named one), verified against its manifest."""
        v = open_version(model_dir, version)
        # memory-mapped: workers of one host share the pages (and the host's page cache)
        source, target = v.embeddings(mmap=True)
        try:
            products = v.products()
        except Exception as e:  # a corrupt file is a user-facing problem, not a crash
            raise DualrecError(f"model version {v.name}: cannot read the catalogue ({type(e).__name__})") from e
        index = load_model_index(v, source, target, log=log)
        reranker = load_model_reranker(v, source, target, index)
        lists = StoredLists.load(v) if reranker is not None else None
        svc = cls(Path(model_dir), products, source, target, index, v.info, reranker, version=v.name, lists=lists)
        from dualrec.explain import Explainer

        # built now, from the version just verified: serving never reads the folder again
        svc._explainer = Explainer.from_version(v, source, target, reranker)
        _release_free_memory()
        return svc

    # -- properties --------------------------------------------------------------------------------
    @property
    def num_products(self) -> int:
        return len(self.ids)

    @property
    def model_version(self) -> str:
        """The version name (``v000007``): every write to the model folder makes a new one."""
        return str(self.version or self.info.get("version") or "unversioned")

    # -- lookups -----------------------------------------------------------------------------------
    def rows(self, ids: Sequence[str]) -> np.ndarray:
        return self._pos.rows(ids)

    def _items(self, rows: np.ndarray, scores: np.ndarray | None = None) -> list[dict]:
        rows = np.asarray(rows, dtype=np.int64)
        meta = {
            c: col[rows] if isinstance(col, np.ndarray) else col.take(pa.array(rows)).to_pylist()
            for c, col in self._meta.items()
        }
        out = []
        for j, r in enumerate(rows.tolist()):
            item = {"id": self.ids[r]}
            if scores is not None:
                item["score"] = jsonable(scores[j])
            for c in self.meta_columns:
                item[c] = jsonable(meta[c][j])
            out.append(item)
        return out

    def _results(self, scores: np.ndarray, rows: np.ndarray) -> list[dict]:
        keep = rows >= 0
        return self._items(rows[keep], scores[keep])

    # -- queries -----------------------------------------------------------------------------------
    def related(self, product_id: str, k: int = 10, explain: bool = False) -> dict:
        """Top-k products recommended for ``product_id`` (never itself), best first."""
        return self.related_batch([product_id], k, explain)["results"][0] | {"model_version": self.model_version}

    def related_batch(self, ids: Sequence[str], k: int = 10, explain: bool = False) -> dict:
        """``explain`` adds each item's ``kind`` (logged / predicted) and ``reason``."""
        k = _check_k(k)
        if len(ids) == 0:
            raise DualrecError("ids must not be empty")
        rows = self.rows(ids)
        scores, idx = self.ranking.top_k(rows, k)
        results = []
        for r, s, i in zip(rows.tolist(), scores, idx):
            items = self._results(s, i)
            if self._explainer is not None:  # kind always (cheap); the reason on request
                why = (
                    self._explainer.explain(r, i[i >= 0])
                    if explain
                    else [{"kind": kd} for kd in self._explainer.kinds(r, i[i >= 0])]
                )
                for item, w in zip(items, why):
                    item.update(w)
            ranker = ranker_name(self.reranker, r)  # per list: a new product's own list is its neighbours'
            results.append(
                {"id": self.ids[r], "k": k, "ranker": ranker, "scores": SCORE_LABELS[ranker], "results": items}
            )
        return {"k": k, "model_version": self.model_version, "results": results}

    def incoming(self, product_id: str, k: int = 10) -> dict:
        """The top-k products that recommend ``product_id``: highest ``source[u] · target[id]``
        over all other products ``u`` (exact)."""
        import torch

        from dualrec.topk import masked_topk

        k = _check_k(k)
        r = int(self.rows([product_id])[0])
        s = torch.from_numpy(np.ascontiguousarray(self.source @ self.target[r], dtype=np.float32))[None]
        vals, idx = masked_topk(s, k, torch.tensor([r]))
        rows, scores = idx[0].numpy(), vals[0].numpy()
        keep = np.isfinite(scores)
        return {
            "id": self.ids[r],
            "k": k,
            "model_version": self.model_version,
            "ranker": "daemon",
            "scores": "DAEMON cosine of each product's source embedding and this product's target embedding",
            "results": self._items(rows[keep], scores[keep]),
        }

    def product(self, product_id: str) -> dict:
        """All catalogue columns of one product (JSON-safe)."""
        r = int(self.rows([product_id])[0])
        row = self.products.iloc[r]
        out = {str(c): jsonable(row[c]) for c in self.products.columns}
        out["id"] = self.ids[r]
        return out

    def search(self, q: str, limit: int = 20) -> dict:
        """Products whose id equals ``q`` or whose id/title/category contain every word of ``q``
        at the start of a word (case-insensitive); exact id matches first, then catalogue order."""
        if not 1 <= int(limit) <= MAX_K:
            raise DualrecError(f"limit must be in 1..{MAX_K}")
        words = q.lower().split()
        if not words:
            return {"q": q, "total": 0, "results": []}
        mask = np.ones(self.num_products, dtype=bool)
        for w in words:  # a word matches at the start of a word: "phone" finds "phone case", not "headphone"
            pat = r"(?:^|[^0-9a-z])" + re.escape(w)
            mask &= self._haystack.str.contains(pat, regex=True).to_numpy(dtype=bool, na_value=False)
        exact = (self._ids_lower == q.strip().lower()).to_numpy(dtype=bool, na_value=False)
        hits = np.concatenate([np.flatnonzero(exact), np.flatnonzero(mask & ~exact)])
        return {"q": q, "total": int(len(hits)), "results": self._items(hits[: int(limit)])}

    def health(self) -> dict:
        ix = self.index
        return {
            "status": "ok",
            "model_version": self.model_version,
            "loaded_at": self.loaded_at,
            "num_products": self.num_products,
            "dim": int(self.target.shape[1]),
            "ranker": ranker_name(self.reranker),
            "index": {
                "kind": ix.kind,
                "params": jsonable(ix.params),
                "n": ix.n,
                "recall_at_10": jsonable(ix.recall_at_10),
                "stored": not ix.meta.get("in_memory", False),
                "appended_rows": int(ix.meta.get("appended_rows", 0)),
            },
        }


class ServiceHolder:
    """The current :class:`RecommenderService`; :meth:`swap` replaces it atomically.

    Readers take ``holder.service`` once per request. Swaps (and other writers that must not
    interleave with one, like cold start) are serialised by :attr:`lock`.
    """

    def __init__(self, service: RecommenderService, log: Callable[[str], None] | None = None):
        self._service = service
        self.lock = threading.RLock()
        self.log = log

    @property
    def service(self) -> RecommenderService:
        return self._service

    def swap(self, version: str | None = None) -> RecommenderService:
        """Load a version of the served model folder (default: its current one) completely, then
        make it current with one reference assignment. On any error the old service stays.
        Only version names are accepted, never a path: the folder is fixed at start."""
        with self.lock:
            new = RecommenderService.load(self._service.model_dir, log=self.log, version=version)
            self._service = new
            return new
