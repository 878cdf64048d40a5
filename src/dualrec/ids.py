"""Product id -> row: the one lookup that the graph, the recommender and the service share."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from dualrec.errors import DualrecError, UnknownProductError


class IdIndex:
    """Row numbers of product ids (ids are compared as text)."""

    def __init__(self, ids: Iterable, require_unique: bool = False):
        self._index = pd.Index(pd.Series(ids if hasattr(ids, "astype") else list(ids)).astype(str).to_numpy())
        if require_unique and not self._index.is_unique:
            dup = self._index[self._index.duplicated()][:5].tolist()
            raise DualrecError(f"duplicate product ids, e.g. {dup}")

    def __len__(self) -> int:
        return len(self._index)

    def rows(self, ids: Iterable) -> np.ndarray:
        """int64 rows of ``ids``, in order; :class:`UnknownProductError` names every unknown id."""
        ids = [str(i) for i in ids]
        if len(ids) <= 16:  # the common case (one id): hash lookups, without building an Index
            idx = np.array([self._loc(i) for i in ids], dtype=np.int64)
        else:
            idx = self._index.get_indexer(ids).astype(np.int64)
        if (idx < 0).any():
            raise UnknownProductError([i for i, j in zip(ids, idx) if j < 0])
        return idx

    def _loc(self, pid: str) -> int:
        try:
            r = self._index.get_loc(pid)
        except KeyError:
            return -1
        return int(r) if isinstance(r, (int, np.integer)) else -1
