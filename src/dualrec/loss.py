"""Self-supervised contrastive objective of DAEMON.

For a batch of positive pairs ``(u, v)`` (co-purchase edges ``u -> v``, and similar pairs in
both directions) with scores ``<s_u, t_v> / tau``:

* **contrastive term** (sampled softmax / InfoNCE): each positive competes against ``K``
  random products (uniform: "random unconnected nodes") and, optionally, against the other
  targets of the batch (in-batch negatives). In-batch negatives are drawn in proportion to
  popularity, so without a logQ correction they push best-sellers down: on clothing they cost
  the model with per-product embeddings 0.47 -> 0.55 val HitRate@10 (on vs off), but the
  metadata-only model needs that push to recommend brand-new products at all. ``TrainConfig``
  turns them off by default and the paper-form configuration on::

      L_c = - mean_i log( exp(p_i) / (exp(p_i) + sum_j exp(n_ij)) )

  A negative that happens to equal the positive target is masked out.

* **asymmetric term**: for a one-way edge ``u -> v`` (``v -> u`` is not an edge) the reverse
  score must stay below the forward one::

      L_a = mean softplus( (<s_v, t_u> - <s_u, t_v>) / tau )

  This rewards scoring the outbound edge and penalises scoring the inbound one (the phone
  recommends the case; the case should not recommend the phone as strongly).

Total: ``L = L_c(co-purchase) + lambda_sim * L_c(similar) + lambda_asym * L_a``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(
    s: Tensor,
    t: Tensor,
    src: Tensor,
    dst: Tensor,
    neg: Tensor,
    tau: float,
    in_batch: bool = True,
    max_in_batch: int = 2048,
    row_neg: Tensor | None = None,
) -> Tensor:
    """Sampled-softmax loss of ``src -> dst`` against ``neg`` (shared random targets) and in-batch targets.

    In-batch negatives are the targets of the first ``max_in_batch`` pairs of the batch (the
    batch is shuffled by the caller), so memory is ``O(B * (K + max_in_batch))``, not ``O(B^2)``.
    ``row_neg`` (B, H): extra negatives per pair (hard negatives), ``-1`` = none.
    """
    if src.numel() == 0:
        return (s.sum() + t.sum()) * 0.0  # every parameter in the graph (DDP expects a gradient for each)
    # index_select, not s[src]: faster row gathers, and a backward (index_add) whose order does
    # not depend on the thread count (see row_neg below). 1/tau scales the B queries, not the
    # B x K logits.
    q = s.index_select(0, src) * (1.0 / tau)
    p = t.index_select(0, dst)
    pos = (q * p).sum(-1)
    logits = q @ t.index_select(0, neg).T
    i, j = _equal_pairs(dst, neg)  # a shared negative that is the pair's own target (few)
    logits[i, j] = float("-inf")
    parts = [logits]
    if in_batch and src.numel() > 1:
        m = min(max_in_batch, dst.numel())
        ib = q @ p[:m].T
        # The positive itself (diagonal) and equal targets are not negatives.
        parts.append(ib.masked_fill(dst[None, :m] == dst[:, None], float("-inf")))
    if row_neg is not None and row_neg.numel():
        # index_select, not t[row_neg]: the backward of 2-D advanced indexing accumulates in a
        # thread-dependent order on the CPU (same seed, different models); index_add does not.
        rows = t.index_select(0, row_neg.clamp(min=0).reshape(-1)).view(*row_neg.shape, -1)
        hn = (q[:, None, :] * rows).sum(-1)
        parts.append(hn.masked_fill((row_neg < 0) | (row_neg == dst[:, None]), float("-inf")))
    logits = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return _SampledSoftmaxNLL.apply(pos, logits).mean()


def _equal_pairs(dst: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
    """All ``(i, j)`` with ``dst[i] == neg[j]``, by binary search in the sorted ``neg``: O((B + K)
    log K) instead of a B x K comparison."""
    sorted_neg, order = neg.sort()
    lo = torch.searchsorted(sorted_neg, dst)
    count = torch.searchsorted(sorted_neg, dst, right=True) - lo
    i = torch.repeat_interleave(torch.arange(dst.numel()), count)
    first = torch.repeat_interleave(lo - (count.cumsum(0) - count), count)
    return i, order[first + torch.arange(i.numel())]


class _SampledSoftmaxNLL(torch.autograd.Function):
    """``logsumexp([pos_i, logits_i]) - pos_i`` per row, i.e. ``-log_softmax(...)[:, 0]`` without
    the concatenation: the forward keeps the softmax it computes, which is the backward's
    gradient, so a step makes one exp pass over the B x K logits instead of three. Under
    bfloat16 autocast it still computes in float32."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, pos: Tensor, logits: Tensor) -> Tensor:
        m = torch.maximum(logits.amax(1), pos) if logits.size(1) else pos.clone()
        prob = (logits - m[:, None]).exp_()
        p0 = (pos - m).exp_()
        z = prob.sum(1).add_(p0)
        prob.div_(z[:, None])
        ctx.save_for_backward(prob, p0.div_(z))
        return m + z.log() - pos

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        prob, p0 = ctx.saved_tensors
        return grad * (p0 - 1), prob * grad[:, None]


def two_hop_negatives(
    ptr: Tensor, idx: Tensor, src: Tensor, known: Tensor, n: int, h: int, gen: torch.Generator | None = None
) -> Tensor:
    """``h`` hard negatives per query: ends of random 2-step walks ``u -> a -> b`` (CSR ``ptr``/``idx``).

    Products two co-purchase hops away are the plausible-but-wrong candidates a ranking must
    sort out (they are what the co-occurrence heuristic recommends). A walk that dead-ends,
    returns to ``u`` or lands on a known out-neighbour of ``u`` (``known``: sorted keys
    ``u * n + v`` of the training edges) gives ``-1`` (no negative). Vectorised, O(B * h).
    """
    B = src.numel()
    u = src.repeat_interleave(h)

    def step(x: Tensor) -> Tensor:
        deg = ptr[x + 1] - ptr[x]
        r = (torch.rand(x.numel(), generator=gen) * deg.clamp(min=1)).long()
        return torch.where(deg > 0, idx[(ptr[x] + r).clamp(max=max(idx.numel() - 1, 0))], -1)

    a = step(u)
    b = step(a.clamp(min=0))
    b = torch.where(a < 0, -1, b)
    bad = (b < 0) | (b == u)
    if known.numel():
        key = u * n + b.clamp(min=0)
        pos = torch.searchsorted(known, key).clamp(max=known.numel() - 1)
        bad |= known[pos] == key
    return torch.where(bad, -1, b).view(B, h)


def asymmetric_loss(s: Tensor, t: Tensor, src: Tensor, dst: Tensor, tau: float) -> Tensor:
    """``softplus((score(v->u) - score(u->v)) / tau)`` over one-way edges ``u -> v``."""
    if src.numel() == 0:
        return (s.sum() + t.sum()) * 0.0  # every parameter in the graph (DDP expects a gradient for each)
    fwd = (s.index_select(0, src) * t.index_select(0, dst)).sum(-1)
    rev = (s.index_select(0, dst) * t.index_select(0, src)).sum(-1)
    return F.softplus((rev - fwd) / tau).mean()
