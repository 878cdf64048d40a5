"""Top-k related products: the k nearest target embeddings to a query's source embedding,
reranked by the second stage when the model folder has one.

:class:`Recommender` is exact (a chunked matrix product + ``topk``), so a batch of queries
against 1M products never materialises more than ``chunk_elems`` scores at once. With a
second stage (see :mod:`dualrec.rerank`) each query's DAEMON and
co-occurrence candidates are reranked by the pair model; its known co-purchases come first.
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
    ranker: str | None = None  # how this list was ranked: "two-stage" or "daemon" (what the scores are)


class Recommender:
    """Exact maximum-inner-product search of ``source[query]`` against all ``target`` rows.

    Args:
        products: DataFrame with an ``id`` column, row-aligned with the embeddings.
        source, target: (N, d) float tensors (normalised by the model, so scores are cosines).
        chunk_elems: at most this many scores are held in memory at once.
        reranker: the model's second stage (:class:`~dualrec.rerank.CandidateReranker`), or
            ``None`` to rank by DAEMON alone. Its scores are the pair model's, not cosines.
    """

    def __init__(
        self,
        products: pd.DataFrame,
        source: torch.Tensor,
        target: torch.Tensor,
        chunk_elems: int = 2**24,
        reranker=None,
    ):
        if source.shape != target.shape or source.shape[0] != len(products):
            raise DualrecError("source/target embeddings and products do not line up")
        self.products = products.reset_index(drop=True)
        self.source, self.target = source.float(), target.float()
        self.chunk_elems = chunk_elems
        self.reranker = reranker
        self._index = IdIndex(self.products["id"])
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
    def load(cls, model_dir: str | Path, two_stage: bool = True, version: str | None = None) -> "Recommender":
        """The model folder's recommender (its current version, or ``version``);
        ``two_stage=False`` ignores its second stage."""
        from dualrec.store import open_version

        v = open_version(model_dir, version)
        source, target = (torch.from_numpy(np.array(a, dtype=np.float32)) for a in v.embeddings())
        reranker = None
        if two_stage:
            from dualrec.rerank import load_model_reranker

            reranker = load_model_reranker(v, source, target)
        rec = cls(v.products(), source, target, reranker=reranker)
        rec.version = v
        return rec

    def index_of(self, ids: Sequence[str]) -> torch.Tensor:
        return torch.as_tensor(self._index.rows(ids), dtype=torch.long)

    @torch.no_grad()
    def topk_indices(
        self, query: torch.Tensor, k: int, exclude: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, indexes), each (Q, k'), k' = min(k, N - 1); the query itself is never returned.

        ``exclude[i]`` (optional) lists more product indexes to leave out for query ``i``.
        Excluded slots that cannot be filled come back as index -1 with score -inf.
        """
        n = self.num_products
        rows = max(1, self.chunk_elems // max(n, 1))
        out_s, out_i = [], []
        for lo in range(0, max(query.numel(), 1), rows):
            q = query[lo : lo + rows]
            if self.reranker is None:
                scores = self.source[q] @ self.target.T
            else:
                scores = self.reranker.score_fn(q, known_first=True)
            s, i = masked_topk(scores, k, q, None if exclude is None else exclude[lo : lo + rows])
            out_s.append(s)
            out_i.append(i)
        return torch.cat(out_s), torch.cat(out_i)

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
                self.version, self.source.numpy(), self.target.numpy(), self.reranker
            )
        return self._explainer


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
