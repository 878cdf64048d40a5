"""The contrastive and asymmetric terms."""

import torch

from dualrec.loss import asymmetric_loss, info_nce
from dualrec.model import DAEMON, DualAdjacency


def test_info_nce_prefers_the_positive_and_masks_collisions():
    s = torch.eye(4)
    t = torch.eye(4)
    src, dst = torch.tensor([0, 1]), torch.tensor([0, 1])  # positives aligned with the queries
    good = info_nce(s, t, src, dst, torch.tensor([2, 3]), tau=0.1)
    bad = info_nce(s, t, src, torch.tensor([2, 3]), torch.tensor([0, 1]), tau=0.1)
    assert good < bad
    # a "negative" equal to the positive target is masked: loss as if it were absent
    q, p = torch.tensor([0]), torch.tensor([0])
    with_collision = info_nce(s, t, q, p, torch.tensor([0, 2, 3]), tau=0.1, in_batch=False)
    without = info_nce(s, t, q, p, torch.tensor([2, 3]), tau=0.1, in_batch=False)
    assert torch.allclose(with_collision, without)


def test_asymmetric_term_pushes_reverse_score_down():
    """Training with the asymmetric term lowers score(v -> u) below score(u -> v) for one-way edges."""
    torch.manual_seed(0)
    n = 40
    src = torch.arange(0, 20)
    dst = torch.arange(20, 40)  # one-way edges i -> i + 20
    x = torch.randn(n, 8)
    adj = DualAdjacency.build(n, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))

    def run(asym_weight):
        torch.manual_seed(1)
        model = DAEMON(8, 16, 8)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        rev0 = None
        for step in range(150):
            s, t = model(x, adj)
            loss = info_nce(s, t, src, dst, torch.empty(0, dtype=torch.long), 0.1)
            if asym_weight:
                loss = loss + asym_weight * asymmetric_loss(s, t, src, dst, 0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if rev0 is None:
                rev0 = DAEMON.score(s.detach(), t.detach(), dst, src).mean()
        model.eval()
        with torch.no_grad():
            s, t = model(x, adj)
        return rev0, DAEMON.score(s, t, src, dst), DAEMON.score(s, t, dst, src)

    rev_start, fwd, rev = run(1.0)
    assert rev.mean() < rev_start, "reverse score must go down with training"
    assert (fwd > rev).float().mean() == 1.0
    _, fwd0, rev_no = run(0.0)
    assert rev.mean() < rev_no.mean(), "the asymmetric term must lower reverse scores vs. training without it"


def test_two_hop_negatives_are_walk_ends_and_never_known_edges():
    from dualrec.loss import two_hop_negatives

    # 0 -> 1 -> {2, 3}; 0 -> 3 is known; 4 has no out-edges
    src = torch.tensor([0, 0, 1, 1])
    dst = torch.tensor([1, 3, 2, 3])
    n = 5
    order = torch.argsort(src, stable=True)
    idx = dst[order]
    ptr = torch.zeros(n + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.bincount(src, minlength=n), 0)
    known = torch.sort(src * n + dst).values
    got = two_hop_negatives(ptr, idx, torch.tensor([0, 4]), known, n, 50, torch.Generator().manual_seed(0))
    assert got.shape == (2, 50)
    assert set(got[0].tolist()) <= {2, -1} and (got[0] == 2).any()  # 3 is a known out-neighbour of 0
    assert (got[1] == -1).all()  # dead end


def test_info_nce_row_negatives_raise_the_loss_and_minus_one_is_ignored():
    torch.manual_seed(0)
    s, t = torch.randn(6, 4), torch.randn(6, 4)
    src, dst, neg = torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4])
    base = info_nce(s, t, src, dst, neg, 0.5, in_batch=False)
    none = info_nce(s, t, src, dst, neg, 0.5, in_batch=False, row_neg=torch.full((2, 3), -1))
    more = info_nce(s, t, src, dst, neg, 0.5, in_batch=False, row_neg=torch.tensor([[5], [5]]))
    same = info_nce(s, t, src, dst, neg, 0.5, in_batch=False, row_neg=torch.tensor([[2], [3]]))  # = positive
    assert torch.isclose(base, none) and more > base and torch.isclose(base, same)


def test_empty_batches_give_a_zero_loss_that_reaches_both_sides():
    # A data-parallel worker whose share of a batch is empty still needs a gradient (zero) for
    # every parameter, or DistributedDataParallel fails on its next step.
    s = torch.randn(5, 4, requires_grad=True)
    t = torch.randn(5, 4, requires_grad=True)
    none = torch.empty(0, dtype=torch.long)
    loss = info_nce(s, t, none, none, torch.tensor([1, 2]), 0.1) + asymmetric_loss(s, t, none, none, 0.1)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert s.grad is not None and t.grad is not None
    assert not s.grad.any() and not t.grad.any()


def _reference_info_nce(s, t, src, dst, neg, tau, in_batch, row_neg):
    """The textbook form: -log_softmax over [positive, masked negatives] (B x K comparisons)."""
    q, p = s[src], t[dst]
    parts = [
        (q * p).sum(-1, keepdim=True) / tau,
        ((q @ t[neg].T) / tau).masked_fill(neg[None] == dst[:, None], -torch.inf),
    ]
    if in_batch:
        parts.append(((q @ p.T) / tau).masked_fill(dst[None] == dst[:, None], -torch.inf))
    if row_neg is not None:
        hn = (q[:, None] * t[row_neg.clamp(min=0)]).sum(-1) / tau
        parts.append(hn.masked_fill((row_neg < 0) | (row_neg == dst[:, None]), -torch.inf))
    return -torch.log_softmax(torch.cat(parts, 1), 1)[:, 0].mean()


def test_info_nce_equals_the_log_softmax_form_in_value_and_gradient():
    torch.manual_seed(0)
    n, b = 30, 12
    src, dst = torch.randint(0, n, (b,)), torch.randint(0, n, (b,))
    neg = torch.cat([torch.randint(0, n, (9,)), dst[:3], dst[:1]])  # repeated collisions included
    row_neg = torch.randint(-1, n, (b, 4))
    for in_batch, rn in [(False, None), (True, None), (False, row_neg), (True, row_neg)]:
        grads = []
        for f in (info_nce, _reference_info_nce):
            s = torch.randn(n, 5, dtype=torch.double, generator=torch.Generator().manual_seed(1)).requires_grad_()
            t = torch.randn(n, 5, dtype=torch.double, generator=torch.Generator().manual_seed(2)).requires_grad_()
            loss = (
                f(s, t, src, dst, neg, 0.2, in_batch, row_neg=rn)
                if f is info_nce
                else f(s, t, src, dst, neg, 0.2, in_batch, rn)
            )
            loss.backward()
            grads.append((loss.detach(), s.grad, t.grad))
        for a, r in zip(*grads):
            assert torch.allclose(a, r, atol=1e-10), (in_batch, rn is not None)
