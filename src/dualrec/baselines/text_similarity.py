"""Metadata-text similarity: cosine of the node features, ignoring the graph entirely.

Score(u -> v) = cos(x_u, x_v) with the feature rows L2-normalised. The score is symmetric,
so it cannot tell the direction of a co-purchase (direction accuracy is exactly 0.5): it is
the "content-based" reference a graph model has to beat.
"""

from __future__ import annotations

import torch

from dualrec.graph import DualrecError, ProductGraph


class TextSimilarity:
    """Cosine similarity of the (text) node features; the same in both directions."""

    name = "text_similarity"

    def fit(
        self, graph: ProductGraph, train_mask: torch.Tensor | None = None, x: torch.Tensor | None = None, val=None
    ) -> "TextSimilarity":
        if x is None:
            raise DualrecError("text_similarity needs node features x (e.g. from load_or_build_features)")
        x = torch.as_tensor(x, dtype=torch.float32)
        if x.dim() != 2 or x.shape[0] != graph.num_products:
            raise DualrecError(f"features have shape {tuple(x.shape)}; expected ({graph.num_products}, F)")
        self.x = torch.nn.functional.normalize(x, dim=1)  # a zero row stays zero (cosine 0)
        return self

    def score_fn(self, query: torch.Tensor) -> torch.Tensor:
        return self.x[query] @ self.x.T

    def pair_score_fn(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # elementwise product then sum: bit-for-bit symmetric in (u, v)
        return (self.x[u] * self.x[v]).sum(-1)


__all__ = ["TextSimilarity"]
