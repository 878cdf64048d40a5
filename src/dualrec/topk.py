"""Top-k with exclusions: the one dense implementation that every ranking path uses (the CLI's
recommender, the second stage, the service's incoming lists). The approximate retrieval index
filters its own over-fetched candidates (:meth:`dualrec.index.RetrievalIndex.recommend`) with
the same conventions."""

from __future__ import annotations

from typing import Sequence

import torch

from dualrec.errors import DualrecError


def masked_topk(
    scores: torch.Tensor, k: int, rows: torch.Tensor | None = None, exclude: Sequence[torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of each row of ``scores`` (Q, N), best first, leaving out the query itself
    (``rows[i]``, when given) and ``exclude[i]`` (masked in place to -inf).

    Returns ``(values, indexes)``, each (Q, k') with k' = min(k, N - 1) when ``rows`` is given,
    else min(k, N). A slot that only an excluded product could fill comes back as index -1 with
    value -inf.
    """
    if isinstance(k, bool) or int(k) < 1:
        raise DualrecError("k must be at least 1")
    q, n = scores.shape
    kk = max(0, min(int(k), n - 1 if rows is not None else n))
    if rows is not None and q:
        scores[torch.arange(q), torch.as_tensor(rows, dtype=torch.long)] = float("-inf")
    if exclude is not None:
        r = torch.cat([torch.full((len(e),), i, dtype=torch.long) for i, e in enumerate(exclude)] or [torch.zeros(0)])
        c = torch.cat([torch.as_tensor(e, dtype=torch.long) for e in exclude] or [torch.zeros(0)])
        if c.numel():
            scores[r.long(), c.long()] = float("-inf")
    if kk == 0:
        return scores[:, :0], torch.zeros((q, 0), dtype=torch.long)
    values, idx = torch.topk(scores, kk, dim=1)
    # equal scores in row order, so that lists do not change between calls (topk's order of ties
    # is unspecified)
    o = torch.argsort(idx, dim=1, stable=True)
    values, idx = values.gather(1, o), idx.gather(1, o)
    o = torch.argsort(-values, dim=1, stable=True)
    values, idx = values.gather(1, o), idx.gather(1, o)
    return values, torch.where(torch.isneginf(values), torch.full_like(idx, -1), idx)
