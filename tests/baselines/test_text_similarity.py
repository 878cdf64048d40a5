"""Text-similarity baseline: cosine of the features, symmetric, graph-blind."""

import pandas as pd
import pytest
import torch

from dualrec.baselines import TextSimilarity
from dualrec.evaluate import direction_accuracy
from dualrec.graph import DualrecError, ProductGraph


def graph(n):
    g, _ = ProductGraph.from_edges(pd.DataFrame({"id": [str(i) for i in range(n)]}), ([0], [1]))
    return g


def test_cosine_of_the_features():
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [0.0, 0.0]])
    m = TextSimilarity().fit(graph(5), None, x=x)
    s = m.score_fn(torch.tensor([0]))[0]
    assert torch.allclose(s, torch.tensor([1.0, 1.0, 0.0, 2**-0.5, 0.0]))
    assert s[1] > s[3] > s[2]
    assert torch.isfinite(m.score_fn(torch.tensor([4]))).all()  # a zero feature row: cosine 0, no NaN


def test_symmetric_so_direction_accuracy_is_one_half():
    g = graph(50)
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(0))
    m = TextSimilarity().fit(g, None, x=x)
    u = torch.arange(0, 25)
    v = torch.arange(25, 50)
    assert torch.equal(m.pair_score_fn(u, v), m.pair_score_fn(v, u))
    assert direction_accuracy(m.pair_score_fn, u, v, num_products=50) == 0.5
    rows = m.score_fn(u)
    assert torch.allclose(rows[torch.arange(25), v], m.pair_score_fn(u, v), atol=1e-6)


def test_needs_features_of_the_right_shape():
    with pytest.raises(DualrecError, match="needs node features"):
        TextSimilarity().fit(graph(3), None)
    with pytest.raises(DualrecError, match="shape"):
        TextSimilarity().fit(graph(3), None, x=torch.zeros(4, 2))
