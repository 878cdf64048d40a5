"""The public API the CLI calls: FORMATS, load_source, ingest."""

from __future__ import annotations

import json

import pytest

from dualrec.graph import DualrecError, ProductGraph
from dualrec.ingest import FORMATS, ingest, load_source, options_for

REPORT_KEYS = {"format", "input", "products", "copurchase_edges", "similar_pairs", "dropped", "seconds"}


def test_formats():
    assert FORMATS == ("amazon2014", "amazon2018", "orders", "csv")
    for fmt in FORMATS:
        assert "progress" in options_for(fmt)
    assert options_for("orders")["min_support"] == 2
    assert options_for("orders")["basket_edges"] == "similar"
    assert options_for("orders")["max_basket_size"] == 100


def test_unknown_format(fixtures):
    with pytest.raises(
        DualrecError, match="unknown format 'parquet'; choose one of: amazon2014, amazon2018, orders, csv"
    ):
        load_source("parquet", fixtures / "csv_tiny")


def test_none_option_means_default(fixtures):
    graph, report = load_source(
        "orders", fixtures / "orders_tiny.csv", min_support=None, customer_col=None, progress=False
    )
    assert report["options"]["min_support"] == 2


@pytest.mark.parametrize(
    "fmt, name", [("amazon2014", "amazon2014_tiny"), ("csv", "csv_tiny"), ("orders", "orders_tiny.csv")]
)
def test_ingest_writes_a_dataset_folder(fixtures, tmp_path, fmt, name):
    out = tmp_path / "ds"
    report = ingest(fmt, fixtures / name, out, progress=False)
    assert REPORT_KEYS <= set(report)
    assert report["format"] == fmt
    assert all(isinstance(v, int) and v >= 0 for v in report["dropped"].values())
    graph = ProductGraph.load(out)
    assert graph.num_products == report["products"]
    assert graph.num_copurchase == report["copurchase_edges"]
    assert graph.num_similar == report["similar_pairs"]
    meta = json.loads((out / "graph.json").read_text())
    assert meta["report"]["dropped"] == report["dropped"]
    assert meta["report"]["format"] == fmt
    assert graph.report["products"] == report["products"]


def test_ingest_missing_input(tmp_path):
    with pytest.raises(DualrecError, match="input not found"):
        ingest("csv", tmp_path / "nothing", tmp_path / "out")
    assert not (tmp_path / "out").exists()
