"""Precomputed lists (dualrec.lists): written by `dualrec train`, served by key lookup, and the
same lists as the online path; anything they cannot answer goes online."""

import numpy as np
import pandas as pd
import pytest

from dualrec.errors import DualrecError
from dualrec.lists import StoredLists, precompute_lists
from dualrec.retrieval import Recommender


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from dualrec.pipeline import train_dataset
    from dualrec.synthetic import make_store
    from dualrec.train import TrainConfig

    root = tmp_path_factory.mktemp("lists")
    g = make_store(n_products=600, seed=4)
    g.save(root / "dataset")
    train_dataset(
        root / "dataset",
        root / "model",
        TrainConfig(encoder="hash", epochs=2, seed=0),
        progress=False,
        log=lambda m: None,
        list_k=12,
    )
    return root, g


def test_train_stores_every_products_list_and_they_equal_the_online_path(model):
    root, g = model
    rec = Recommender.load(root / "model")
    assert rec.lists is not None and rec.lists.k == 12 and rec.lists.items.shape == (g.num_products, 12)
    assert rec.version.info["lists"]["k"] == 12
    rows = np.arange(g.num_products)
    s_online, i_online = rec.reranker.top_k(rows, 12)
    np.testing.assert_array_equal(np.asarray(rec.lists.items), i_online)
    np.testing.assert_allclose(np.asarray(rec.lists.scores), s_online, rtol=1e-6)
    # served by lookup for k <= 12: the first k of the stored list
    s, i = rec.top_k(rows[:50], 5)
    np.testing.assert_array_equal(i, i_online[:50, :5])
    assert isinstance(rec.lists.items, np.memmap)  # memory-mapped: workers share the pages


def test_what_the_lists_cannot_answer_goes_online(model):
    root, g = model
    rec = Recommender.load(root / "model")
    calls = []
    top_k = rec.reranker.top_k

    def spy(rows, k, exclude=None):
        calls.append((list(rows), k))
        return top_k(rows, k, exclude=exclude)

    rec.reranker.top_k = spy
    rec.top_k([3, 4], 10)
    assert calls == []  # a key lookup
    rec.top_k([3], 20)  # more than stored
    rec.top_k([3], 5, exclude=[[int(rec.lists.items[3, 0])]])  # the caller leaves a product out
    assert calls == [([3], 20), ([3], 5)]
    _, i = rec.top_k([3], 5, exclude=[[int(rec.lists.items[3, 0])]])
    assert int(rec.lists.items[3, 0]) not in i[0]


def test_a_product_whose_logged_copurchases_changed_is_answered_online(model, tmp_path):
    """add-products with an edge from a known product: that product's stored list is stale (the
    new logged co-purchase comes first now), so its list is computed online."""
    import shutil

    from dualrec.coldstart import add_products

    root, g = model
    mdir = tmp_path / "model"
    shutil.copytree(root / "model", mdir)
    src = str(g.ids[7])
    new = g.products.iloc[[0]].drop(columns=["role", "category_id"]).assign(id="NEW-1", title="new thing")
    add_products(mdir, new, copurchase=pd.DataFrame({"src": [src], "dst": ["NEW-1"]}))
    rec = Recommender.load(mdir)
    assert not rec.lists.covers(np.array([7]), 5)[0] and rec.lists.covers(np.array([8]), 5)[0]
    # The evaluation still ranks the trained catalogue (the new product has no held-out edges).
    # Its logged co-purchase can make it a co-occurrence candidate of a query with a path to
    # product 7, which moves the pair model's rank features of that query's other candidates:
    # whether a held-out edge's rank moves with them depends on the trained embeddings (it did on
    # one CPU and not on another), so at most a few edges' worth of change is allowed, no more.
    from dualrec.pipeline import evaluate_model

    before, after = evaluate_model(root / "model", progress=False), evaluate_model(mdir, progress=False)
    assert after["num_queries"] == before["num_queries"]
    one_edge = 1 / before["num_queries"]
    assert after["HitRate@10"] == pytest.approx(before["HitRate@10"], abs=2 * one_edge)
    assert after["MRR@10"] == pytest.approx(before["MRR@10"], abs=2 * one_edge)
    a, _ = rec.version.logged_edges("copurchase")
    logged = int((a == 7).sum())
    assert "NEW-1" in rec.recommend([src], logged)[0].ids  # among the logged ones, which come first


def test_precompute_resumes_from_kept_batches(tmp_path):
    calls = []

    def top_k(rows, k):
        calls.append(int(rows[0]))
        return -rows[:, None].astype(np.float32) * np.ones((1, k), np.float32), np.tile(rows[:, None], (1, k))

    items, scores, info = precompute_lists(top_k, 10, 3, batch=4, parts_dir=tmp_path, key="m")
    assert calls == [0, 4, 8] and info["resumed_rows"] == 0
    (next(tmp_path.glob("lists-*")) / f"{4:012d}.npz").unlink()  # as if killed before that batch
    calls.clear()
    again, _, info = precompute_lists(top_k, 10, 3, batch=4, parts_dir=tmp_path, key="m")
    assert calls == [4] and info["resumed_rows"] == 6
    np.testing.assert_array_equal(again, items)
    calls.clear()
    precompute_lists(top_k, 10, 3, batch=4, parts_dir=tmp_path, key="another model")
    assert calls == [0, 4, 8]  # another model's batches are never reused


def test_bad_stored_lists_are_refused():
    with pytest.raises(DualrecError, match="differ"):
        StoredLists(np.zeros((3, 2), np.int32), np.zeros((3, 3), np.float32), {})
    with pytest.raises(DualrecError, match="k >= 1"):
        precompute_lists(lambda r, k: None, 3, 0)


def test_a_new_index_recomputes_the_lists(model, tmp_path):
    """`dualrec index` changes where DAEMON's candidates come from: the lists are computed again
    with it, so a stored list stays the online path's list."""
    import shutil

    from dualrec.index import write_model_index

    root, g = model
    mdir = tmp_path / "model"
    shutil.copytree(root / "model", mdir)
    write_model_index(mdir, "hnsw", M=8)
    rec = Recommender.load(mdir)
    assert rec.index.kind == "hnsw" and rec.lists is not None and rec.version.name == "v000002"
    rows = np.arange(0, g.num_products, 5)
    np.testing.assert_array_equal(np.asarray(rec.lists.items)[rows], rec.reranker.top_k(rows, 12)[1])
