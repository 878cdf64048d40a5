"""Amazon Review Data 2018 (Ni, Li, McAuley) product metadata: ``meta_<Category>.json(.gz)``.

One JSON object a line (gzipped or not). ``input`` is the file, or a folder holding exactly
one ``*.json`` / ``*.json.gz`` / ``*.jsonl`` / ``*.jsonl.gz`` file.

Products (``id`` = ``asin``), metadata columns:

* ``title``       — HTML entities decoded, tags removed, whitespace collapsed;
* ``description`` — the list of paragraphs, cleaned like the title, joined with ``" | "``;
* ``brand``       — text;
* ``category``    — the category path list joined with ``" > "``;
* ``price``       — float: ``"$25.00"`` -> 25.0, ``"$1,250.00"`` -> 1250.0, a range
  ``"$10.00 - $20.00"`` -> its midpoint 15.0, anything else (``""``, scraped HTML) -> NaN.

Edges: ``also_buy`` -> directed co-purchase ``asin -> x`` (weight 1.0); ``also_view`` ->
similarity (weight 1.0 per listed direction, so a reciprocal pair gets 2.0 after merging).

Dropped and counted: lines that are not a JSON object (``malformed_json_lines``; if every
line is malformed the file is rejected), rows without an ASIN (``missing_asin_rows``), repeated
ASINs (``duplicate_asin_rows``: the first row is kept), and edges whose target is not a
product of the file (``also_buy_target_not_in_products``, ``also_view_target_not_in_products``).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

from dualrec.graph import DualrecError
from dualrec.ingest._common import LIST_SEP, PATH_SEP, clean_text, existing_path, finish, join_list, parse_price
from dualrec.ingest._common import progress as bar

OPTIONS: dict = {}

_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz")


def _find_json(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(_SUFFIXES))
    if len(found) == 1:
        return found[0]
    if not found:
        names = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
        raise DualrecError(f"{path} holds no *.json or *.json.gz file (found: {names})")
    raise DualrecError(
        f"{path} holds {len(found)} JSON files ({', '.join(p.name for p in found)}); pass the one to ingest"
    )


def _as_list(x) -> list:
    if x is None:
        return []
    if isinstance(x, list):
        return x
    if isinstance(x, str):
        return [x] if x.strip() else []
    return [x]


def _read_records(path: Path, show: bool) -> tuple[list[dict], int, int, int]:
    """(records, #lines, #blank lines, #malformed lines)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    records: list[dict] = []
    n_lines = blank = malformed = 0
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in bar(fh, enabled=show, desc=f"parse {path.name}", unit=" lines"):
                n_lines += 1
                s = line.strip()
                if not s:
                    blank += 1
                    continue
                try:
                    rec = json.loads(s)
                except ValueError:
                    malformed += 1
                    continue
                if not isinstance(rec, dict):
                    malformed += 1
                    continue
                records.append(rec)
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DualrecError(f"cannot read {path}: {e}") from None
    return records, n_lines, blank, malformed


def load(input, *, progress: bool = True) -> tuple:
    """Read an amazon2018 metadata file; see the module docstring. Returns ``(graph, report)``."""
    show = progress
    given = existing_path(input)
    path = _find_json(given)
    records, n_lines, blank, malformed = _read_records(path, show)
    if not records:
        if malformed:
            raise DualrecError(
                f"{path}: none of its {malformed} non-empty lines is a JSON object; "
                "is this an Amazon 2018 meta_*.json file?"
            )
        raise DualrecError(f"{path} is empty: no products")

    dropped = {"malformed_json_lines": malformed, "missing_asin_rows": 0, "duplicate_asin_rows": 0}
    seen: set[str] = set()
    kept: list[dict] = []
    asins: list[str] = []
    for rec in records:
        asin = rec.get("asin")
        asin = str(asin).strip() if asin is not None else ""
        if not asin:
            dropped["missing_asin_rows"] += 1
            continue
        if asin in seen:
            dropped["duplicate_asin_rows"] += 1
            continue
        seen.add(asin)
        kept.append(rec)
        asins.append(asin)
    if not kept:
        raise DualrecError(f"{path}: no record has an 'asin' field (keys found: {sorted(records[0].keys())})")

    price_raw = [rec.get("price") for rec in kept]
    price = np.array([parse_price(p) for p in price_raw], dtype=np.float64)
    unparsed = sum(
        1 for p, v in zip(price_raw, price) if np.isnan(v) and p not in (None, "") and not isinstance(p, float)
    )
    products = pd.DataFrame(
        {
            "id": pd.Series(asins, dtype=str),
            "title": pd.Series([clean_text(r.get("title"), strip_tags=True) for r in kept], dtype=str),
            "description": pd.Series(
                [join_list(_as_list(r.get("description")), LIST_SEP, strip_tags=True) for r in kept], dtype=str
            ),
            "brand": pd.Series([clean_text(r.get("brand"), strip_tags=True) for r in kept], dtype=str),
            "category": pd.Series([join_list(_as_list(r.get("category")), PATH_SEP) for r in kept], dtype=str),
            "price": price,
        }
    )
    index = pd.Index(asins)

    def edges(field: str):
        lists = [_as_list(r.get(field)) for r in kept]
        counts = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        src = np.repeat(np.arange(len(kept), dtype=np.int64), counts)
        targets = [str(t).strip() for x in lists for t in x]
        dst = index.get_indexer(pd.Index(targets, dtype=object)).astype(np.int64) if targets else np.empty(0, np.int64)
        ok = dst >= 0
        dropped[f"{field}_target_not_in_products"] = int((~ok).sum())
        return src[ok], dst[ok], int(counts.sum())

    cp_src, cp_dst, cp_listed = edges("also_buy")
    sim_a, sim_b, sim_listed = edges("also_view")
    facts = {
        "file": str(path),
        "lines": n_lines,
        "blank_lines": blank,
        "also_buy_listed": cp_listed,
        "also_buy_edges": int(cp_src.size),
        "also_view_listed": sim_listed,
        "also_view_edges": int(sim_a.size),
        "products_with_title": int((products["title"] != "").sum()),
        "products_with_price": int(np.isfinite(price).sum()),
        "price_unparsed": int(unparsed),
    }
    return finish("amazon2018", given, products, (cp_src, cp_dst), (sim_a, sim_b), dropped, facts)
