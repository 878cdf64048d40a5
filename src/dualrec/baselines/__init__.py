"""Baselines, all scored by the same evaluator as DAEMON (see dualrec.evaluate)."""

from dualrec.baselines.popularity import Popularity

__all__ = ["Popularity"]

from dualrec.baselines.text_neighbours import TextNeighbours  # noqa: E402
from dualrec.baselines.text_similarity import TextSimilarity  # noqa: E402
from dualrec.cooccurrence import Cooccurrence  # noqa: E402  (the second stage's graph half, also a baseline)

__all__ += ["Cooccurrence", "TextNeighbours", "TextSimilarity"]
from dualrec.baselines.gnn import DirectedGNNBaseline, GraphSAGEBaseline, LightGCNBaseline  # noqa: E402

__all__ += ["DirectedGNNBaseline", "GraphSAGEBaseline", "LightGCNBaseline"]
