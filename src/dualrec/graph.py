"""The product graph: products with metadata, directed co-purchase edges, undirected similarity edges.

A :class:`ProductGraph` is the contract between ingest (which builds one from a user's data)
and everything downstream (features, model, training, evaluation, serving).

On disk a graph is a *dataset folder*::

    DIR/products.parquet     one row per product: column ``id`` (string) + any metadata columns
    DIR/copurchase.parquet   src, dst (int64 row indexes into products), weight (float32)
    DIR/similar.parquet      a, b (int64, a < b: each undirected pair stored once), weight
    DIR/graph.json           format version, counts, and the ingest report

Edges are kept as integer indexes so that a 10M-product catalogue loads without hashing
strings; the string ids live only in ``products.parquet``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch

from dualrec.errors import DualrecError, UnknownProductError  # noqa: F401  (re-exported)
from dualrec.ids import IdIndex

FORMAT_VERSION = 1


@dataclass
class CleanReport:
    """What :meth:`ProductGraph.from_edges` dropped or merged, and why."""

    copurchase_self_loops: int = 0
    copurchase_duplicates_merged: int = 0
    similar_self_loops: int = 0
    similar_duplicates_merged: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _as_long(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(torch.long).reshape(-1)
    return torch.as_tensor(np.asarray(x, dtype=np.int64)).reshape(-1)


def _as_weight(w, n: int) -> torch.Tensor:
    if w is None:
        return torch.ones(n, dtype=torch.float32)
    w64 = np.asarray(w, dtype=np.float64).reshape(-1)
    if w64.size != n:
        raise DualrecError(f"weight has {w64.size} entries but there are {n} edges")
    bad = ~np.isfinite(w64) | (w64 < 0) | (w64 > 1e9)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DualrecError(
            f"{int(bad.sum())} edge weight(s) are not numbers in [0, 1e9], e.g. {w64[i]!r} "
            f"(edge {i}); weights that large overflow in training"
        )
    return torch.as_tensor(w64.astype(np.float32))


def _merge_duplicates(src: torch.Tensor, dst: torch.Tensor, w: torch.Tensor, n: int):
    """Sum the weights of repeated (src, dst) pairs; returns sorted unique edges and #merged."""
    if src.numel() == 0:
        return src, dst, w, 0
    key = src * n + dst
    uniq, inv = torch.unique(key, sorted=True, return_inverse=True)
    weight = torch.zeros(uniq.numel(), dtype=w.dtype).index_add_(0, inv, w)
    return uniq // n, uniq % n, weight, int(key.numel() - uniq.numel())


@dataclass
class ProductGraph:
    """Products + directed co-purchase edges + undirected similarity edges.

    Attributes:
        products: DataFrame with a string column ``id`` (unique) and metadata columns.
        cp_src, cp_dst, cp_weight: co-purchase edges ``cp_src[i] -> cp_dst[i]`` (row indexes
            into ``products``), unique, no self-loops, sorted by (src, dst). A reciprocal pair
            is two directed edges.
        sim_a, sim_b, sim_weight: similarity (co-view) pairs, stored once with ``a < b``;
            they are symmetric by definition.
    """

    products: pd.DataFrame
    cp_src: torch.Tensor
    cp_dst: torch.Tensor
    cp_weight: torch.Tensor
    sim_a: torch.Tensor
    sim_b: torch.Tensor
    sim_weight: torch.Tensor
    report: dict = field(default_factory=dict)
    _id_index: IdIndex | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_edges(
        cls,
        products: pd.DataFrame,
        copurchase: tuple | None = None,
        similar: tuple | None = None,
        report: dict | None = None,
    ) -> tuple["ProductGraph", CleanReport]:
        """Build a clean graph from integer-indexed edges.

        Args:
            products: DataFrame with a unique ``id`` column (converted to str).
            copurchase: ``(src, dst)`` or ``(src, dst, weight)`` arrays of row indexes.
            similar: ``(a, b)`` or ``(a, b, weight)``; order within a pair is irrelevant.
            report: extra ingest facts to keep in ``graph.json``.

        Self-loops are dropped and duplicate edges merged (weights summed); the counts are
        returned in a :class:`CleanReport`, never raised.
        """
        products = _check_products(products)
        n = len(products)
        clean = CleanReport()

        def unpack(edges):
            if edges is None:
                e = torch.empty(0, dtype=torch.long)
                return e, e.clone(), torch.empty(0, dtype=torch.float32)
            if len(edges) not in (2, 3):
                raise DualrecError("edges must be (src, dst) or (src, dst, weight)")
            s, d = _as_long(edges[0]), _as_long(edges[1])
            if s.numel() != d.numel():
                raise DualrecError("edge endpoint arrays differ in length")
            w = _as_weight(edges[2] if len(edges) == 3 else None, s.numel())
            if s.numel() and (min(int(s.min()), int(d.min())) < 0 or max(int(s.max()), int(d.max())) >= n):
                raise DualrecError(f"edge endpoint out of range [0, {n})")
            return s, d, w

        s, d, w = unpack(copurchase)
        loop = s == d
        clean.copurchase_self_loops = int(loop.sum())
        s, d, w, clean.copurchase_duplicates_merged = _merge_duplicates(s[~loop], d[~loop], w[~loop], n)

        a, b, sw = unpack(similar)
        loop = a == b
        clean.similar_self_loops = int(loop.sum())
        a, b, sw = a[~loop], b[~loop], sw[~loop]
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        a, b, sw, clean.similar_duplicates_merged = _merge_duplicates(lo, hi, sw, n)

        rep = dict(report or {})
        rep["clean"] = clean.as_dict()
        return cls(products, s, d, w, a, b, sw, rep), clean

    # ------------------------------------------------------------------ sizes
    @property
    def num_products(self) -> int:
        return len(self.products)

    @property
    def num_copurchase(self) -> int:
        return int(self.cp_src.numel())

    @property
    def num_similar(self) -> int:
        """Number of undirected similarity pairs."""
        return int(self.sim_a.numel())

    @property
    def ids(self) -> np.ndarray:
        return self.products["id"].to_numpy()

    def summary(self) -> dict:
        return {
            "products": self.num_products,
            "copurchase_edges": self.num_copurchase,
            "reciprocal_copurchase_edges": int(self.reciprocal_mask().sum()),
            "similar_pairs": self.num_similar,
            "metadata_columns": [c for c in self.products.columns if c != "id"],
        }

    # ------------------------------------------------------------------ ids
    def index_of(self, ids: Iterable[str]) -> torch.Tensor:
        """Row indexes of product ids; raises :class:`UnknownProductError` naming the unknown ones."""
        if self._id_index is None:
            self._id_index = IdIndex(self.products["id"])
        return torch.as_tensor(self._id_index.rows(ids), dtype=torch.long)

    # ------------------------------------------------------------------ structure
    def reciprocal_mask(self, src: torch.Tensor | None = None, dst: torch.Tensor | None = None) -> torch.Tensor:
        """For edges (src, dst) (default: all co-purchase edges), whether dst -> src is a co-purchase edge."""
        n, e = self.num_products, self.cp_src.numel()
        if e == 0:
            return torch.zeros((e if src is None else src.numel(),), dtype=torch.bool)
        if src is None:  # every edge: one search of the sorted keys (unique: an invariant of from_edges)
            keys = self.cp_src * n + self.cp_dst
            rev = self.cp_dst * n + self.cp_src
            pos = torch.searchsorted(keys, rev).clamp(max=e - 1)
            return keys[pos] == rev
        # A few edges (an evaluation's): the reverse's row of the sorted edge list, then a
        # vectorised bisection within it, so the cost follows the queries, not every edge's key.
        lo = torch.searchsorted(self.cp_src, dst)
        hi = torch.searchsorted(self.cp_src, dst, right=True)
        a, b = lo.clone(), hi.clone()
        for _ in range(int((hi - lo).max()).bit_length() if lo.numel() else 0):
            mid = (a + b) // 2
            less = self.cp_dst[mid.clamp(max=e - 1)] < src
            a, b = torch.where((a < b) & less, mid + 1, a), torch.where((a < b) & ~less, mid, b)
        return (a < hi) & (self.cp_dst[a.clamp(max=e - 1)] == src)

    def out_edges(self, nodes: torch.Tensor) -> torch.Tensor:
        """Indexes of the co-purchase edges leaving ``nodes`` (unique), read off the sorted edge
        list: their cost, not the edge count's."""
        lo = torch.searchsorted(self.cp_src, nodes)
        return ranges(lo, torch.searchsorted(self.cp_src, nodes, right=True) - lo)[1]

    def subgraph_edges(self, cp_mask: torch.Tensor | None = None) -> "ProductGraph":
        """Same products, only the co-purchase edges where ``cp_mask`` is true (similarity kept)."""
        if cp_mask is None:
            return self
        return ProductGraph(
            self.products,
            self.cp_src[cp_mask],
            self.cp_dst[cp_mask],
            self.cp_weight[cp_mask],
            self.sim_a,
            self.sim_b,
            self.sim_weight,
            self.report,
        )

    # ------------------------------------------------------------------ io
    def save(self, path: str | Path) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        if path.exists() and not path.is_dir():
            raise DualrecError(f"{path} is a file; the dataset is a folder: give a new folder name")
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(self.products, preserve_index=False), path / "products.parquet")
        pq.write_table(
            pa.table({"src": self.cp_src.numpy(), "dst": self.cp_dst.numpy(), "weight": self.cp_weight.numpy()}),
            path / "copurchase.parquet",
        )
        pq.write_table(
            pa.table({"a": self.sim_a.numpy(), "b": self.sim_b.numpy(), "weight": self.sim_weight.numpy()}),
            path / "similar.parquet",
        )
        meta = {"format_version": FORMAT_VERSION, "summary": self.summary(), "report": self.report}
        (path / "graph.json").write_text(json.dumps(meta, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ProductGraph":
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.is_dir():
            raise DualrecError(f"dataset folder not found: {path}")
        missing = [f for f in ("products.parquet", "copurchase.parquet", "similar.parquet") if not (path / f).exists()]
        if missing:
            raise DualrecError(
                f"{path} is not a dualrec dataset folder (missing {', '.join(missing)}); "
                "create one with `dualrec ingest`"
            )
        meta = json.loads((path / "graph.json").read_text()) if (path / "graph.json").exists() else {}
        if meta.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise DualrecError(f"{path} was written by a newer dualrec (format {meta['format_version']})")
        products = pq.read_table(path / "products.parquet").to_pandas()
        cp = pq.read_table(path / "copurchase.parquet")
        sim = pq.read_table(path / "similar.parquet")
        t = lambda col, dt: torch.from_numpy(np.array(col.to_numpy(), copy=True)).to(dt)  # noqa: E731
        return cls(
            _check_products(products),
            t(cp["src"], torch.long),
            t(cp["dst"], torch.long),
            t(cp["weight"], torch.float32),
            t(sim["a"], torch.long),
            t(sim["b"], torch.long),
            t(sim["weight"], torch.float32),
            meta.get("report", {}),
        )


def _check_products(products: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(products, pd.DataFrame):
        raise DualrecError("products must be a pandas DataFrame")
    if "id" not in products.columns:
        raise DualrecError(f"products table needs an 'id' column (found: {list(products.columns)})")
    products = products.reset_index(drop=True)
    if products["id"].isna().any():
        raise DualrecError(f"{int(products['id'].isna().sum())} product(s) have an empty id")
    products["id"] = products["id"].astype(str)
    dup = products["id"].duplicated()
    if dup.any():
        raise DualrecError(
            f"{int(dup.sum())} duplicate product id(s), e.g. {products['id'][dup].iloc[0]!r}; ids must be unique"
        )
    cols = ["id"] + [c for c in products.columns if c != "id"]
    return products[cols]


# ---------------------------------------------------------------------- adjacency
def _csr(row: torch.Tensor, col: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor:
    order = torch.argsort(row * n + col)
    row, col, w = row[order], col[order], w[order]
    crow = torch.zeros(n + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=n), 0)
    with warnings.catch_warnings():  # "CSR support is in beta": it is what we measured fastest
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, w, size=(n, n), check_invariants=False)


def _normalized_weights(row, n, weight, normalize):
    w = torch.ones(row.numel(), dtype=torch.float32) if weight is None else weight.to(torch.float32)
    if normalize == "mean" and row.numel():
        deg = torch.zeros(n, dtype=torch.float32).index_add_(0, row, w)
        w = w / deg[row].clamp(min=1e-12)
    return w


def csr_adjacency(
    row: torch.Tensor, col: torch.Tensor, n: int, weight: torch.Tensor | None = None, normalize: str = "mean"
) -> torch.Tensor:
    """A sparse CSR ``n x n`` matrix A with A[row, col] = w, row-normalised for mean aggregation.

    ``A @ X`` then gives, for every node ``r``, the (weighted) mean of ``X[c]`` over its
    neighbours ``c`` (zero for nodes without neighbours). Built with vectorised ops only.
    """
    return _csr(row, col, _normalized_weights(row, n, weight, normalize), n)


def csr_adjacency_pair(
    row: torch.Tensor, col: torch.Tensor, n: int, weight: torch.Tensor | None = None, normalize: str = "mean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, A^T)`` as two CSR matrices: the transpose serves the backward pass of ``A @ X``."""
    w = _normalized_weights(row, n, weight, normalize)
    return _csr(row, col, w, n), _csr(col, row, w, n)


def ranges(start: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(owner, position)`` of ``start[i] .. start[i] + lens[i] - 1`` for every ``i``, concatenated
    and vectorised: the entries of several CSR rows, the matches of several sorted keys."""
    owner = torch.repeat_interleave(torch.arange(lens.numel()), lens)
    offsets = torch.cumsum(lens, 0) - lens
    return owner, torch.arange(owner.numel()) - offsets[owner] + start[owner]


def csr_row_range(a: torch.Tensor, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`csr_row_bags` of the rows ``start .. stop - 1`` of a sparse CSR matrix, as views
    of its arrays (no copy)."""
    crow = a.crow_indices()
    lo, hi = int(crow[start]), int(crow[stop])
    return crow[start:stop] - lo, a.col_indices()[lo:hi], a.values()[lo:hi]


def csr_row_bags(a: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The entries of ``rows`` of a sparse CSR matrix as ``EmbeddingBag`` input: ``(offsets,
    column, value)``, row ``i``'s entries starting at ``offsets[i]``. Reads only those rows (their
    cost, not N's)."""
    crow = a.crow_indices()
    start = crow.index_select(0, rows)
    lens = crow.index_select(0, rows + 1) - start
    _, pos = ranges(start, lens)
    return torch.cumsum(lens, 0) - lens, a.col_indices().index_select(0, pos), a.values().index_select(0, pos)
