"""amazon2014: index -> ASIN (related_product) -> product remapping, merging, metadata, errors."""

from __future__ import annotations

import gzip
import shutil

import pytest

from dualrec.graph import DualrecError
from dualrec.ingest import load_source

# tests/fixtures/ingest/amazon2014_tiny (plain .txt; the loader reads .txt.gz or .txt):
#   product.txt          A B C
#   related_product.txt  X C A B Z        <- a different order, with two ASINs outside the node set
#   also_bought          A: 3 1 0 -> B C X      B: 2 4 -> A Z      C: (none)
#   bought_together      A: 3 -> B              B: (none)           C: 2 -> A
#   also_viewed          A: 1 -> C              B: (none)           C: 2 1 -> A C(self)
#   category             Clothing Women Dresses Men;  A: 0 2 1   B: 0 3   C: (none)
#   brand                Unknown, Levi&#39;s;         A: 1        B: ""    C: 0 (Unknown)


def _gzip_copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        with open(f, "rb") as fi, gzip.open(dst / (f.name + ".gz"), "wb") as fo:
            shutil.copyfileobj(fi, fo)
    return dst


def test_tiny_remaps_through_related_product(fixtures, edges, sims):
    graph, report = load_source("amazon2014", fixtures / "amazon2014_tiny", progress=False)
    assert list(graph.ids) == ["A", "B", "C"]
    # A->B is in also_bought and bought_together: weights summed (1 + 1)
    assert edges(graph) == {("A", "B"): 2.0, ("A", "C"): 1.0, ("B", "A"): 1.0, ("C", "A"): 1.0}
    # A-C listed from both sides: one undirected pair of weight 2; C-C self-loop dropped
    assert sims(graph) == {frozenset({"A", "C"}): 2.0}
    d = report["dropped"]
    assert d["also_bought_target_not_in_products"] == 2  # X and Z
    assert d["bought_together_target_not_in_products"] == 0
    assert d["copurchase_duplicates_merged"] == 1
    assert d["similar_self_loops"] == 1
    assert d["similar_duplicates_merged"] == 1
    assert report["also_bought_edges"] == 3
    assert report["bought_together_edges"] == 2
    assert report["also_viewed_edges"] == 2  # self-loop excluded, as in the README's counts
    assert (report["products"], report["copurchase_edges"], report["similar_pairs"]) == (3, 4, 1)


def test_tiny_metadata(fixtures):
    graph, _ = load_source("amazon2014", fixtures / "amazon2014_tiny", progress=False)
    p = graph.products.set_index("id")
    assert p.loc["A", "category"] == "Clothing > Dresses > Women"  # listed order kept
    assert p.loc["B", "category"] == "Clothing > Men"
    assert p.loc["C", "category"] == ""
    assert p.loc["A", "brand"] == "Levi's"  # HTML entity decoded
    assert p.loc["B", "brand"] == ""  # empty line
    assert p.loc["C", "brand"] == ""  # "Unknown"
    assert list(graph.products.columns) == ["id", "category", "brand"]


def test_gzipped_same_as_plain(fixtures, tmp_path, edges):
    folder = _gzip_copy(fixtures / "amazon2014_tiny", tmp_path / "gz")
    g1, r1 = load_source("amazon2014", folder)  # progress bars on: must not break anything
    g2, _ = load_source("amazon2014", fixtures / "amazon2014_tiny", progress=False)
    assert edges(g1) == edges(g2)
    assert r1["dropped"]["also_bought_target_not_in_products"] == 2


def _copy(fixtures, tmp_path):
    dst = tmp_path / "a14"
    shutil.copytree(fixtures / "amazon2014_tiny", dst)
    return dst


def test_index_out_of_range_is_counted(fixtures, tmp_path):
    folder = _copy(fixtures, tmp_path)
    (folder / "also_bought_p_p.txt").write_text("3 1 0 17\n2 4\n\n")
    graph, report = load_source("amazon2014", folder, progress=False)
    assert report["dropped"]["also_bought_index_out_of_range"] == 1
    assert report["dropped"]["also_bought_target_not_in_products"] == 2


def test_optional_files_may_be_missing(fixtures, tmp_path, edges):
    folder = _copy(fixtures, tmp_path)
    for f in ("bought_together_p_p.txt", "also_viewed_p_p.txt", "category_p_c.txt", "brand_p_b.txt"):
        (folder / f).unlink()
    graph, report = load_source("amazon2014", folder, progress=False)
    assert edges(graph) == {("A", "B"): 1.0, ("A", "C"): 1.0, ("B", "A"): 1.0}
    assert graph.num_similar == 0
    assert len(report["missing_optional_files"]) == 4


def test_missing_required_file(fixtures, tmp_path):
    folder = _copy(fixtures, tmp_path)
    (folder / "related_product.txt").unlink()
    with pytest.raises(DualrecError, match=r"missing related_product\.txt\.gz \(found: .*product\.txt"):
        load_source("amazon2014", folder)


def test_missing_folder(tmp_path):
    with pytest.raises(DualrecError, match="input not found"):
        load_source("amazon2014", tmp_path / "nope")


def test_file_instead_of_folder(fixtures):
    with pytest.raises(DualrecError, match="must be a folder"):
        load_source("amazon2014", fixtures / "amazon2014_tiny" / "product.txt")


def test_line_count_mismatch(fixtures, tmp_path):
    folder = _copy(fixtures, tmp_path)
    (folder / "also_viewed_p_p.txt").write_text("1\n\n")
    with pytest.raises(DualrecError, match=r"also_viewed_p_p\.txt has 2 lines but product\.txt has 3"):
        load_source("amazon2014", folder)


def test_bad_token(fixtures, tmp_path):
    folder = _copy(fixtures, tmp_path)
    (folder / "also_bought_p_p.txt").write_text("3 1 0\n2 x4\n\n")
    with pytest.raises(DualrecError, match=r"line 2: 'x4' is not an integer"):
        load_source("amazon2014", folder)


def test_no_options(fixtures):
    with pytest.raises(DualrecError, match="unknown option.*min_support"):
        load_source("amazon2014", fixtures / "amazon2014_tiny", min_support=3)
