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


def _reference_compact(steps: int = 6, lr: float = 0.05, betas=(0.9, 0.999), eps=1e-8):
    """Row-wise Adam written out on dense tensors: bfloat16 first moment, one second moment per row."""
    torch.manual_seed(0)
    w = torch.nn.Embedding(50, 4).weight.detach().clone()
    m, v, g = torch.zeros(50, 4, dtype=torch.bfloat16), torch.zeros(50, 1), torch.Generator().manual_seed(1)
    for k in range(1, steps + 1):
        rows = torch.randint(0, 50, (12,), generator=g)
        w_ = w.clone().requires_grad_(True)
        e = w_[rows]
        ((e * torch.arange(4.0)).sum() + e.pow(3).sum()).backward()
        touched = torch.unique(rows)
        gr = w_.grad[touched]
        mr = m[touched].float() * betas[0] + (1 - betas[0]) * gr
        v[touched] = v[touched] * betas[1] + (1 - betas[1]) * gr.pow(2).mean(1, keepdim=True)
        m[touched] = mr.bfloat16()
        size = lr * (1 - betas[1] ** k) ** 0.5 / (1 - betas[0] ** k)
        w[touched] -= size * mr / (v[touched].sqrt() + eps)
    return w


def test_compact_state_is_row_wise_adam_in_a_quarter_of_the_memory():
    mine, opt = _steps(RowAdam, 0.0, compact=True)
    assert torch.allclose(mine, _reference_compact(), atol=1e-6)
    full, _ = _steps(RowAdam, 0.0)
    assert not torch.allclose(mine, full, atol=1e-4)  # (a different update, so the test measures it)
    st = opt.state[opt.param_groups[0]["params"][0]]
    assert st["exp_avg"].dtype == torch.bfloat16 and st["exp_avg_sq"].shape == (50, 1)
    # a resumed optimiser keeps the compact state (load_state_dict would widen it to float32)
    emb = torch.nn.Embedding(50, 4, sparse=True)
    again = RowAdam(emb.parameters(), lr=0.05, compact=True)
    again.load_state_dict(opt.state_dict())
    assert again.state[emb.weight]["exp_avg"].dtype == torch.bfloat16
    assert torch.equal(again.state[emb.weight]["exp_avg"], st["exp_avg"])
    # the other form's state, converted both ways (a checkpoint of an older version resumed)
    _, full_opt = _steps(RowAdam, 0.0)
    full_st = full_opt.state[full_opt.param_groups[0]["params"][0]]
    again.load_state_dict(full_opt.state_dict())
    conv = again.state[emb.weight]
    assert conv["exp_avg"].dtype == torch.bfloat16 and conv["exp_avg_sq"].shape == (50, 1)
    assert torch.allclose(conv["exp_avg_sq"], full_st["exp_avg_sq"].mean(1, keepdim=True))
    back = RowAdam(emb.parameters(), lr=0.05)
    back.load_state_dict(opt.state_dict())
    assert back.state[emb.weight]["exp_avg"].dtype == torch.float32
    assert back.state[emb.weight]["exp_avg_sq"].shape == (50, 4)
    for o in (again, back):  # and both go on stepping
        emb(torch.tensor([1, 2])).sum().backward()
        o.step()
        emb.weight.grad = None
