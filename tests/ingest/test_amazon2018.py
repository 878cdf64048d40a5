"""amazon2018: JSON lines, prices, lists, duplicates, malformed lines, folder/file input."""

from __future__ import annotations

import gzip
import json
import math

import pytest

from dualrec.graph import DualrecError
from dualrec.ingest import load_source

RECORDS = [
    {
        "asin": "G1",
        "title": " Maggiano&#39;s  Gift Card ",
        "description": ["First <b>paragraph</b>.", "", "Second &amp; last."],
        "brand": "Maggiano's",
        "category": ["Gift Cards", "Restaurants"],
        "price": "$25.00",
        "also_buy": ["G2", "G3", "OUT1"],
        "also_view": ["G2", "OUT2"],
    },
    {
        "asin": "G2",
        "title": "Amazon Gift Card",
        "description": [],
        "brand": "Amazon",
        "category": ["Gift Cards"],
        "price": "$1,250.00",
        "also_buy": ["G1", "G2"],  # G2 -> G2 is a self-loop
        "also_view": ["G1"],  # reciprocal with G1 -> G2
    },
    {
        "asin": "G3",
        "title": "Range priced card",
        "description": "a plain string",
        "brand": "",
        "category": [],
        "price": "$10.00 - $20.00",
        "also_buy": [],
        "also_view": [],
    },
    {"asin": "G1", "title": "duplicate row: ignored", "also_buy": ["G3"]},
    {"title": "no asin"},
    {"asin": "G4", "title": "html price", "price": '\n  <div class="a-section">'},
]


def _write(path, records, extra_lines=(), gz=True):
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_tiny(tmp_path, edges, sims):
    f = _write(tmp_path / "meta_Gift_Cards.json.gz", RECORDS, extra_lines=["{not json", "[1, 2]", ""])
    graph, report = load_source("amazon2018", f, progress=False)
    assert list(graph.ids) == ["G1", "G2", "G3", "G4"]
    assert edges(graph) == {("G1", "G2"): 1.0, ("G1", "G3"): 1.0, ("G2", "G1"): 1.0}
    assert sims(graph) == {frozenset({"G1", "G2"}): 2.0}
    d = report["dropped"]
    assert d["malformed_json_lines"] == 2
    assert d["duplicate_asin_rows"] == 1
    assert d["missing_asin_rows"] == 1
    assert d["also_buy_target_not_in_products"] == 1
    assert d["also_view_target_not_in_products"] == 1
    assert d["copurchase_self_loops"] == 1
    assert report["blank_lines"] == 1

    p = graph.products.set_index("id")
    assert list(graph.products.columns) == ["id", "title", "description", "brand", "category", "price"]
    assert p.loc["G1", "title"] == "Maggiano's Gift Card"
    assert p.loc["G1", "description"] == "First paragraph. | Second & last."
    assert p.loc["G1", "category"] == "Gift Cards > Restaurants"
    assert p.loc["G3", "description"] == "a plain string"
    assert p.loc["G1", "price"] == 25.0
    assert p.loc["G2", "price"] == 1250.0
    assert p.loc["G3", "price"] == 15.0  # midpoint of the range
    assert math.isnan(p.loc["G4", "price"])
    assert report["price_unparsed"] == 1
    assert graph.products["price"].dtype == "float64"


def test_folder_and_plain_json(tmp_path, edges):
    folder = tmp_path / "gift"
    folder.mkdir()
    _write(folder / "meta.json", RECORDS, gz=False)
    graph, report = load_source("amazon2018", folder, progress=False)
    assert report["file"].endswith("meta.json")
    assert ("G1", "G2") in edges(graph)


def test_folder_with_two_files(tmp_path):
    _write(tmp_path / "a.json", RECORDS, gz=False)
    _write(tmp_path / "b.json.gz", RECORDS)
    with pytest.raises(DualrecError, match="holds 2 JSON files"):
        load_source("amazon2018", tmp_path)


def test_folder_without_json(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DualrecError, match=r"no \*\.json.*readme\.txt"):
        load_source("amazon2018", tmp_path)


def test_all_lines_malformed(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text("not json\n{'python': 'dict'}\n")
    with pytest.raises(DualrecError, match="none of its 2 non-empty lines is a JSON object"):
        load_source("amazon2018", f)


def test_no_asin_anywhere(tmp_path):
    f = _write(tmp_path / "x.json", [{"title": "a"}, {"title": "b"}], gz=False)
    with pytest.raises(DualrecError, match="no record has an 'asin' field"):
        load_source("amazon2018", f)


def test_missing_file(tmp_path):
    with pytest.raises(DualrecError, match="input not found"):
        load_source("amazon2018", tmp_path / "meta_X.json.gz")
