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
    if input is None:
        raise DualrecError("no input path given")
    t0 = time.perf_counter()
    graph, report = module.load(input, **opts)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return graph, report


def ingest(fmt: str, input: str | Path, out: str | Path, **options) -> dict:
    """:func:`load_source`, then ``graph.save(out)``; returns the report (also in ``out/graph.json``)."""
    graph, report = load_source(fmt, input, **options)
    report["output"] = str(Path(out))
    graph.save(out)
    return report


__all__ = ["FORMATS", "load_source", "ingest", "options_for"]
