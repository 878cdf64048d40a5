"""Helpers shared by the ingest loaders: paths, tables, columns, text, ids, the final report."""

from __future__ import annotations

import gzip
import html
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from dualrec.graph import DualrecError, ProductGraph

LIST_SEP = " | "  # several values of one field (description paragraphs, category paths) -> one string
PATH_SEP = " > "  # the levels of one category path


# ---------------------------------------------------------------------- progress
def progress(iterable=None, *, enabled: bool = True, **kw):
    """A tqdm bar (to stderr) that can be switched off with the ``progress=False`` option."""
    kw.setdefault("leave", False)
    kw.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not enabled, **kw)


# ---------------------------------------------------------------------- paths
def existing_path(path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DualrecError(f"input not found: {p}")
    return p


def find_file(folder: Path, stem: str, exts: Sequence[str], *, required: bool = True, what: str = "") -> Path | None:
    """``folder/stem.<ext>`` for the first ext that exists; DualrecError (listing the folder) if required."""
    for ext in exts:
        f = folder / f"{stem}{ext}"
        if f.is_file():
            return f
    if not required:
        return None
    names = ", ".join(f"{stem}{e}" for e in exts)
    found = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(found[:20]) + (f" (and {len(found) - 20} more)" if len(found) > 20 else "")
    raise DualrecError(
        f"{folder} is missing {what or 'a required file'}: expected one of {names} (found: {shown or 'nothing'})"
    )


def read_text_lines(path: Path) -> list[str]:
    """All lines of a (possibly gzipped) UTF-8 text file, without line terminators.

    A final newline does not create an extra empty line, but empty lines inside the file are
    kept (they are meaningful in line-i-is-product-i files).
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            text = fh.read()
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DualrecError(f"cannot read {path}: {e}") from None
    if text.endswith("\n"):
        text = text[:-1]
    if not text:
        return []
    lines = text.split("\n")
    if "\r" in text:
        lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    return lines


# ---------------------------------------------------------------------- tables
TABLE_EXTS = (".parquet", ".pq", ".csv", ".tsv", ".csv.gz", ".tsv.gz")


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV/TSV (optionally gzipped) or Parquet file into a DataFrame.

    CSV files are read with every column as text so that ids such as ``00123`` or ``85123A``
    keep their exact spelling; call :func:`infer_numeric` afterwards for the other columns.
    """
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        if name.endswith((".csv", ".tsv", ".csv.gz", ".tsv.gz")):
            sep = "\t" if ".tsv" in name else ","
            return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as e:  # pyarrow / parser errors -> a user-facing message
        raise DualrecError(f"cannot read {path}: {e}") from None
    raise DualrecError(f"{path}: unsupported table type (expected .csv, .tsv or .parquet)")


#: share of a text column's values that must read as numbers for the column to be numeric
NUMERIC_SHARE = 0.9
# a currency sign and thousands commas in groups of three (1,299.00); a decimal comma (12,50) is
# ambiguous and stays a bad value, reported, never read as 1250
_MONEY = re.compile(
    r"^\s*[$€£¥]?\s*([-+]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?)\s*(?:[$€£¥]|usd|eur|gbp)?\s*$", re.I
)


def _as_number(v: str) -> float:
    m = _MONEY.match(v)
    return float(m.group(1).replace(",", "")) if m else float("nan")


def infer_numeric(
    df: pd.DataFrame, skip: Iterable[str] = (), report: dict | None = None, table: str = "products"
) -> pd.DataFrame:
    """Text columns whose values are numbers -> numeric (except those in ``skip``).

    A column is numeric when at least 90 % of its non-empty values read as numbers (currency
    signs and thousands commas allowed: ``$1,299.00``); the others become missing, and
    ``report[column]`` says how many, with their row numbers and values, so one bad cell
    neither turns the column into text nor goes unnoticed."""
    skip = set(skip)
    df = df.copy()
    for c in df.columns:
        if c in skip:
            continue
        s = df[c]
        if pd.api.types.is_numeric_dtype(s.dtype) or not (pd.api.types.is_string_dtype(s.dtype) or s.dtype == object):
            continue
        if not s.map(lambda v: isinstance(v, str), na_action="ignore").all():
            continue  # lists or mixed objects (Parquet): leave to normalize_metadata
        present = (s.notna() & (s.astype(str).str.strip() != "")).to_numpy()
        if not present.any():
            continue
        num = pd.to_numeric(s, errors="coerce")
        retry = present & num.isna().to_numpy()
        if retry.any():
            num = num.copy()
            num[retry] = s[retry].map(_as_number).to_numpy()
        bad = present & num.isna().to_numpy()
        if bad.sum() > (1 - NUMERIC_SHARE) * present.sum():
            continue  # a text column (titles, codes)
        df[c] = num
        if bad.any() and report is not None:
            rows = np.flatnonzero(bad)
            report[str(c)] = {
                "table": table,
                "bad_cells": int(bad.size and bad.sum()),
                "set_missing": True,
                "rows": [int(r) + 1 for r in rows[:10]],
                "values": [str(v)[:40] for v in s[rows[:10]]],
            }
    return df


def _norm_name(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "", str(name)).lower()


def resolve_column(
    df: pd.DataFrame,
    explicit: str | None,
    candidates: Sequence[str],
    *,
    role: str,
    table: str,
    option: str,
    required: bool = True,
) -> str | None:
    """Find the column for ``role``: the ``explicit`` name if given (must exist), else the first
    candidate matched case-insensitively (ignoring spaces/underscores/dashes)."""
    cols = list(df.columns)
    found = f"found: {[str(c) for c in cols]}"
    if explicit is not None:
        if explicit in cols:
            return explicit
        by_norm = [c for c in cols if _norm_name(c) == _norm_name(explicit)]
        if len(by_norm) == 1:
            return by_norm[0]
        raise DualrecError(f"{table}: no column {explicit!r} ({option}={explicit!r}) for the {role}; {found}")
    norm = {}
    for c in cols:
        norm.setdefault(_norm_name(c), c)
    for cand in candidates:
        c = norm.get(_norm_name(cand))
        if c is not None:
            return c
    if not required:
        return None
    names = " / ".join(repr(c) for c in candidates)
    raise DualrecError(f"{table}: missing {role} column {names}; {found}. Name it with {option}='<column>'")


# ---------------------------------------------------------------------- ids
def as_id_strings(s: pd.Series) -> pd.Series:
    """Normalise an id column to stripped strings (object dtype), missing/empty -> None.

    Integral floats (``17850.0``, from a numeric column with NaNs) become ``"17850"``.
    """
    if pd.api.types.is_float_dtype(s.dtype):
        vals = s.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.isfinite(vals)
        if finite.any() and np.all(vals[finite] == np.round(vals[finite])):
            out = pd.Series(vals, index=s.index).astype("Int64").astype("string")
        else:
            out = s.astype("string")
    elif pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        out = s.astype("string")
    else:
        out = s.astype("string")
    out = out.str.strip()
    # "12.0" is how pandas writes an integer id column with gaps: the same product as "12"
    out = out.str.replace(r"^(-?\d+)\.0+$", r"\1", regex=True)
    out = out.mask(out == "")
    return out.astype(object).where(out.notna(), None)


# ---------------------------------------------------------------------- text & metadata
_TAG = re.compile(r"<[^>]{0,2000}>")
_WS = re.compile(r"\s+")
_SPACE_PUNCT = re.compile(r" ([.,;:!?])")


def clean_text(x, *, strip_tags: bool = False) -> str:
    """One clean line of text: HTML entities decoded, (optionally) tags removed, whitespace collapsed."""
    if x is None:
        return ""
    if isinstance(x, float) and np.isnan(x):
        return ""
    s = str(x)
    if "&" in s:
        s = html.unescape(s)
    if strip_tags and "<" in s:
        s = _TAG.sub(" ", s)
        s = _WS.sub(" ", s)
        s = _SPACE_PUNCT.sub(r"\1", s)  # "<b>word</b>." -> "word." not "word ."
    return _WS.sub(" ", s).strip()


def join_list(x, sep: str = LIST_SEP, *, strip_tags: bool = False) -> str:
    """A list (or scalar) of text values -> one string; empty parts are skipped."""
    if x is None:
        return ""
    if isinstance(x, (list, tuple, np.ndarray)):
        parts = [clean_text(v, strip_tags=strip_tags) for v in x]
        return sep.join(p for p in parts if p)
    return clean_text(x, strip_tags=strip_tags)


def normalize_metadata(df: pd.DataFrame) -> pd.DataFrame:
    """Apply the metadata convention to every column but ``id``.

    Numeric (and bool) columns -> float64 (NaN when unknown); list-valued columns -> one string
    joined with ``" | "``; everything else -> text (``""`` when missing). Column names are
    lower-cased (a clash after lower-casing is an error).
    """
    out = {}
    for c in df.columns:
        name = str(c) if c == "id" else str(c).strip().lower()
        if name in out:
            raise DualrecError(f"products: two columns are both named {name!r} after lower-casing")
        s = df[c]
        if c == "id":
            out[name] = s
        elif pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
            out[name] = s.astype("float64")
        elif pd.api.types.is_datetime64_any_dtype(s.dtype):
            out[name] = s.astype("string").fillna("").astype(str)
        else:
            vals = s.tolist()
            if any(isinstance(v, (list, tuple, np.ndarray)) for v in vals):
                out[name] = pd.Series([join_list(v) for v in vals], index=s.index, dtype=str)
            else:
                out[name] = pd.Series(
                    ["" if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA else str(v) for v in vals],
                    index=s.index,
                    dtype=str,
                )
    return pd.DataFrame(out, index=df.index)


_PRICE = re.compile(r"^\s*\$?\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*(?:-\s*\$?\s*([0-9][0-9,]*(?:\.[0-9]+)?))?\s*$")


def parse_price(x) -> float:
    """``"$25.00"`` -> 25.0, ``"$1,250.00"`` -> 1250.0, a range ``"$10.00 - $20.00"`` -> 15.0
    (its midpoint), numbers pass through; anything else (``""``, HTML debris) -> NaN."""
    if x is None:
        return float("nan")
    if isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool):
        v = float(x)
        return v if np.isfinite(v) and v >= 0 else float("nan")
    m = _PRICE.match(str(x))
    if not m:
        return float("nan")
    lo = float(m.group(1).replace(",", ""))
    if m.group(2) is None:
        return lo
    hi = float(m.group(2).replace(",", ""))
    return (lo + hi) / 2.0


# ---------------------------------------------------------------------- the result
def finish(
    fmt: str,
    input_path: Path,
    products: pd.DataFrame,
    copurchase: tuple,
    similar: tuple | None,
    dropped: dict,
    facts: dict,
) -> tuple[ProductGraph, dict]:
    """Build the graph (self-loops dropped, duplicates merged by ``from_edges``) and the report.

    ``report["dropped"]`` holds the loader's reasons plus the four counters of
    :class:`~dualrec.graph.CleanReport` (``copurchase_self_loops``,
    ``copurchase_duplicates_merged``, ``similar_self_loops``, ``similar_duplicates_merged``).
    """
    graph, clean = ProductGraph.from_edges(products, copurchase=copurchase, similar=similar)
    clean_counts = {k: int(v) for k, v in clean.as_dict().items()}
    report = {
        "format": fmt,
        "input": str(input_path),
        "products": int(graph.num_products),
        "copurchase_edges": int(graph.num_copurchase),
        "similar_pairs": int(graph.num_similar),
        "dropped": {**{k: int(v) for k, v in dropped.items()}, **clean_counts},
    }
    report.update(_plain(facts))
    report["clean"] = clean_counts  # the same key from_edges writes, for readers of graph.json
    graph.report = report  # stored in graph.json by graph.save()
    return graph, report


def _plain(x):
    """numpy scalars -> Python numbers, recursively (graph.json must hold real numbers)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x
