"""Seeded held-out splits of the co-purchase edges.

:func:`edge_split` holds out a fraction of every source node's out-edges for validation and
test ("per source node": every query with enough history contributes, popular or not).
:func:`cold_split` (cold start) holds out whole products.

A split is a tensor of labels over ``graph.cp_src`` (0 = train, 1 = val, 2 = test) so it can be
stored in a checkpoint and applied to any method identically. Similarity edges are never held
out: co-view is side information available at serving time, not the target of prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dualrec.graph import DualrecError, ProductGraph

TRAIN, VAL, TEST = 0, 1, 2


@dataclass
class EdgeSplit:
    labels: torch.Tensor  # (E,) int8 over the co-purchase edges: TRAIN / VAL / TEST
    seed: int
    val_fraction: float
    test_fraction: float

    def mask(self, part: int) -> torch.Tensor:
        return self.labels == part

    def counts(self) -> dict:
        return {name: int((self.labels == v).sum()) for name, v in (("train", TRAIN), ("val", VAL), ("test", TEST))}

    def state_dict(self) -> dict:
        return {
            "labels": self.labels,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
        }

    @classmethod
    def from_state_dict(cls, d: dict) -> "EdgeSplit":
        return cls(d["labels"], d["seed"], d["val_fraction"], d["test_fraction"])


def edge_split(graph: ProductGraph, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> EdgeSplit:
    """Hold out about ``val_fraction`` / ``test_fraction`` of each source node's out-edges.

    For a source with out-degree ``d``, its edges are shuffled and each gets a quantile
    ``q = (position + offset) / d`` with a random per-source ``offset`` in [0, 1): edges with
    ``q < test_fraction`` go to test, the next ``val_fraction`` to validation. The random offset
    makes the expected held-out share exactly the requested fraction even for small ``d``
    (a source with 3 edges is held out with probability 0.3, not never). A source always keeps
    at least one training out-edge, so every query has some history. Fully vectorised.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DualrecError("val_fraction and test_fraction must be in [0, 1) and sum to less than 1")
    n, e = graph.num_products, graph.num_copurchase
    gen = torch.Generator().manual_seed(seed)
    src = graph.cp_src
    # Shuffle within source groups: sort by (src, random key).
    rnd = torch.rand(e, generator=gen)
    order = torch.argsort(src.double() + rnd.double() * 0.5)  # src is integral: keys stay grouped
    deg = torch.bincount(src, minlength=n)
    start = torch.cumsum(deg, 0) - deg
    pos = torch.empty(e, dtype=torch.long)
    pos[order] = torch.arange(e) - start[src[order]]
    offset = torch.rand(n, generator=gen)
    d = deg[src].double()
    q = (pos.double() + offset[src].double()) / d
    labels = torch.full((e,), TRAIN, dtype=torch.int8)
    labels[q < test_fraction] = TEST
    labels[(q >= test_fraction) & (q < test_fraction + val_fraction)] = VAL
    # Keep the last-shuffled edge of every source in training.
    labels[pos == (deg[src] - 1)] = TRAIN
    return EdgeSplit(labels, seed, val_fraction, test_fraction)


@dataclass
class ColdSplit:
    """A cold-start split: whole products held out (see :func:`cold_split`).

    ``split`` labels the co-purchase edges: TRAIN / VAL among edges between two warm
    products, TEST = every edge that touches a cold product. ``graph`` is the input graph
    without the co-view pairs that touch a cold product (a new product has no co-view
    history either); methods must be given this graph.
    """

    split: EdgeSplit
    cold: torch.Tensor  # (N,) bool: the held-out products
    graph: ProductGraph

    def query_mask(self) -> torch.Tensor:
        """TEST edges ``u -> v`` with ``u`` cold: the new product as the query."""
        return self.split.mask(TEST) & self.cold[self.graph.cp_src]

    def target_mask(self) -> torch.Tensor:
        """TEST edges ``u -> v`` with ``v`` cold and ``u`` warm: is the new product recommended?"""
        return self.split.mask(TEST) & self.cold[self.graph.cp_dst] & ~self.cold[self.graph.cp_src]

    def warm_mask(self) -> torch.Tensor:
        """TEST edges between known products (``warm_fraction`` of :func:`cold_split`): what the
        room a ranking gives new products costs the known ones."""
        return self.split.mask(TEST) & ~self.cold[self.graph.cp_src] & ~self.cold[self.graph.cp_dst]


def cold_split(
    graph: ProductGraph, fraction: float = 0.1, val_fraction: float = 0.1, seed: int = 0, warm_fraction: float = 0.0
) -> ColdSplit:
    """Hold out a seeded ``fraction`` of the products entirely (cold start).

    Every co-purchase edge touching a held-out product becomes TEST, and the co-view pairs
    touching one are dropped from the returned graph, so nothing about those products except
    their metadata is seen in training. Among the remaining edges ``val_fraction`` of each
    source's out-edges go to VAL (as :func:`edge_split`), for model selection, and
    ``warm_fraction`` to TEST (:meth:`ColdSplit.warm_mask`).
    """
    if not 0 < fraction < 1:
        raise DualrecError(f"the cold-start fraction must be in (0, 1), got {fraction}")
    n = graph.num_products
    gen = torch.Generator().manual_seed(seed + 7919)  # independent of edge_split's stream for this seed
    cold = torch.zeros(n, dtype=torch.bool)
    cold[torch.randperm(n, generator=gen)[: int(round(fraction * n))]] = True
    labels = edge_split(graph, val_fraction, warm_fraction, seed).labels.clone()
    labels[cold[graph.cp_src] | cold[graph.cp_dst]] = TEST
    keep = ~(cold[graph.sim_a] | cold[graph.sim_b])
    g = ProductGraph(
        graph.products,
        graph.cp_src,
        graph.cp_dst,
        graph.cp_weight,
        graph.sim_a[keep],
        graph.sim_b[keep],
        graph.sim_weight[keep],
        graph.report,
    )
    return ColdSplit(EdgeSplit(labels, seed, val_fraction, warm_fraction), cold, g)


def one_way_mask(graph: ProductGraph, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Edges src -> dst whose reverse is not a co-purchase edge anywhere in the graph."""
    return ~graph.reciprocal_mask(src, dst)
