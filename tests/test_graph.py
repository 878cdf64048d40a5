"""ProductGraph: cleaning in from_edges, id handling, save/load, reciprocity, CSR adjacency."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from dualrec.graph import (
    CleanReport,
    DualrecError,
    ProductGraph,
    UnknownProductError,
    csr_adjacency,
)


def products(n: int = 5, **extra) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"p{i}" for i in range(n)], **extra})


def edge_dict(src, dst, w) -> dict:
    return {(int(s), int(d)): float(x) for s, d, x in zip(src, dst, w)}


# ---------------------------------------------------------------------- from_edges cleaning
def test_self_loops_dropped_and_counted():
    g, clean = ProductGraph.from_edges(
        products(4),
        copurchase=([0, 1, 2, 2, 3], [0, 2, 2, 3, 3]),
        similar=([1, 1, 0], [1, 3, 2]),
    )
    assert isinstance(clean, CleanReport)
    assert clean.copurchase_self_loops == 3
    assert clean.similar_self_loops == 1
    assert edge_dict(g.cp_src, g.cp_dst, g.cp_weight) == {(1, 2): 1.0, (2, 3): 1.0}
    assert edge_dict(g.sim_a, g.sim_b, g.sim_weight) == {(1, 3): 1.0, (0, 2): 1.0}
    assert bool((g.cp_src != g.cp_dst).all())
    # the counts also go into the report that graph.json keeps
    assert g.report["clean"]["copurchase_self_loops"] == 3
    assert g.report["clean"]["similar_self_loops"] == 1


def test_duplicate_copurchase_edges_merged_with_summed_weights():
    g, clean = ProductGraph.from_edges(
        products(4),
        copurchase=([2, 0, 2, 0, 2, 1], [1, 3, 1, 3, 1, 2], [0.5, 1.0, 2.0, 4.0, 0.25, 7.0]),
    )
    assert clean.copurchase_duplicates_merged == 3  # 2->1 three times (2 merged), 0->3 twice (1 merged)
    assert clean.copurchase_self_loops == 0
    assert edge_dict(g.cp_src, g.cp_dst, g.cp_weight) == {(2, 1): 2.75, (0, 3): 5.0, (1, 2): 7.0}
    # direction matters: 1->2 and 2->1 are different edges, not merged
    assert g.num_copurchase == 3
    # invariant: sorted by (src, dst) and unique
    keys = (g.cp_src * g.num_products + g.cp_dst).tolist()
    assert keys == sorted(set(keys))
    assert g.cp_src.dtype == torch.long and g.cp_weight.dtype == torch.float32


def test_default_weight_is_one_per_draw():
    g, clean = ProductGraph.from_edges(products(3), copurchase=([0, 0, 0, 1], [1, 1, 1, 2]))
    assert clean.copurchase_duplicates_merged == 2
    assert edge_dict(g.cp_src, g.cp_dst, g.cp_weight) == {(0, 1): 3.0, (1, 2): 1.0}


def test_similarity_pairs_canonicalised_and_merged():
    g, clean = ProductGraph.from_edges(
        products(5),
        similar=([3, 1, 4, 0, 2], [1, 3, 0, 4, 2], [1.0, 2.0, 0.5, 0.5, 9.0]),
    )
    # (3,1) == (1,3), (4,0) == (0,4); (2,2) is a self-loop
    assert clean.similar_duplicates_merged == 2
    assert clean.similar_self_loops == 1
    assert bool((g.sim_a < g.sim_b).all())
    assert edge_dict(g.sim_a, g.sim_b, g.sim_weight) == {(1, 3): 3.0, (0, 4): 1.0}
    assert g.num_similar == 2
    assert g.num_copurchase == 0


@pytest.mark.parametrize(
    "copurchase, similar",
    [
        (([0, 1], [1, 5]), None),  # dst == n
        (([-1, 1], [1, 2]), None),  # negative src
        (None, ([0], [7])),  # similarity endpoint out of range
        (None, ([-2], [1])),
    ],
)
def test_out_of_range_endpoints_raise(copurchase, similar):
    with pytest.raises(DualrecError, match="out of range"):
        ProductGraph.from_edges(products(5), copurchase=copurchase, similar=similar)


def test_mismatched_edge_arrays_and_weights_raise():
    with pytest.raises(DualrecError, match="differ in length"):
        ProductGraph.from_edges(products(3), copurchase=([0, 1], [1]))
    with pytest.raises(DualrecError, match="weight"):
        ProductGraph.from_edges(products(3), copurchase=([0, 1], [1, 2], [1.0]))


def test_duplicate_ids_raise_with_clear_message():
    p = pd.DataFrame({"id": ["a", "b", "a", "c"], "title": list("wxyz")})
    with pytest.raises(DualrecError, match=r"1 duplicate product id.*'a'.*unique"):
        ProductGraph.from_edges(p)


def test_missing_ids_raise_with_clear_message():
    p = pd.DataFrame({"id": ["a", None, "c", np.nan], "title": list("wxyz")})
    with pytest.raises(DualrecError, match=r"2 product\(s\) have an empty id"):
        ProductGraph.from_edges(p)
    with pytest.raises(DualrecError, match="'id' column"):
        ProductGraph.from_edges(pd.DataFrame({"sku": ["a", "b"]}))
    with pytest.raises(DualrecError, match="DataFrame"):
        ProductGraph.from_edges({"id": ["a"]})


def test_ids_become_strings_and_id_column_first():
    p = pd.DataFrame({"title": ["x", "y", "z"], "id": [10, 20, 30]})
    g, _ = ProductGraph.from_edges(p, copurchase=([0], [2]))
    assert list(g.products.columns) == ["id", "title"]
    assert g.ids.tolist() == ["10", "20", "30"]
    assert g.index_of([30, "10"]).tolist() == [2, 0]


# ---------------------------------------------------------------------- index_of
def test_index_of_known_and_unknown_ids():
    g, _ = ProductGraph.from_edges(products(4))
    assert g.index_of(["p3", "p0", "p3"]).tolist() == [3, 0, 3]
    with pytest.raises(UnknownProductError) as ei:
        g.index_of(["p1", "nope-42", "p2", "zz"])
    assert "nope-42" in str(ei.value) and "zz" in str(ei.value)
    assert "p1" not in str(ei.value)
    assert ei.value.missing == ["nope-42", "zz"]
    # it is a DualrecError (clean CLI message) and a KeyError, and str() is not double-quoted
    assert isinstance(ei.value, DualrecError) and isinstance(ei.value, KeyError)
    assert str(ei.value).startswith("unknown product id")


def test_unknown_product_error_truncates_long_lists():
    e = UnknownProductError([f"x{i}" for i in range(8)])
    assert "'x4'" in str(e) and "'x5'" not in str(e) and "3 more" in str(e)


# ---------------------------------------------------------------------- save / load
def test_save_load_round_trip(tmp_path):
    p = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "title": ["red shirt", "blue jeans", None, "hat"],
            "price": [19.99, np.nan, 5.0, 12.5],
            "stock": np.array([1, 2, 3, 4], dtype=np.int64),
            "on_sale": [True, False, True, False],
        }
    )
    g, _ = ProductGraph.from_edges(
        p,
        copurchase=([0, 1, 2, 1], [1, 0, 3, 3], [1.5, 2.0, 0.25, 3.0]),
        similar=([3, 0], [1, 2], [0.5, 4.0]),
        report={"format": "unit-test", "nested": {"x": 1}},
    )
    out = g.save(tmp_path / "ds")
    assert {f.name for f in out.iterdir()} >= {
        "products.parquet",
        "copurchase.parquet",
        "similar.parquet",
        "graph.json",
    }
    meta = json.loads((out / "graph.json").read_text())
    assert meta["summary"]["products"] == 4 and meta["summary"]["copurchase_edges"] == 4

    h = ProductGraph.load(out)
    assert list(h.products.columns) == ["id", "title", "price", "stock", "on_sale"]
    pd.testing.assert_frame_equal(h.products, g.products)
    for c in p.columns:
        assert h.products[c].dtype == g.products[c].dtype, c
    for name in ("cp_src", "cp_dst", "cp_weight", "sim_a", "sim_b", "sim_weight"):
        a, b = getattr(g, name), getattr(h, name)
        assert a.dtype == b.dtype, name
        assert torch.equal(a, b), name
    assert h.report["format"] == "unit-test" and h.report["nested"] == {"x": 1}
    assert h.report["clean"] == g.report["clean"]
    assert h.summary() == g.summary()
    assert h.index_of(["d"]).tolist() == [3]
    # loaded tensors own their memory (writable, not views of Arrow buffers)
    h.cp_weight[0] = 99.0
    assert g.cp_weight[0] != 99.0


def test_save_load_empty_edges(tmp_path):
    g, _ = ProductGraph.from_edges(products(3))
    h = ProductGraph.load(g.save(tmp_path / "ds"))
    assert h.num_products == 3 and h.num_copurchase == 0 and h.num_similar == 0
    assert h.cp_src.dtype == torch.long and h.sim_weight.dtype == torch.float32
    assert h.reciprocal_mask().numel() == 0


def test_load_non_dataset_folder_mentions_ingest(tmp_path):
    (tmp_path / "products.parquet").write_bytes(b"")  # one file is not enough
    with pytest.raises(DualrecError, match="dualrec ingest") as ei:
        ProductGraph.load(tmp_path)
    assert "copurchase.parquet" in str(ei.value)
    with pytest.raises(DualrecError, match="not found"):
        ProductGraph.load(tmp_path / "does-not-exist")


def test_load_newer_format_refused(tmp_path):
    g, _ = ProductGraph.from_edges(products(2))
    d = g.save(tmp_path / "ds")
    meta = json.loads((d / "graph.json").read_text())
    meta["format_version"] = 999
    (d / "graph.json").write_text(json.dumps(meta))
    with pytest.raises(DualrecError, match="newer"):
        ProductGraph.load(d)


# ---------------------------------------------------------------------- structure
def test_reciprocal_mask_by_hand():
    # 0->1, 1->0 reciprocal; 1->2 one-way; 2->3, 3->2 reciprocal; 3->0 one-way
    g, _ = ProductGraph.from_edges(products(4), copurchase=([0, 1, 1, 2, 3, 3], [1, 0, 2, 3, 2, 0]))
    got = dict(zip(zip(g.cp_src.tolist(), g.cp_dst.tolist()), g.reciprocal_mask().tolist()))
    assert got == {(0, 1): True, (1, 0): True, (1, 2): False, (2, 3): True, (3, 2): True, (3, 0): False}
    assert g.summary()["reciprocal_copurchase_edges"] == 4
    # arbitrary query pairs: is dst -> src an edge?
    src, dst = torch.tensor([2, 0, 0, 3, 1]), torch.tensor([1, 3, 2, 3, 1])
    assert g.reciprocal_mask(src, dst).tolist() == [True, True, False, False, False]


def test_reciprocal_mask_of_pairs_and_out_edges_match_a_brute_force():
    # hubs (long rows: several bisection rounds), empty rows, pairs whose reverse row is empty
    gen = torch.Generator().manual_seed(0)
    n = 300
    src = torch.cat([torch.zeros(200, dtype=torch.long), torch.randint(0, n, (2000,), generator=gen)])
    dst = torch.cat([torch.randint(0, n, (200,), generator=gen), torch.randint(0, n // 2, (2000,), generator=gen)])
    g, _ = ProductGraph.from_edges(products(n), copurchase=(src, dst))
    edges = set(zip(g.cp_src.tolist(), g.cp_dst.tolist()))
    qs, qd = torch.randint(0, n, (3000,), generator=gen), torch.randint(0, n, (3000,), generator=gen)
    qs, qd = torch.cat([qs, g.cp_dst[:500]]), torch.cat([qd, g.cp_src[:500]])  # (and some known reverses)
    want = [(d, s) in edges for s, d in zip(qs.tolist(), qd.tolist())]
    assert g.reciprocal_mask(qs, qd).tolist() == want and sum(want) > 500
    assert g.reciprocal_mask(qs[:0], qd[:0]).numel() == 0
    nodes = torch.tensor([0, 5, n - 1, 17])
    got = g.out_edges(nodes)
    assert sorted(got.tolist()) == sorted(i for i, s in enumerate(g.cp_src.tolist()) if s in {0, 5, n - 1, 17})


def test_subgraph_edges_keeps_products_and_similarity():
    g, _ = ProductGraph.from_edges(products(4), copurchase=([0, 1, 2], [1, 2, 3]), similar=([0], [3]))
    h = g.subgraph_edges(torch.tensor([True, False, True]))
    assert list(zip(h.cp_src.tolist(), h.cp_dst.tolist())) == [(0, 1), (2, 3)]
    assert h.num_similar == 1 and h.num_products == 4


def test_csr_adjacency_weighted_mean_equals_dense():
    n = 5
    row = torch.tensor([0, 0, 0, 2, 2, 4, 1])
    col = torch.tensor([1, 3, 4, 0, 4, 4, 0])
    w = torch.tensor([1.0, 2.0, 3.0, 0.5, 1.5, 2.0, 4.0])
    x = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3) ** 1.5 - 7.0

    dense = torch.zeros(n, n)
    dense[row, col] = w
    deg = dense.sum(1, keepdim=True)
    expected = torch.where(deg > 0, (dense @ x) / deg.clamp(min=1e-12), torch.zeros(()))

    a = csr_adjacency(row, col, n, w)
    assert a.layout == torch.sparse_csr and tuple(a.shape) == (n, n)
    got = a @ x
    torch.testing.assert_close(got, expected)
    # node 3 has no out-neighbours: zeros
    assert torch.equal(got[3], torch.zeros(3))
    # hand value for node 0: (1*x1 + 2*x3 + 3*x4) / 6
    torch.testing.assert_close(got[0], (x[1] + 2 * x[3] + 3 * x[4]) / 6)
    # node 4 -> 4 (a self entry is allowed in the adjacency): mean is x4
    torch.testing.assert_close(got[4], x[4])


def test_csr_adjacency_unweighted_and_unnormalised():
    n = 4
    row, col = torch.tensor([3, 0, 0]), torch.tensor([1, 2, 1])
    x = torch.tensor([[1.0], [10.0], [100.0], [1000.0]])
    torch.testing.assert_close(csr_adjacency(row, col, n) @ x, torch.tensor([[55.0], [0.0], [0.0], [10.0]]))
    raw = csr_adjacency(row, col, n, torch.tensor([2.0, 1.0, 3.0]), normalize="none")
    torch.testing.assert_close(
        raw.to_dense(), torch.tensor([[0.0, 3.0, 1.0, 0.0], [0.0] * 4, [0.0] * 4, [0.0, 2.0, 0.0, 0.0]])
    )
    empty = csr_adjacency(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), 3)
    assert torch.equal(empty @ torch.ones(3, 2), torch.zeros(3, 2))
