"""Self-supervised contrastive objective of DAEMON.

For a batch of positive pairs ``(u, v)`` (co-purchase edges ``u -> v``, and similar pairs in
both directions) with scores ``<s_u, t_v> / tau``:

* **contrastive term** (sampled softmax / InfoNCE): each positive competes against ``K``
  random products (uniform: "random unconnected nodes") and against the other targets of the
  batch (in-batch negatives, which are drawn in proportion to popularity and so push back
  against recommending only best-sellers)::

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


def info_nce(s: Tensor, t: Tensor, src: Tensor, dst: Tensor, neg: Tensor, tau: float,
             in_batch: bool = True, max_in_batch: int = 2048) -> Tensor:
    """Sampled-softmax loss of ``src -> dst`` against ``neg`` (shared random targets) and in-batch targets.

    In-batch negatives are the targets of the first ``max_in_batch`` pairs of the batch (the
    batch is shuffled by the caller), so memory is ``O(B * (K + max_in_batch))``, not ``O(B^2)``.
    """
    if src.numel() == 0:
        return s.sum() * 0.0
    q = s[src]
    p = t[dst]
    pos = (q * p).sum(-1, keepdim=True) / tau
    neg_logits = (q @ t[neg].T) / tau
    neg_logits = neg_logits.masked_fill(neg[None, :] == dst[:, None], float("-inf"))
    parts = [pos, neg_logits]
    if in_batch and src.numel() > 1:
        m = min(max_in_batch, dst.numel())
        ib = (q @ p[:m].T) / tau
        # The positive itself (diagonal) and equal targets are not negatives.
        ib = ib.masked_fill(dst[None, :m] == dst[:, None], float("-inf"))
        parts.append(ib)
    logits = torch.cat(parts, dim=1)
    return -F.log_softmax(logits, dim=1)[:, 0].mean()


def asymmetric_loss(s: Tensor, t: Tensor, src: Tensor, dst: Tensor, tau: float) -> Tensor:
    """``softplus((score(v->u) - score(u->v)) / tau)`` over one-way edges ``u -> v``."""
    if src.numel() == 0:
        return s.sum() * 0.0
    fwd = (s[src] * t[dst]).sum(-1)
    rev = (s[dst] * t[src]).sum(-1)
    return F.softplus((rev - fwd) / tau).mean()
