"""Recommender: exact top-k against brute force, exclusions, chunking, errors, loading."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dualrec.graph import DualrecError, UnknownProductError
from dualrec.retrieval import Recommender


def make_rec(n: int = 60, d: int = 8, seed: int = 0, chunk_elems: int = 2**24) -> Recommender:
    g = torch.Generator().manual_seed(seed)
    s = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    t = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    products = pd.DataFrame({"id": [f"id{i:03d}" for i in range(n)], "title": [f"title {i}" for i in range(n)]})
    return Recommender(products, s, t, chunk_elems=chunk_elems)


def brute_force(rec: Recommender, q: int, k: int, exclude=()) -> list[int]:
    s, t = torch.tensor(np.asarray(rec.source)), torch.tensor(np.asarray(rec.target))
    scores = (s[q] @ t.T).clone()
    scores[q] = float("-inf")
    for e in exclude:
        scores[e] = float("-inf")
    order = torch.argsort(scores, descending=True).tolist()
    banned = {q, *exclude}
    return [i for i in order if i not in banned][:k]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_topk_equals_brute_force(seed):
    rec = make_rec(n=80, seed=seed)
    q = torch.arange(80)
    scores, idx = rec.topk_indices(q, 10)
    assert scores.shape == idx.shape == (80, 10)
    full = rec.source @ rec.target.T
    for i in range(80):
        assert idx[i].tolist() == brute_force(rec, i, 10)
        torch.testing.assert_close(scores[i], full[i, idx[i]])
        assert bool((scores[i][:-1] >= scores[i][1:]).all())  # best first


def test_query_itself_never_returned_even_when_it_scores_best():
    n = 20
    rec = make_rec(n=n)
    # make every product's target equal to its source: the query would be its own best match
    rec.target = rec.source.clone()
    scores, idx = rec.topk_indices(torch.arange(n), n - 1)
    for i in range(n):
        assert i not in idx[i].tolist()
        assert sorted(idx[i].tolist()) == [j for j in range(n) if j != i]


def test_exclude_lists_honoured():
    rec = make_rec(n=50)
    q = torch.tensor([3, 7, 3])
    first = rec.topk_indices(q, 5)[1]
    ex = [first[0, :2].clone(), torch.tensor([], dtype=torch.long), torch.tensor([0, 1, 2, 4, 5])]
    _, idx = rec.topk_indices(q, 5, ex)
    assert idx[0].tolist() == brute_force(rec, 3, 5, first[0, :2].tolist())
    assert idx[1].tolist() == first[1].tolist()
    assert idx[2].tolist() == brute_force(rec, 3, 5, [0, 1, 2, 4, 5])
    assert not set(idx[0].tolist()) & set(first[0, :2].tolist())


def test_exclude_everything_gives_minus_one_slots():
    rec = make_rec(n=6)
    scores, idx = rec.topk_indices(torch.tensor([0]), 5, [torch.tensor([1, 2, 3])])
    assert idx[0, :2].tolist() == brute_force(rec, 0, 5, [1, 2, 3])
    assert idx[0, 2:].tolist() == [-1, -1, -1]
    assert bool(torch.isinf(scores[0, 2:]).all())
    (r,) = rec.recommend(["id000"], 5, exclude={"id000": ["id001", "id002", "id003"]})
    assert len(r.ids) == 2 and len(r.scores) == 2
    assert not {"id000", "id001", "id002", "id003"} & set(r.ids)


def test_recommend_by_id_with_exclude():
    rec = make_rec(n=40)
    plain = rec.recommend(["id005", "id010"], k=4)
    assert [r.query for r in plain] == ["id005", "id010"]
    assert plain[0].ids == [f"id{i:03d}" for i in brute_force(rec, 5, 4)]
    out = rec.recommend(["id005", "id010"], k=4, exclude={"id005": plain[0].ids[:1]})
    assert out[0].ids == [f"id{i:03d}" for i in brute_force(rec, 5, 4, [int(plain[0].ids[0][2:])])]
    assert out[1].ids == plain[1].ids  # no exclusions for the second query


@pytest.mark.parametrize("chunk", [1, 7, 41, 10**9])
def test_chunk_size_does_not_change_result(chunk):
    big = make_rec(n=41, seed=5)
    small = make_rec(n=41, seed=5, chunk_elems=chunk)
    q = torch.tensor([0, 40, 13, 13, 2, 39, 17])
    ex = [torch.tensor([i % 41, (i * 7) % 41]) for i in range(q.numel())]
    for e in (None, ex):
        s1, i1 = big.topk_indices(q, 6, e)
        s2, i2 = small.topk_indices(q, 6, e)
        assert torch.equal(i1, i2)
        torch.testing.assert_close(s1, s2)


def test_k_larger_than_catalogue_is_clipped():
    rec = make_rec(n=5)
    scores, idx = rec.topk_indices(torch.arange(5), 100)
    assert idx.shape == (5, 4)
    for i in range(5):
        assert sorted(idx[i].tolist()) == [j for j in range(5) if j != i]
    (r,) = rec.recommend(["id002"], k=100)
    assert len(r.ids) == 4 and "id002" not in r.ids


def test_single_product_catalogue_returns_nothing():
    rec = make_rec(n=1)
    (r,) = rec.recommend(["id000"], k=3)
    assert r.ids == [] and r.scores == []


def test_unknown_id_raises_naming_it():
    rec = make_rec(n=10)
    with pytest.raises(UnknownProductError, match="no-such-product") as ei:
        rec.recommend(["id001", "no-such-product"], k=3)
    assert ei.value.missing == ["no-such-product"]
    with pytest.raises(UnknownProductError, match="ghost"):
        rec.recommend(["id001"], k=3, exclude={"id001": ["ghost"]})


@pytest.mark.parametrize("k", [0, -1])
def test_k_below_one_raises(k):
    rec = make_rec(n=10)
    with pytest.raises(DualrecError, match="k must be"):
        rec.recommend(["id001"], k=k)
    with pytest.raises(DualrecError, match="k must be"):
        rec.topk_indices(torch.tensor([0]), k)


def test_misaligned_embeddings_raise():
    rec = make_rec(n=10)
    with pytest.raises(DualrecError, match="line up"):
        Recommender(rec.products, rec.source, rec.target[:9])
    with pytest.raises(DualrecError, match="line up"):
        Recommender(rec.products.iloc[:9], rec.source, rec.target)


def test_load_round_trip(tmp_path):
    from dualrec.store import ModelStore

    rec = make_rec(n=30, seed=3)
    store = ModelStore(tmp_path)
    with store.lock(0), store.writer(None) as w:
        w.save_array("source.npy", rec.source.numpy())
        w.save_array("target.npy", rec.target.numpy())
        w.save_parquet("products.parquet", rec.products)
        w.commit({"ranker": "daemon"})
    loaded = Recommender.load(tmp_path)
    assert loaded.num_products == 30
    assert [r.ids for r in loaded.recommend(["id004", "id029"], 7)] == [
        r.ids for r in rec.recommend(["id004", "id029"], 7)
    ]


def test_load_non_model_folder_raises(tmp_path):
    with pytest.raises(DualrecError, match="not found"):
        Recommender.load(tmp_path / "missing")
    (tmp_path / "products.parquet").write_bytes(b"")
    with pytest.raises(DualrecError, match="not a trained dualrec model") as ei:
        Recommender.load(tmp_path)
    assert "dualrec train" in str(ei.value)


# ---------------------------------------------------------------------------------------------
# A trained model folder with its second stage (what `dualrec train` writes by default)


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    from dualrec.pipeline import train_dataset
    from dualrec.synthetic import make_store
    from dualrec.train import TrainConfig

    root = tmp_path_factory.mktemp("two_stage")
    g = make_store(n_products=500, seed=2)
    g.save(root / "dataset")
    train_dataset(
        root / "dataset",
        root / "model",
        TrainConfig(encoder="hash", epochs=3, seed=0),
        progress=False,
        log=lambda m: None,
    )
    return root, g


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_two_stage_model_recommends_reranked_candidates_known_first(two_stage):
    from dualrec.pipeline import evaluate_model
    from dualrec.split import TRAIN
    from dualrec.store import open_version

    root, g = two_stage
    rec = Recommender.load(root / "model")
    assert rec.ranker == "two-stage"
    one = Recommender.load(root / "model", two_stage=False)
    assert one.ranker == "daemon" and one.reranker is None
    split = open_version(root / "model").split()
    tm = split.labels == TRAIN
    u = int(torch.bincount(g.cp_src[tm]).argmax())  # the product with most known co-purchases
    # every logged co-purchase of u comes first: training ones and those held out for val/test
    known = set(g.ids[g.cp_dst[g.cp_src == u].numpy()].tolist())
    assert len(known) > int((g.cp_src[tm] == u).sum())
    k = len(known) + 5
    r = rec.recommend([g.ids[u]], k)[0]
    assert set(r.ids[: len(known)]) == known  # what the shop logged comes first ...
    assert len(r.ids) == k and g.ids[u] not in r.ids and len(set(r.ids)) == k
    assert r.scores == sorted(r.scores, reverse=True)
    # ... then the reranker's new candidates, exactly its score order
    row = rec.reranker.score_fn(torch.tensor([u]), known_first=True)[0]
    row[u] = -np.inf
    # (products with equal scores, e.g. identical pair features, may come in either order)
    assert torch.allclose(row[g.index_of(r.ids)], row.topk(k).values, atol=1e-5)
    # the one-stage recommender is DAEMON's cosine order
    r1 = one.recommend([g.ids[u]], 5)[0]
    assert r1.ids == [str(g.ids[i]) for i in brute_force(one, u, 5)]
    m = evaluate_model(root / "model", "test", progress=False)
    assert m["ranker"] == "two-stage" and set(m["daemon_alone"]) >= {"HitRate@10", "MRR@10"}


def test_two_stage_after_add_products(two_stage, tmp_path):
    """A product added after training: as a query it is ranked by DAEMON alone; for the others
    (slots always filled) it takes the first new-product slot (position 9) and everything else
    moves down one place, whether the list is stored or computed online; with the default gate
    it takes the slot in some lists and the others are unchanged; with no slots it is never shown."""
    from dualrec.coldstart import add_products

    root, g = two_stage
    mdir = _copy(root / "model", tmp_path / "model")
    before = Recommender.load(mdir)
    new = g.products.iloc[[0]].drop(columns=["role", "category_id"]).assign(id="NEW-1", title="new thing")
    add_products(mdir, new)
    after = Recommender.load(mdir)
    assert after.ranker == "two-stage" and after.num_products == g.num_products + 1
    r = after.recommend(["NEW-1"], 5, explain=True)[0]
    qi = after.num_products - 1
    # its text neighbours' co-purchases first (the second stage's list), each with why
    assert r.ids == [str(after.products["id"][i]) for i in after.reranker.top_k(np.array([qi]), 5)[1][0]]
    assert r.ranker == "neighbours" and r.reasons[0].startswith("bought after ")
    alone = after.reranker.with_config(cold_neighbours=0)
    assert [int(i) for i in alone.top_k(np.array([qi]), 5)[1][0]] == list(brute_force(after, qi, 5))
    q = [str(i) for i in g.ids[:20]]
    old, gated = before.recommend(q, 10), after.recommend(q, 10)
    shown = ["NEW-1" in b.ids for b in gated]
    assert 0 < sum(shown) < len(q)
    for a, b, s in zip(old, gated, shown):
        assert b.ids.index("NEW-1") == 8 if s else b.ids == a.ids
    for k in (5, 10, 20):  # a stored list gets the same slots as the online path, whatever k
        np.testing.assert_array_equal(after.top_k(np.arange(20), k)[1], after.reranker.top_k(np.arange(20), k)[1])
    after.reranker = after.reranker.with_config(new_min_confidence=0.0)
    new_recs = after.recommend(q, 10, explain=True)
    for a, b in zip(old, new_recs):
        # the new product is the 9th, the others keep their order (ids may swap only among equal
        # scores: the boosted trees give ties, and top-k orders ties arbitrarily)
        assert b.ids.index("NEW-1") == 8 and b.kinds[8] == "predicted"
        assert b.reasons[8].startswith("new in the catalogue: ") and "new in" not in b.reasons[7]
        assert b.scores[:8] == a.scores[:8] and [i for i in b.ids if i != "NEW-1"] == a.ids[:9]
        assert b.scores[9] == pytest.approx(a.scores[8], abs=1e-2)  # lowered a step where it tied
    assert after.lists is not None  # the stored lists (computed before NEW-1 existed) get the slot too
    rows = np.arange(20)
    np.testing.assert_array_equal(after.top_k(rows, 10)[1], after.reranker.top_k(rows, 10)[1])
    # a new index stores the lists again (without the slots): the new product still appears once
    from dualrec.index import write_model_index

    write_model_index(mdir, "exact")
    again = Recommender.load(mdir)
    assert [r.ids for r in again.recommend(q, 10)] == [r.ids for r in gated]
    after.reranker = after.reranker.with_config(new_slots=0)
    for a, b in zip(old, after.recommend(q, 10)):
        assert "NEW-1" not in b.ids and b.scores == a.scores


def test_two_stage_is_served_and_exported(two_stage, tmp_path):
    from fastapi.testclient import TestClient

    from dualrec.serve.app import create_app
    from dualrec.serve.export import export_recommendations

    root, g = two_stage
    client = TestClient(create_app(root / "model"), base_url="http://127.0.0.1")
    assert client.get("/health").json()["ranker"] == "two-stage"
    rec = Recommender.load(root / "model")
    for pid in (str(g.ids[3]), str(g.ids[40])):
        got = client.get(f"/products/{pid}/related", params={"k": 7}).json()
        assert [x["id"] for x in got["results"]] == rec.recommend([pid], 7)[0].ids
    batch = client.post("/related", json={"ids": [str(g.ids[3]), str(g.ids[40])], "k": 7}).json()
    assert [x["id"] for x in batch["results"][1]["results"]] == rec.recommend([str(g.ids[40])], 7)[0].ids
    rep = export_recommendations(root / "model", tmp_path / "recs.parquet", k=7, batch=64, progress=False)
    assert rep["ranker"] == "two-stage" and rep["rows"] == 7 * g.num_products
    recs = pd.read_parquet(tmp_path / "recs.parquet")
    for pid in (str(g.ids[3]), str(g.ids[40])):
        assert recs[recs["id"] == pid].sort_values("rank")["related_id"].tolist() == rec.recommend([pid], 7)[0].ids


def test_the_model_folder_needs_no_dataset_and_retrains_without_the_second_stage(two_stage, tmp_path):
    import shutil

    from dualrec.pipeline import train_dataset
    from dualrec.store import open_version
    from dualrec.train import TrainConfig

    root, g = two_stage
    ds = _copy(root / "dataset", tmp_path / "dataset")
    mdir = _copy(root / "model", tmp_path / "elsewhere" / "model")  # moved to another machine
    q = [str(i) for i in g.ids[:5]]
    want = [r.ids for r in Recommender.load(root / "model").recommend(q, 7)]
    assert [r.ids for r in Recommender.load(mdir).recommend(q, 7)] == want
    assert Recommender.load(mdir, two_stage=False).ranker == "daemon"
    # retraining into the folder with rerank=False: the new version has no second stage
    train_dataset(
        ds, mdir, TrainConfig(encoder="hash", epochs=1, seed=0), progress=False, log=lambda m: None, rerank=False
    )
    shutil.rmtree(ds)
    v = open_version(mdir)
    assert v.name == "v000002" and not v.has("rerank/booster.txt") and v.info["ranker"] == "daemon"
    assert Recommender.load(mdir).ranker == "daemon"
    assert Recommender.load(mdir, version="v000001").ranker == "two-stage"


def test_a_large_catalogue_stores_a_text_index_for_new_products(tmp_path, monkeypatch):
    """Above ``TEXT_INDEX_FROM`` products training stores an IVF index over the text next to the second
    stage; the loaded model searches it (memory-mapped) for a new product's neighbours, with the
    lists of exact search up to its recall."""
    import dualrec.pipeline
    from dualrec.pipeline import train_dataset
    from dualrec.store import open_version
    from dualrec.synthetic import make_store
    from dualrec.train import TrainConfig

    monkeypatch.setattr(dualrec.pipeline, "TEXT_INDEX_FROM", 100)
    make_store(n_products=400, seed=1).save(tmp_path / "dataset")
    train_dataset(
        tmp_path / "dataset",
        tmp_path / "model",
        TrainConfig(encoder="hash", epochs=1, seed=0),
        progress=False,
        log=lambda m: None,
    )
    v = open_version(tmp_path / "model")
    assert v.has("rerank/text_index/faiss.index") and v.info["text_index_recall_at_10"] > 0.9
    rr = Recommender.load(tmp_path / "model").reranker
    assert rr.text_index is not None and rr.text_index.meta["mmap"] and rr.text_index.n == 400
    assert rr.text_index.meta["storage"] == "float16" and rr.text_index.kind == "ivf"
    exact = rr.with_config()
    exact.text_index = None
    q = np.arange(0, 400, 13)
    assert _overlap_rows(rr.top_k(q, 10, new=False)[1], exact.top_k(q, 10, new=False)[1]) > 0.9
    w_hnsw, w_exact = (set(zip(*m._lent(q, m._cold_pool())[:2])) for m in (rr, exact))
    assert len(w_hnsw & w_exact) >= 0.9 * len(w_exact)


def _overlap_rows(a, b) -> float:
    return float(np.mean([len(np.intersect1d(x, y)) / max(1, len(y)) for x, y in zip(a, b)]))


def test_a_failed_second_stage_keeps_a_complete_daemon_model(tmp_path, monkeypatch):
    """If the second stage cannot be fitted (too few validation edges, or anything unexpected),
    train says so and still writes a complete one-stage model folder."""

    import dualrec.pipeline
    from dualrec.pipeline import train_dataset
    from dualrec.synthetic import make_store
    from dualrec.train import TrainConfig

    def boom(*a, **k):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(dualrec.pipeline, "fit_two_stage", boom)
    make_store(n_products=60, seed=0).save(tmp_path / "dataset")
    logs = []
    train_dataset(
        tmp_path / "dataset",
        tmp_path / "model",
        TrainConfig(encoder="hash", epochs=1, seed=0),
        progress=False,
        log=logs.append,
    )
    from dualrec.store import open_version

    v = open_version(tmp_path / "model")
    info = v.info
    assert info["ranker"] == "daemon" and info["rerank_error"] == "RuntimeError: simulated failure"
    assert any("second stage not fitted" in m for m in logs)
    assert not [f for f in v.files if f.startswith("rerank/")]
    assert v.has("features.json")
    assert Recommender.load(tmp_path / "model").ranker == "daemon"


def test_a_second_stage_fitted_before_the_new_product_settings_keeps_its_ranking(two_stage):
    """A model folder whose rerank.json predates ``cold_neighbours`` and the new-product gate loads
    with both off (DAEMON alone for products without history, slots always filled): the ranking
    its stored lists were computed with."""
    from dualrec.rerank import CandidateReranker
    from dualrec.store import open_version

    root, _ = two_stage
    v = open_version(root / "model")

    class Older:  # the same version, its rerank.json as an older dualrec wrote it
        def __getattr__(self, name):
            return getattr(v, name)

        def json(self, path):
            got = v.json(path)
            if path.endswith("rerank.json"):
                cfg = {k: x for k, x in got["config"].items() if not k.startswith(("cold_", "new_min"))}
                got = {**got, "config": cfg}
                got["info"] = {k: x for k, x in got["info"].items() if k != "new_gate"}
            return got

    rec = Recommender.load(root / "model")
    old = CandidateReranker.load(Older(), rec.source, rec.target, v.features(mmap=True))
    assert old.cfg.cold_neighbours == 0 and old.cfg.new_min_confidence == 0.0
    now = CandidateReranker.load(v, rec.source, rec.target, v.features(mmap=True))
    assert now.cfg.cold_neighbours == 20 and now.cfg.new_min_confidence == 0.2
