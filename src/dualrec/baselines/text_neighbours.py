"""Text neighbours' co-purchases: a product is recommended what the products most like it in text
bought, the classic k-nearest-neighbour answer to cold start.

Score(u -> v) = sum over the ``k`` products w nearest to u by text cosine (those with training
co-purchases, never u itself, cosine > 0) of cos(x_u, x_w) * [w -> v is a training co-purchase];
products no neighbour bought follow by popularity (training in-degree). It never reads u's own
edges, so it ranks a product without history as well as one with it. dualrec's second stage
ranks new products as queries the same way (with DAEMON breaking ties and ranking the rest):
this baseline is the control that says what DAEMON adds there.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from dualrec.graph import DualrecError, ProductGraph


class TextNeighbours:
    """The co-purchases of the ``k`` text-nearest products with history, weighted by cosine."""

    name = "text_neighbours"

    def __init__(self, k: int = 20):
        if k < 1:
            raise DualrecError(f"k must be at least 1, got {k}")
        self.k = k

    def fit(self, graph: ProductGraph, train_mask: torch.Tensor, x: torch.Tensor | None = None) -> "TextNeighbours":
        if x is None:
            raise DualrecError("text_neighbours needs node features x (e.g. from load_or_build_features)")
        x = torch.as_tensor(x, dtype=torch.float32)
        if x.dim() != 2 or x.shape[0] != graph.num_products:
            raise DualrecError(f"features have shape {tuple(x.shape)}; expected ({graph.num_products}, F)")
        n = graph.num_products
        src, dst = graph.cp_src[train_mask], graph.cp_dst[train_mask]
        self.x = torch.nn.functional.normalize(x, dim=1)
        self.rows = torch.unique(src)  # the products with history: the only possible neighbours
        self.adj = sp.csr_matrix((np.ones(src.numel(), np.float32), (src.numpy(), dst.numpy())), shape=(n, n))
        self.adj.data[:] = 1.0  # a repeated edge counts once
        pop = torch.bincount(dst, minlength=n).float()
        self.tie = 1e-3 * pop / pop.max().clamp(min=1.0) * 0.999  # orders the rest; < 1e-3
        return self

    def score_fn(self, query: torch.Tensor) -> torch.Tensor:
        n = self.x.shape[0]
        cos = self.x[query] @ self.x[self.rows].T
        cos[self.rows[None, :] == query[:, None]] = -1.0  # never the query itself
        k = min(self.k, self.rows.numel())
        w, j = cos.topk(k, dim=1)
        w = w.clamp(min=0.0)
        q = query.numel()
        nb = sp.csr_matrix(
            (w.reshape(-1).numpy(), (np.repeat(np.arange(q), k), self.rows[j].reshape(-1).numpy())), shape=(q, n)
        )
        lent = torch.from_numpy(np.asarray((nb @ self.adj).todense(), dtype=np.float32))
        return lent + self.tie

    def pair_score_fn(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = torch.empty(u.numel())
        uq, inv = torch.unique(u, return_inverse=True)
        for lo in range(0, uq.numel(), 1024):
            rows = self.score_fn(uq[lo : lo + 1024])
            sel = (inv >= lo) & (inv < lo + 1024)
            out[sel] = rows[inv[sel] - lo, v[sel]]
        return out


__all__ = ["TextNeighbours"]
