"""Top-k related products: the k nearest target embeddings to a query's source embedding,
reranked by the second stage when the model folder has one.

:class:`Recommender` is the one recommendation path: precomputed lists for known products,
else the second stage over the retrieval index's and co-occurrence's candidates (known
co-purchases first), else the index alone. No step of a query reads all N products, except
the exact search of a bare model without an index (a chunked matrix product + ``topk``, the
reference that approximate search is tested against) and a new product's search for its text
neighbours (see :meth:`dualrec.rerank.CandidateReranker._cold_pool`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from dualrec.errors import DualrecError
from dualrec.ids import IdIndex
from dualrec.topk import masked_topk


@dataclass
class Recommendation:
    query: str
    ids: list[str]
    scores: list[float]
    kinds: list[str] | None = None  # "logged" (a co-purchase in the shop's data) or "predicted"
    reasons: list[str] | None = None  # why, in words (see dualrec.explain)
    ranker: str | None = None  # how this list was ranked: "two-stage", "neighbours" or "daemon" (what the scores are)


class Recommender:
    """Top-k related products of a model: the one recommendation path of ``recommend``,
    ``export``, the HTTP service and its web page.

    A query is answered, in this order of preference, by its precomputed list
    (:mod:`dualrec.lists`, a key lookup), by the second stage (:mod:`dualrec.rerank`:
    candidates from the retrieval index and the query's co-occurrence paths, scored by the pair
    model; never all N products), or by the retrieval index alone (DAEMON's ranking). A stored
    list is the online path's list (up to float rounding among equal scores). Products the
    caller excludes are left out before the candidates are chosen, so the list fills up from
    the next candidates (it is not the plain list minus them). Without an index (a bare model)
    it searches exactly, in chunks.

    Args:
        products: DataFrame with an ``id`` column, row-aligned with the embeddings.
        source, target: (N, d) embeddings (tensors or arrays; memory-mapped arrays are read in place).
        chunk_elems: exact search holds at most this many scores at once.
        reranker: the second stage (:class:`~dualrec.rerank.CandidateReranker`), or ``None``. Its
            scores are the pair model's, not cosines.
        index: a :class:`~dualrec.index.RetrievalIndex` over ``target`` (with ``source`` attached).
        lists: the version's :class:`~dualrec.lists.StoredLists`, or ``None``.
    """

    def __init__(
        self,
        products: pd.DataFrame,
        source,
        target,
        chunk_elems: int = 2**24,
        reranker=None,
        index=None,
        lists=None,
        ids: IdIndex | None = None,
    ):
        if source.shape != target.shape or source.shape[0] != len(products):
            raise DualrecError("source/target embeddings and products do not line up")
        plain = isinstance(products.index, pd.RangeIndex) and products.index.start == 0 and products.index.step == 1
        self.products = products if plain else products.reset_index(drop=True)  # no copy of a big catalogue
        self.source, self.target = source, target
        self.chunk_elems = chunk_elems
        self.reranker, self.index, self.lists = reranker, index, lists
        self._index = ids if ids is not None else IdIndex(self.products["id"])
        self.version = None  # the ModelVersion it was loaded from, if any
        self._explainer = None

    @property
    def ranker(self) -> str:
        from dualrec.rerank import ranker_name

        return ranker_name(self.reranker)

    @property
    def num_products(self) -> int:
        return len(self.products)

    @classmethod
    def load(cls, model_dir: str | Path, two_stage: bool = True, version: str | None = None, log=None) -> "Recommender":
        """The model folder's recommender (its current version, or ``version``), memory-mapped;
        ``two_stage=False`` ignores its second stage and precomputed lists."""
        from dualrec.index import load_model_index
        from dualrec.lists import StoredLists
        from dualrec.rerank import load_model_reranker
        from dualrec.store import open_version

        v = open_version(model_dir, version)
        source, target = v.embeddings(mmap=True)
        index = load_model_index(v, source, target, log=log)
        reranker = load_model_reranker(v, source, target, index) if two_stage else None
        lists = StoredLists.load(v) if reranker is not None else None
        rec = cls(v.products(), source, target, reranker=reranker, index=index, lists=lists)
        rec.version = v
        return rec

    def index_of(self, ids: Sequence[str]) -> torch.Tensor:
        return torch.as_tensor(self._index.rows(ids), dtype=torch.long)

    def top_k(self, rows, k: int, exclude: Sequence | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indexes), each (Q, k'), k' = min(k, N - 1): the lists of product rows
        ``rows``, best first; the query itself is never returned, nor ``exclude[i]`` (rows) for
        query ``i``. Slots nothing can fill are index -1 with score -inf."""
        if isinstance(k, bool) or int(k) < 1:
            raise DualrecError("k must be at least 1")
        k = int(k)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_products):
            raise DualrecError(f"query rows must be in 0..{self.num_products - 1}")
        ex = None if exclude is None else [np.asarray(e, dtype=np.int64).reshape(-1) for e in exclude]
        if ex is not None and len(ex) != rows.size:
            raise DualrecError("exclude needs one list per query")
        if ex is not None and not any(e.size for e in ex):
            ex = None
        kk = min(k, self.num_products - 1)
        out_s = np.full((rows.size, max(kk, 0)), -np.inf, dtype=np.float32)
        out_i = np.full((rows.size, max(kk, 0)), -1, dtype=np.int64)
        if kk <= 0 or rows.size == 0:
            return out_s, out_i
        todo = np.ones(rows.size, dtype=bool)
        if self.lists is not None and ex is None:
            hit = self.lists.covers(rows, kk)
            if hit.any():
                # the whole stored row: the new products' gate reads the list's gap at its 10th
                # candidate (logged co-purchases left out), whatever k the caller asked for
                full = self.reranker.with_new(rows[hit], *self.lists.get(rows[hit], self.lists.k))
                out_s[hit], out_i[hit] = full[0][:, :kk], full[1][:, :kk]
                todo = ~hit
        if todo.any():
            sel = np.flatnonzero(todo)
            e = None if ex is None else [ex[i] for i in sel]
            if self.reranker is not None:
                out_s[sel], out_i[sel] = self.reranker.top_k(rows[sel], kk, exclude=e)
            elif self.index is not None:
                out_s[sel], out_i[sel] = self.index.recommend(rows[sel], kk, exclude=e)
            else:
                out_s[sel], out_i[sel] = self._exact(rows[sel], kk, e)
        return out_s, out_i

    @torch.no_grad()
    def _exact(self, rows: np.ndarray, k: int, exclude) -> tuple[np.ndarray, np.ndarray]:
        """Exact search without an index: chunked (rows x N) products (the reference the
        approximate indexes are tested against)."""
        s, t = _tensor(self.source), _tensor(self.target)
        step = max(1, self.chunk_elems // max(self.num_products, 1))
        out_s, out_i = [], []
        for lo in range(0, rows.size, step):
            q = torch.from_numpy(rows[lo : lo + step])
            e = None if exclude is None else [torch.from_numpy(x) for x in exclude[lo : lo + step]]
            v, i = masked_topk(s[q] @ t.T, k, q, e)
            out_s.append(v.numpy())
            out_i.append(i.numpy())
        return np.concatenate(out_s), np.concatenate(out_i)

    def topk_indices(
        self, query: torch.Tensor, k: int, exclude: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`top_k` with tensors in and out."""
        ex = None if exclude is None else [np.asarray(e, dtype=np.int64) for e in exclude]
        s, i = self.top_k(np.asarray(query, dtype=np.int64), k, ex)
        return torch.from_numpy(s), torch.from_numpy(i)

    def recommend(
        self,
        product_ids: Sequence[str],
        k: int = 10,
        exclude: dict[str, Sequence[str]] | None = None,
        explain: bool = False,
    ) -> list[Recommendation]:
        """Top-k related products for each query id (unknown ids raise :class:`UnknownProductError`).

        ``explain`` adds each item's kind (logged / predicted) and reason (needs a model version:
        :meth:`load`)."""
        q = self.index_of(product_ids)
        ex = None
        if exclude:
            ex = [self.index_of(exclude.get(str(p), [])) for p in product_ids]
        scores, idx = self.topk_indices(q, k, ex)
        ids = self.products["id"].to_numpy()
        out = []
        for p, qi, s, i in zip(product_ids, q.tolist(), scores, idx):
            keep = i >= 0
            from dualrec.rerank import ranker_name

            rec = Recommendation(
                str(p),
                ids[i[keep].numpy()].astype(str).tolist(),
                s[keep].tolist(),
                ranker=ranker_name(self.reranker, qi),
            )
            if explain:
                why = self.explainer.explain(qi, i[keep].numpy())
                rec.kinds, rec.reasons = [w["kind"] for w in why], [w["reason"] for w in why]
            out.append(rec)
        return out

    @property
    def explainer(self):
        if self._explainer is None:
            from dualrec.explain import Explainer

            if self.version is None:
                raise DualrecError("explanations need a model folder: load it with Recommender.load")
            self._explainer = Explainer.from_version(
                self.version, np.asarray(self.source), np.asarray(self.target), self.reranker
            )
        return self._explainer


def _tensor(a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.float()
    return torch.from_numpy(np.array(a, dtype=np.float32))  # a copy: memory-mapped arrays are read-only


def linked_products(version, product_ids: Sequence[str]) -> dict[str, list[str]]:
    """Co-purchase out-neighbours (in the model's training graph) of each query: the "already linked" set."""
    g = version.graph()
    ids = g.products["id"].to_numpy()
    known = pd.Index(g.products["id"]).get_indexer([str(p) for p in product_ids])
    out = {}
    for pid, i in zip(product_ids, known):  # one slice per query, not per edge
        if i < 0:
            out[str(pid)] = []  # added after training (cold start): nothing linked in the dataset
            continue
        lo, hi = np.searchsorted(g.cp_src.numpy(), [i, i + 1])  # cp_src is sorted
        out[str(pid)] = ids[g.cp_dst[lo:hi].numpy()].astype(str).tolist()
    return out
