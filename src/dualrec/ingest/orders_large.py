"""Order logs larger than memory: the ``orders`` format out of core, with DuckDB.

The same graph and report as :func:`dualrec.ingest.orders.load` (its docstring has the rules),
by another route. DuckDB streams the log in batches of ``BATCH_LINES``; each batch is cleaned by
:func:`~dualrec.ingest.orders.clean_lines` (the very function the in-memory engine uses, so a
line is kept or dropped for the same reason) and appended to an on-disk DuckDB table of the
usable lines. Products, baskets, customer sequences and both kinds of pairs are then SQL
aggregations over that table, which DuckDB spills to disk when they outgrow its memory limit.
Only the catalogue and the edges that are kept come back into memory.

Chosen by ``engine="duckdb"``, or by ``engine="auto"`` for a text log above ``AUTO_BYTES`` on
disk or a Parquet log above ``AUTO_LINES`` lines.
The work files live in a temporary folder inside ``workdir`` (default: the system's temporary
folder), removed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dualrec.graph import DualrecError
from dualrec.ingest._common import progress as bar

#: lines read, cleaned and appended per batch (bounds the Python side's memory)
BATCH_LINES = 2_000_000
#: ``engine="auto"`` reads a text log this large (bytes on disk) out of core, or a Parquet log
#: with this many lines (its compressed size says little about the memory it unpacks into)
AUTO_BYTES = 512 << 20
AUTO_LINES = 8_000_000


def _quoted(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def _reader(con, path: Path):
    """A DuckDB relation over the log, every CSV column as text (as the in-memory reader)."""
    name = path.name.lower()
    p = str(path)
    if name.endswith((".parquet", ".pq")):
        return con.read_parquet(p)
    sep = "\t" if ".tsv" in name else ","
    return con.read_csv(p, header=True, sep=sep, all_varchar=True, quotechar='"', escapechar='"')


def columns_of(path: Path) -> pd.DataFrame:
    """An empty frame with the log's columns (to resolve them without reading the lines)."""
    import duckdb

    try:
        with duckdb.connect() as con:
            return pd.DataFrame(columns=_reader(con, path).columns)
    except duckdb.Error as e:
        raise DualrecError(f"cannot read {path}: {e}") from None


def _one(con, sql: str, *args) -> int:
    return int(con.execute(sql, list(args)).fetchone()[0] or 0)


def _kept(con, table: str, min_weight: int) -> tuple[np.ndarray, np.ndarray]:
    """(keys, weights) of the pairs of ``table`` with weight >= ``min_weight``, by key."""
    r = con.execute(f"SELECT key, w FROM {table} WHERE w >= ? ORDER BY key", [min_weight]).fetchnumpy()
    return np.asarray(r["key"], dtype=np.int64), np.asarray(r["w"], dtype=np.float64)


def load_large(
    path: Path,
    cols: dict,
    *,
    min_support: int,
    min_basket_support: int,
    basket_edges: str,
    max_basket_size: int,
    show: bool,
    workdir: Path | None = None,
    memory_limit: str | None = None,
):
    """``(products, copurchase (src, dst, w), similar or None, dropped, facts)`` of the log at
    ``path`` (columns already resolved in ``cols``), computed out of core."""
    import duckdb
    import pyarrow as pa

    try:
        work = Path(tempfile.mkdtemp(prefix=".dualrec-orders-", dir=workdir))
    except OSError as e:
        raise DualrecError(f"cannot make a work folder for the out-of-core ingest: {e}") from None
    config = {"temp_directory": str(work / "spill"), "preserve_insertion_order": False}
    if memory_limit:
        config["memory_limit"] = str(memory_limit)
    try:
        with duckdb.connect(str(work / "lines.duckdb"), config=config) as con:
            return _aggregate(con, path, cols, min_support, min_basket_support, basket_edges, max_basket_size, show)
    except (duckdb.Error, pa.ArrowException, OSError) as e:
        # a log that stops parsing halfway, a full disk, a memory limit too small for a step
        raise DualrecError(f"cannot ingest {path} out of core: {e}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _aggregate(con, path, cols, min_support, min_basket_support, basket_edges, max_basket_size, show):
    import duckdb

    from dualrec.ingest.orders import TIME_SAMPLE, clean_lines, time_mode

    con.execute(
        "CREATE TABLE lines (n BIGINT, p VARCHAR, inv VARCHAR, cust VARCHAR, t DOUBLE, price DOUBLE, "
        "d VARCHAR, seq BOOLEAN)"
    )
    dropped: dict = {}
    counts: dict = {}
    n_lines = 0
    seconds: dict = {}  # per phase: where the time goes on a large log
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        seconds[name] = round(now - clock[0], 1)
        clock[0] = now

    wanted = [c for c in dict.fromkeys(cols.values()) if c is not None]
    try:
        with duckdb.connect() as src:
            rel = _reader(src, path).select(", ".join(_quoted(c) for c in wanted))
            # the time column is read one way in every batch, as the log's first lines say
            mode = time_mode(rel.select(_quoted(cols["time"])).limit(TIME_SAMPLE).df().iloc[:, 0])
            batches = rel.to_arrow_reader(BATCH_LINES)
            lines_bar = bar(enabled=show, desc=f"read {path.name}", unit=" lines", unit_scale=True)
            for batch in batches:
                df = batch.to_pandas()
                c = clean_lines(df, cols, mode)
                for k, v in c.dropped.items():
                    dropped[k] = dropped.get(k, 0) + v
                for k, v in c.counts.items():
                    counts[k] = counts.get(k, 0) + v
                ok = c.line_ok
                part = pd.DataFrame(  # noqa: F841 - read by DuckDB's replacement scan below
                    {
                        "n": np.arange(n_lines, n_lines + len(df), dtype=np.int64)[ok],
                        "p": c.product.to_numpy(dtype=object)[ok],
                        "inv": c.invoice.to_numpy(dtype=object)[ok],
                        "cust": np.where(c.in_seq, c.customer.to_numpy(dtype=object), None)[ok],
                        "t": np.where(c.in_seq, c.tkey, np.nan)[ok],
                        "price": c.price[ok],
                        "d": c.desc[ok],
                        "seq": c.in_seq[ok],
                    }
                )
                con.execute(
                    "INSERT INTO lines SELECT n, p, inv, cust, t, "
                    "CASE WHEN isnan(price) THEN NULL ELSE price END, d, seq FROM part"
                )
                n_lines += len(df)
                lines_bar.update(len(df))
            lines_bar.close()
        lap("read_and_clean")
    except duckdb.Error as e:
        raise DualrecError(f"cannot read {path}: {e}") from None
    if not _one(con, "SELECT count(*) FROM lines"):
        raise DualrecError(
            f"{path.name}: no usable order line ({n_lines} lines: {dropped.get('missing_product_lines', 0)} "
            f"without a product, {dropped.get('cancelled_invoice_lines', 0)} cancelled)"
        )
    steps = bar(total=5, enabled=show, desc="orders (out of core)", unit=" steps")

    # ---- products: sorted ids (as pandas' factorize(sort=True)), title, median price
    steps.set_postfix_str("products")
    con.execute(
        "CREATE TABLE prod AS SELECT p, (row_number() OVER (ORDER BY p) - 1)::BIGINT AS code "
        "FROM (SELECT DISTINCT p FROM lines)"
    )
    cat = con.execute(
        """
        WITH freq AS (SELECT p, d, count(*) AS k FROM lines WHERE d <> '' GROUP BY p, d),
             top AS (SELECT p, max(k) AS k FROM freq GROUP BY p),
             best AS (SELECT p, min(d) AS d FROM freq JOIN top USING (p, k) GROUP BY p),
             -- the median from each product's distinct prices and their counts: plain
             -- aggregates that spill, where median() would hold every line's price
             pc AS (SELECT p, price, count(*) AS c FROM lines WHERE price IS NOT NULL GROUP BY p, price),
             cum AS (SELECT p, price, sum(c) OVER (PARTITION BY p ORDER BY price) AS upto,
                            sum(c) OVER (PARTITION BY p) AS total FROM pc),
             med AS (SELECT p, (min(price) FILTER (WHERE upto >= (total + 1) // 2)
                                + min(price) FILTER (WHERE upto >= total // 2 + 1)) / 2 AS price
                     FROM cum GROUP BY p)
        SELECT prod.p AS id, coalesce(best.d, '') AS title, med.price AS price
        FROM prod LEFT JOIN best USING (p) LEFT JOIN med USING (p) ORDER BY prod.code
        """
    ).df()
    n_prod = len(cat)
    catalogue = pd.DataFrame({"id": cat["id"].astype(str)})
    if cols["description"]:
        catalogue["title"] = cat["title"].astype(str)
    if cols["price"]:
        catalogue["price"] = cat["price"].astype(np.float64)
    steps.update(1)
    lap("products")

    # ---- integer codes for products, invoices and customers: every later table and spill
    # holds numbers, not strings; a pair is one BIGINT key a * n + b (sorted as (a, b))
    steps.set_postfix_str("codes")
    con.execute(
        "CREATE TABLE invs AS SELECT inv, (row_number() OVER ())::BIGINT AS i "
        "FROM (SELECT DISTINCT inv FROM lines WHERE inv IS NOT NULL)"
    )
    con.execute(
        "CREATE TABLE custs AS SELECT cust, (row_number() OVER ())::BIGINT AS c "
        "FROM (SELECT DISTINCT cust FROM lines WHERE seq)"
    )
    con.execute(
        "CREATE TABLE lc AS SELECT l.n, prod.code AS p, invs.i AS inv, custs.c AS c, l.t, l.seq FROM lines l "
        "JOIN prod USING (p) LEFT JOIN invs USING (inv) LEFT JOIN custs USING (cust)"
    )
    con.execute("DROP TABLE lines")
    con.execute("DROP TABLE invs")
    con.execute("DROP TABLE custs")
    con.execute("CHECKPOINT")
    steps.update(1)
    lap("codes")

    # ---- baskets: distinct (invoice, product); oversized ones make no pairs
    steps.set_postfix_str("baskets")
    con.execute("CREATE TABLE bk AS SELECT DISTINCT inv, p FROM lc WHERE inv IS NOT NULL")
    con.execute("CREATE TABLE bsz AS SELECT inv, count(*) AS k FROM bk GROUP BY inv")
    n_invoices = _one(con, "SELECT count(*) FROM bsz")
    dropped["oversized_baskets"] = _one(con, "SELECT count(*) FROM bsz WHERE k > ?", max_basket_size)
    steps.update(1)
    lap("baskets")

    # ---- sequences: a customer's distinct invoices by (first time, first line of the invoice)
    steps.set_postfix_str("sequences")
    con.execute(
        """
        CREATE TABLE grp AS
        WITH first AS (SELECT inv, min(n) AS f FROM lc WHERE seq GROUP BY inv),
             g AS (SELECT c, inv, min(t) AS t FROM lc WHERE seq GROUP BY c, inv),
             ranked AS (SELECT g.c, g.inv, g.t, first.f, row_number() OVER (ORDER BY g.c, g.t, first.f) AS g
                        FROM g JOIN first USING (inv))
        SELECT c, inv, g, lead(g) OVER (PARTITION BY c ORDER BY t, f) AS nxt FROM ranked
        """
    )
    con.execute(
        "CREATE TABLE gi AS SELECT DISTINCT grp.g, lc.p FROM lc JOIN grp ON lc.c = grp.c AND lc.inv = grp.inv "
        "WHERE lc.seq"
    )
    con.execute("CREATE TABLE gsz AS SELECT g, count(*) AS k FROM gi GROUP BY g")
    con.execute(
        "CREATE TABLE tr AS SELECT grp.c, grp.g, grp.nxt, (a.k > ? OR b.k > ?) AS big FROM grp "
        "JOIN gsz a ON a.g = grp.g JOIN gsz b ON b.g = grp.nxt WHERE grp.nxt IS NOT NULL",
        [max_basket_size, max_basket_size],
    )
    n_transitions = _one(con, "SELECT count(*) FROM tr")
    dropped["oversized_transitions"] = _one(con, "SELECT count(*) FROM tr WHERE big")
    steps.update(1)
    lap("sequences")

    # ---- pairs: bought-next (distinct customers) and same-basket (invoices)
    steps.set_postfix_str("pairs")
    con.execute(
        """
        CREATE TABLE cp AS SELECT key, count(*) AS w FROM (
            SELECT DISTINCT tr.c, x.p::BIGINT * ? + y.p AS key FROM tr
            JOIN gi x ON x.g = tr.g JOIN gi y ON y.g = tr.nxt
            WHERE NOT tr.big AND x.p <> y.p) GROUP BY key
        """,
        [n_prod],
    )
    cp_candidates = _one(con, "SELECT count(*) FROM cp")
    key, cp_w = _kept(con, "cp", min_support)
    cp_kept = len(key)
    dropped["copurchase_pairs_below_min_support"] = cp_candidates - cp_kept
    cp_src, cp_dst = key // n_prod, key % n_prod
    lap("bought_next_pairs")

    sim = None
    n_basket_candidates = n_basket_kept = 0
    if basket_edges != "none":
        con.execute(
            """
            CREATE TABLE bp AS
            WITH ok AS (SELECT bk.inv, bk.p FROM bk JOIN bsz USING (inv) WHERE bsz.k BETWEEN 2 AND ?)
            SELECT x.p::BIGINT * ? + y.p AS key, count(*) AS w FROM ok x JOIN ok y ON x.inv = y.inv AND x.p < y.p
            GROUP BY key
            """,
            [max_basket_size, n_prod],
        )
        n_basket_candidates = _one(con, "SELECT count(*) FROM bp")
        key, bw = _kept(con, "bp", min_basket_support)
        n_basket_kept = len(key)
        dropped["basket_pairs_below_min_support"] = n_basket_candidates - n_basket_kept
        ba, bb = key // n_prod, key % n_prod
        if basket_edges == "similar":
            sim = (ba, bb, bw)
        else:
            cp_src = np.concatenate([cp_src, ba, bb])
            cp_dst = np.concatenate([cp_dst, bb, ba])
            cp_w = np.concatenate([cp_w, bw, bw])
    steps.update(1)
    steps.close()
    lap("basket_pairs")

    customers = _one(con, "SELECT count(DISTINCT c) FROM grp")
    facts = {
        "lines": n_lines,
        **counts,
        "customers": customers,
        "invoices": n_invoices,
        "invoices_in_sequences": _one(con, "SELECT count(*) FROM grp"),
        "sequences": customers,
        "sequences_with_repeat_purchase": _one(con, "SELECT count(DISTINCT c) FROM tr WHERE NOT big"),
        "transitions": n_transitions,
        "copurchase_pair_candidates": cp_candidates,
        "copurchase_pairs_kept": cp_kept,
        "basket_pair_candidates": n_basket_candidates,
        "basket_pairs_kept": n_basket_kept,
        "engine": "duckdb (out of core)",
        "seconds_by_phase": seconds,
    }
    assert n_prod == len(catalogue)
    return catalogue, (cp_src, cp_dst, cp_w), sim, dropped, facts


def auto_engine(engine: str, path: Path) -> str:
    """``memory`` or ``duckdb`` for the ``engine`` option (``auto``: by the log's size on disk)."""
    if engine != "auto":
        return engine
    if path.name.lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        try:
            lines = pq.read_metadata(path).num_rows
        except Exception:  # unreadable here: the reader reports it
            return "memory"
        return "duckdb" if lines > AUTO_LINES else "memory"
    size = os.path.getsize(path) * (8 if path.name.lower().endswith(".gz") else 1)  # text packs ~8x
    return "duckdb" if size > AUTO_BYTES else "memory"
