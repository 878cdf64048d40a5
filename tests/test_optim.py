"""RowAdam: SparseAdam's update on the touched rows, plus an L2 on them."""

import pytest
import torch

from dualrec.optim import RowAdam


def _steps(opt_cls, wd_in_loss: float, steps: int = 6, **kw):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 4, sparse=True)
    opt = opt_cls(emb.parameters(), lr=0.05, **kw)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        rows = torch.randint(0, 50, (12,), generator=g)  # repeated rows: a gradient to coalesce
        e = emb(rows)
        loss = (e * torch.arange(4.0)).sum() + e.pow(3).sum()
        if wd_in_loss:
            loss = loss + 0.5 * wd_in_loss * emb(torch.unique(rows)).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return emb.weight.detach(), opt


def test_row_adam_equals_sparse_adam():
    mine, _ = _steps(RowAdam, 0.0)
    ref, _ = _steps(torch.optim.SparseAdam, 0.0)
    assert torch.allclose(mine, ref, atol=1e-6)


def test_weight_decay_is_the_l2_on_touched_rows():
    mine, _ = _steps(RowAdam, 0.0, weight_decay=0.3)
    ref, _ = _steps(torch.optim.SparseAdam, 0.3)  # the same L2 as a loss term
    plain, _ = _steps(RowAdam, 0.0)
    assert torch.allclose(mine, ref, atol=1e-6) and not torch.allclose(mine, plain, atol=1e-3)


def test_loads_a_sparse_adam_state_and_refuses_dense_gradients():
    _, sparse = _steps(torch.optim.SparseAdam, 0.0)
    emb = torch.nn.Embedding(50, 4, sparse=True)
    opt = RowAdam(emb.parameters(), lr=0.05)
    opt.load_state_dict(sparse.state_dict())
    assert opt.param_groups[0]["weight_decay"] == 0.0 and opt.state[emb.weight]["step"] == 6
    dense = torch.nn.Embedding(5, 2)
    opt = RowAdam(dense.parameters())
    dense(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()
