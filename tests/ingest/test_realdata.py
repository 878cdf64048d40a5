"""Real data (../shared/data): the README's counts, and that every real source loads sensibly.

Skipped with a reason when the folder is absent (a fresh clone).
"""

from __future__ import annotations

import pytest

from dualrec.ingest import load_source

pytestmark = pytest.mark.realdata

# README: in-set directed edges (both ends in the node set), before merging
AMAZON2014 = {
    "clothing": {"products": 23_033, "also_bought": 254_264, "bought_together": 15_837, "also_viewed": 144_792},
    "cellphones": {"products": 10_429, "also_bought": 235_458, "bought_together": 8_444, "also_viewed": 12_926},
}


@pytest.mark.parametrize("name", sorted(AMAZON2014))
def test_amazon2014_counts(real_data, name):
    expected = AMAZON2014[name]
    graph, report = load_source("amazon2014", real_data / "amazon2014" / name, progress=False)
    assert graph.num_products == expected["products"]
    for rel in ("also_bought", "bought_together", "also_viewed"):
        assert report[f"{rel}_edges"] == expected[rel], rel
        assert report["dropped"][f"{rel}_index_out_of_range"] == 0
    # co-purchase = also_bought ∪ bought_together; every merge is an overlap of the two lists
    assert (
        graph.num_copurchase
        == expected["also_bought"] + expected["bought_together"] - report["dropped"]["copurchase_duplicates_merged"]
    )
    assert graph.num_similar < expected["also_viewed"]  # symmetrised
    assert graph.num_similar == expected["also_viewed"] - report["dropped"]["similar_duplicates_merged"]
    assert set(graph.cp_weight.unique().tolist()) <= {1.0, 2.0}
    # only a minority of also_bought pairs is reciprocated (README: 19-38 %)
    assert 0.1 < graph.reciprocal_mask().float().mean().item() < 0.5
    assert (graph.products["category"] != "").mean() > 0.99
    print(name, {k: report[k] for k in ("products", "copurchase_edges", "similar_pairs", "seconds")}, report["dropped"])


def test_amazon2018_gift_cards(real_data):
    graph, report = load_source("amazon2018", real_data / "amazon2018" / "gift_cards", progress=False)
    assert graph.num_products == 1_547
    assert (graph.products["title"].str.len() > 0).all()
    assert graph.products["price"].dtype == "float64"
    assert graph.products["price"].notna().sum() > 300
    assert graph.num_copurchase > 1_000 and graph.num_similar > 1_000
    assert report["dropped"]["malformed_json_lines"] == 0
    print({k: report[k] for k in ("products", "copurchase_edges", "similar_pairs", "seconds")}, report["dropped"])


def test_uci_online_retail(real_data):
    graph, report = load_source("orders", real_data / "uci_online_retail" / "online_retail.parquet", progress=False)
    assert report["lines"] == 531_282
    assert report["dropped"]["missing_customer_lines"] == 133_358  # README: CustomerID 0.0
    assert report["dropped"]["cancelled_invoice_lines"] == 0  # README: already removed
    assert graph.num_products > 3_000
    assert report["customers"] > 4_000 and report["transitions"] > 10_000
    assert graph.num_copurchase > 100_000
    # directed: far from every edge being reciprocated
    assert graph.reciprocal_mask().float().mean().item() < 0.9
    assert graph.num_similar > 100_000
    assert (graph.products["title"] != "").mean() > 0.99
    print(
        {
            k: report[k]
            for k in (
                "products",
                "copurchase_edges",
                "similar_pairs",
                "customers",
                "invoices",
                "sequences",
                "transitions",
                "seconds",
            )
        },
        report["dropped"],
    )
