"""csv: generic products / copurchase / similar tables (CSV or Parquet), column mapping, errors."""

from __future__ import annotations

import math
import shutil

import pandas as pd
import pytest

from dualrec.graph import DualrecError
from dualrec.ingest import load_source

EXPECTED_CP = {("00123", "A2"): 3.0, ("A2", "00123"): 1.0, ("00123", "A3"): 1.0}


def test_tiny_csv(fixtures, edges, sims):
    graph, report = load_source("csv", fixtures / "csv_tiny", progress=False)
    assert list(graph.ids) == ["00123", "A2", "A3"]  # leading zeros kept: ids are text
    assert edges(graph) == EXPECTED_CP  # 00123->A2 listed twice: 2.5 + 0.5
    assert sims(graph) == {frozenset({"A2", "A3"}): 2.0}
    assert report["dropped"] == {
        "products_missing_id": 1,
        "products_duplicate_id": 1,
        "copurchase_missing_id": 1,
        "copurchase_src_not_in_products": 1,
        "copurchase_dst_not_in_products": 1,
        "similar_missing_id": 0,
        "similar_a_not_in_products": 0,
        "similar_b_not_in_products": 1,
        "copurchase_self_loops": 1,
        "copurchase_duplicates_merged": 1,
        "similar_self_loops": 0,
        "similar_duplicates_merged": 1,
    }


def test_tiny_metadata_convention(fixtures):
    graph, _ = load_source("csv", fixtures / "csv_tiny", progress=False)
    p = graph.products
    assert list(p.columns) == ["id", "title", "price", "category", "brand"]  # "Title" lower-cased
    assert p["price"].dtype == "float64"
    assert math.isnan(p.set_index("id").loc["A2", "price"])
    assert p.set_index("id").loc["A2", "brand"] == ""  # missing text -> ""
    assert p.set_index("id").loc["A2", "title"] == "Blue jeans"  # first of the duplicate ids kept


def test_parquet_with_mapped_columns(tmp_path, edges, sims):
    pd.DataFrame(
        {"sku": [1, 2, 3], "name": ["a", "b", "c"], "tags": [["x", "y"], [], ["z"]], "stock": [1, 2, 3]}
    ).to_parquet(tmp_path / "products.parquet")
    pd.DataFrame({"from": ["1", "2", "9"], "to": ["2", "3", "1"], "strength": [0.5, 2.0, 1.0]}).to_parquet(
        tmp_path / "copurchase.parquet"
    )
    pd.DataFrame({"x": ["1"], "y": ["3"], "strength": [4.0]}).to_parquet(tmp_path / "similar.parquet")
    graph, report = load_source(
        "csv",
        tmp_path,
        id_col="sku",
        src_col="from",
        dst_col="to",
        a_col="x",
        b_col="y",
        weight_col="strength",
        progress=False,
    )
    assert list(graph.ids) == ["1", "2", "3"]
    assert edges(graph) == {("1", "2"): 0.5, ("2", "3"): 2.0}
    assert sims(graph) == {frozenset({"1", "3"}): 4.0}
    assert report["dropped"]["copurchase_src_not_in_products"] == 1
    p = graph.products.set_index("id")
    assert p.loc["1", "tags"] == "x | y"  # list column joined
    assert p["stock"].dtype == "float64"


def test_case_insensitive_default_columns(tmp_path, edges):
    (tmp_path / "products.csv").write_text("ID,Title\n1,a\n2,b\n")
    (tmp_path / "copurchase.csv").write_text("SRC,Dst,Weight\n1,2,3\n")
    graph, _ = load_source("csv", tmp_path, progress=False)
    assert edges(graph) == {("1", "2"): 3.0}


def test_no_similar_table_and_no_weight(tmp_path, edges):
    (tmp_path / "products.csv").write_text("id\n1\n2\n")
    (tmp_path / "copurchase.csv").write_text("src,dst\n1,2\n2,1\n")
    graph, report = load_source("csv", tmp_path, progress=False)
    assert edges(graph) == {("1", "2"): 1.0, ("2", "1"): 1.0}
    assert graph.num_similar == 0
    assert report["files"]["similar"] is None


def _copy(fixtures, tmp_path):
    dst = tmp_path / "t"
    shutil.copytree(fixtures / "csv_tiny", dst)
    return dst


@pytest.mark.parametrize("value, what", [("-1", "is '-1'"), ("heavy", "is 'heavy'"), ("", "is missing")])
def test_bad_weight_names_the_row(fixtures, tmp_path, value, what):
    folder = _copy(fixtures, tmp_path)
    (folder / "copurchase.csv").write_text(f"src,dst,weight\n00123,A2,1\nA2,A3,{value}\n")
    with pytest.raises(DualrecError, match=rf"copurchase\.csv row 2 \(line 3\): weight \('weight'\) {what}"):
        load_source("csv", folder)


def test_missing_column_lists_found(fixtures, tmp_path):
    folder = _copy(fixtures, tmp_path)
    (folder / "copurchase.csv").write_text("from,to\n00123,A2\n")
    with pytest.raises(DualrecError, match=r"copurchase\.csv: missing 'src' id column 'src'; found: \['from', 'to'\]"):
        load_source("csv", folder)


def test_explicit_column_must_exist(fixtures):
    with pytest.raises(DualrecError, match=r"no column 'sku' \(id_col='sku'\).*found: \['id', 'Title'"):
        load_source("csv", fixtures / "csv_tiny", id_col="sku")


def test_missing_products_table(tmp_path):
    (tmp_path / "copurchase.csv").write_text("src,dst\n1,2\n")
    with pytest.raises(DualrecError, match=r"missing the products table: expected one of products\.parquet"):
        load_source("csv", tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(DualrecError, match="input not found"):
        load_source("csv", tmp_path / "missing")


def test_unknown_option(fixtures):
    with pytest.raises(DualrecError, match=r"unknown option\(s\) for format 'csv': src_column \(valid: .*src_col"):
        load_source("csv", fixtures / "csv_tiny", src_column="x")
