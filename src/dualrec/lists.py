"""Precomputed lists: every known product's ranked top-``k``, computed once per model version and
served by key lookup.

A shop asks for the same products again and again; their lists only change when the model
does. So ``dualrec train`` runs the online path (:meth:`dualrec.rerank.CandidateReranker.top_k`)
for every product of the catalogue in batches, and stores the result in the version's
``lists/`` folder:

* ``items.npy`` (N, k) int32: the related products' rows, best first (-1: no more);
* ``scores.npy`` (N, k) float32: their scores, as the online path gives them;
* ``lists.json``: ``k``, the products covered and how long it took.

:class:`StoredLists` reads them memory-mapped (``serve --workers N`` shares one copy through the
page cache). A list is used when the request asks for at most ``k`` products and names no
exclusions, and the product's logged co-purchases have not changed since (``add-products`` with
edges from it): everything else goes through the online path, which gives the same list.
The batches are written to the model folder's ``checkpoint/lists-*`` as they finish, so a
killed training resumes the precomputation where it stopped (``dualrec train --resume``).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import numpy as np

from dualrec.errors import DualrecError

__all__ = ["LISTS_DIR", "DEFAULT_LIST_K", "precompute_lists", "save_lists", "StoredLists"]

LISTS_DIR = "lists"
#: products per stored list (larger k goes through the online path)
DEFAULT_LIST_K = 50
FORMAT = 1


def precompute_lists(
    top_k,
    n: int,
    k: int = DEFAULT_LIST_K,
    batch: int = 2048,
    parts_dir: Path | None = None,
    key: str = "",
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """``top_k(rows, k) -> (scores, indexes)`` for rows ``0..n-1`` in batches: ``(items, scores,
    info)``. With ``parts_dir`` each finished batch is kept there (under ``key``, e.g. a hash of
    the model) and a later call with the same key skips it."""
    from tqdm.auto import tqdm

    if k < 1:
        raise DualrecError("the stored lists need k >= 1")
    t0 = time.time()
    items = np.full((n, k), -1, dtype=np.int32)
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    parts = None
    if parts_dir is not None:
        parts = Path(parts_dir) / f"lists-{hashlib.sha1(f'{key}/{n}/{k}/{batch}'.encode()).hexdigest()[:12]}"
        parts.mkdir(parents=True, exist_ok=True)
    reused = 0
    with tqdm(total=n, desc="precomputed lists", unit="product", disable=not progress) as bar:
        for lo in range(0, n, batch):
            hi = min(n, lo + batch)
            f = None if parts is None else parts / f"{lo:012d}.npz"
            if f is not None and f.exists():
                try:
                    with np.load(f, allow_pickle=False) as z:
                        items[lo:hi], scores[lo:hi] = z["items"], z["scores"]
                    reused += hi - lo
                    bar.update(hi - lo)
                    continue
                except (OSError, ValueError, KeyError):
                    f.unlink(missing_ok=True)  # a batch cut short by a kill: compute it again
            s, i = top_k(np.arange(lo, hi, dtype=np.int64), k)
            items[lo:hi, : i.shape[1]], scores[lo:hi, : s.shape[1]] = i, s
            if f is not None:
                tmp = f.with_suffix(".tmp.npz")
                np.savez(tmp, items=items[lo:hi], scores=scores[lo:hi])
                tmp.replace(f)
            bar.update(hi - lo)
    info = {"format": FORMAT, "k": int(k), "n": int(n), "seconds": round(time.time() - t0, 2), "resumed_rows": reused}
    return items, scores, info


def discard_parts(parts_dir: Path) -> None:
    """Remove the kept batches (after the version with the lists is committed)."""
    for p in Path(parts_dir).glob("lists-*"):
        shutil.rmtree(p, ignore_errors=True)


def save_lists(writer, items: np.ndarray, scores: np.ndarray, info: dict) -> None:
    """Write the lists into a model version being built (:class:`~dualrec.store.VersionWriter`)."""
    writer.save_array(f"{LISTS_DIR}/items.npy", np.ascontiguousarray(items, dtype=np.int32))
    writer.save_array(f"{LISTS_DIR}/scores.npy", np.ascontiguousarray(scores, dtype=np.float32))
    writer.save_json(f"{LISTS_DIR}/lists.json", info)


class StoredLists:
    """The precomputed lists of a model version, memory-mapped; see the module docstring.

    ``stale``: rows whose lists no longer hold (their logged co-purchases changed since).
    """

    def __init__(self, items: np.ndarray, scores: np.ndarray, info: dict, stale: np.ndarray | None = None):
        if items.shape != scores.shape or items.ndim != 2:
            raise DualrecError(f"stored lists: items {items.shape} and scores {scores.shape} differ")
        self.items, self.scores, self.info = items, scores, dict(info)
        self.ok = np.ones(items.shape[0], dtype=bool)
        if stale is not None and len(stale):
            self.ok[np.asarray(stale, dtype=np.int64)[np.asarray(stale) < items.shape[0]]] = False

    @classmethod
    def load(cls, version) -> "StoredLists | None":
        """The version's lists, or ``None`` when it has none."""
        if not version.has(f"{LISTS_DIR}/items.npy"):
            return None
        info = version.json(f"{LISTS_DIR}/lists.json")
        if info.get("format") != FORMAT:
            raise DualrecError(f"version {version.name}: stored lists of format {info.get('format')!r}")
        e = version.added_edges()
        stale = e.loc[e["kind"] == "copurchase", "a"].to_numpy(np.int64)
        items, scores = version.array(f"{LISTS_DIR}/items.npy", True), version.array(f"{LISTS_DIR}/scores.npy", True)
        return cls(items, scores, info, stale)

    @property
    def k(self) -> int:
        return int(self.items.shape[1])

    def covers(self, rows: np.ndarray, k: int) -> np.ndarray:
        """Which of ``rows`` a list of ``k`` can be read for."""
        rows = np.asarray(rows, dtype=np.int64)
        inside = rows < self.items.shape[0]
        out = np.zeros(rows.size, dtype=bool)
        if k <= self.k:
            out[inside] = self.ok[rows[inside]]
        return out

    def get(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indexes), each (Q, k), of covered ``rows`` (see :meth:`covers`)."""
        rows = np.asarray(rows, dtype=np.int64)
        return np.asarray(self.scores[rows, :k]), np.asarray(self.items[rows, :k], dtype=np.int64)
