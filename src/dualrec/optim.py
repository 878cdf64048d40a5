"""Adam for a large embedding table of which each step touches a few rows.

:class:`RowAdam` follows :class:`torch.optim.SparseAdam` (the "lazy" Adam: the moments and
the value of a row change only in steps whose gradient has that row; bias correction counts
every step), with an L2 weight decay on the touched rows, which SparseAdam lacks. It reads,
updates and writes the touched rows with ``index_select`` / ``index_copy_``: the same update
as SparseAdam's, whose ``sparse_mask`` and sparse additions into the dense state cost several
times more per step on the CPU (tests/test_optim.py compares the two).

With ``compact=True`` its state takes about a quarter of the table's memory instead of twice
it, for catalogues whose table is too large to keep two float32 copies beside it: the first
moment in bfloat16 and one second moment per row (the mean of the row's squared gradient, as
the row-wise AdaGrad of large recommender tables: FBGEMM, DLRM; Adafactor factors it likewise).
"""

from __future__ import annotations

import math

import torch


class RowAdam(torch.optim.Optimizer):
    r"""Lazy Adam over sparse gradients (``nn.Embedding(sparse=True)``), per touched row ``r``:

    .. math::

        g_r \leftarrow g_r + \lambda w_r, \quad m_r \leftarrow \beta_1 m_r + (1-\beta_1) g_r, \quad
        v_r \leftarrow \beta_2 v_r + (1-\beta_2) g_r^2, \quad
        w_r \leftarrow w_r - \eta \frac{\sqrt{1-\beta_2^k}}{1-\beta_1^k} \frac{m_r}{\sqrt{v_r} + \epsilon}

    with ``k`` the number of steps taken. ``weight_decay`` (:math:`\lambda`) is the L2 that
    :class:`torch.optim.Adam` puts on every row, here on the rows of the step only. The state
    has SparseAdam's keys (``step``, ``exp_avg``, ``exp_avg_sq``), so either loads the other's.

    ``compact=True``: ``m_r`` is stored in bfloat16 (updated in float32, rounded when written
    back) and ``v_r`` is one number per row, :math:`\beta_2 v_r + (1-\beta_2)\,\mathrm{mean}(g_r^2)`:
    the state is a quarter of the table instead of twice it. Either form loads the other's
    state, converted.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        compact: bool = False,
    ):
        if lr <= 0 or eps <= 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(
                f"invalid RowAdam settings: lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}"
            )
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.compact = compact

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # a SparseAdam state has no weight decay
            group.setdefault("weight_decay", 0.0)
        # A state saved by the other form (a resumed checkpoint of an older version) is converted:
        # the row mean of the second moments, or each row's one spread over its weights.
        # (load_state_dict has cast every state tensor to the parameter's dtype.)
        compact = getattr(self, "compact", False)
        for st in self.state.values():
            if "exp_avg" in st:
                m, v = st["exp_avg"], st["exp_avg_sq"]
                if compact:
                    st["exp_avg"] = m.to(torch.bfloat16)
                if compact and v.dim() == 2 and v.size(1) != 1:
                    st["exp_avg_sq"] = v.mean(1, keepdim=True)
                elif not compact and v.dim() == 2 and v.size(1) == 1 and m.size(1) != 1:
                    st["exp_avg_sq"] = v.expand_as(m).contiguous()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError("RowAdam takes sparse gradients (nn.Embedding(sparse=True)); use Adam")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    if self.compact:
                        state["exp_avg"] = torch.zeros_like(p, dtype=torch.bfloat16)
                        state["exp_avg_sq"] = p.new_zeros(p.shape[0], 1)
                    else:
                        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                grad = p.grad.coalesce()
                rows, g = grad.indices()[0], grad.values()
                if rows.numel() == 0:
                    continue
                if group["weight_decay"]:
                    g = g.add(p.index_select(0, rows), alpha=group["weight_decay"])
                g2 = g * g
                if self.compact:
                    g2 = g2.mean(1, keepdim=True)
                m = state["exp_avg"].index_select(0, rows).float().lerp_(g, 1 - beta1)
                v = state["exp_avg_sq"].index_select(0, rows).lerp_(g2, 1 - beta2)
                state["exp_avg"].index_copy_(0, rows, m.to(state["exp_avg"].dtype))
                state["exp_avg_sq"].index_copy_(0, rows, v)
                k = state["step"]
                step_size = group["lr"] * math.sqrt(1 - beta2**k) / (1 - beta1**k)
                # (index_add_ with alpha= is several times slower than a scaled update)
                p.index_add_(0, rows, m.div_(v.sqrt_().add_(group["eps"])).mul_(-step_size))
        return loss
