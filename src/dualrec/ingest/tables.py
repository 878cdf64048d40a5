"""Generic tables (format ``csv``): a folder of CSV/TSV or Parquet files.

``input`` is a folder holding (each as ``.parquet``, ``.csv``, ``.tsv``, ``.csv.gz``)::

    products     required: an id column (``id``) + any metadata columns
    copurchase   required: src, dst (product ids, read as text) [, weight]  -- directed
    similar      optional: a, b (product ids) [, weight]                     -- undirected

Options name the columns when they differ: ``id_col``, ``src_col``, ``dst_col``, ``a_col``,
``b_col``, ``weight_col`` (the weight column of both edge tables; optional, default weight 1.0).
Names are matched exactly first, then ignoring case, spaces and underscores.

Metadata follows the convention of the feature encoder: numeric columns become float (NaN
when unknown), text columns text (``""`` when missing), list columns (Parquet) are joined with
``" | "``; names are lower-cased.

Dropped and counted: products with an empty id (``products_missing_id``) or a repeated id
(``products_duplicate_id``, the first row is kept); edges with an empty id
(``<table>_missing_id``) or an id that is not a product (``<table>_<side>_not_in_products``,
an edge with two unknown ids is counted once, under its first side). A negative, non-numeric,
empty or infinite weight is an error naming the row: weights are the user's statement of
strength, not something to guess.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dualrec.graph import DualrecError
from dualrec.ingest._common import (
    TABLE_EXTS,
    as_id_strings,
    existing_path,
    find_file,
    finish,
    infer_numeric,
    normalize_metadata,
    read_table,
    resolve_column,
)
from dualrec.ingest._common import progress as bar

OPTIONS: dict = {
    "id_col": "id",
    "src_col": "src",
    "dst_col": "dst",
    "a_col": "a",
    "b_col": "b",
    "weight_col": "weight",
}


#: largest edge weight accepted: far beyond any count, and safe to sum in float32
MAX_WEIGHT = 1e9


def _row_label(path: Path, i: int) -> str:
    """Human row reference: 1-based data row (+ the file line for text tables, after the header)."""
    if path.name.lower().endswith((".csv", ".tsv", ".csv.gz", ".tsv.gz")):
        return f"{path.name} row {i + 1} (line {i + 2})"
    return f"{path.name} row {i + 1}"


def _weights(df: pd.DataFrame, col: str | None, path: Path) -> np.ndarray:
    if col is None:
        return np.ones(len(df), dtype=np.float64)
    raw = df[col]
    w = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(w) | (w < 0) | (w > MAX_WEIGHT)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        v = raw.iloc[i]
        what = "is missing" if pd.isna(v) or str(v).strip() == "" else f"is {v!r}"
        raise DualrecError(
            f"{_row_label(path, i)}: weight ({col!r}) {what}; weights must be numbers in [0, {MAX_WEIGHT:g}]"
            + (f" ({int(bad.sum())} bad rows in all)" if bad.sum() > 1 else "")
        )
    return w


def _edges(
    path: Path,
    table: str,
    sides: tuple[str, str],
    cols: tuple[str | None, str | None],
    weight_col: str | None,
    weight_explicit: bool,
    index: pd.Index,
    dropped: dict,
    examples: dict,
):
    df = read_table(path)
    c1 = resolve_column(df, cols[0], [sides[0]], role=f"'{sides[0]}' id", table=path.name, option=f"{sides[0]}_col")
    c2 = resolve_column(df, cols[1], [sides[1]], role=f"'{sides[1]}' id", table=path.name, option=f"{sides[1]}_col")
    wc = None
    if weight_col is not None:
        wc = resolve_column(df, None, [weight_col], role="weight", table=path.name, option="weight_col", required=False)
    if weight_explicit and wc is None and table == "copurchase":
        raise DualrecError(
            f"{path.name}: no weight column {weight_col!r} (weight_col={weight_col!r}); "
            f"found: {[str(c) for c in df.columns]}"
        )
    w = _weights(df, wc, path)
    s1 = as_id_strings(df[c1])
    s2 = as_id_strings(df[c2])
    missing = (s1.isna() | s2.isna()).to_numpy()
    i1 = index.get_indexer(pd.Index(s1.fillna("").to_numpy(dtype=object), dtype=object))
    i2 = index.get_indexer(pd.Index(s2.fillna("").to_numpy(dtype=object), dtype=object))
    unknown1 = ~missing & (i1 < 0)
    unknown2 = ~missing & ~unknown1 & (i2 < 0)
    for name, sel, col in (
        (f"{table}_{sides[0]}_not_in_products", unknown1, s1),
        (f"{table}_{sides[1]}_not_in_products", unknown2, s2),
    ):
        if sel.any():
            examples[name] = [str(v) for v in col[sel].head(3)]
    keep = ~missing & (i1 >= 0) & (i2 >= 0)
    dropped[f"{table}_missing_id"] = int(missing.sum())
    dropped[f"{table}_{sides[0]}_not_in_products"] = int(unknown1.sum())
    dropped[f"{table}_{sides[1]}_not_in_products"] = int(unknown2.sum())
    return (i1[keep].astype(np.int64), i2[keep].astype(np.int64), w[keep]), len(df), wc


def load(
    input,
    *,
    id_col: str = "id",
    src_col: str = "src",
    dst_col: str = "dst",
    a_col: str = "a",
    b_col: str = "b",
    weight_col: str = "weight",
    progress: bool = True,
) -> tuple:
    """Read a folder of products / copurchase / similar tables; see the module docstring."""
    # column names are text even when a CLI parsed "--option id_col=1" as a number
    id_col, src_col, dst_col, a_col, b_col, weight_col = map(str, (id_col, src_col, dst_col, a_col, b_col, weight_col))
    folder = existing_path(input)
    if not folder.is_dir():
        raise DualrecError(
            f"csv input must be a folder holding products.csv (or .parquet) and copurchase.csv, got a file: {folder}"
        )
    products_path = find_file(folder, "products", TABLE_EXTS, what="the products table")
    cp_path = find_file(folder, "copurchase", TABLE_EXTS, what="the co-purchase table")
    sim_path = find_file(folder, "similar", TABLE_EXTS, required=False)

    steps = bar(total=3, enabled=progress, desc="read tables", unit=" tables")
    raw = read_table(products_path)
    idc = resolve_column(
        raw, id_col if id_col != "id" else None, ["id"], role="product id", table=products_path.name, option="id_col"
    )
    bad_numbers: dict = {}
    raw = infer_numeric(raw, skip=[idc], report=bad_numbers, table=products_path.name)
    ids = as_id_strings(raw[idc])
    dropped: dict[str, int] = {}
    missing = ids.isna().to_numpy()
    dup = ~missing & ids.duplicated().to_numpy()
    dropped["products_missing_id"] = int(missing.sum())
    dropped["products_duplicate_id"] = int(dup.sum())
    keep = ~missing & ~dup
    meta = raw.loc[keep, [c for c in raw.columns if c != idc]]
    clash = [c for c in meta.columns if str(c).strip().lower() == "id"]
    if clash:
        raise DualrecError(
            f"{products_path.name}: the id column is {idc!r} but there is also a column {clash[0]!r}; rename one"
        )
    products = pd.concat(
        [
            pd.DataFrame({"id": pd.Series(ids[keep].tolist(), dtype=str)}),
            normalize_metadata(meta).reset_index(drop=True),
        ],
        axis=1,
    )
    if len(products) == 0:
        raise DualrecError(f"{products_path.name}: no products (every row lacks an id)")
    index = pd.Index(products["id"].to_numpy(dtype=object), dtype=object)
    steps.update(1)

    weight_explicit = weight_col != OPTIONS["weight_col"]
    examples: dict = {}
    cp, cp_rows, cp_wc = _edges(
        cp_path,
        "copurchase",
        ("src", "dst"),
        (src_col if src_col != "src" else None, dst_col if dst_col != "dst" else None),
        weight_col,
        weight_explicit,
        index,
        dropped,
        examples,
    )
    steps.update(1)
    sim, sim_rows, sim_wc = None, 0, None
    if sim_path is not None:
        sim, sim_rows, sim_wc = _edges(
            sim_path,
            "similar",
            ("a", "b"),
            (a_col if a_col != "a" else None, b_col if b_col != "b" else None),
            weight_col,
            False,
            index,
            dropped,
            examples,
        )
    steps.update(1)
    steps.close()

    facts = {
        "files": {
            "products": products_path.name,
            "copurchase": cp_path.name,
            "similar": sim_path.name if sim_path else None,
        },
        "product_rows": int(len(raw)),
        "copurchase_rows": int(cp_rows),
        "similar_rows": int(sim_rows),
        "weight_columns": {"copurchase": cp_wc, "similar": sim_wc},
        "metadata_columns": [c for c in products.columns if c != "id"],
        "examples": examples,
        "bad_numbers": bad_numbers,
    }
    return finish("csv", folder, products, cp, sim, dropped, facts)
