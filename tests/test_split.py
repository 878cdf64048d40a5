"""edge_split: seeded, per-source held-out fractions, every source keeps training history."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from dualrec.graph import DualrecError, ProductGraph
from dualrec.split import TEST, TRAIN, VAL, EdgeSplit, edge_split, one_way_mask
from dualrec.synthetic import make_store


@pytest.fixture(scope="module")
def store() -> ProductGraph:
    return make_store(n_products=3000)


def test_deterministic_per_seed_and_different_across_seeds(store):
    a = edge_split(store, 0.1, 0.1, seed=3)
    b = edge_split(store, 0.1, 0.1, seed=3)
    c = edge_split(store, 0.1, 0.1, seed=4)
    assert torch.equal(a.labels, b.labels)
    assert not torch.equal(a.labels, c.labels)
    # not just a relabelling: the held-out edge sets differ substantially
    ha, hc = (
        set(torch.nonzero(a.labels == TEST).flatten().tolist()),
        set(torch.nonzero(c.labels == TEST).flatten().tolist()),
    )
    assert len(ha ^ hc) > 0.5 * len(ha)


def test_labels_shape_dtype_and_values(store):
    s = edge_split(store, 0.15, 0.05, seed=0)
    assert s.labels.shape == (store.num_copurchase,)
    assert s.labels.dtype == torch.int8
    assert set(s.labels.unique().tolist()) == {TRAIN, VAL, TEST}
    c = s.counts()
    assert sum(c.values()) == store.num_copurchase
    assert c == {"train": int(s.mask(TRAIN).sum()), "val": int(s.mask(VAL).sum()), "test": int(s.mask(TEST).sum())}


@pytest.mark.parametrize("val, test", [(0.1, 0.1), (0.2, 0.3), (0.0, 0.2), (0.25, 0.0)])
def test_held_out_fractions_close_to_requested(store, val, test):
    e = store.num_copurchase
    for seed in (0, 1):
        c = edge_split(store, val, test, seed=seed).counts()
        assert c["val"] / e == pytest.approx(val, abs=0.02)
        assert c["test"] / e == pytest.approx(test, abs=0.02)
        assert c["train"] / e == pytest.approx(1 - val - test, abs=0.03)
    if val == 0:
        assert edge_split(store, val, test).counts()["val"] == 0
    if test == 0:
        assert edge_split(store, val, test).counts()["test"] == 0


def test_held_out_spread_over_sources_not_only_hubs(store):
    """Per-source split: sources with a handful of edges contribute held-out edges too."""
    s = edge_split(store, 0.1, 0.1, seed=0)
    deg = torch.bincount(store.cp_src, minlength=store.num_products)
    small = (deg[store.cp_src] >= 2) & (deg[store.cp_src] <= 4)
    share = float((s.labels[small] != TRAIN).float().mean())
    assert 0.08 < share < 0.3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_source_keeps_a_train_edge(store, seed):
    s = edge_split(store, 0.3, 0.4, seed=seed)
    n = store.num_products
    out_deg = torch.bincount(store.cp_src, minlength=n)
    train_deg = torch.bincount(store.cp_src[s.labels == TRAIN], minlength=n)
    has_out = out_deg >= 1
    assert bool((train_deg[has_out] >= 1).all())
    # and heavy hold-out really happened (the guarantee is not trivially met by holding out nothing)
    assert s.counts()["test"] > 0.3 * store.num_copurchase


def test_small_graph_degree_one_sources_stay_in_train():
    p = pd.DataFrame({"id": [str(i) for i in range(6)]})
    g, _ = ProductGraph.from_edges(p, copurchase=([0, 1, 2, 3, 4], [1, 2, 3, 4, 5]))
    for seed in range(20):
        assert edge_split(g, 0.4, 0.5, seed=seed).labels.tolist() == [TRAIN] * 5


def test_empty_graph():
    g, _ = ProductGraph.from_edges(pd.DataFrame({"id": ["a", "b"]}))
    s = edge_split(g)
    assert s.labels.numel() == 0 and s.counts() == {"train": 0, "val": 0, "test": 0}


@pytest.mark.parametrize("val, test", [(-0.1, 0.1), (0.1, -0.01), (1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (0.7, 0.4)])
def test_invalid_fractions_raise(store, val, test):
    with pytest.raises(DualrecError, match="fraction"):
        edge_split(store, val, test)


def test_state_dict_round_trip(store):
    s = edge_split(store, 0.1, 0.2, seed=5)
    t = EdgeSplit.from_state_dict(s.state_dict())
    assert torch.equal(t.labels, s.labels)
    assert (t.seed, t.val_fraction, t.test_fraction) == (5, 0.1, 0.2)


def test_one_way_mask():
    p = pd.DataFrame({"id": list("abc")})
    g, _ = ProductGraph.from_edges(p, copurchase=([0, 1, 1], [1, 0, 2]))
    assert one_way_mask(g, g.cp_src, g.cp_dst).tolist() == [False, False, True]


def test_cold_split_holds_out_whole_products(store):
    from dualrec.split import cold_split

    cs = cold_split(store, 0.1, 0.1, seed=5)
    assert int(cs.cold.sum()) == 300
    assert torch.equal(cs.cold, cold_split(store, 0.1, 0.1, seed=5).cold)  # seeded
    assert not torch.equal(cs.cold, cold_split(store, 0.1, 0.1, seed=6).cold)
    g, lab = cs.graph, cs.split.labels
    touches = cs.cold[g.cp_src] | cs.cold[g.cp_dst]
    assert bool((lab[touches] == TEST).all())  # nothing of a cold product is trained on
    assert not bool((lab[~touches] == TEST).any())  # and the warm graph keeps all its edges
    assert int((lab[~touches] == VAL).sum()) > 0  # validation for model selection
    assert not bool((cs.cold[g.sim_a] | cs.cold[g.sim_b]).any())  # no co-view history either
    assert g.num_similar < store.num_similar and g.num_copurchase == store.num_copurchase
    q, t = cs.query_mask(), cs.target_mask()
    assert bool(cs.cold[g.cp_src[q]].all()) and bool((~cs.cold[g.cp_src[t]] & cs.cold[g.cp_dst[t]]).all())
    assert int((q | t).sum()) == int(touches.sum()) and not bool((q & t).any())
    with pytest.raises(DualrecError, match="fraction"):
        cold_split(store, 0.0)
