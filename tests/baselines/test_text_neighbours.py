"""Text neighbours' co-purchases: a product gets what the products most like it in text bought."""

import pandas as pd
import pytest
import torch

from dualrec.baselines import TextNeighbours
from dualrec.graph import DualrecError, ProductGraph


def test_a_product_gets_what_its_text_neighbours_bought():
    # 0 and 1 are alike, 2 is half like them, 3 unlike; 4 and 5 are bought; 6 has no edges at all
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.3, 0.7], [0.7, 0.3], [1.0, 0.1]])
    ids = pd.DataFrame({"id": [str(i) for i in range(7)]})
    g, _ = ProductGraph.from_edges(ids, ([1, 1, 2, 3, 3], [4, 5, 5, 4, 0]))
    m = TextNeighbours(k=2).fit(g, torch.ones(g.num_copurchase, dtype=torch.bool), x=x)
    c = torch.nn.functional.normalize(x, dim=1)
    s = m.score_fn(torch.tensor([6, 1]))
    # 6 (no history): its 2 nearest with history are 1 and 2; 5 bought by both, 4 by 1 only
    w1, w2 = float(c[6] @ c[1]), float(c[6] @ c[2])
    assert s[0, 5] == pytest.approx(w1 + w2, abs=2e-3) and s[0, 4] == pytest.approx(w1, abs=2e-3)
    assert s[0, 5] > s[0, 4] > s[0, 0]  # then popularity (below any neighbour's weight)
    assert s[0, 0] > s[0, 6] and s[0, 0] < 1e-3
    # 1 is never its own neighbour: its 2 nearest are 2 and 3 (0 has no co-purchases)
    assert s[1, 5] == pytest.approx(float(c[1] @ c[2]), abs=2e-3)
    assert s[1, 4] < 1e-3  # bought by 3 only, whose text is orthogonal to 1's
    u, v = torch.tensor([6, 6, 1]), torch.tensor([5, 4, 5])
    torch.testing.assert_close(m.pair_score_fn(u, v), torch.stack([s[0, 5], s[0, 4], s[1, 5]]))


def test_needs_features_and_a_positive_k():
    ids = pd.DataFrame({"id": ["a", "b"]})
    g, _ = ProductGraph.from_edges(ids, ([0], [1]))
    with pytest.raises(DualrecError, match="needs node features"):
        TextNeighbours().fit(g, torch.ones(1, dtype=torch.bool))
    with pytest.raises(DualrecError, match="k must be"):
        TextNeighbours(k=0)
