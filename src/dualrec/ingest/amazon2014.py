"""Amazon 2014 (McAuley et al.) category subsets in the preprocessed format of Zhang, Ai et al.

A folder of gzipped (or plain) text files, one record a line; line ``i`` belongs to product ``i``:

=============================  ==================================================================
``product.txt.gz``             the ASIN of product i: the node set (required)
``related_product.txt.gz``     an ASIN list; the ``*_p_p`` files index THIS list (required)
``also_bought_p_p.txt.gz``     indexes into related_product: directed co-purchase (required)
``bought_together_p_p.txt.gz`` same, "frequently bought together": co-purchase (optional)
``also_viewed_p_p.txt.gz``     same, co-view: similarity (optional)
``category_p_c.txt.gz``        indexes into ``category.txt.gz`` (optional, needs category.txt)
``brand_p_b.txt.gz``           one index into ``brand.txt.gz`` or an empty line (optional)
=============================  ==================================================================

Edges: index -> ASIN (``related_product``) -> product row (``product``); targets whose ASIN is
not in ``product`` are dropped and counted per relation (``<relation>_target_not_in_products``),
and so are indexes past the end of ``related_product`` (``<relation>_index_out_of_range``).

Co-purchase = also_bought + bought_together, each edge with weight 1.0; an edge listed in
both is merged by :meth:`ProductGraph.from_edges` with its weights summed, so weight 2.0 means
"also bought AND frequently bought together" and 1.0 means one of the two (the merges are
counted in ``dropped["copurchase_duplicates_merged"]``). Similarity = also_viewed, symmetrised:
a pair listed in both directions gets weight 2.0 (``similar_duplicates_merged``).

Products: ``id`` = ASIN; ``category`` = the category names of the line, in listed order,
joined with ``" > "``; ``brand`` = the brand name (``""`` for an empty line or "Unknown").
HTML entities (``&#39;``, ``&amp;``) in names are decoded. There are no titles or prices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dualrec.graph import DualrecError
from dualrec.ingest._common import PATH_SEP, clean_text, existing_path, finish, read_text_lines
from dualrec.ingest._common import progress as bar

OPTIONS: dict = {}

_EXTS = (".txt.gz", ".txt")
# relation name -> (file stem, channel)
RELATIONS = {
    "also_bought": ("also_bought_p_p", "copurchase"),
    "bought_together": ("bought_together_p_p", "copurchase"),
    "also_viewed": ("also_viewed_p_p", "similar"),
}


def _file(folder: Path, stem: str, required: bool) -> Path | None:
    for ext in _EXTS:
        f = folder / f"{stem}{ext}"
        if f.is_file():
            return f
    if required:
        found = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise DualrecError(f"{folder} is not an amazon2014 folder: missing {stem}.txt.gz (found: {found})")
    return None


def parse_index_lines(lines: list[str], path: Path, *, show: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Lines of space-separated integers -> (row of each value, values), both int64, vectorised.

    Python touches each line once (to split it); the values are converted by numpy in one go.
    """
    counts = np.zeros(len(lines), dtype=np.int64)
    tokens: list[str] = []
    extend = tokens.extend
    for i, line in enumerate(bar(lines, enabled=show, desc=f"parse {path.name}", unit=" lines")):
        parts = line.split()
        counts[i] = len(parts)
        extend(parts)
    try:
        values = np.array(tokens, dtype=np.int64) if tokens else np.empty(0, dtype=np.int64)
    except ValueError:
        for i, line in enumerate(lines):
            for t in line.split():
                if not t.lstrip("-").isdigit():
                    raise DualrecError(f"{path}, line {i + 1}: {t!r} is not an integer index") from None
        raise
    rows = np.repeat(np.arange(len(lines), dtype=np.int64), counts)
    return rows, values


def _check_lines(lines: list[str], n: int, path: Path) -> None:
    if len(lines) != n:
        raise DualrecError(
            f"{path} has {len(lines)} lines but product.txt has {n}; "
            "it must have exactly one line per product (an empty line for none)"
        )


def _lookup_names(
    lines: list[str], names: list[str], path: Path, names_path: Path, *, sep: str, show: bool
) -> tuple[list[str], int]:
    """Per product line of indexes into ``names`` -> joined names; returns (texts, #bad indexes)."""
    rows, idx = parse_index_lines(lines, path, show=show)
    bad = (idx < 0) | (idx >= len(names))
    rows, idx = rows[~bad], idx[~bad]
    name_arr = np.asarray(names, dtype=object)
    picked = name_arr[idx]
    texts = [""] * len(lines)
    if len(rows):
        # rows are non-decreasing: split the picked names at row boundaries
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        ends = np.r_[starts[1:], len(rows)]
        for s, e in zip(starts.tolist(), ends.tolist()):
            texts[int(rows[s])] = sep.join(n for n in picked[s:e] if n)
    return texts, int(bad.sum())


def load(input, *, progress: bool = True) -> tuple:
    """Read an amazon2014 folder; see the module docstring. Returns ``(graph, report)``."""
    show = progress
    folder = existing_path(input)
    if not folder.is_dir():
        raise DualrecError(f"amazon2014 input must be a folder holding product.txt.gz etc., got a file: {folder}")

    product_path = _file(folder, "product", True)
    related_path = _file(folder, "related_product", True)
    asins = [a.strip() for a in read_text_lines(product_path)]
    n = len(asins)
    if n == 0:
        raise DualrecError(f"{product_path} is empty: no products")
    products_index = pd.Index(asins)
    if not products_index.is_unique:
        dup = products_index[products_index.duplicated()][0]
        raise DualrecError(f"{product_path}: ASIN {dup!r} is listed more than once")
    related = [a.strip() for a in read_text_lines(related_path)]
    # related_product index -> product row (-1 when that ASIN is not a product)
    rel2prod = products_index.get_indexer(pd.Index(related)).astype(np.int64) if related else np.empty(0, np.int64)

    dropped: dict[str, int] = {}
    facts: dict = {"related_products": len(related), "related_products_in_node_set": int((rel2prod >= 0).sum())}
    missing_optional: list[str] = []
    cp_src, cp_dst, sim_a, sim_b = [], [], [], []
    for rel, (stem, channel) in RELATIONS.items():
        path = _file(folder, stem, rel == "also_bought")
        if path is None:
            missing_optional.append(f"{stem}.txt.gz")
            continue
        lines = read_text_lines(path)
        _check_lines(lines, n, path)
        src, idx = parse_index_lines(lines, path, show=show)
        out_of_range = (idx < 0) | (idx >= len(related))
        dst = np.full(idx.shape, -1, dtype=np.int64)
        dst[~out_of_range] = rel2prod[idx[~out_of_range]]
        outside = (~out_of_range) & (dst < 0)
        keep = dst >= 0
        dropped[f"{rel}_index_out_of_range"] = int(out_of_range.sum())
        dropped[f"{rel}_target_not_in_products"] = int(outside.sum())
        facts[f"{rel}_listed"] = int(idx.size)
        # in-set directed edges without self-loops, before merging (the README's "in-set edges");
        # the self-loops themselves are dropped and counted by ProductGraph.from_edges
        facts[f"{rel}_edges"] = int((keep & (dst != src)).sum())
        if channel == "copurchase":
            cp_src.append(src[keep])
            cp_dst.append(dst[keep])
        else:
            sim_a.append(src[keep])
            sim_b.append(dst[keep])

    # ---- metadata
    category = [""] * n
    cat_lines_path = _file(folder, "category_p_c", False)
    if cat_lines_path is not None:
        cat_names_path = _file(folder, "category", True)
        names = [clean_text(x) for x in read_text_lines(cat_names_path)]
        lines = read_text_lines(cat_lines_path)
        _check_lines(lines, n, cat_lines_path)
        category, bad = _lookup_names(lines, names, cat_lines_path, cat_names_path, sep=PATH_SEP, show=show)
        dropped["category_index_out_of_range"] = bad
    else:
        missing_optional.append("category_p_c.txt.gz")

    brand = [""] * n
    brand_lines_path = _file(folder, "brand_p_b", False)
    if brand_lines_path is not None:
        brand_names_path = _file(folder, "brand", True)
        names = [clean_text(x) for x in read_text_lines(brand_names_path)]
        names = ["" if b.lower() == "unknown" else b for b in names]
        lines = read_text_lines(brand_lines_path)
        _check_lines(lines, n, brand_lines_path)
        brand, bad = _lookup_names(lines, names, brand_lines_path, brand_names_path, sep=" ", show=show)
        dropped["brand_index_out_of_range"] = bad
        facts["products_with_brand"] = int(sum(1 for b in brand if b))
    else:
        missing_optional.append("brand_p_b.txt.gz")

    products = pd.DataFrame(
        {
            "id": pd.Series(asins, dtype=str),
            "category": pd.Series(category, dtype=str),
            "brand": pd.Series(brand, dtype=str),
        }
    )

    def cat(parts):
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    facts["missing_optional_files"] = missing_optional
    facts["copurchase_weight"] = "also_bought 1.0 + bought_together 1.0 (summed when both)"
    facts["similar_weight"] = "also_viewed 1.0 per direction listed (2.0 when reciprocal)"
    graph, report = finish(
        "amazon2014",
        folder,
        products,
        (cat(cp_src), cat(cp_dst)),
        (cat(sim_a), cat(sim_b)),
        dropped,
        facts,
    )
    return graph, report
