"""Order logs (format ``orders``): one row per invoice line, CSV/TSV or Parquet.

Columns are found case-insensitively (ignoring spaces and underscores) under common names, or
named with an option:

=============  ==========================================================  =================
role           recognised names                                            option
=============  ==========================================================  =================
invoice        InvoiceNo, Invoice, order_id, OrderID                       ``invoice_col``
product        StockCode, product_id, sku, item_id                         ``product_col``
customer       CustomerID, Customer ID, customer_id, user_id               ``customer_col``
time           InvoiceDate, order_date, timestamp                          ``time_col``
description    Description, title, product_name (optional)                 ``description_col``
quantity       Quantity, qty (optional)                                    ``quantity_col``
unit price     UnitPrice, Price, unit_price (optional)                     ``price_col``
=============  ==========================================================  =================

Products: every product code (stripped text) of a non-cancelled line is a node, with
``title`` = its most frequent description and ``price`` = its median unit price (float, NaN
when unknown).

Lines left out, each counted in ``report["dropped"]``:

* ``missing_product_lines`` — no product code: the line is dropped entirely;
* ``cancelled_invoice_lines`` — an invoice starting with ``C`` or a quantity <= 0: dropped
  entirely (a cancellation is not a purchase);
* ``missing_invoice_lines`` — no invoice id: the product is a node, but the line is in no
  basket and no sequence;
* ``missing_customer_lines`` — customer empty, NaN, ``0`` or ``0.0`` (UCI's "unknown"): the
  product is a node and the line counts in its basket, but it is in no customer sequence;
* ``unparseable_time_lines`` — a time that cannot be read: as a missing customer.

Edges:

* **Directed co-purchase ("bought next")** — per customer, the distinct invoices are sorted
  by their earliest line's time (then by where the invoice first appears in the log); for
  consecutive invoices ``t -> t+1`` every pair ``a`` in ``t``, ``b`` in ``t+1``, ``a != b``,
  gives ``a -> b``. Its support is the number of distinct
  customers with that pair; pairs with support < ``min_support`` (default 2) are dropped
  (``copurchase_pairs_below_min_support``). Weight = support.
* **Same-basket pairs** — ``a`` and ``b`` in one invoice; support = number of invoices; kept
  when >= ``min_basket_support`` (default 2, ``basket_pairs_below_min_support``).
  ``basket_edges`` puts them in the ``"similar"`` channel (default), in ``"copurchase"`` (both
  directions, weights summed with the directed pairs), or nowhere (``"none"``).

  Why similarity by default: a basket pair is symmetric by construction -- nothing in one
  invoice says which product leads to the other -- so it belongs to the symmetric channel.
  The directed channel keeps only the time-ordered "bought ``a``, then later ``b``" signal,
  which is exactly the asymmetry the dual-embedding recommender has to learn; mixing
  symmetric basket pairs into it would hide that asymmetry.

Invoices with more than ``max_basket_size`` (default 100) distinct products (wholesale
orders) are skipped for pair generation, both for basket pairs and for the transitions into
or out of them (counted in ``oversized_baskets`` and ``oversized_transitions``): their pair
count is quadratic and their pairs carry little signal. They stay in the customer's timeline,
so the invoices before and after them are not made consecutive.

All of it is vectorised (pandas factorize/groupby, numpy repeat/unique); pair generation is
done in chunks of invoices to bound memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dualrec.graph import DualrecError
from dualrec.ingest._common import (
    TABLE_EXTS,
    as_id_strings,
    existing_path,
    finish,
    infer_numeric,
    normalize_metadata,
    read_table,
    resolve_column,
)
from dualrec.ingest._common import progress as bar

OPTIONS: dict = {
    "invoice_col": None,
    "product_col": None,
    "description_col": None,
    "quantity_col": None,
    "time_col": None,
    "price_col": None,
    "customer_col": None,
    "min_support": 2,
    "min_basket_support": 2,
    "basket_edges": "similar",
    "max_basket_size": 100,
    "products": None,
    "engine": "auto",
    "work_dir": None,
    "memory_limit": None,
}

ENGINES = ("auto", "memory", "duckdb")

BASKET_EDGES = ("similar", "copurchase", "none")

# role -> (aliases, option, required)
COLUMNS = {
    "invoice": (["InvoiceNo", "Invoice", "order_id", "OrderID"], "invoice_col", True),
    "product": (["StockCode", "product_id", "sku", "item_id"], "product_col", True),
    "customer": (["CustomerID", "Customer ID", "customer_id", "user_id"], "customer_col", True),
    "time": (["InvoiceDate", "order_date", "timestamp"], "time_col", True),
    "description": (["Description", "title", "product_name"], "description_col", False),
    "quantity": (["Quantity", "qty"], "quantity_col", False),
    "price": (["UnitPrice", "Price", "unit_price"], "price_col", False),
}

_PAIR_CHUNK = 4_000_000  # pairs generated per chunk (bounds memory at ~100 MB)
_ZERO_ID = re.compile(r"^[+-]?0+(\.0*)?$")
_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?\s*([KMGT]i?B)$", re.I)


# ---------------------------------------------------------------------- options
def _int_option(name: str, value, minimum: int) -> int:
    try:
        v = int(value)
        if v != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise DualrecError(f"option {name} must be an integer, got {value!r}") from None
    if v < minimum:
        raise DualrecError(f"option {name} must be >= {minimum}, got {v}")
    return v


# ---------------------------------------------------------------------- columns
#: the lines from which the time column's reading (numbers or dates, and the date format) is decided
TIME_SAMPLE = 2_000_000


def time_mode(s: pd.Series) -> dict:
    """How to read a time column, decided once from its first ``TIME_SAMPLE`` lines so that a log
    read in batches reads every batch the same way: native datetimes, numbers (when every present
    value is one), or dates in the format of the first value (``mixed``, parsed value by value,
    when that format fails on more than 1 %)."""
    s = s.iloc[:TIME_SAMPLE]
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return {"kind": "native"}
    if pd.api.types.is_numeric_dtype(s.dtype):
        return {"kind": "number"}
    present = s.notna()
    num = pd.to_numeric(s, errors="coerce")
    if present.any() and bool(num[present].notna().all()):
        return {"kind": "number"}
    first = s[present].iloc[0] if present.any() else None
    fmt = pd.tseries.api.guess_datetime_format(str(first)) if first is not None else None
    t = _dates(s, fmt)
    mixed = int((t.isna() & present).sum()) > 0.01 * int(present.sum())
    return {"kind": "date", "format": "mixed" if mixed else fmt}


def _dates(s: pd.Series, fmt: str | None) -> pd.Series:
    try:
        return pd.to_datetime(s, errors="coerce", utc=True, format=fmt)
    except (ValueError, TypeError):
        return pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")


def _parse_time(s: pd.Series, mode: dict) -> np.ndarray:
    """A sortable float64 time key per line (NaN when unreadable): microseconds for dates,
    the value itself for numeric timestamps."""
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        t = s
    elif mode["kind"] == "number" or pd.api.types.is_numeric_dtype(s.dtype):
        return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        t = _dates(s, mode.get("format"))
    if getattr(t.dt, "tz", None) is not None:  # aware -> UTC wall time, comparable across zones
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    us = t.astype("datetime64[us]").to_numpy().astype("int64").astype(np.float64)
    us[t.isna().to_numpy()] = np.nan
    return us


def _numeric(s: pd.Series | None, n: int) -> np.ndarray:
    if s is None:
        return np.full(n, np.nan)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


@dataclass
class Lines:
    """The order lines, cleaned: per-line values and masks, and what was left out (counted)."""

    product: pd.Series  # stripped id strings, None where missing
    invoice: pd.Series
    customer: pd.Series
    price: np.ndarray  # NaN where unknown
    tkey: np.ndarray  # sortable time key, NaN where unreadable
    desc: np.ndarray  # stripped description, "" where none
    line_ok: np.ndarray  # the line's product is a node
    in_basket: np.ndarray  # ... and the line is in an invoice
    in_seq: np.ndarray  # ... and in a customer's sequence (customer and time known)
    dropped: dict
    counts: dict


def clean_lines(df: pd.DataFrame, cols: dict, mode: dict | None = None) -> Lines:
    """Per-line ids, numbers, times and masks of ``df`` (the columns resolved in ``cols``), with
    the lines left out counted by reason (module docstring). Given the log's :func:`time_mode`,
    row-local: a log read in batches gives the same lines as read whole."""
    n_lines = len(df)
    product = as_id_strings(df[cols["product"]])
    invoice = as_id_strings(df[cols["invoice"]])
    customer = as_id_strings(df[cols["customer"]])
    qty = _numeric(df[cols["quantity"]] if cols["quantity"] else None, n_lines)
    price = _numeric(df[cols["price"]] if cols["price"] else None, n_lines)
    tkey = _parse_time(df[cols["time"]], mode or time_mode(df[cols["time"]]))
    if cols["description"]:
        desc = df[cols["description"]].astype("string").str.strip().fillna("").astype(object).to_numpy()
    else:
        desc = np.full(n_lines, "", dtype=object)

    no_product = product.isna().to_numpy()
    inv_str = invoice.fillna("")
    by_prefix = inv_str.str.upper().str.startswith("C").to_numpy(dtype=bool)
    by_qty = qty <= 0  # NaN quantity (unknown) is not a cancellation
    cancelled = ~no_product & (by_prefix | by_qty)
    line_ok = ~no_product & ~cancelled  # lines whose product is a node
    no_invoice = line_ok & invoice.isna().to_numpy()
    in_basket = line_ok & ~no_invoice
    cust_missing = customer.isna().to_numpy() | customer.fillna("").str.match(_ZERO_ID).to_numpy(dtype=bool)
    no_customer = in_basket & cust_missing
    bad_time = in_basket & ~cust_missing & np.isnan(tkey)
    in_seq = in_basket & ~cust_missing & ~np.isnan(tkey)
    dropped = {
        "missing_product_lines": int(no_product.sum()),
        "cancelled_invoice_lines": int(cancelled.sum()),
        "missing_invoice_lines": int(no_invoice.sum()),
        "missing_customer_lines": int(no_customer.sum()),
        "unparseable_time_lines": int(bad_time.sum()),
    }
    counts = {
        "cancelled_by_invoice_prefix": int((~no_product & by_prefix).sum()),
        "cancelled_by_quantity": int((~no_product & by_qty & ~by_prefix).sum()),
    }
    return Lines(
        product=product,
        invoice=invoice,
        customer=customer,
        price=price,
        tkey=tkey,
        desc=desc,
        line_ok=line_ok,
        in_basket=in_basket,
        in_seq=in_seq,
        dropped=dropped,
        counts=counts,
    )


# ---------------------------------------------------------------------- pair generation
def _chunks(sizes_of_work: np.ndarray, limit: int):
    """Split consecutive units into [lo, hi) ranges whose summed work stays near ``limit``."""
    cum = np.cumsum(sizes_of_work)
    lo = 0
    total = len(sizes_of_work)
    while lo < total:
        base = cum[lo - 1] if lo else 0
        hi = int(np.searchsorted(cum, base + limit, side="right"))
        hi = max(hi, lo + 1)
        yield lo, min(hi, total)
        lo = hi


def _count_keys(keys_parts: list[np.ndarray], count_parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if not keys_parts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    keys = np.concatenate(keys_parts)
    counts = np.concatenate(count_parts)
    uniq, inv = np.unique(keys, return_inverse=True)
    return uniq, np.bincount(inv, weights=counts, minlength=uniq.size).astype(np.int64)


def basket_pairs(starts: np.ndarray, sizes: np.ndarray, items: np.ndarray, n_items: int, show: bool):
    """Unordered pairs (a < b) within each group ``items[starts[g]: starts[g]+sizes[g]]``
    (items sorted and distinct within a group); returns (keys a*n+b, #groups containing it)."""
    work = sizes * (sizes - 1) // 2
    keys_parts, count_parts = [], []
    chunks = list(_chunks(work, _PAIR_CHUNK))
    for lo, hi in bar(chunks, enabled=show and len(chunks) > 1, desc="basket pairs", unit=" chunks"):
        st, sz = starts[lo:hi], sizes[lo:hi]
        if int(work[lo:hi].sum()) == 0:
            continue
        # every position p of a group pairs with the later positions of its group
        pos = _group_positions(st, sz)
        grp_end = np.repeat(st + sz, sz)
        partners = grp_end - pos - 1
        left = np.repeat(pos, partners)
        block_start = np.repeat(np.cumsum(partners) - partners, partners)
        right = left + 1 + (np.arange(left.size) - block_start)
        k = items[left].astype(np.int64) * n_items + items[right]
        u, c = np.unique(k, return_counts=True)
        keys_parts.append(u)
        count_parts.append(c)
    return _count_keys(keys_parts, count_parts)


def _group_positions(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(starts[g], starts[g] + sizes[g])`` for all groups, vectorised."""
    total = int(sizes.sum())
    if total == 0:
        return np.empty(0, np.int64)
    offs = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return np.repeat(starts, sizes) + offs


def transition_pairs(
    left_g: np.ndarray,
    right_g: np.ndarray,
    owner: np.ndarray,
    starts: np.ndarray,
    sizes: np.ndarray,
    items: np.ndarray,
    n_items: int,
    show: bool,
):
    """For transitions (group ``left_g[t]`` -> group ``right_g[t]``, of customer ``owner[t]``,
    sorted by owner), all pairs (a in left, b in right, a != b); returns (keys a*n+b, number of
    distinct customers having the pair)."""
    if left_g.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    work = sizes[left_g] * sizes[right_g]
    # chunk on customer boundaries so that a customer's pairs are deduplicated in one chunk
    cust_starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    cust_work = np.add.reduceat(work, cust_starts)
    bounds = np.r_[cust_starts, owner.size]
    keys_parts, count_parts = [], []
    chunks = list(_chunks(cust_work, _PAIR_CHUNK))
    for clo, chi in bar(chunks, enabled=show and len(chunks) > 1, desc="bought-next pairs", unit=" chunks"):
        lo, hi = int(bounds[clo]), int(bounds[chi])
        lg, rg, who = left_g[lo:hi], right_g[lo:hi], owner[lo:hi]
        lsz, rsz = sizes[lg], sizes[rg]
        lpos = _group_positions(starts[lg], lsz)  # every item of every left invoice ...
        reps = np.repeat(rsz, lsz)  # ... pairs with every item of the next invoice
        tr_of_item = np.repeat(np.arange(lg.size), lsz)
        left = np.repeat(lpos, reps)
        block_start = np.repeat(np.cumsum(reps) - reps, reps)
        right = np.repeat(starts[rg][tr_of_item], reps) + (np.arange(left.size) - block_start)
        cust = np.repeat(who[tr_of_item], reps)
        a, b = items[left], items[right]
        keep = a != b
        k = a[keep].astype(np.int64) * n_items + b[keep]
        # support counts customers, not transitions: a (customer, pair) counts once
        d = pd.DataFrame({"c": cust[keep], "k": k}).drop_duplicates()
        vc = d["k"].value_counts(sort=False)
        keys_parts.append(vc.index.to_numpy(dtype=np.int64))
        count_parts.append(vc.to_numpy(dtype=np.int64))
    return _count_keys(keys_parts, count_parts)


# ---------------------------------------------------------------------- load
def _find_input(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(TABLE_EXTS))
    if len(found) == 1:
        return found[0]
    names = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
    if not found:
        raise DualrecError(f"{path} holds no order table (.csv, .tsv or .parquet) (found: {names})")
    raise DualrecError(f"{path} holds several tables ({', '.join(p.name for p in found)}); pass the order log itself")


def _join_products(catalogue: pd.DataFrame, path: Path, log_col) -> tuple[pd.DataFrame, dict]:
    """The log's products with the metadata of a products table, joined by id."""
    table = read_table(existing_path(path))
    idc = resolve_column(
        table,
        None,
        ["id", str(log_col), "StockCode", "product_id", "sku", "item_id"],
        role="product id",
        table=path.name,
        option="products",
    )
    report: dict = {}
    meta = infer_numeric(table.drop(columns=[idc]), report=report, table=path.name)
    meta = normalize_metadata(meta)
    ids = as_id_strings(table[idc])
    keep = ids.notna().to_numpy() & ~ids.duplicated().to_numpy()
    meta = meta[keep].set_index(pd.Index(ids[keep].astype(str).to_numpy(), name="id"))
    hit = catalogue["id"].isin(meta.index)
    out = catalogue.set_index("id")
    for c in meta.columns:
        col = meta[c].reindex(out.index)
        if c in out.columns and pd.api.types.is_numeric_dtype(out[c]) and not pd.api.types.is_numeric_dtype(col):
            col = pd.to_numeric(col, errors="coerce")  # keep the log's numbers: the table's text becomes missing
        if c in out.columns:  # the table's value wins where it has one
            present = col.notna() & (col.astype(str) != "")
            out[c] = out[c].where(~present.to_numpy(), col)
        else:
            out[c] = col.fillna(np.nan if pd.api.types.is_numeric_dtype(col) else "")
    facts = {
        "file": path.name,
        "rows": int(len(table)),
        "rows_without_id_or_duplicate": int((~keep).sum()),
        "log_products_matched": int(hit.sum()),
        "log_products_without_metadata": int((~hit).sum()),
        "columns": [str(c) for c in meta.columns],
        "bad_numbers": report,
    }
    if not hit.any():
        ex = ", ".join(repr(i) for i in catalogue["id"].head(3))
        raise DualrecError(
            f"{path.name}: no product of the order log is in it (log ids like {ex}; its id column is {idc!r})"
        )
    return out.reset_index(), facts


def load(
    input,
    *,
    invoice_col: str | None = None,
    product_col: str | None = None,
    description_col: str | None = None,
    quantity_col: str | None = None,
    time_col: str | None = None,
    price_col: str | None = None,
    customer_col: str | None = None,
    min_support: int = 2,
    min_basket_support: int = 2,
    basket_edges: str = "similar",
    max_basket_size: int = 100,
    products: str | None = None,
    engine: str = "auto",
    work_dir: str | None = None,
    memory_limit: str | None = None,
    progress: bool = True,
) -> tuple:
    """Read an order log and derive the product graph; see the module docstring.

    ``products``: a products table (CSV/Parquet/JSON lines) whose metadata (category, brand,
    ...) joins the derived products by id (column ``id``, or the log's product column name);
    its values win over those derived from the log.

    ``engine``: ``memory`` reads the log whole with pandas; ``duckdb`` streams it and aggregates
    out of core (:mod:`.orders_large`; work files in ``work_dir``, default the system's temporary
    folder; DuckDB's ``memory_limit``, e.g. ``"4GB"``); ``auto`` (default) picks ``duckdb`` for a
    large log (:func:`.orders_large.auto_engine`). Both give the same graph and report."""
    show = progress
    min_support = _int_option("min_support", min_support, 1)
    min_basket_support = _int_option("min_basket_support", min_basket_support, 1)
    max_basket_size = _int_option("max_basket_size", max_basket_size, 1)
    if basket_edges not in BASKET_EDGES:
        raise DualrecError(f"option basket_edges must be one of {', '.join(BASKET_EDGES)}; got {basket_edges!r}")

    if engine not in ENGINES:
        raise DualrecError(f"option engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if memory_limit is not None and not _MEMORY.fullmatch(str(memory_limit)):
        raise DualrecError(f"option memory_limit must be a size such as 4GB or 512MiB; got {memory_limit!r}")
    if work_dir is not None:
        work_dir = Path(str(work_dir)).expanduser()
        if not work_dir.is_dir():
            raise DualrecError(f"option work_dir: no such folder: {work_dir}")

    given = existing_path(input)
    path = _find_input(given)
    from dualrec.ingest.orders_large import auto_engine, columns_of, load_large

    large = auto_engine(engine, path) == "duckdb"
    if large:
        df = columns_of(path)
    else:
        steps = bar(total=6, enabled=show, desc="orders", unit=" steps")
        steps.set_postfix_str(f"read {path.name}")
        df = read_table(path)
    n_lines = len(df)
    explicit = dict(
        invoice=invoice_col,
        product=product_col,
        customer=customer_col,
        time=time_col,
        description=description_col,
        quantity=quantity_col,
        price=price_col,
    )
    explicit = {k: (str(v) if v is not None else None) for k, v in explicit.items()}  # a CLI may pass 2 for "2"
    cols = {
        role: resolve_column(df, explicit[role], aliases, role=role, table=path.name, option=option, required=required)
        for role, (aliases, option, required) in COLUMNS.items()
    }
    options = {
        "min_support": min_support,
        "min_basket_support": min_basket_support,
        "basket_edges": basket_edges,
        "max_basket_size": max_basket_size,
    }
    if large:
        catalogue, cp, sim, dropped, core = load_large(
            path, cols, **options, show=show, workdir=work_dir, memory_limit=memory_limit
        )
        joined = {}
        if products is not None:
            catalogue, joined = _join_products(catalogue, Path(str(products)), cols["product"])
        return finish("orders", given, catalogue, cp, sim, dropped, _facts(path, cols, core, options, joined))
    steps.update(1)

    # ---- clean lines (vectorised masks; every exclusion is counted)
    steps.set_postfix_str("clean lines")
    c = clean_lines(df, cols)
    dropped, counts = c.dropped, c.counts
    product, invoice, customer = c.product, c.invoice, c.customer
    price, tkey, desc = c.price, c.tkey, c.desc
    line_ok, in_basket, in_seq = c.line_ok, c.in_basket, c.in_seq
    if not line_ok.any():
        raise DualrecError(
            f"{path.name}: no usable order line ({n_lines} lines: {dropped['missing_product_lines']} without a product,"
            f" {dropped['cancelled_invoice_lines']} cancelled)"
        )
    steps.update(1)

    # ---- products: code, most frequent description, median unit price
    steps.set_postfix_str("products")
    pcode, pnames = pd.factorize(product[line_ok].to_numpy(dtype=object), sort=True)
    pcode = pcode.astype(np.int64)
    n_prod = len(pnames)
    lines = pd.DataFrame({"p": pcode, "d": desc[line_ok], "price": price[line_ok]})
    named = lines[lines["d"] != ""]
    title = np.full(n_prod, "", dtype=object)
    if len(named):
        freq = named.groupby(["p", "d"], sort=False).size().reset_index(name="n")
        freq = freq.sort_values(["p", "n", "d"], ascending=[True, False, True]).drop_duplicates("p")
        title[freq["p"].to_numpy()] = freq["d"].to_numpy()
    med = lines.groupby("p")["price"].median().reindex(range(n_prod)).to_numpy(dtype=np.float64)
    catalogue = pd.DataFrame({"id": pd.Series(pnames, dtype=str)})
    if cols["description"]:  # metadata columns only where the source has them
        catalogue["title"] = pd.Series(title, dtype=str)
    if cols["price"]:
        catalogue["price"] = med
    joined = {}
    if products is not None:
        catalogue, joined = _join_products(catalogue, Path(str(products)), cols["product"])
    products = catalogue
    steps.update(1)

    # line-level codes aligned with the product codes
    p_of_line = np.full(n_lines, -1, dtype=np.int64)
    p_of_line[line_ok] = pcode

    # ---- baskets: distinct (invoice, product); an invoice is (invoice id) for baskets
    steps.set_postfix_str("baskets")
    b_inv, _ = pd.factorize(invoice[in_basket].to_numpy(dtype=object))
    basket = pd.DataFrame({"i": b_inv.astype(np.int64), "p": p_of_line[in_basket]}).drop_duplicates()
    basket = basket.sort_values(["i", "p"], kind="stable")
    b_items = basket["p"].to_numpy()
    b_sizes = np.bincount(basket["i"].to_numpy(), minlength=int(b_inv.max()) + 1 if b_inv.size else 0)
    b_starts = np.cumsum(b_sizes) - b_sizes
    oversized = b_sizes > max_basket_size
    n_invoices = int(b_sizes.size)
    dropped["oversized_baskets"] = int(oversized.sum())
    steps.update(1)

    # ---- sequences: per customer, distinct invoices ordered by (time, invoice)
    steps.set_postfix_str("sequences")
    seq = pd.DataFrame(
        {
            "c": customer[in_seq].to_numpy(dtype=object),
            "inv": invoice[in_seq].to_numpy(dtype=object),
            "t": tkey[in_seq],
            "p": p_of_line[in_seq],
        }
    )
    seq["c"], cust_names = pd.factorize(seq["c"])
    seq["inv"] = pd.factorize(seq["inv"])[0]
    inv_time = seq.groupby(["c", "inv"], sort=False)["t"].min().reset_index()
    inv_time = inv_time.sort_values(["c", "t", "inv"], kind="stable").reset_index(drop=True)
    inv_time["g"] = np.arange(len(inv_time), dtype=np.int64)  # global rank = group id
    g_items_df = (
        seq[["c", "inv", "p"]].drop_duplicates().merge(inv_time[["c", "inv", "g"]], on=["c", "inv"], how="left")
    ).sort_values(["g", "p"], kind="stable")
    s_items = g_items_df["p"].to_numpy()
    s_sizes = np.bincount(g_items_df["g"].to_numpy(), minlength=len(inv_time))
    s_starts = np.cumsum(s_sizes) - s_sizes
    owner_of_g = inv_time["c"].to_numpy().astype(np.int64)
    same_cust = owner_of_g[1:] == owner_of_g[:-1]
    left_g = np.flatnonzero(same_cust).astype(np.int64)
    right_g = left_g + 1
    big = (s_sizes[left_g] > max_basket_size) | (s_sizes[right_g] > max_basket_size)
    dropped["oversized_transitions"] = int(big.sum())
    n_transitions = int(left_g.size)
    left_g, right_g = left_g[~big], right_g[~big]
    steps.update(1)

    # ---- pairs
    steps.set_postfix_str("pairs")
    cp_keys, cp_support = transition_pairs(
        left_g, right_g, owner_of_g[left_g], s_starts, s_sizes, s_items, n_prod, show
    )
    keep = cp_support >= min_support
    dropped["copurchase_pairs_below_min_support"] = int((~keep).sum())
    cp_src, cp_dst, cp_w = cp_keys[keep] // n_prod, cp_keys[keep] % n_prod, cp_support[keep].astype(np.float64)

    sim = None
    n_basket_candidates = n_basket_kept = 0
    if basket_edges != "none":
        ok = ~oversized
        bk, bsup = basket_pairs(b_starts[ok], b_sizes[ok], b_items, n_prod, show)
        bkeep = bsup >= min_basket_support
        dropped["basket_pairs_below_min_support"] = int((~bkeep).sum())
        n_basket_candidates, n_basket_kept = int(bk.size), int(bkeep.sum())
        ba, bb, bw = bk[bkeep] // n_prod, bk[bkeep] % n_prod, bsup[bkeep].astype(np.float64)
        if basket_edges == "similar":
            sim = (ba, bb, bw)
        else:  # both directions into the co-purchase channel, merged (summed) with bought-next pairs
            cp_src = np.concatenate([cp_src, ba, bb])
            cp_dst = np.concatenate([cp_dst, bb, ba])
            cp_w = np.concatenate([cp_w, bw, bw])
    steps.update(1)
    steps.close()

    n_seq = int(pd.Series(owner_of_g).nunique()) if owner_of_g.size else 0
    core = {
        "lines": n_lines,
        **counts,
        "customers": int(len(cust_names)),
        "invoices": n_invoices,
        "invoices_in_sequences": int(len(inv_time)),
        "sequences": n_seq,
        "sequences_with_repeat_purchase": int(pd.Series(owner_of_g[left_g]).nunique()) if left_g.size else 0,
        "transitions": n_transitions,
        "copurchase_pair_candidates": int(cp_keys.size),
        "copurchase_pairs_kept": int(keep.sum()),
        "basket_pair_candidates": n_basket_candidates,
        "basket_pairs_kept": n_basket_kept,
        "engine": "memory",
    }
    facts = _facts(path, cols, core, options, joined)
    return finish("orders", given, products, (cp_src, cp_dst, cp_w), sim, dropped, facts)


def _facts(path: Path, cols: dict, core: dict, options: dict, joined: dict) -> dict:
    """The report's facts: the engine's counts (``core``) with the input, columns and options."""
    basket_edges = options["basket_edges"]
    return {
        "file": str(path),
        "columns": {role: (str(c) if c is not None else None) for role, c in cols.items()},
        **core,
        "options": dict(options),
        "copurchase_weight": "number of distinct customers who bought src then dst in their next invoice"
        + (" (+ same-basket invoice count, both directions)" if basket_edges == "copurchase" else ""),
        "similar_weight": "number of invoices containing both" if basket_edges == "similar" else None,
        **({"products_table": joined} if joined else {}),
    }
