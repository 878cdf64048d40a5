"""Popularity: every query gets the products with the most training in-edges (co-purchase in-degree)."""

from __future__ import annotations

import torch

from dualrec.graph import ProductGraph


class Popularity:
    """Score(u -> v) = weighted co-purchase in-degree of v (the same ranking for every query)."""

    name = "popularity"

    def fit(self, graph: ProductGraph, train_mask: torch.Tensor) -> "Popularity":
        deg = torch.zeros(graph.num_products, dtype=torch.float32)
        self.scores = deg.index_add_(0, graph.cp_dst[train_mask], graph.cp_weight[train_mask])
        return self

    def score_fn(self, query: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(query.numel(), -1)

    def pair_score_fn(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.scores[v]
