"""orders: bought-next (directed) and same-basket (symmetric) pairs from invoice lines.

Every test runs twice: with the in-memory engine and with the out-of-core one (DuckDB), which
must give the same graph and report."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
import torch

from dualrec.graph import DualrecError
from dualrec.ingest import load_source, orders_large


@pytest.fixture(autouse=True, params=["memory", "duckdb"])
def engine(request, monkeypatch):
    """The engine ``auto`` picks: out of core from 0 bytes for the duckdb run."""
    if request.param == "duckdb":
        monkeypatch.setattr(orders_large, "AUTO_BYTES", -1)
        monkeypatch.setattr(orders_large, "AUTO_LINES", -1)
        monkeypatch.setattr(orders_large, "BATCH_LINES", 7)  # several batches even for tiny logs
    return request.param


# tests/fixtures/ingest/orders_tiny.csv, by customer (time order):
#   1: 100 {85123A, 00042} -> 101 {22423} -> 102 {POST, 85123A}
#   2: 200 {85123A, 00042 (2 lines)} -> 201 {22423, 85123A}
#   3: 300 {85123A, 00042} -> 301 {POST} -> 302 {22423}   (301 is listed first in the file;
#      C300 is a cancellation, 302's 21212 line has quantity 0)
#   no customer: 400 (empty) {85123A, 00042, 84879}, 401 (0.0 / 0) {84879, M}
ALL_DIRECTED = {
    ("85123A", "22423"): 2.0,  # customers 1 and 2
    ("00042", "22423"): 2.0,  # customers 1 and 2
    ("22423", "POST"): 1.0,
    ("22423", "85123A"): 1.0,
    ("00042", "85123A"): 1.0,  # customer 2 (85123A -> 85123A is not a pair)
    ("85123A", "POST"): 1.0,
    ("00042", "POST"): 1.0,
    ("POST", "22423"): 1.0,
}
ALL_BASKET = {  # invoices containing both
    frozenset({"85123A", "00042"}): 4.0,  # 100, 200, 300, 400
    frozenset({"85123A", "POST"}): 1.0,
    frozenset({"85123A", "22423"}): 1.0,
    frozenset({"85123A", "84879"}): 1.0,
    frozenset({"00042", "84879"}): 1.0,
    frozenset({"84879", "M"}): 1.0,
}


def test_tiny_defaults(fixtures, edges, sims, engine):
    graph, report = load_source("orders", fixtures / "orders_tiny.csv", progress=False)
    assert report["engine"].startswith(engine)
    assert list(graph.ids) == ["00042", "22423", "84879", "85123A", "M", "POST"]  # 21212, 99999: cancelled only
    assert edges(graph) == {k: v for k, v in ALL_DIRECTED.items() if v >= 2}
    assert sims(graph) == {k: v for k, v in ALL_BASKET.items() if v >= 2}
    d = report["dropped"]
    assert d["cancelled_invoice_lines"] == 2
    assert d["missing_customer_lines"] == 5
    assert d["copurchase_pairs_below_min_support"] == 6
    assert d["basket_pairs_below_min_support"] == 5
    assert d["missing_product_lines"] == d["missing_invoice_lines"] == d["unparseable_time_lines"] == 0
    assert (report["cancelled_by_invoice_prefix"], report["cancelled_by_quantity"]) == (1, 1)
    assert (report["customers"], report["invoices"], report["sequences"], report["transitions"]) == (3, 10, 3, 5)


def test_tiny_products(fixtures):
    graph, _ = load_source("orders", fixtures / "orders_tiny.csv", progress=False)
    p = graph.products.set_index("id")
    assert list(graph.products.columns) == ["id", "title", "price"]
    assert p.loc["85123A", "title"] == "WHITE HANGING HEART"  # most frequent description
    assert p.loc["85123A", "price"] == pytest.approx(2.55)  # median of 2.55 2.95 2.55 3.00 2.55 2.55
    assert p.loc["00042", "price"] == pytest.approx(1.10)
    assert p.loc["POST", "price"] == pytest.approx(16.5)
    assert graph.products["price"].dtype == "float64"


def test_tiny_min_support_1(fixtures, edges):
    graph, report = load_source("orders", fixtures / "orders_tiny.csv", min_support=1, progress=False)
    assert edges(graph) == ALL_DIRECTED
    assert report["dropped"]["copurchase_pairs_below_min_support"] == 0


def test_basket_edges_modes(fixtures, edges, sims):
    g, r = load_source(
        "orders", fixtures / "orders_tiny.csv", basket_edges="copurchase", min_basket_support=1, progress=False
    )
    expected = {k: v for k, v in ALL_DIRECTED.items() if v >= 2}
    for pair, w in ALL_BASKET.items():
        a, b = sorted(pair)
        expected[(a, b)] = expected.get((a, b), 0.0) + w
        expected[(b, a)] = expected.get((b, a), 0.0) + w
    assert edges(g) == expected
    assert g.num_similar == 0
    assert r["dropped"]["copurchase_duplicates_merged"] == 1  # 85123A->22423 is in both channels

    g, r = load_source("orders", fixtures / "orders_tiny.csv", basket_edges="none", progress=False)
    assert g.num_similar == 0 and r["basket_pair_candidates"] == 0


def test_max_basket_size(fixtures, sims, edges):
    g, r = load_source(
        "orders", fixtures / "orders_tiny.csv", max_basket_size=2, min_support=1, min_basket_support=1, progress=False
    )
    assert r["dropped"]["oversized_baskets"] == 1  # invoice 400 has 3 products
    assert frozenset({"84879", "00042"}) not in sims(g)
    assert r["dropped"]["oversized_transitions"] == 0  # 400 has no customer
    g, r = load_source("orders", fixtures / "orders_tiny.csv", max_basket_size=1, min_support=1, progress=False)
    assert r["dropped"]["oversized_transitions"] == 4  # all but customer 3's 301 {POST} -> 302 {22423}
    assert edges(g) == {("POST", "22423"): 1.0}


ALIASES = {
    "InvoiceNo": "order_id",
    "StockCode": "SKU",
    "Description": "product_name",
    "Quantity": "qty",
    "InvoiceDate": "timestamp",
    "UnitPrice": "unit_price",
    "CustomerID": "user_id",
}
UCI_II = {"InvoiceNo": "Invoice", "CustomerID": "Customer ID", "UnitPrice": "Price"}


@pytest.mark.parametrize("mapping", [ALIASES, UCI_II], ids=["snake", "uci2"])
@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_aliases(fixtures, tmp_path, edges, sims, mapping, ext):
    df = pd.read_csv(fixtures / "orders_tiny.csv", dtype=str, keep_default_na=False).rename(columns=mapping)
    path = tmp_path / f"log.{ext}"
    df.to_csv(path, index=False) if ext == "csv" else df.to_parquet(path)
    graph, report = load_source("orders", path, min_support=1, progress=False)
    assert edges(graph) == ALL_DIRECTED
    assert report["dropped"]["cancelled_invoice_lines"] == 2
    assert report["columns"]["invoice"] == mapping.get("InvoiceNo", "InvoiceNo")


def test_explicit_columns_and_folder_input(fixtures, tmp_path, edges):
    df = pd.read_csv(fixtures / "orders_tiny.csv", dtype=str, keep_default_na=False)
    df.columns = ["bon", "art", "txt", "n", "when", 'unit.price "eur"', "who", "land"]  # a dot and quotes
    df.to_csv(tmp_path / "log.csv", index=False)
    graph, _ = load_source(
        "orders",
        tmp_path,
        invoice_col="bon",
        product_col="art",
        description_col="txt",
        quantity_col="n",
        time_col="when",
        price_col='unit.price "eur"',
        customer_col="who",
        min_support=1,
        progress=False,
    )
    assert edges(graph) == ALL_DIRECTED
    assert graph.products.set_index("id").loc["M", "title"] == "Manual"


def test_parquet_numeric_types_like_uci(fixtures, tmp_path, edges):
    """Invoice as int, CustomerID as float with 0.0 for unknown, dates as datetimes (UCI parquet)."""
    df = pd.read_csv(fixtures / "orders_tiny.csv", dtype=str, keep_default_na=False)
    df = df[~df["InvoiceNo"].str.startswith("C")].copy()
    df["InvoiceNo"] = df["InvoiceNo"].astype(int)
    df["CustomerID"] = pd.to_numeric(df["CustomerID"].replace("", "0")).astype(float)
    df["InvoiceDate"] = pd.to_datetime(df["InvoiceDate"])
    df["Quantity"] = df["Quantity"].astype(int)
    df["UnitPrice"] = df["UnitPrice"].astype(float)
    df.to_parquet(tmp_path / "o.parquet")
    graph, report = load_source("orders", tmp_path / "o.parquet", min_support=1, progress=False)
    assert edges(graph) == ALL_DIRECTED
    assert report["dropped"]["missing_customer_lines"] == 5
    assert report["dropped"]["cancelled_invoice_lines"] == 1  # the quantity-0 line


def test_incomplete_lines_are_counted(tmp_path, edges, sims):
    (tmp_path / "o.csv").write_text(
        "InvoiceNo,StockCode,Quantity,InvoiceDate,CustomerID\n"
        "1,A,1,2020-01-01,5\n"
        "1,,1,2020-01-01,5\n"  # no product: dropped
        ",E,1,2020-01-01,5\n"  # no invoice: E is a node, in no pair
        "2,B,1,2020-01-02,5\n"
        "2,A,1,2020-01-02,5\n"
        "3,D,1,not a date,5\n"  # unreadable time: D is a node and in basket 3, not in the sequence
        "3,B,1,not a date,5\n"
        "4,C,1,2020-01-03,5\n"
    )
    graph, report = load_source("orders", tmp_path / "o.csv", min_support=1, min_basket_support=1, progress=False)
    d = report["dropped"]
    assert (d["missing_product_lines"], d["missing_invoice_lines"], d["unparseable_time_lines"]) == (1, 1, 2)
    assert list(graph.ids) == ["A", "B", "C", "D", "E"]
    assert edges(graph) == {("A", "B"): 1.0, ("A", "C"): 1.0, ("B", "C"): 1.0}  # 1 -> 2 -> 4
    assert sims(graph) == {frozenset({"A", "B"}): 1.0, frozenset({"B", "D"}): 1.0}
    assert list(graph.products.columns) == ["id"]  # no description or price column in the source


def test_missing_required_column(fixtures, tmp_path):
    df = pd.read_csv(fixtures / "orders_tiny.csv", dtype=str).drop(columns=["CustomerID"])
    df.to_csv(tmp_path / "o.csv", index=False)
    with pytest.raises(DualrecError, match=r"o\.csv: missing customer column 'CustomerID' / .*found: \['InvoiceNo'"):
        load_source("orders", tmp_path / "o.csv")


def test_bad_options(fixtures):
    with pytest.raises(DualrecError, match="engine"):
        load_source("orders", fixtures / "orders_tiny.csv", engine="spark")
    with pytest.raises(DualrecError, match="memory_limit"):
        load_source("orders", fixtures / "orders_tiny.csv", memory_limit="4GB'; DROP TABLE lines; --")
    with pytest.raises(DualrecError, match="memory_limit"):
        load_source("orders", fixtures / "orders_tiny.csv", memory_limit="4GB\n")
    with pytest.raises(DualrecError, match="work_dir"):
        load_source("orders", fixtures / "orders_tiny.csv", work_dir="/no/such/folder")
    with pytest.raises(DualrecError, match="basket_edges must be one of"):
        load_source("orders", fixtures / "orders_tiny.csv", basket_edges="both")
    with pytest.raises(DualrecError, match="min_support must be >= 1"):
        load_source("orders", fixtures / "orders_tiny.csv", min_support=0)
    with pytest.raises(DualrecError, match="unknown option.*min_suport"):
        load_source("orders", fixtures / "orders_tiny.csv", min_suport=2)


def test_all_lines_cancelled(tmp_path):
    (tmp_path / "o.csv").write_text(
        "InvoiceNo,StockCode,Quantity,InvoiceDate,CustomerID\nC1,A,-1,2020-01-01,5\n2,B,0,2020-01-01,5\n"
    )
    with pytest.raises(DualrecError, match="no usable order line"):
        load_source("orders", tmp_path / "o.csv")


def test_missing_path(tmp_path):
    with pytest.raises(DualrecError, match="input not found"):
        load_source("orders", tmp_path / "orders.parquet")


# ---------------------------------------------------------------------- against a plain reference
def _reference(df: pd.DataFrame, max_basket: int):
    """Obvious loop implementation of the documented semantics (no cancellations in df)."""
    baskets = defaultdict(set)
    for inv, p in zip(df.inv, df.p):
        baskets[inv].add(p)
    basket = defaultdict(int)
    for items in baskets.values():
        if len(items) <= max_basket:
            for a, b in itertools.combinations(sorted(items), 2):
                basket[frozenset((a, b))] += 1
    seqs = defaultdict(dict)  # customer -> invoice -> [time, items]
    for inv, p, c, t in zip(df.inv, df.p, df.c, df.t):
        if c == 0:
            continue
        rec = seqs[c].setdefault(inv, [t, set()])
        rec[0] = min(rec[0], t)
        rec[1].add(p)
    support = defaultdict(set)
    for c, invs in seqs.items():
        order = sorted(invs, key=lambda i: (invs[i][0], i))
        for i, j in zip(order, order[1:]):
            A, B = invs[i][1], invs[j][1]
            if len(A) > max_basket or len(B) > max_basket:
                continue
            for a in A:
                for b in B:
                    if a != b:
                        support[(a, b)].add(c)
    return {k: len(v) for k, v in support.items()}, dict(basket)


def test_matches_reference_on_random_log(tmp_path, edges, sims, monkeypatch):
    import dualrec.ingest.orders as orders

    monkeypatch.setattr(orders, "_PAIR_CHUNK", 50)  # force many chunks (customer-aligned)
    rng = np.random.default_rng(0)
    n_inv = 120
    inv_cust = rng.integers(0, 15, n_inv)  # customer 0 = unknown
    inv_time = rng.integers(0, 40, n_inv)  # ties on purpose (broken by invoice id)
    rows = []
    for i in range(n_inv):
        for _ in range(rng.integers(1, 9)):
            rows.append((f"I{i:03d}", f"P{rng.integers(0, 25)}", int(inv_cust[i]), int(inv_time[i])))
    df = pd.DataFrame(rows, columns=["inv", "p", "c", "t"])
    df.rename(columns={"inv": "order_id", "p": "sku", "c": "user_id", "t": "timestamp"}).to_csv(
        tmp_path / "o.csv", index=False
    )
    directed, basket = _reference(df, max_basket=6)
    graph, report = load_source(
        "orders", tmp_path / "o.csv", min_support=1, min_basket_support=1, max_basket_size=6, progress=False
    )
    assert edges(graph) == {k: float(v) for k, v in directed.items()}
    assert sims(graph) == {k: float(v) for k, v in basket.items()}
    graph, report = load_source("orders", tmp_path / "o.csv", min_support=2, max_basket_size=6, progress=False)
    assert edges(graph) == {k: float(v) for k, v in directed.items() if v >= 2}
    assert report["dropped"]["copurchase_pairs_below_min_support"] == sum(v < 2 for v in directed.values())
    assert not math.isnan(report["seconds"])


def test_a_products_table_joins_metadata_by_id(fixtures, tmp_path):
    (tmp_path / "products.csv").write_text(
        "id,category,brand,title\n85123A,Home > Decor,Hearts Co,White hanging heart T-light holder\n"
        "42,Kitchen > Mugs,MugCo,\n22423,Kitchen > Cake stands,Regency,\nNOT-SOLD,Garden,X,Gnome\n"
    )
    g, rep = load_source(
        "orders", fixtures / "orders_tiny.csv", products=str(tmp_path / "products.csv"), min_support=1, progress=False
    )
    p = g.products.set_index("id")
    assert p.loc["85123A", "category"] == "Home > Decor" and p.loc["85123A", "brand"] == "Hearts Co"
    assert p.loc["85123A", "title"] == "White hanging heart T-light holder"  # the table wins
    assert p.loc["00042", "title"] == "RED MUG"  # derived from the log where the table has none
    assert p.loc["POST", "category"] == ""  # in the log only: no metadata, kept
    assert "NOT-SOLD" not in p.index
    t = rep["products_table"]
    assert t["rows"] == 4 and t["log_products_matched"] >= 2
    with pytest.raises(DualrecError, match="no product of the order log"):
        (tmp_path / "other.csv").write_text("id,brand\nZZZ,x\n")
        load_source("orders", fixtures / "orders_tiny.csv", products=str(tmp_path / "other.csv"), progress=False)


def test_the_work_files_are_removed_and_options_reach_duckdb(fixtures, tmp_path, engine, edges):
    work = tmp_path / "work"
    work.mkdir()
    g, r = load_source("orders", fixtures / "orders_tiny.csv", work_dir=str(work), memory_limit="256MB", progress=False)
    assert edges(g) == {k: v for k, v in ALL_DIRECTED.items() if v >= 2}
    assert list(work.iterdir()) == []  # the out-of-core engine's table and spill files are gone
    if engine == "duckdb":
        with pytest.raises(DualrecError, match="cannot (read|ingest)"):
            (tmp_path / "bad.csv").write_text('InvoiceNo,StockCode,CustomerID,InvoiceDate\n"1,"2\n')
            load_source("orders", tmp_path / "bad.csv", progress=False)


def test_the_engines_agree_on_a_log_with_mixed_time_formats(tmp_path, monkeypatch):
    from dualrec.ingest import orders

    rng = np.random.default_rng(3)
    n = 400
    inv = rng.integers(0, 80, n)
    stamps = pd.Timestamp("2026-01-01") + pd.to_timedelta(inv * 3600, unit="s")
    forms = [  # how the log writes each invoice's time: mostly ISO, then other spellings
        lambda t: t.strftime("%Y-%m-%d %H:%M"),
        lambda t: t.strftime("%d/%m/%Y %H:%M"),
        lambda t: str(int(t.timestamp())),
        lambda t: "N/A",
    ]
    pick = rng.choice([0, 1, 3], 80, p=[0.9, 0.07, 0.03])
    pick[40:52] = 2  # a run of invoices written as epoch seconds: a whole batch of numbers
    df = pd.DataFrame(
        {
            "InvoiceNo": [f"I{i}" for i in inv],
            "StockCode": [f"S{k}" for k in rng.integers(0, 15, n)],
            "CustomerID": [f"C{i % 9}" for i in inv],
            "InvoiceDate": [forms[pick[i]](t) for i, t in zip(inv, stamps)],
        }
    ).sort_values("InvoiceNo", key=lambda s: s.str[1:].astype(int), kind="stable")
    df.to_csv(tmp_path / "o.csv", index=False)
    monkeypatch.setattr(orders_large, "BATCH_LINES", 37)
    got = [orders.load(tmp_path / "o.csv", engine=e, min_support=1, progress=False) for e in ("memory", "duckdb")]
    (g1, r1), (g2, r2) = got
    for a in ("cp_src", "cp_dst", "cp_weight", "sim_a", "sim_b", "sim_weight"):
        assert torch.equal(getattr(g1, a), getattr(g2, a)), a
    assert g1.products.equals(g2.products)
    skip = {"engine", "seconds", "seconds_by_phase"}
    assert {k: v for k, v in r1.items() if k not in skip} == {k: v for k, v in r2.items() if k not in skip}
    assert r1["dropped"]["unparseable_time_lines"] > 0  # the "N/A" lines, in both
