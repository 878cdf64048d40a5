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
    scores = (rec.source[q] @ rec.target.T).clone()
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
    rec = make_rec(n=30, seed=3)
    np.save(tmp_path / "source.npy", rec.source.numpy())
    np.save(tmp_path / "target.npy", rec.target.numpy())
    rec.products.to_parquet(tmp_path / "products.parquet")
    loaded = Recommender.load(tmp_path)
    assert loaded.num_products == 30
    assert [r.ids for r in loaded.recommend(["id004", "id029"], 7)] == [
        r.ids for r in rec.recommend(["id004", "id029"], 7)]


def test_load_non_model_folder_raises(tmp_path):
    with pytest.raises(DualrecError, match="not found"):
        Recommender.load(tmp_path / "missing")
    (tmp_path / "source.npy").write_bytes(b"")
    with pytest.raises(DualrecError, match="not a trained dualrec model") as ei:
        Recommender.load(tmp_path)
    assert "target.npy" in str(ei.value) and "dualrec train" in str(ei.value)
