"""RetrievalIndex: exact = Recommender, approximate recall, persistence, model-folder indexes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import dualrec.index as index_module
from dualrec.cli import app
from dualrec.graph import DualrecError
from dualrec.index import (
    RetrievalIndex,
    RowFilter,
    exact_top_k,
    load_model_index,
    recall_at_k,
    write_model_index,
)
from dualrec.retrieval import Recommender
from dualrec.store import open_version

from .conftest import normalised, write_model


def _pair(n=2000, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return normalised(rng, n, d), normalised(rng, n, d)


def _recommender(s, t):
    products = pd.DataFrame({"id": [f"p{i}" for i in range(len(s))]})
    return Recommender(products, torch.from_numpy(s), torch.from_numpy(t))


@pytest.mark.parametrize("k", [1, 10, 50])
def test_flat_topk_identical_to_recommender(k):
    s, t = _pair()
    idx = RetrievalIndex.build(t, "exact", source=s)
    rec = _recommender(s, t)
    q = np.arange(len(s))
    scores, ids = idx.recommend(q, k)
    r_scores, r_ids = rec.topk_indices(torch.from_numpy(q), k)
    assert ids.shape == tuple(r_ids.shape) == (len(s), k)
    np.testing.assert_array_equal(ids, r_ids.numpy())
    np.testing.assert_allclose(scores, r_scores.numpy(), atol=1e-5)
    assert not (ids == q[:, None]).any()  # the query itself is never returned


def test_flat_exclusions_identical_to_recommender():
    s, t = _pair(n=500)
    t[7] = s[7]  # product 7 would be its own best match: it must still be left out
    idx = RetrievalIndex.build(t, "exact", source=s)
    rec = _recommender(s, t)
    q = np.array([7, 3, 3, 100, 499])
    first = idx.recommend(q, 5)[1]
    ex = [first[0, :3], np.array([], dtype=np.int64), np.array([0, 1, 2, 4, 5]), first[3, [0, 2]], np.array([499])]
    scores, ids = idx.recommend(q, 5, exclude=ex)
    r_scores, r_ids = rec.topk_indices(torch.from_numpy(q), 5, [torch.from_numpy(e) for e in ex])
    np.testing.assert_array_equal(ids, r_ids.numpy())
    np.testing.assert_allclose(scores, r_scores.numpy(), atol=1e-5)
    for i, e in zip(ids, ex):
        assert not set(i.tolist()) & set(e.tolist())
    # one exclusion list for every query
    common = first[0, :2]
    ids2 = idx.recommend(q, 5, exclude=common)[1]
    assert not np.isin(ids2, common).any() and not (ids2 == q[:, None]).any()


def test_k_beyond_catalogue_and_unfillable_slots_match_recommender():
    s, t = _pair(n=6)
    idx = RetrievalIndex.build(t, "exact", source=s)
    rec = _recommender(s, t)
    q = np.arange(6)
    ex = [
        np.array([1, 2, 3, 4, 5]),
        np.array([], dtype=np.int64),
        np.array([0]),
        np.array([0]),
        np.array([0]),
        np.array([0]),
    ]
    scores, ids = idx.recommend(q, 10, exclude=ex)
    r_scores, r_ids = rec.topk_indices(torch.from_numpy(q), 10, [torch.from_numpy(e) for e in ex])
    assert ids.shape == (6, 5)
    np.testing.assert_array_equal(ids, r_ids.numpy())
    assert (ids[0] == -1).all() and np.isneginf(scores[0]).all()
    # without exclude_self the query may come back, and k' = min(k, n)
    assert idx.recommend(q, 10, exclude_self=False)[1].shape == (6, 6)


def test_search_is_raw_inner_product_topk():
    s, t = _pair(n=300)
    idx = RetrievalIndex.build(t, "exact")
    scores, ids = idx.search(s[:20], 5)
    full = s[:20] @ t.T
    np.testing.assert_array_equal(ids, np.argsort(-full, axis=1)[:, :5])
    np.testing.assert_allclose(scores, np.take_along_axis(full, ids, 1), atol=1e-5)
    d, i = idx.search(s[:2], 400)  # more than n: padded
    assert (i[:, 300:] == -1).all() and np.isneginf(d[:, 300:]).all()
    with pytest.raises(DualrecError):
        idx.search(s[:2], 0)
    with pytest.raises(DualrecError):
        idx.search(np.zeros((2, 3), np.float32), 5)


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_search_restricted_to_allowed_rows(kind):
    """``allowed`` searches only the rows it marks: exact search = the masked brute force top-k,
    HNSW close to it; combined with ``below`` both apply; a wrong mask is refused."""
    s, t = _pair(n=3000)
    allowed = np.random.default_rng(1).random(3000) < 0.3
    idx = RetrievalIndex.build(t, kind)
    _, ids = idx.search(s[:50], 10, allowed=allowed)
    assert allowed[ids[ids >= 0]].all()
    full = s[:50] @ t.T
    full[:, ~allowed] = -np.inf
    want = np.argsort(-full, axis=1)[:, :10]
    if kind == "exact":
        np.testing.assert_array_equal(ids, want)
    else:
        assert recall_at_k(ids, want, 10) >= 0.85
    # a filter built once gives the same (what the second stage keeps, so a query does no O(N) work)
    np.testing.assert_array_equal(idx.search(s[:50], 10, allowed=RowFilter(allowed))[1], ids)
    _, ids = idx.search(s[:50], 10, allowed=allowed, below=1000)
    assert (ids[ids >= 0] < 1000).all() and allowed[ids[ids >= 0]].all()
    _, few = idx.search(s[:2], 10, allowed=np.arange(3000) < 3)
    assert sorted(few[0][few[0] >= 0].tolist()) == [0, 1, 2]
    with pytest.raises(DualrecError, match="mask over the index"):
        idx.search(s[:2], 5, allowed=allowed[:10])


def test_hnsw_recall_on_20k_random_vectors():
    rng = np.random.default_rng(0)
    t = normalised(rng, 20_000, 32)
    queries = normalised(rng, 1000, 32)
    idx = RetrievalIndex.build(t, "hnsw", queries=queries[:500], target_recall=0.95, sample=250)
    assert idx.meta["recall_at_10"] >= 0.95 or not idx.meta["target_met"]
    assert idx.params["efSearch"] >= 16 and idx.params["M"] == 32
    # independent check on queries the tuning never saw
    exact = RetrievalIndex.build(t, "exact")
    held = queries[500:]
    r = recall_at_k(idx.search(held, 10)[1], exact.search(held, 10)[1], 10)
    assert r >= 0.9, r


def test_ivf_reaches_target_and_explicit_knob_is_only_measured():
    s, t = _pair(n=5000, d=16)
    idx = RetrievalIndex.build(t, "ivf", source=s, target_recall=0.9, sample=300)
    assert idx.meta["target_met"] and idx.meta["recall_at_10"] >= 0.9
    assert idx.meta["tuned"] == "nprobe" and 1 <= idx.params["nprobe"] <= idx.params["nlist"]
    fixed = RetrievalIndex.build(t, "ivf", source=s, sample=300, nlist=50, nprobe=1)
    assert fixed.params == {"nlist": 50, "nprobe": 1} and fixed.meta["tuned"] is None
    assert fixed.meta["recall_at_10"] < 0.9  # measured and recorded, not tuned
    with pytest.raises(DualrecError, match="unknown ivf index parameter"):
        RetrievalIndex.build(t, "ivf", M=8)
    with pytest.raises(DualrecError, match="unknown index kind"):
        RetrievalIndex.build(t, "annoy")


def test_recall_counts_ties_with_the_exact_scores():
    """Duplicate rows (products with the same text): returning one copy where exact search
    returned the other is a hit when the scores are given, a miss by row identity."""
    rng = np.random.default_rng(5)
    base = normalised(rng, 50, 8)
    t = np.vstack([base, base])  # row i and row i + 50 are the same vector
    q = normalised(rng, 20, 8)
    exact = exact_top_k(t, q, 3)  # a pair of copies, then one copy of the next vector
    twin = exact.copy()
    twin[:, 2] = np.where(exact[:, 2] < 50, exact[:, 2] + 50, exact[:, 2] - 50)  # its other copy
    assert recall_at_k(twin, exact, 3) == pytest.approx(2 / 3)
    assert recall_at_k(twin, exact, 3, target=t, queries=q) == 1.0
    worse = exact_top_k(t, q, 30)[:, -3:]  # rows ranked 28th-30th: below the 3rd best's score
    assert recall_at_k(worse, exact, 3, target=t, queries=q) == 0.0
    twin[:, 0] = -1
    assert recall_at_k(twin, exact, 3, target=t, queries=q) == pytest.approx(2 / 3)


def test_tuning_on_duplicated_rows_does_not_widen_to_a_full_scan():
    """Every vector three times: by row identity no probe setting short of the whole table reaches
    the target; counting ties, a small one does."""
    rng = np.random.default_rng(6)
    t = np.vstack([normalised(rng, 2000, 16)] * 3)
    idx = RetrievalIndex.build(t, "ivf", sample=300, nlist=64)
    assert idx.meta["target_met"] and idx.meta["recall_counts_ties"]
    assert idx.params["nprobe"] < 64, idx.params


def test_exact_top_k_in_chunks_is_brute_force(monkeypatch):
    monkeypatch.setattr(index_module, "_CHUNK", 97)  # many chunks, a short last one
    rng = np.random.default_rng(3)
    t, q = normalised(rng, 1000, 8), normalised(rng, 40, 8)
    want = np.argsort(-(q @ t.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(exact_top_k(t, q, 10), want)
    np.testing.assert_array_equal(exact_top_k(t.astype(np.float16), q, 10)[:, 0], want[:, 0])
    assert exact_top_k(t[:5], q, 10).shape == (40, 5)  # k beyond the table


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_float16_storage_from_a_float16_table(tmp_path, monkeypatch, kind):
    """A wide index (the text's) built from 16-bit rows into 16-bit storage: its recall is
    measured against exact search as for float32, and it reads back memory-mapped."""
    monkeypatch.setattr(index_module, "_CHUNK", 1000)  # added and searched exactly in chunks
    rng = np.random.default_rng(1)
    t = normalised(rng, 5000, 32).astype(np.float16)
    idx = RetrievalIndex.build(t, kind, sample=300, storage="float16")
    assert idx.meta["storage"] == "float16" and idx.meta["target_met"] and idx.n == 5000
    q = t[:50].astype(np.float32)
    r = recall_at_k(idx.search(q, 10)[1], exact_top_k(t, q, 10), 10)
    assert r >= 0.9, r
    idx.save(tmp_path / "ix")
    back = RetrievalIndex.load(tmp_path / "ix", mmap=True)
    np.testing.assert_array_equal(back.search(q, 10)[1], idx.search(q, 10)[1])
    flat = RetrievalIndex.build(t, kind, sample=300)
    assert flat.meta["storage"] == "float32"
    saved = _saved_size(flat, tmp_path / "flat") - (tmp_path / "ix" / "faiss.index").stat().st_size
    assert saved >= 0.95 * t.shape[0] * t.shape[1] * 2  # two bytes a value (the graph or lists are the same)
    for bad_kind, storage in (("exact", "float16"), (kind, "int8")):
        with pytest.raises(DualrecError, match="storage"):
            RetrievalIndex.build(t, bad_kind, storage=storage)


def _saved_size(idx, d) -> int:
    idx.save(d)
    return (d / "faiss.index").stat().st_size


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_save_load_round_trip(tmp_path, kind):
    s, t = _pair(n=3000)
    idx = RetrievalIndex.build(t, kind, source=s, sample=200)
    idx.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    assert meta["kind"] == kind and meta["n"] == 3000 and meta["dim"] == 16 and "recall_at_10" in meta
    back = RetrievalIndex.load(tmp_path / "ix", source=s)
    assert back.kind == kind and back.params == idx.params and back.n == idx.n
    q = np.arange(0, 3000, 7)
    a, b = idx.recommend(q, 10), back.recommend(q, 10)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])


def test_load_errors(tmp_path):
    with pytest.raises(DualrecError, match="not a dualrec index"):
        RetrievalIndex.load(tmp_path)
    s, t = _pair(n=100)
    RetrievalIndex.build(t, "exact").save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    meta["n"] = 99
    (tmp_path / "ix" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(DualrecError, match="disagree"):
        RetrievalIndex.load(tmp_path / "ix")
    (tmp_path / "ix" / "faiss.index").write_bytes(b"garbage")
    with pytest.raises(DualrecError):
        RetrievalIndex.load(tmp_path / "ix")


def test_model_folder_index_atomic_write_and_validation(tmp_path):
    m = write_model(tmp_path / "m", n=400)
    meta = write_model_index(m, "hnsw", sample=100)
    assert meta["kind"] == "hnsw" and meta["recall_query_source"] == "source"
    meta = write_model_index(m, "exact")  # a new version, with the new index
    v = open_version(m)
    assert v.name == "v000003" and v.json("index/index.json")["kind"] == "exact"
    assert open_version(m, "v000002").json("index/index.json")["kind"] == "hnsw"  # the old one stays
    assert not list((m / "staging").glob("*"))  # no temp folders left
    s, t = v.embeddings()
    assert load_model_index(v, s, t).meta.get("in_memory") is None

    # rows appended later (cold start) are added in memory and found
    s2, t2 = np.vstack([s, s[:1]]), np.vstack([t, s[:1]])
    ix = load_model_index(v, s2, t2)
    assert ix.n == 401 and ix.meta["appended_rows"] == 1
    assert ix.recommend([0], 1)[1][0, 0] == 400  # its target equals product 0's source

    # an index built for other embeddings (retrained model) is ignored, with a reason
    msgs = []
    other = t.copy()
    other[0] = -other[0]
    ix = load_model_index(v, s, other, log=msgs.append)
    assert ix.meta["in_memory"] and ix.kind == "exact" and "other embeddings" in msgs[0]


def test_cli_index(tmp_path):
    m = write_model(tmp_path / "m", n=400)
    r = CliRunner().invoke(app, ["index", str(m), "--kind", "ivf", "--target-recall", "0.9", "--sample", "100"])
    assert r.exit_code == 0, r.output
    meta = open_version(m).json("index/index.json")
    assert meta["kind"] == "ivf" and meta["target_recall"] == 0.9
    r = CliRunner().invoke(app, ["index", str(m), "--kind", "hnsw", "--param", "M=8", "--param", "efSearch=64"])
    assert r.exit_code == 0, r.output
    assert open_version(m).json("index/index.json")["params"]["M"] == 8
    for bad in (["--kind", "annoy"], ["--param", "M"], ["--param", "M=x"], ["--kind", "hnsw", "--param", "nlist=4"]):
        r = CliRunner().invoke(app, ["index", str(m), *bad])
        assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output, (bad, r.output)
    r = CliRunner().invoke(app, ["index", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "model folder not found" in r.output
