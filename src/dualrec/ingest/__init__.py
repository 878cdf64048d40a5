"""Ingest: turn a user's data into a :class:`~dualrec.graph.ProductGraph` dataset folder.

Formats (one module each):

* ``amazon2014`` (:mod:`.amazon2014`) — the gzipped line-per-product folders of Zhang, Ai et al.
* ``amazon2018`` (:mod:`.amazon2018`) — Amazon 2018 ``meta_*.json(.gz)`` JSON lines.
* ``orders``     (:mod:`.orders`)     — invoice-line order logs (CSV/Parquet); edges are derived.
* ``csv``        (:mod:`.tables`)     — generic ``products`` / ``copurchase`` / ``similar`` tables.

Every loader returns ``(graph, report)``. The report holds ``format``, ``input``, ``products``,
``copurchase_edges``, ``similar_pairs`` (counts in the final graph), ``dropped`` (every row or
edge left out, by named reason, including the self-loop/duplicate counters of
:class:`~dualrec.graph.CleanReport`), ``seconds`` and format-specific facts.

Every format accepts ``progress=False`` to hide the progress bars. An option passed as
``None`` means "use the default" (convenient for a CLI that forwards unset flags).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from dualrec.graph import DualrecError, ProductGraph

FORMATS = ("amazon2014", "amazon2018", "orders", "csv")

COMMON_OPTIONS = {"progress": True}


def _module(fmt: str):
    if fmt == "amazon2014":
        from dualrec.ingest import amazon2014 as m
    elif fmt == "amazon2018":
        from dualrec.ingest import amazon2018 as m
    elif fmt == "orders":
        from dualrec.ingest import orders as m
    elif fmt == "csv":
        from dualrec.ingest import tables as m
    else:
        raise DualrecError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    return m


def options_for(fmt: str) -> dict:
    """The options a format accepts, with their defaults (``progress`` included)."""
    return {**_module(fmt).OPTIONS, **COMMON_OPTIONS}


def load_source(fmt: str, input: str | Path, **options) -> tuple[ProductGraph, dict]:
    """Read a source in one of :data:`FORMATS` and return ``(graph, report)``.

    Raises :class:`~dualrec.graph.DualrecError` with a clear message for an unknown format or
    option, a missing path or file, or a table lacking a needed column.
    """
    module = _module(fmt)
    allowed = {**module.OPTIONS, **COMMON_OPTIONS}
    unknown = sorted(k for k in options if k not in allowed)
    if unknown:
        valid = ", ".join(sorted(allowed)) or "none"
        raise DualrecError(f"unknown option(s) for format {fmt!r}: {', '.join(unknown)} (valid: {valid})")
    opts = {k: v for k, v in options.items() if v is not None}
    _check_option_types(fmt, opts, allowed, getattr(module, "OPTION_RANGES", {}))
    if input is None:
        raise DualrecError("no input path given")
    t0 = time.perf_counter()
    graph, report = module.load(input, **opts)
    if graph.num_copurchase == 0:
        raise DualrecError(no_edges_message(report))
    price = _check_prices(graph)
    if price:
        report["price_issues"] = price
        graph.report["price_issues"] = price
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return graph, report


def no_edges_message(report: dict) -> str:
    """Why no co-purchase edge is left: the top reasons with counts and examples."""
    dropped = {k: v for k, v in report.get("dropped", {}).items() if v and not k.startswith("similar")}
    top = sorted(dropped.items(), key=lambda kv: -kv[1])[:3]
    ex = report.get("examples", {})
    why = (
        "; ".join(
            f"{k.replace('_', ' ')}: {v}" + (f" (e.g. {', '.join(map(repr, ex[k]))})" if k in ex else "")
            for k, v in top
        )
        or "the input has no co-purchase rows"
    )
    return (
        f"no usable co-purchase edge after cleaning ({report.get('products', 0)} products); {why}. "
        "Check that the edge tables use the products' ids"
    )


def summary(report: dict) -> str:
    """A few human lines: what was kept, what was dropped and why."""
    lines = [
        f"kept {report.get('products', 0):,} products, {report.get('copurchase_edges', 0):,} co-purchase edges, "
        f"{report.get('similar_pairs', 0):,} similar pairs"
    ]
    dropped = {k: v for k, v in report.get("dropped", {}).items() if v}
    if dropped:
        lines.append(
            "dropped or merged: "
            + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1]))
        )
    for col, b in (report.get("bad_numbers") or {}).items():
        lines.append(
            f"column {col!r}: {b['bad_cells']} value(s) that are not numbers set missing (rows "
            f"{', '.join(map(str, b['rows']))}{' ...' if b['bad_cells'] > len(b['rows']) else ''}: "
            f"{', '.join(map(repr, b['values'][:3]))})"
        )
    p = report.get("price_issues")
    if p:
        lines.append(f"price: {p['negative']} negative and {p['above_max']} above {p['max']:g} set missing")
    return "\n".join(lines)


#: prices above this are taken for data errors (a unit mix-up, a code in the price column)
MAX_PRICE = 1e7


def _check_option_types(fmt: str, opts: dict, allowed: dict, ranges: dict) -> None:
    """Every option has its default's type (text where the default is None) and its range."""
    for k, v in opts.items():
        default = allowed[k]
        if isinstance(default, bool):
            ok, what = isinstance(v, bool), "true or false"
        elif isinstance(default, int):
            ok, what = isinstance(v, int) and not isinstance(v, bool), "an integer"
        elif isinstance(default, float):
            ok, what = isinstance(v, (int, float)) and not isinstance(v, bool), "a number"
        else:
            ok, what = isinstance(v, str) and v.strip() != "", "a non-empty text"
            if isinstance(v, (int, float)) and not isinstance(v, bool):  # a numeric column name, as typed
                opts[k], ok = str(v), True
        if not ok:
            raise DualrecError(f"option {k} of format {fmt!r} must be {what}, got {v!r}")
        if k in ranges:
            lo, hi = ranges[k]
            if not lo <= v <= hi:
                raise DualrecError(f"option {k} of format {fmt!r} must be in [{lo}, {hi}], got {v!r}")


def _check_prices(graph: ProductGraph) -> dict | None:
    """Negative or absurd prices become missing, counted with examples (never silently kept)."""
    p = graph.products
    if "price" not in p.columns or not pd.api.types.is_numeric_dtype(p["price"]):
        return None
    x = p["price"].to_numpy(dtype=np.float64, na_value=np.nan)
    neg, big = x < 0, x > MAX_PRICE
    if not (neg.any() or big.any()):
        return None
    bad = neg | big
    examples = [{"id": str(i), "price": float(v)} for i, v in zip(p["id"][bad].head(5), x[bad][:5])]
    p.loc[bad, "price"] = np.nan
    return {
        "negative": int(neg.sum()),
        "above_max": int(big.sum()),
        "max": MAX_PRICE,
        "set_missing": int(bad.sum()),
        "examples": examples,
    }


def ingest(fmt: str, input: str | Path, out: str | Path, **options) -> dict:
    """:func:`load_source`, then ``graph.save(out)``; returns the report (also in ``out/graph.json``)."""
    graph, report = load_source(fmt, input, **options)
    report["output"] = str(Path(out))
    graph.save(out)
    return report


__all__ = ["FORMATS", "load_source", "ingest", "options_for", "summary"]
