"""dualrec.topk: the one dense top-k with exclusions."""

import pytest
import torch

from dualrec.errors import DualrecError
from dualrec.topk import masked_topk


def test_masked_topk_leaves_out_the_query_and_exclusions_and_marks_unfillable_slots():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4]])
    v, i = masked_topk(scores.clone(), 2, torch.tensor([0, 3]), [torch.tensor([1]), torch.tensor([], dtype=torch.long)])
    assert i.tolist() == [[2, 3], [2, 1]]
    v, i = masked_topk(scores.clone(), 10, torch.tensor([0, 3]), [torch.tensor([1, 2, 3]), torch.tensor([0])])
    assert i.shape == (2, 3) and i[0].tolist() == [-1, -1, -1] and torch.isneginf(v[0]).all()
    assert i[1].tolist() == [2, 1, -1]
    assert masked_topk(scores.clone(), 10)[1].shape == (2, 4)  # without a query row: k' = min(k, N)
    with pytest.raises(DualrecError):
        masked_topk(scores.clone(), 0)
