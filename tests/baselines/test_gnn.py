"""GNN baselines (GraphSAGE, LightGCN, DiGAE-style directed GNN) on a small synthetic store."""

import pytest
import torch

from dualrec.baselines.gnn import DirectedGNNBaseline, GraphSAGEBaseline, LightGCNBaseline
from dualrec.evaluate import RankingEvaluator, direction_accuracy
from dualrec.features import build_features
from dualrec.graph import DualrecError
from dualrec.split import TEST, TRAIN, VAL, edge_split
from dualrec.synthetic import make_store

# Small graphs have few edges: small batches give enough optimiser steps per epoch.
FAST = {
    "graphsage": lambda seed=0, **kw: GraphSAGEBaseline(
        epochs=kw.pop("epochs", 12), batch_size=256, lr=5e-3, num_negatives=256, patience=3, seed=seed, **kw
    ),
    "lightgcn": lambda seed=0, **kw: LightGCNBaseline(
        epochs=kw.pop("epochs", 20), batch_size=512, lr=1e-2, patience=4, seed=seed, **kw
    ),
    "directed_gnn": lambda seed=0, **kw: DirectedGNNBaseline(
        epochs=kw.pop("epochs", 30), batch_size=256, lr=1e-2, patience=5, seed=seed, **kw
    ),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The graphs here are tiny: threads only add synchronisation (badly so on a busy machine).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def store():
    g = make_store(n_products=800, seed=0)
    x = torch.from_numpy(build_features(g.products, "hash", show_progress=False))
    split = edge_split(g, 0.1, 0.1, seed=0)
    return g, x, split


@pytest.fixture(scope="module")
def fitted(store):
    g, x, split = store
    va = split.mask(VAL)
    return {name: make().fit(g, split.mask(TRAIN), x, val=(g.cp_src[va], g.cp_dst[va])) for name, make in FAST.items()}


@pytest.mark.parametrize("name", list(FAST))
def test_scores_have_the_contract_shapes(store, fitted, name):
    g, _, _ = store
    m = fitted[name]
    assert m.name == name
    q = torch.tensor([0, 5, 17, 799])
    s = m.score_fn(q)
    assert s.shape == (4, g.num_products) and s.is_floating_point() and torch.isfinite(s).all()
    u = torch.tensor([0, 5, 17, 799, 5])
    v = torch.tensor([3, 0, 17, 1, 798])
    full = m.score_fn(u)
    assert torch.allclose(m.pair_score_fn(u, v), full[torch.arange(5), v], atol=1e-5)
    # early stopping kept the best validation epoch
    assert m.history and m.best_epoch == max(m.history, key=lambda h: h["val_MRR@10"])["epoch"]
    assert m.fit_seconds > 0


@pytest.mark.parametrize("name", list(FAST))
def test_beats_random_ranking(store, fitted, name):
    g, _, split = store
    te = split.mask(TEST)
    known = split.mask(TRAIN) | split.mask(VAL)
    ev = RankingEvaluator(g.num_products, ks=(10,))
    args = (g.cp_src[te], g.cp_dst[te], g.cp_src[known], g.cp_dst[known])
    res = ev.eval(fitted[name].score_fn, *args)
    rnd = ev.eval(lambda q: torch.zeros(q.numel(), g.num_products), *args)  # exact random-ranking value
    assert rnd["HitRate@10"] < 0.02
    assert res["HitRate@10"] > 5 * rnd["HitRate@10"], (name, res, rnd)
    assert res["MRR@10"] > 5 * rnd["MRR@10"], (name, res, rnd)


def _main_to_accessory(g, split):
    te = split.mask(TEST) | split.mask(VAL)
    src, dst = g.cp_src[te], g.cp_dst[te]
    role = g.products["role"].to_numpy()
    sel = torch.as_tensor((role[src] == "main") & (role[dst] == "accessory")) & ~g.reciprocal_mask(src, dst)
    return src[sel], dst[sel]


def test_directed_gnn_knows_direction_and_symmetric_ones_do_not(store, fitted):
    g, _, split = store
    src, dst = _main_to_accessory(g, split)
    assert src.numel() > 50
    assert direction_accuracy(fitted["directed_gnn"].pair_score_fn, src, dst) > 0.7
    for name in ("graphsage", "lightgcn"):  # one embedding per product: symmetric scores
        assert direction_accuracy(fitted[name].pair_score_fn, src, dst) == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("name", list(FAST))
def test_seeded_runs_reproduce(store, name):
    g, x, split = store
    tr = split.mask(TRAIN)
    a = FAST[name](seed=1, epochs=2).fit(g, tr, x)
    b = FAST[name](seed=1, epochs=2).fit(g, tr, x)
    c = FAST[name](seed=2, epochs=2).fit(g, tr, x)
    # equal up to float summation order (multi-threaded sparse reductions may reorder sums)
    torch.testing.assert_close(a.source, b.source, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.target, b.target, rtol=0, atol=1e-5)
    assert (a.source - c.source).abs().max() > 1e-2
    assert len(a.history) == 2 and a.best_epoch == 1  # without validation the last epoch is kept


def test_misuse_is_reported(store):
    g, _, split = store
    with pytest.raises(DualrecError, match="features"):
        GraphSAGEBaseline(epochs=1).fit(g, split.mask(TRAIN), None)
    with pytest.raises(DualrecError, match="fit"):
        LightGCNBaseline().score_fn(torch.tensor([0]))
    with pytest.raises(DualrecError, match="train_mask"):
        DirectedGNNBaseline(epochs=1).fit(g, torch.ones(3, dtype=torch.bool))


def test_symmetric_baselines_ignore_direction_on_a_tiny_graph():
    # scores are symmetric by construction: score(u -> v) == score(v -> u)
    g = make_store(n_products=120, seed=1)
    tr = torch.ones(g.num_copurchase, dtype=torch.bool)
    m = LightGCNBaseline(epochs=2, batch_size=128, seed=0).fit(g, tr)
    s = m.score_fn(torch.arange(g.num_products))
    assert torch.allclose(s, s.T, atol=1e-5)
