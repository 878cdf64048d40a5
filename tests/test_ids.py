"""dualrec.ids: the one id -> row lookup."""

import numpy as np
import pytest

from dualrec.errors import DualrecError, UnknownProductError
from dualrec.ids import IdIndex


def test_rows_small_and_large_lists_agree_and_unknown_ids_are_named():
    ix = IdIndex([f"P{i}" for i in range(100)] + [7])  # ids compare as text: 7 -> "7"
    assert ix.rows(["P3", "7"]).tolist() == [3, 100]
    many = [f"P{i}" for i in range(99, -1, -1)]
    assert ix.rows(many).tolist() == list(range(99, -1, -1)) and ix.rows(many).dtype == np.int64
    with pytest.raises(UnknownProductError) as e:
        ix.rows(["P1", "NOPE"] + many)
    assert e.value.missing == ["NOPE"]
    with pytest.raises(DualrecError, match="duplicate product ids"):
        IdIndex(["a", "b", "a"], require_unique=True)
