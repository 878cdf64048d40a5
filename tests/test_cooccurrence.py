"""Co-occurrence baseline: path counts on tiny hand graphs, direction, validation tuning."""

import numpy as np
import pandas as pd
import pytest
import torch

from dualrec.baselines import Cooccurrence, Popularity
from dualrec.cooccurrence import ALPHAS, GAMMAS, KINDS, WEIGHTS
from dualrec.evaluate import RankingEvaluator, direction_accuracy
from dualrec.graph import ProductGraph
from dualrec.split import TEST, TRAIN, VAL, edge_split
from dualrec.synthetic import make_store


def hand_graph(cp, sim=(), n=8):
    products = pd.DataFrame({"id": [f"p{i}" for i in range(n)]})
    s, d = zip(*cp) if cp else ((), ())
    a, b = zip(*sim) if sim else ((), ())
    g, _ = ProductGraph.from_edges(products, (list(s), list(d)), (list(a), list(b)))
    return g


def all_train(g):
    return torch.ones(g.num_copurchase, dtype=torch.bool)


def test_two_hop_path_scores_above_unreachable():
    # 0 -> 1 -> 2 ; 3 -> 4 elsewhere ; 5, 6, 7 isolated
    g = hand_graph([(0, 1), (1, 2), (3, 4)])
    m = Cooccurrence().fit(g, all_train(g))
    s = m.score_fn(torch.tensor([0]))[0]
    assert s.shape == (8,)
    for unreachable in (3, 4, 5, 6, 7):
        assert s[2] > s[unreachable]
    assert torch.isfinite(s).all()


def test_direction_of_a_two_hop_path():
    g = hand_graph([(0, 1), (1, 2), (3, 4)])
    m = Cooccurrence().fit(g, all_train(g))
    u, v = torch.tensor([0]), torch.tensor([2])
    assert m.pair_score_fn(u, v)[0] > m.pair_score_fn(v, u)[0]
    assert direction_accuracy(m.pair_score_fn, u, v, num_products=8) == 1.0


def test_path_kinds_count_the_right_paths():
    # 0 -> 1 -> 2, 0 ~ 3 -> 4, 0 -> 5 ~ 6, 7 -> 0 and 7 -> 2 (siblings), 2 -> 1 <- 0 (co-target)
    g = hand_graph([(0, 1), (1, 2), (3, 4), (0, 5), (7, 0), (7, 2), (2, 1)], sim=[(0, 3), (5, 6)])
    m = Cooccurrence().fit(g, all_train(g))
    m._set_gamma(0.0)  # raw counts
    rows = {k: r.toarray()[0] for k, r in m.kind_rows([0]).items()}
    assert rows["cp2"][2] == 1 and rows["cp2"].sum() == 1  # 0 -> 1 -> 2 (5 has no out-edge)
    assert rows["sim_cp"][4] == 1 and rows["sim_cp"].sum() == 1
    assert rows["cp_sim"][6] == 1 and rows["cp_sim"][0] == 0
    assert rows["sibling"][2] == 1  # 0 <- 7 -> 2
    assert rows["cotarget"][2] == 1  # 0 -> 1 <- 2
    assert rows["reverse"][7] == 1 and rows["sim"][3] == 1
    assert rows["cf3"][1] >= 1  # 0 -> 1 <- 2 -> 1 (x = 2 shares the out-neighbour 1 with 0)


def test_score_fn_and_pair_score_fn_agree_and_chunk():
    g = make_store(n_products=300, seed=2)
    m = Cooccurrence(row_chunk=7).fit(g, all_train(g))
    q = torch.arange(0, 300, 11)
    rows = m.score_fn(q)
    assert rows.shape == (q.numel(), 300) and rows.dtype == torch.float32
    u = q.repeat_interleave(5)
    v = torch.randint(0, 300, (u.numel(),), generator=torch.Generator().manual_seed(0))
    got = m.pair_score_fn(u, v)
    want = rows[torch.arange(q.numel()).repeat_interleave(5), v].double()
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-9)


@pytest.fixture(scope="module")
def tuned():
    g = make_store(n_products=500, seed=4)
    split = edge_split(g, 0.1, 0.1, seed=0)
    va = split.mask(VAL)
    m = Cooccurrence().fit(g, split.mask(TRAIN), val=(g.cp_src[va], g.cp_dst[va]))
    return g, split, m


def test_validation_tuning_picks_a_grid_point(tuned):
    _, _, m = tuned
    p = m.params_
    assert p["gamma"] in GAMMAS and p["alpha"] in ALPHAS
    assert set(p["weights"]) == set(KINDS)
    assert all(w in WEIGHTS for w in p["weights"].values())
    assert any(p["weights"].values())
    assert len(m.tuning_) == m.info_["tuning_evaluations"] > 9
    assert m.info_["val_MRR@10"] == max(t["val_MRR@10"] for t in m.tuning_)


def test_serving_scores_match_the_tuned_setting(tuned):
    """score_fn (folded matrices) reproduces the validation MRR@10 the tuning measured (sparse ranks)."""
    g, split, m = tuned
    va, tr = split.mask(VAL), split.mask(TRAIN)
    assert va.sum() <= m.max_tune_edges  # all validation edges were used for tuning
    got = RankingEvaluator(g.num_products).eval(m.score_fn, g.cp_src[va], g.cp_dst[va], g.cp_src[tr], g.cp_dst[tr])
    assert got["MRR@10"] == pytest.approx(m.info_["val_MRR@10"], abs=2e-3)


def test_tuned_beats_popularity_on_test(tuned):
    g, split, m = tuned
    tr, te = split.mask(TRAIN), split.mask(TEST)
    known = tr | split.mask(VAL)
    ev = RankingEvaluator(g.num_products)
    args = (g.cp_src[te], g.cp_dst[te], g.cp_src[known], g.cp_dst[known])
    co = ev.eval(m.score_fn, *args)
    pop = ev.eval(Popularity().fit(g, tr).score_fn, *args)
    assert co["HitRate@10"] > 2 * pop["HitRate@10"], (co, pop)


def test_dense_cf3_is_skipped():
    g = make_store(n_products=300, seed=5)
    split = edge_split(g, 0.1, 0.1, seed=0)
    va = split.mask(VAL)
    m = Cooccurrence(max_tune_nnz=0).fit(g, split.mask(TRAIN), val=(g.cp_src[va], g.cp_dst[va]))
    assert "cf3_skipped" in m.info_ and m.params_["weights"]["cf3"] == 0.0
    assert m.score_fn(torch.tensor([0, 1])).shape == (2, 300)


def test_only_training_edges_are_used():
    g = hand_graph([(0, 1), (1, 2), (3, 4)])
    mask = torch.tensor([e != (1, 2) for e in zip(g.cp_src.tolist(), g.cp_dst.tolist())])
    m = Cooccurrence().fit(g, mask)
    s = m.score_fn(torch.tensor([0]))[0]
    assert s[2] == s[5]  # the held-out edge 1 -> 2 leaves no path 0 -> 1 -> 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_ranks_equal_the_evaluator(seed):
    """The tuning shortcut (support + sorted tie-breaker) gives the evaluator's exact counts."""
    import numpy as np
    import scipy.sparse as sp

    from dualrec.cooccurrence import sparse_ranks

    rng = np.random.default_rng(seed)
    n, R = 60, 12
    uq = np.sort(rng.choice(n, R, replace=False))
    # few distinct values: many ties, inside the support and between support and tie-breaker
    P = sp.random(
        R, n, density=0.3, random_state=seed, data_rvs=lambda k: rng.integers(1, 4, k) / 4.0, dtype=np.float32
    ).tocsr()
    tb = (rng.integers(0, 3, n) / 8.0).astype(np.float32)
    keys = rng.choice(R * n, 40, replace=False)
    r, dst = keys // n, keys % n
    src = uq[r]
    ok = src != dst
    src, dst = src[ok], dst[ok]
    ex = rng.choice(n * n, 300, replace=False)
    ex_src, ex_dst = ex // n, ex % n
    held = set(zip(src.tolist(), dst.tolist()))
    keep = np.array([(a, b) not in held for a, b in zip(ex_src.tolist(), ex_dst.tolist())])
    ex_src, ex_dst = ex_src[keep], ex_dst[keep]

    dense = P.toarray() + tb[None, :]

    def score_fn(q):
        return torch.from_numpy(dense[np.searchsorted(uq, q.numpy())])

    want_g, want_e = RankingEvaluator(n, chunk_elems=5 * n).ranks(
        score_fn, torch.from_numpy(src), torch.from_numpy(dst), torch.from_numpy(ex_src), torch.from_numpy(ex_dst)
    )
    g, e = sparse_ranks(P, tb, uq, src, dst, ex_src, ex_dst, max_expand=50)
    assert np.array_equal(g, want_g.numpy()) and np.array_equal(e, want_e.numpy())


@pytest.mark.parametrize("batch", [1, 3, 40])
def test_paths_are_the_kind_rows_and_the_score_without_dense_rows(tuned, batch):
    """Cooccurrence.paths (a query's reachable products, each kind's value, the combined score)
    equals the scipy rows and score_fn, whether it walks the CSR arrays (a few queries) or
    multiplies matrices (a batch)."""
    from dualrec.cooccurrence import KINDS

    _, _, m = tuned
    kinds = [k for k in KINDS if k != "cf3" or m.cf3_enabled]
    for lo in range(0, 120, batch):
        q = np.arange(lo, lo + batch)
        p = m.paths(q)
        rows = m.kind_rows(q, kinds)
        for j, k in enumerate(kinds):
            want = rows[k].toarray()
            got = np.zeros_like(want)
            got[p.row, p.col] = p.values[:, j]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        dense = m.score_fn(torch.from_numpy(q)).numpy()
        got = np.tile(m._tb, (q.size, 1))
        got[p.row, p.col] = p.score
        np.testing.assert_allclose(got, dense, rtol=1e-4, atol=1e-6)
        assert np.all(np.diff(p.row * m.n + p.col) > 0)  # sorted by query, then product


def test_the_stored_arrays_score_as_the_fitted_scorer(tuned):
    """Cooccurrence.arrays / from_arrays: the scorer a model folder maps, read-only (as a memory
    map is), gives the fitted scorer's paths and scores without the graph."""
    g, _, m = tuned
    arrays = {k: np.array(v) for k, v in m.arrays().items()}
    for a in arrays.values():
        a.flags.writeable = False
    back = Cooccurrence.from_arrays(m.state(), arrays)
    assert back.n == m.n and back.A is None
    q = np.arange(0, 120, 7)
    for batch in (q[:3], q):  # a walk over the CSR arrays, then scipy's products
        p, b = m.paths(batch), back.paths(batch)
        np.testing.assert_array_equal(b.row, p.row)
        np.testing.assert_array_equal(b.col, p.col)
        np.testing.assert_array_equal(b.score, p.score)
        np.testing.assert_array_equal(b.values, p.values)
    torch.testing.assert_close(back.score_fn(torch.from_numpy(q)), m.score_fn(torch.from_numpy(q)), rtol=0, atol=0)
