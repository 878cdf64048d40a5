"""The second stage (dualrec.rerank) on a synthetic store: contract of its scores, and that it learns."""

import numpy as np
import pytest
import torch

from dualrec.baselines import Cooccurrence
from dualrec.benchmark import RowMemo, evaluate_method
from dualrec.explain import Explainer
from dualrec.features import build_features
from dualrec.graph import DualrecError
from dualrec.rerank import CandidateReranker, RerankConfig, _rank_in_row, ranker_name
from dualrec.split import TEST, TRAIN, VAL, cold_split, edge_split
from dualrec.synthetic import make_store
from dualrec.topk import masked_topk
from dualrec.train import TrainConfig, train


@pytest.fixture(scope="module")
def setup():
    g = make_store(n_products=1500, seed=3)
    x = torch.from_numpy(build_features(g.products, "hash", show_progress=False))
    split = edge_split(g, 0.1, 0.1, seed=0)
    tm, vm = split.mask(TRAIN), split.mask(VAL)
    tg = g.subgraph_edges(tm)
    cooc = Cooccurrence(seed=0).fit(
        tg, torch.ones(tg.num_copurchase, dtype=torch.bool), val=(g.cp_src[vm], g.cp_dst[vm])
    )
    res = train(
        g,
        x,
        TrainConfig(encoder="hash", epochs=4, patience=2, hard_negatives=16),
        split=split,
        progress=False,
        log=lambda m: None,
    )
    return g, x, split, cooc, res


def _reranker(setup, with_daemon=True, **cfg):
    g, x, split, cooc, res = setup
    tm = split.mask(TRAIN)
    s, t = (res.source, res.target) if with_daemon else (None, None)
    rr = CandidateReranker(cooc, s, t, x, g.cp_src[tm], g.cp_dst[tm], RerankConfig(**cfg))
    return rr.fit(g.cp_src[split.mask(VAL)], g.cp_dst[split.mask(VAL)], log=lambda m: None)


@pytest.fixture(scope="module")
def small_rr(setup):
    """A fitted reranker with 20 + 20 candidates, shared by the contract tests (they do not change it)."""
    return _reranker(setup, n_daemon=20, n_graph=20)


def test_rank_in_row_matches_brute_force():
    rng = np.random.default_rng(0)
    r = np.sort(rng.integers(0, 5, 60))
    v = rng.integers(0, 8, 60).astype(np.float32)  # ties: order among equals is arbitrary but a permutation
    got = _rank_in_row(r, v)
    for i in np.unique(r):
        sel = r == i
        assert sorted(got[sel].tolist()) == list(range(1, sel.sum() + 1))
        vals, ranks = v[sel], got[sel]
        for a in range(sel.sum()):
            assert np.all(ranks[vals > vals[a]] < ranks[a])  # anything strictly better ranks before


def test_candidates_outrank_the_rest_and_known_edges_are_not_candidates(setup, small_rr):
    g, x, split, cooc, res = setup
    rr = small_rr
    q = torch.unique(g.cp_src[split.mask(TEST)])[:50]
    scores = rr.score_fn(q)
    assert scores.shape == (50, g.num_products) and torch.isfinite(scores).all()
    r, c, F, _ = rr._chunk(q.numpy())
    D = res.source[q] @ res.target.T
    assert F.shape == (r.size, len(rr.feature_names))
    cand = torch.zeros(50, g.num_products, dtype=torch.bool)
    cand[r, c] = True
    tm = split.mask(TRAIN)
    for i, u in enumerate(q.tolist()):
        known = g.cp_dst[tm & (g.cp_src == u)]
        assert not cand[i, known].any() and not cand[i, u]
        assert 20 <= int(cand[i].sum()) <= 40
        assert scores[i, cand[i]].min() > scores[i, ~cand[i]].max()
        # outside the candidates, DAEMON's order is kept
        rest = (~cand[i]).nonzero().view(-1)
        d = D[i][rest]
        by_score = d[torch.argsort(scores[i, rest], descending=True)]
        assert (by_score[1:] - by_score[:-1]).max() < 1e-5  # non-increasing, up to float32 shifts


@pytest.mark.parametrize("objective", ["lambdarank", "binary"])
def test_reranker_learns_from_validation_edges(setup, objective):
    """Fitted on ~500 validation edges, the two stages rank held-out test edges far better than
    DAEMON alone and about as well as co-occurrence (whose weights are tuned on the same edges).
    That it beats co-occurrence is asserted on real data (tests/test_benchmark_realdata.py):
    here the validation set is too small for the boosted model to be reliably better."""
    g, x, split, cooc, res = setup
    rr = _reranker(setup, objective=objective)
    assert rr.info_["positives"] > 300 and rr.info_["candidate_recall"] > 0.8
    two = evaluate_method(g, split, rr.score_fn, None, TEST)["MRR@10"]
    graph = evaluate_method(g, split, cooc.score_fn, None, TEST)["MRR@10"]
    alone = evaluate_method(g, split, lambda q: res.source[q] @ res.target.T, None, TEST)["MRR@10"]
    assert two > 1.2 * alone
    assert two > 0.85 * graph


@pytest.fixture(scope="module")
def cold_rr(setup):
    """A second stage fitted on a cold split: 10 % of the products have no edges at all."""
    g, x, _, _, res = setup
    cs = cold_split(g, 0.1, 0.1, seed=0)
    tm, vm = cs.split.mask(TRAIN), cs.split.mask(VAL)
    tg = cs.graph.subgraph_edges(tm)
    val = (cs.graph.cp_src[vm], cs.graph.cp_dst[vm])
    cooc = Cooccurrence(seed=0).fit(tg, torch.ones(tg.num_copurchase, dtype=torch.bool), val=val)
    rr = CandidateReranker(
        cooc, res.source, res.target, x, cs.graph.cp_src[tm], cs.graph.cp_dst[tm], RerankConfig()
    ).fit(*val, log=lambda m: None)
    return cs, rr


def test_a_product_without_edges_is_ranked_by_daemon_alone_without_neighbours(setup, cold_rr):
    """A new product has none of the pair model's graph features: with ``cold_neighbours=0`` its
    row is DAEMON's scores, and the other queries of the same call are reranked as usual, each
    row in its place."""
    res = setup[4]
    cs, rr = cold_rr
    rr = rr.with_config(cold_neighbours=0)
    cold, warm = cs.cold.nonzero().view(-1)[:5], (~cs.cold).nonzero().view(-1)[:5]
    got = rr.score_fn(torch.cat([warm[:2], cold, warm[2:]]))
    torch.testing.assert_close(got[2:7], res.source[cold] @ res.target.T)
    torch.testing.assert_close(got[[0, 1, 7, 8, 9]], rr.score_fn(warm))
    assert not torch.allclose(got[:2], res.source[warm[:2]] @ res.target.T)  # warm rows are reranked
    assert ranker_name(rr, int(cold[0])) == "daemon"


def test_a_product_without_edges_gets_its_text_neighbours_co_purchases(setup, cold_rr):
    """By default a new product's list starts with what its text-nearest products with history
    bought (each product weighted by the summed cosine of the neighbours that bought it), then
    DAEMON's order; what a shop is shown (top_k) is the top of that ranking; explain says why."""
    g, x, _, _, res = setup
    cs, rr = cold_rr
    tm = cs.split.mask(TRAIN)
    src, dst = cs.graph.cp_src[tm].numpy(), cs.graph.cp_dst[tm].numpy()
    xu = torch.nn.functional.normalize(x.float(), dim=1).numpy()
    has = np.unique(src)
    cold = cs.cold.nonzero().view(-1)[:6].numpy()
    got = rr.score_fn(torch.from_numpy(cold))
    K = rr.cfg.cold_neighbours
    for i, u in enumerate(cold.tolist()):
        cos = xu[has] @ xu[u]
        nb = has[np.argsort(-cos, kind="stable")[:K]]
        w = np.zeros(g.num_products)
        for b in nb.tolist():
            if xu[b] @ xu[u] > 0:
                np.add.at(w, dst[src == b], xu[b] @ xu[u])
        w[u] = 0
        lent = np.flatnonzero(w > 0)
        assert lent.size > 0
        row = got[i].numpy()
        order = np.argsort(-row, kind="stable")
        assert set(order[: lent.size].tolist()) == set(lent.tolist())  # the lent products first
        ranked = order[: lent.size]
        assert (np.diff(w[ranked]) <= 1.1e-3).all()  # by weight (DAEMON breaks near-ties)
        rest = order[lent.size :]
        d = (res.source[u] @ res.target.T).numpy()
        assert (np.diff(d[rest]) <= 1e-5).all()  # then DAEMON's order
        assert ranker_name(rr, u) == "neighbours"
    top = rr.top_k(cold, 15)[1]
    want = masked_topk(got.clone(), 15, torch.from_numpy(cold))[1].numpy()
    assert _overlap(top, want) > 0.95
    # the evaluator's rows read training edges only, even when every logged edge is shown
    shop = rr.with_config()
    shop.show_logged(cs.graph.cp_src.numpy(), cs.graph.cp_dst.numpy())
    torch.testing.assert_close(shop.score_fn(torch.from_numpy(cold)), got)
    assert not np.array_equal(shop.top_k(cold, 15)[1], top)  # a shop's lists use every logged one
    reasons = rr.cold_reasons(int(cold[0]), top[0])
    assert reasons and all(t.startswith("bought after ") for t in reasons.values())
    with pytest.raises(DualrecError, match="cold_neighbours"):
        rr.with_config(cold_neighbours=-1)


def test_a_new_products_neighbours_come_from_the_text_index_when_there_is_one(setup, cold_rr):
    """With a text index (what training stores above ``TEXT_INDEX_FROM`` products) a product without
    history finds its neighbours through IVF restricted to the products with history: the same
    lists as the exact search, up to the index's recall."""
    cs, rr = cold_rr
    cold = cs.cold.nonzero().view(-1)[:20].numpy()
    ivf = rr.with_config()
    ivf.build_text_index(log=lambda m: None)
    assert ivf.text_index.kind == "ivf" and ivf.text_index.n == rr.x.shape[0]
    assert rr.text_index is None  # the copy's own
    search, M, size = ivf._cold_pool()
    _, nb = search(rr.x[cold].astype(np.float32) / np.linalg.norm(rr.x[cold].astype(np.float32), axis=1)[:, None], 10)
    assert size == int((np.diff(M.indptr) > 0).sum()) and (np.diff(M.indptr)[nb[nb >= 0]] > 0).all()
    assert _overlap(ivf.top_k(cold, 10)[1], rr.top_k(cold, 10)[1]) > 0.9


def test_graph_only_reranker_has_no_daemon_features(setup):
    rr = _reranker(setup, with_daemon=False)
    assert not any(f.startswith("daemon") for f in rr.feature_names)
    g, _, split, _, _ = setup
    assert rr.score_fn(torch.tensor([0, 1])).shape == (2, g.num_products)


def test_row_memo_calls_once_per_query():
    calls = []

    def fn(q):
        calls.append(q.tolist())
        return q[:, None].float() * torch.ones(1, 7)

    m = RowMemo(fn, 7)
    assert torch.equal(m(torch.tensor([3, 1, 3])), fn(torch.tensor([3, 1, 3])))
    calls.clear()
    m(torch.tensor([1, 3, 5]))
    assert calls == [[5]]
    assert m(torch.tensor([], dtype=torch.long)).shape == (0, 7)
    tiny = RowMemo(fn, 7, max_bytes=4 * 7)  # room for one row: the rest is recomputed, never wrong
    assert torch.equal(tiny(torch.tensor([2, 4])), fn(torch.tensor([2, 4])))
    assert torch.equal(tiny(torch.tensor([4, 2])), fn(torch.tensor([4, 2])))


def test_row_memo_does_not_change_the_evaluation(setup):
    g, x, split, cooc, res = setup
    plain = evaluate_method(g, split, cooc.score_fn, None, TEST, bias=True)
    memo = RowMemo(cooc.score_fn, g.num_products)
    cached = evaluate_method(g, split, memo, None, TEST, bias=True)
    assert len(memo.rows) > 0
    for d in (plain, cached):  # no pair function given: nan, which never compares equal
        assert np.isnan(d.pop("direction_accuracy"))
    assert cached == plain


def test_save_load_gives_the_same_scores(setup, tmp_path, small_rr):
    """Saved without pickle (LightGBM text + JSON, the graph from the version), read back exactly."""
    from dualrec.store import ModelStore, save_trained

    g, x, split, _, res = setup
    rr = small_rr
    store = ModelStore(tmp_path / "m")
    with store.lock(0), store.writer(None) as w:
        save_trained(
            w,
            config={},
            state_dict={},
            in_channels=x.shape[1],
            split=split,
            graph=g,
            features=x.numpy(),
            feature_spec={},
            source=res.source.numpy(),
            target=res.target.numpy(),
            history=[],
            best_epoch=0,
            val_metrics={},
        )
        rr.save(w)
        v = w.commit({"ranker": "two-stage", "trained_products": g.num_products})
    assert not [f for f in v.files if f.endswith((".pkl", ".pickle"))]
    back = CandidateReranker.load(v, res.source, res.target, x)
    q = torch.arange(0, g.num_products, 97)
    torch.testing.assert_close(back.score_fn(q), rr.score_fn(q), rtol=0, atol=0)
    # what the second stage derived from the graph is read from the folder, mapped, not rebuilt
    assert back.cooc.A is None and not back.cooc.An.indices.flags.writeable
    assert isinstance(back.pop_order, np.memmap) and not back.known.indices.flags.writeable
    np.testing.assert_array_equal(back.top_k(q.numpy(), 10)[1], rr.top_k(q.numpy(), 10)[1])
    back.show_logged(*v.logged_edges("copurchase"))  # as a served model: the explanations read the same matrix
    assert Explainer.from_version(v, res.source.numpy(), res.target.numpy(), back).logged is back.shown
    # a folder written before those arrays were stored rebuilds them from its training graph
    with store.lock(0), store.writer(v) as w:
        w.link_all(except_={"rerank/arrays/"})
        old = w.commit(dict(v.info))
    assert not [f for f in old.files if f.startswith("rerank/arrays/")]
    rebuilt = CandidateReranker.load(old, res.source, res.target, x)
    assert rebuilt.cooc.A is not None
    torch.testing.assert_close(rebuilt.score_fn(q), rr.score_fn(q), rtol=0, atol=0)
    with pytest.raises(DualrecError, match="fitted with DAEMON"):
        CandidateReranker.load(v, None, None, x)
    (v.dir / "rerank" / "booster.txt").write_text("not a model")
    v.files["rerank/booster.txt"]["bytes"] = 11  # as if the manifest vouched for it
    with pytest.raises(DualrecError, match="cannot read the second stage"):
        CandidateReranker.load(v, res.source, res.target, x)
    # a stored index out of range (same size, as if the manifest vouched for it) is refused at
    # load, not read out of bounds by scipy's C loops
    bad = v.dir / "rerank" / "arrays" / "cooc.An.indices.npy"
    idx = np.load(bad)
    idx[0] = g.num_products + 7
    np.save(bad, idx)
    with pytest.raises(DualrecError, match="stored arrays are incomplete or damaged"):
        CandidateReranker.load(v, res.source, res.target, x)


def test_known_first_puts_known_copurchases_on_top_and_keeps_the_rest(setup, small_rr):
    """For a shop, the query's training out-neighbours come first (DAEMON's order among them);
    every other product keeps its place from the evaluation order."""
    g, _, split, _, res = setup
    rr = small_rr
    tm = split.mask(TRAIN)
    q = torch.unique(g.cp_src[tm])[:40]
    plain, shop = rr.score_fn(q), rr.score_fn(q, known_first=True)
    for i, u in enumerate(q.tolist()):
        known = g.cp_dst[tm][g.cp_src[tm] == u].unique()
        rest = torch.ones(g.num_products, dtype=torch.bool)
        rest[known] = False
        assert shop[i, known].min() > shop[i, rest].max()
        torch.testing.assert_close(shop[i, rest], plain[i, rest])
        d = res.source[u] @ res.target[known].T
        assert torch.equal(torch.argsort(shop[i, known], descending=True), torch.argsort(d, descending=True))


def test_products_added_after_the_fit_are_ranked_by_daemon(setup, small_rr):
    """After cold start the embeddings have more rows than the fitted catalogue: a new product as
    query is ranked by DAEMON alone; without slots for new products (``new_slots=0``) an old
    query ranks them below its candidates, in DAEMON's order, and its other scores do not change."""
    g, _, _, _, res = setup
    n = g.num_products
    before = small_rr.score_fn(torch.tensor([3, 4]))
    gen = torch.Generator().manual_seed(0)
    s_new, t_new = (
        torch.randn(5, res.source.shape[1], generator=gen),
        torch.randn(5, res.target.shape[1], generator=gen),
    )
    t_all = torch.cat([res.target, t_new])
    small_rr.set_embeddings(torch.cat([res.source, s_new]), t_all)
    rr = small_rr.with_config(new_slots=0)
    try:
        got = rr.score_fn(torch.tensor([3, n + 1, 4]))
        assert got.shape == (3, n + 5)
        torch.testing.assert_close(got[1], s_new[1] @ t_all.T)
        # the old products keep their order (scores outside the candidates may shift by a constant,
        # which float32 rounding may turn into swaps among near-equal scores, never more)
        o = before.argsort(dim=1, descending=True, stable=True)
        g_sorted = got[[0, 2], :n].gather(1, o)
        assert (g_sorted[:, 1:] <= g_sorted[:, :-1] + 1e-4).all()
        new_part = got[[0, 2], n:]
        z = before.topk(20, dim=1).values[:, -1]  # the lowest candidate (there are at least 20)
        assert (new_part.max(1).values < z).all()
        d = res.source[[3, 4]] @ t_new.T
        assert torch.equal(new_part.argsort(1), d.argsort(1))
        with pytest.raises(DualrecError, match="query rows"):
            rr.score_fn(torch.tensor([n + 5]))
        # what a shop is shown: the same lists, without scoring every product
        top = rr.top_k(np.array([3, n + 1, 4]), 30)[1]
        q = torch.tensor([3, n + 1, 4])
        full = rr.score_fn(q, known_first=True)
        want = masked_topk(full, 30, q)[1]
        # the same scores place by place: products tied in score (the pair model gives many
        # candidates one value) may be listed in either order
        torch.testing.assert_close(full.gather(1, torch.from_numpy(top)), full.gather(1, want), atol=1e-4, rtol=0)
    finally:
        small_rr.set_embeddings(res.source, res.target)


@pytest.mark.parametrize("slots,position", [(2, 9), (1, 1), (3, 4)])
def test_new_products_take_their_slots(setup, small_rr, slots, position):
    """An old query's list gives its best new products (by text and DAEMON) the positions
    ``new_position ..``; every other product keeps its order; what a shop is shown (top_k, and the
    stored lists of the version with the slots added) puts them at the same positions."""
    g, _, _, _, res = setup
    n = g.num_products
    gen = torch.Generator().manual_seed(1)
    d = res.source.shape[1]
    s_new, t_new = torch.randn(6, d, generator=gen), torch.randn(6, d, generator=gen)
    small_rr.set_embeddings(torch.cat([res.source, s_new]), torch.cat([res.target, t_new]))
    x_old = small_rr.x
    if x_old is not None:  # the new products' text: copies of old products' rows
        small_rr.x = np.concatenate([x_old, x_old[[5, 6, 7, 8, 9, 10]]])
    try:
        off = small_rr.with_config(new_slots=0)
        on = small_rr.with_config(new_slots=slots, new_position=position, new_min_confidence=0.0)
        q = np.array([3, 4, 11])
        want = on._new_for(q)
        assert (want >= n).all() and want.shape == (3, slots)
        assert all(len(set(w)) == slots for w in want.tolist())
        a, b = off.score_fn(torch.from_numpy(q)), on.score_fn(torch.from_numpy(q))
        for i in range(q.size):
            order = torch.argsort(b[i], descending=True, stable=True)
            assert order[position - 1 : position - 1 + slots].tolist() == want[i].tolist()
            placed = set(want[i].tolist())
            rest_b = [j for j in order.tolist() if j not in placed][:50]
            rest_a = [j for j in torch.argsort(a[i], descending=True, stable=True).tolist() if j not in placed][:50]
            assert rest_a == rest_b
        top = on.top_k(q, 12)[1]
        assert (top[:, position - 1 : position - 1 + slots] == want).all()
        stored = on.known_top_k(q, 12)  # what a version stores (without the slots)
        assert (on.with_new(q, *stored)[1] == top).all()
        with pytest.raises(DualrecError, match="new_slots"):
            small_rr.with_config(new_slots=-1)
    finally:
        small_rr.x = x_old
        small_rr.set_embeddings(res.source, res.target)


@pytest.mark.parametrize(
    "confidence,gate", [(0.25, "daemon"), (0.6, "daemon"), (0.9, "daemon"), (0.9, "text"), (0.6, "both")]
)
def test_a_new_product_needs_confidence_for_a_slot(setup, small_rr, confidence, gate):
    """With ``new_min_confidence`` c a new product takes a slot only where its gate score (DAEMON's
    score, the pair's text cosine or both, plus the list's gap) reaches what a share 1 - c of the
    validation co-purchases reach; the other lists keep their products, a list's best qualifying
    new products are the ones placed, and a higher c never gives more room."""
    g, x, split, _, res = setup
    rr = small_rr.with_config(new_min_confidence=confidence, new_gate=gate)
    thr = rr._new_threshold()
    assert np.isfinite(thr) and small_rr.with_config(new_min_confidence=0.0)._new_threshold() == -np.inf
    s, t = np.asarray(rr.s), np.asarray(rr.t)
    xu = (x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)).numpy()

    def score(u, v, gap):  # the gate score of pairs u -> v, computed here from its definition
        return rr._new_gate((s[u] * t[v]).sum(-1), gap, (xu[u] * xu[v]).sum(-1), gate)

    # the scale: the validation co-purchases' own gate scores
    vm = split.mask(VAL)
    vs, vd = g.cp_src[vm].numpy(), g.cp_dst[vm].numpy()
    uq = np.unique(vs)
    r, c, z, _ = rr._scored_known(uq, None, known_first=False)
    gap = dict(zip(uq.tolist(), rr._list_gap(uq, r, c, z)))
    assert abs((score(vs, vd, np.array([gap[u] for u in vs.tolist()])) >= thr).mean() - (1 - confidence)) < 0.05

    rr.mark_new(np.arange(0, g.num_products, 7))
    always = rr.with_config(new_min_confidence=0.0)
    q = np.arange(1, g.num_products, 5)
    q = q[q % 7 != 0][:60]
    r, c, z, _ = rr._scored_known(q, None, known_first=True)
    qgap = rr._list_gap(q, r, c, z)
    got, every = rr._new_for(q, None, qgap), always._new_for(q)
    placed = got >= 0
    assert (score(q[:, None], np.maximum(got, 0), qgap[:, None])[placed] >= thr - 1e-5).all()
    for i in range(q.size):  # the placed ones are the best of the always-filled order that qualify
        ok = [j for j in every[i].tolist() if score(q[i], j, qgap[i]) >= thr - 1e-5]
        assert got[i][placed[i]].tolist()[: len(ok)] == ok[: placed[i].sum()]
    top, known = rr.top_k(q, 10)[1], rr.known_top_k(q, 10)[1]
    untouched = ~placed.any(1)
    assert untouched.any()
    np.testing.assert_array_equal(top[untouched], known[untouched])
    assert (rr.is_new(np.maximum(top[~untouched], 0)) & (top[~untouched] >= 0)).any(1).all()
    stricter = rr.with_config(new_min_confidence=min(1.0, confidence + 0.2))._new_for(q, None, qgap)
    assert ((stricter >= 0).sum(1) <= placed.sum(1)).all()
    with pytest.raises(DualrecError, match="new_min_confidence"):
        rr.with_config(new_min_confidence=1.5)
    with pytest.raises(DualrecError, match="new_gate"):
        rr.with_config(new_gate="price")


def test_flagged_new_catalogue_products_are_not_ordinary_candidates(setup, small_rr):
    """Catalogue rows marked new (the cold-start benchmark's unseen products) reach a list only
    through the slots."""
    g = setup[0]
    rr = small_rr.with_config(new_min_confidence=0.0)
    rr.mark_new(np.arange(0, g.num_products, 10))
    q = np.array([3, 4, 11])
    r, c, _, _ = rr._scored(q, known_first=False, new=False)
    assert r.size > 0 and not (c % 10 == 0).any()
    new = rr._new_for(q)
    assert (new % 10 == 0).all()
    r, c, _, _ = rr._scored(q, known_first=False)
    for i in range(q.size):
        assert sorted(c[(r == i) & (c % 10 == 0)].tolist()) == sorted(new[i].tolist())
    with pytest.raises(DualrecError, match="new catalogue rows"):
        rr.mark_new([g.num_products])


def test_top_k_is_the_same_in_small_chunks(setup, small_rr):
    g = setup[0]
    rows = np.arange(0, g.num_products, 37)
    want = small_rr.top_k(rows, 10)
    old = small_rr.cfg.chunk
    small_rr.cfg.chunk = 3  # three queries per batch
    try:
        got = small_rr.top_k(rows, 10)
    finally:
        small_rr.cfg.chunk = old
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-5)  # matmuls of other shapes: float noise
    assert want[1].shape == (rows.size, 10) and not (want[1] == rows[:, None]).any()


@pytest.mark.parametrize("k", [10, 60])
def test_top_k_is_the_evaluated_ranking_without_scoring_every_product(setup, small_rr, k):
    """The shop's lists (sparse: candidates only) are the top of the evaluator's full ranking
    (known co-purchases first); with k beyond the candidates they go on in DAEMON's order."""
    g = setup[0]
    rows = np.arange(1, g.num_products, 53)
    dense = small_rr.score_fn(torch.from_numpy(rows), known_first=True)
    want_s, want_i = masked_topk(dense, k, torch.from_numpy(rows))
    got_s, got_i = small_rr.top_k(rows, k)
    assert got_i.shape == (rows.size, k) and (got_i >= 0).all()
    # the same scores; among equal scores at the cut, another product may make the list
    np.testing.assert_allclose(got_s, want_s.numpy(), rtol=1e-4, atol=1e-4)
    assert _overlap(got_i, want_i.numpy()) > 0.9
    # products the caller leaves out are not candidates either: the list is still full
    ex = [got_i[i, [0, 3]] for i in range(rows.size)]
    _, again = small_rr.top_k(rows, k, exclude=ex)
    assert (again >= 0).all()
    for i, e in enumerate(ex):
        assert not np.isin(again[i], np.append(e, rows[i])).any()


def test_the_sparse_candidates_equal_a_dense_search(setup, small_rr):
    """DAEMON's candidates from the index and co-occurrence's from the query's paths are the
    dense top-n of the old implementation (scores over all N), up to equal scores."""
    g, _, split, cooc, res = setup
    rr = small_rr
    q = np.arange(0, g.num_products, 11)
    r, c, F, _ = rr._chunk(q)
    tm = split.mask(TRAIN)
    for i, u in enumerate(q.tolist()):
        ex = torch.zeros(g.num_products, dtype=torch.bool)
        ex[g.cp_dst[tm & (g.cp_src == u)]] = True
        ex[u] = True
        got = set(c[r == i].tolist())
        d = (res.source[u] @ res.target.T).masked_fill(ex, -np.inf)
        assert set(d.topk(20).indices.tolist()) <= got
        gs = cooc.score_fn(torch.tensor([u]))[0].masked_fill(ex, -np.inf)
        top = gs.topk(20).values
        sure = set((gs > top[-1]).nonzero().view(-1).tolist())  # above the 20th score: no tie
        assert sure <= got


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(x, y)) / max(1, len(y)) for x, y in zip(a, b)]))
