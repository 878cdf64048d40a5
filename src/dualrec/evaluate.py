"""The evaluator: one code path that scores every method (the GNN and all baselines).

OGB-style: the input contract is documented here, every input is validated strictly, and the
metrics are computed exactly (tie-aware), so that numbers from different methods compare.

Input contract
--------------
A method is given to the evaluator as a **score function**::

    score_fn(query: LongTensor (Q,)) -> FloatTensor (Q, N)

``query`` holds product row indexes (a CPU ``torch.long`` tensor, unique, sorted); the result
holds, for every query, a score for **all** ``N`` products (higher = more related). It may live
on any device (the comparisons run there), must have a floating dtype, and may contain
``-inf`` (= "never recommend") but not ``NaN`` or ``+inf``. It is called under
``torch.no_grad()``, once per distinct query product, in chunks of at most
``max(1, chunk_elems // N)`` queries. The evaluator never modifies the returned tensor.

Protocol (related-product ranking, filtered, over all products)
---------------------------------------------------------------
Each held-out edge ``src[i] -> dst[i]`` is one query: all ``N`` products are ranked for
``src[i]``. The *candidates* are all products except

* the query product ``src[i]`` itself;
* every ``exclude_dst[j]`` with ``exclude_src[j] == src[i]`` (the caller passes the
  training out-neighbours here, i.e. edges the model was allowed to see);
* the *other* held-out targets of the same query, ``dst[j]`` with ``src[j] == src[i]``,
  ``j != i`` (filtered ranking, as in knowledge-graph evaluation: ranking another correct
  answer above the target is not a miss).

The target ``dst[i]`` itself is always a candidate. Excluded products never count, whatever
their score (also when it equals the target's).

Ties are resolved *in expectation*, never by index order. With ``g`` = #candidates scoring
strictly higher than the target and ``e`` = #other candidates scoring exactly the same, the
target's position under uniformly random tie-breaking is uniform on ``{g+1, ..., g+e+1}``;
the reported metrics are the exact expectations:

* ``HitRate@k = mean_i P(pos_i <= k) = mean_i clip((k - g_i) / (e_i + 1), 0, 1)``
* ``MRR@k = mean_i E[1(pos_i <= k) / pos_i]
  = mean_i (H(min(g_i + e_i + 1, k)) - H(g_i)) / (e_i + 1)`` if ``g_i < k`` else 0,
  with ``H`` the harmonic numbers (computed in float64).

So a constant score function gets exactly the random-ranking baseline, not a lucky or unlucky
fixed order. The result has keys ``"HitRate@k"`` and ``"MRR@k"`` for every ``k`` in ``ks``
and ``"num_queries"`` (the number of held-out edges evaluated; an ``int``).

Validation (:class:`EvaluationError`, a ``ValueError``): ``src``/``dst`` (and
``exclude_src``/``exclude_dst``) are equally long 1-D integer tensors with indexes in
``[0, N)``; the held-out set is non-empty, has no duplicate ``(src, dst)`` pair and no
self-loop ``src == dst``; no held-out pair is also an exclude pair (its target would be
excluded); scores have shape ``(Q, N)``, a floating dtype and no ``NaN``/``+inf``.

Direction
---------
:func:`direction_accuracy` measures whether a method knows the *direction* of co-purchase:
for held-out edges ``u -> v`` it is the fraction with ``score(u -> v) > score(v -> u)``
(ties count 0.5). It takes a *pair score function* ``pair_score_fn(u, v) -> (E,)``; use
:func:`pair_fn_from_score_fn` to derive one from a row score function. The caller must pass
one-way edges only (drop edges whose reverse is also an edge, e.g. with
``ProductGraph.reciprocal_mask``): for a reciprocal pair neither direction is "right".

Example::

    ev = RankingEvaluator(graph.num_products, ks=(5, 10, 20))
    metrics = ev.eval(model.score, test_src, test_dst, exclude_src=train_src, exclude_dst=train_dst)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from dualrec.graph import DualrecError, ranges
from dualrec.split import TEST, TRAIN, VAL

if TYPE_CHECKING:
    from dualrec.graph import ProductGraph
    from dualrec.split import EdgeSplit

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
"""query node indexes (Q,) -> scores (Q, N) for ALL N products; higher = more related."""

PairScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(u (E,), v (E,)) -> scores (E,) of the directed pairs u -> v; higher = more related."""

__all__ = [
    "EvaluationError",
    "PairScoreFn",
    "RankingEvaluator",
    "ScoreFn",
    "direction_accuracy",
    "evaluate_method",
    "metrics_from_ranks",
    "pair_fn_from_score_fn",
    "RowMemo",
    "KS",
]


class EvaluationError(DualrecError, ValueError):
    """Invalid evaluator input (a ``ValueError``; the CLI prints it without a stack trace)."""


# ---------------------------------------------------------------------- metrics
def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(int(k) for k in ks)
    except TypeError as exc:
        raise EvaluationError(f"ks must be a sequence of positive integers, got {ks!r}") from exc
    if not out or any(k < 1 or k != kk for k, kk in zip(out, ks)):
        raise EvaluationError(f"ks must be a non-empty sequence of positive integers, got {ks!r}")
    if len(set(out)) != len(out):
        raise EvaluationError(f"ks has duplicates: {ks!r}")
    return out


def metrics_from_ranks(n_greater: torch.Tensor, n_equal: torch.Tensor, ks: Sequence[int] = (5, 10, 20)) -> dict:
    """Exact tie-aware ``HitRate@k`` / ``MRR@k`` from per-query counts (see the module docstring).

    Args:
        n_greater: (E,) #candidates scoring strictly higher than each target (``g``).
        n_equal: (E,) #other candidates scoring exactly the target's score (``e``).
        ks: cut-offs.

    Returns:
        ``{"HitRate@k": float, "MRR@k": float for k in ks, "num_queries": int}``.
    """
    ks = _check_ks(ks)
    g = torch.as_tensor(n_greater).reshape(-1).to("cpu", torch.float64)
    e = torch.as_tensor(n_equal).reshape(-1).to("cpu", torch.float64)
    if g.numel() != e.numel():
        raise EvaluationError(f"n_greater has {g.numel()} entries but n_equal has {e.numel()}")
    if g.numel() == 0:
        raise EvaluationError("no queries to compute metrics over")
    if bool((g < 0).any() | (e < 0).any()):
        raise EvaluationError("n_greater and n_equal must be non-negative")
    kmax = max(ks)
    # H[m] = 1 + 1/2 + ... + 1/m for m = 0..kmax: both arguments below are <= k <= kmax.
    harm = torch.zeros(kmax + 1, dtype=torch.float64)
    harm[1:] = torch.cumsum(1.0 / torch.arange(1, kmax + 1, dtype=torch.float64), 0)
    out: dict = {}
    for k in ks:
        hit = ((k - g) / (e + 1)).clamp(0.0, 1.0)
        inside = g < k
        lo = g.clamp(max=k).long()
        hi = (g + e + 1).clamp(max=k).long()
        mrr = torch.where(inside, (harm[hi] - harm[lo]) / (e + 1), torch.zeros_like(g))
        out[f"HitRate@{k}"] = float(hit.mean())
        out[f"MRR@{k}"] = float(mrr.mean())
    out["num_queries"] = int(g.numel())
    return out


# ---------------------------------------------------------------------- validation helpers
def _check_index(x, name: str, n: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise EvaluationError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if x.dim() != 1:
        raise EvaluationError(f"{name} must be 1-D, got shape {tuple(x.shape)}")
    if x.dtype == torch.bool or x.is_floating_point() or x.is_complex():
        raise EvaluationError(f"{name} must be an integer (torch.long) tensor, got {x.dtype}")
    x = x.to("cpu", torch.long)
    if x.numel():
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= n:
            bad = int(((x < 0) | (x >= n)).sum())
            raise EvaluationError(f"{name} has {bad} index(es) out of range [0, {n}) (min {lo}, max {hi})")
    return x


def _check_pairs(a, b, name_a: str, name_b: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    a = _check_index(a, name_a, n)
    b = _check_index(b, name_b, n)
    if a.numel() != b.numel():
        raise EvaluationError(f"{name_a} has {a.numel()} entries but {name_b} has {b.numel()}")
    return a, b


def _check_scores(s, rows: int, n: int, what: str = "score_fn") -> torch.Tensor:
    if not isinstance(s, torch.Tensor):
        raise EvaluationError(f"{what} must return a torch tensor, got {type(s).__name__}")
    if tuple(s.shape) != (rows, n):
        raise EvaluationError(f"{what} returned shape {tuple(s.shape)}; expected ({rows}, {n}) = (queries, products)")
    if not s.is_floating_point():
        raise EvaluationError(f"{what} must return floating-point scores, got {s.dtype}")
    if s.numel() == 0:
        return s
    top = float(s.max())  # one fast pass: max propagates NaN, and is +inf iff some entry is
    if math.isnan(top):
        raise EvaluationError(f"{what} returned {int(torch.isnan(s).sum())} NaN score(s)")
    if top == math.inf:
        n_pinf = int(torch.isposinf(s).sum())
        raise EvaluationError(f"{what} returned {n_pinf} +inf score(s) (only finite or -inf allowed)")
    return s


def _rows_per_chunk(n: int, chunk_elems: int) -> int:
    return max(1, int(chunk_elems) // max(1, n))


# ---------------------------------------------------------------------- ranking evaluator
class RankingEvaluator:
    """Filtered, tie-aware related-product ranking over all products (see the module docstring).

    Args:
        num_products: N, the number of products (columns of every score row).
        ks: cut-offs for ``HitRate@k`` and ``MRR@k``.
        chunk_elems: memory bound: at most ``max(1, chunk_elems // N)`` score rows (queries, and
            separately gathered per-edge rows) are held at a time.
    """

    def __init__(self, num_products: int, ks: Sequence[int] = (5, 10, 20), chunk_elems: int = 2**25):
        if int(num_products) != num_products or num_products < 2:
            raise EvaluationError(f"num_products must be an integer >= 2, got {num_products!r}")
        if int(chunk_elems) != chunk_elems or chunk_elems < 1:
            raise EvaluationError(f"chunk_elems must be a positive integer, got {chunk_elems!r}")
        self.num_products = int(num_products)
        self.ks = _check_ks(ks)
        self.chunk_elems = int(chunk_elems)

    # .................................................................. public API
    def eval(
        self,
        score_fn: ScoreFn,
        src: torch.Tensor,
        dst: torch.Tensor,
        exclude_src: torch.Tensor | None = None,
        exclude_dst: torch.Tensor | None = None,
        show_progress: bool = False,
    ) -> dict[str, float]:
        """Metrics ``{"HitRate@k", "MRR@k" for k in ks, "num_queries"}`` over held-out edges ``src -> dst``."""
        g, e = self.ranks(score_fn, src, dst, exclude_src, exclude_dst, show_progress)
        return metrics_from_ranks(g, e, self.ks)

    def ranks(
        self,
        score_fn: ScoreFn,
        src: torch.Tensor,
        dst: torch.Tensor,
        exclude_src: torch.Tensor | None = None,
        exclude_dst: torch.Tensor | None = None,
        show_progress: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per held-out edge (input order): ``(n_greater, n_equal)`` as CPU long tensors.

        ``n_greater[i]`` = #candidates of query ``src[i]`` scoring strictly higher than
        ``dst[i]``; ``n_equal[i]`` = #other candidates scoring exactly the same.
        """
        from tqdm.auto import tqdm

        n = self.num_products
        src, dst, ex_keys = self._validate(src, dst, exclude_src, exclude_dst)
        E = src.numel()

        # Held-out edges sorted by (src, dst): edges of one query are contiguous.
        keys = src * n + dst
        order = torch.argsort(keys)
        s_src, s_dst, s_keys = src[order], dst[order], keys[order]
        uq, counts = torch.unique_consecutive(s_src, return_counts=True)
        R = uq.numel()
        edge_row = torch.repeat_interleave(torch.arange(R), counts)  # query row of each sorted edge
        edge_ptr = torch.zeros(R + 1, dtype=torch.long)
        edge_ptr[1:] = torch.cumsum(counts, 0)

        # Exclusion CSR over query rows: query itself + exclude pairs + all held-out pairs.
        if ex_keys.numel():
            ex_src = ex_keys // n
            pos = torch.searchsorted(uq, ex_src).clamp(max=R - 1)
            ex_keys = ex_keys[uq[pos] == ex_src]  # only exclusions of queried products matter
        x_keys = torch.unique(torch.cat([ex_keys, s_keys, uq * n + uq]))  # sorted
        x_row = torch.searchsorted(uq, x_keys // n)
        x_col = x_keys % n
        x_ptr = torch.zeros(R + 1, dtype=torch.long)
        x_ptr[1:] = torch.cumsum(torch.bincount(x_row, minlength=R), 0)

        n_greater = torch.empty(E, dtype=torch.long)
        n_equal = torch.empty(E, dtype=torch.long)
        step = _rows_per_chunk(n, self.chunk_elems)
        starts = range(0, R, step)
        for a in tqdm(starts, total=len(starts), desc="evaluating", unit="chunk", disable=not show_progress):
            b = min(a + step, R)
            with torch.no_grad():
                raw = score_fn(uq[a:b].clone())
            raw = _check_scores(raw, b - a, n)
            dev = raw.device
            scores = raw.clone(memory_format=torch.contiguous_format)  # never touch the caller's tensor
            del raw
            ea, eb = int(edge_ptr[a]), int(edge_ptr[b])
            rows_e = (edge_row[ea:eb] - a).to(dev)
            target = scores[rows_e, s_dst[ea:eb].to(dev)]  # read before masking
            xa, xb = int(x_ptr[a]), int(x_ptr[b])
            scores[(x_row[xa:xb] - a).to(dev), x_col[xa:xb].to(dev)] = float("-inf")
            n_masked = (x_ptr[a + 1 : b + 1] - x_ptr[a:b]).to(dev)  # per row; includes the target(s)
            for c in range(0, eb - ea, step):
                d = min(c + step, eb - ea)
                r, t = rows_e[c:d], target[c:d, None]
                # One edge per row, in row order (the common case): no need to copy the rows.
                same = d - c == scores.shape[0] and bool((r == torch.arange(d - c, device=dev)).all())
                block = scores if same else scores[r]
                # (int32 sums: a bool sum into int64 is twice as slow on the CPU; N < 2^31)
                gt = (block > t).sum(1, dtype=torch.int32)
                eq = (block == t).sum(1, dtype=torch.int32)
                del block
                # Excluded entries are -inf: never > t, but == t when the target is -inf itself.
                # All of the row's excluded entries (the target included) are then subtracted.
                eq = torch.where(t[:, 0] == float("-inf"), eq - n_masked[r], eq)
                n_greater[ea + c : ea + d] = gt.cpu()
                n_equal[ea + c : ea + d] = eq.cpu()
            del scores

        out_g = torch.empty_like(n_greater)
        out_e = torch.empty_like(n_equal)
        out_g[order] = n_greater
        out_e[order] = n_equal
        return out_g, out_e

    # .................................................................. validation
    def _validate(self, src, dst, exclude_src, exclude_dst):
        n = self.num_products
        src, dst = _check_pairs(src, dst, "src", "dst", n)
        if src.numel() == 0:
            raise EvaluationError("the held-out set is empty (no src -> dst edges to evaluate)")
        loops = src == dst
        if bool(loops.any()):
            i = int(loops.nonzero()[0, 0])
            raise EvaluationError(
                f"{int(loops.sum())} held-out edge(s) are self-loops (src == dst), "
                f"e.g. ({int(src[i])}, {int(dst[i])}); "
                "the query product is never a candidate"
            )
        keys = src * n + dst
        uniq, cnt = torch.unique(keys, return_counts=True)
        if bool((cnt > 1).any()):
            k = int(uniq[cnt > 1][0])
            raise EvaluationError(
                f"{int((cnt - 1).clamp(min=0).sum())} duplicate held-out edge(s), e.g. ({k // n}, {k % n}); "
                "each (src, dst) pair must be held out once"
            )
        if (exclude_src is None) != (exclude_dst is None):
            raise EvaluationError("pass both exclude_src and exclude_dst, or neither")
        if exclude_src is None:
            return src, dst, torch.empty(0, dtype=torch.long)
        xs, xd = _check_pairs(exclude_src, exclude_dst, "exclude_src", "exclude_dst", n)
        ex_keys = torch.unique(xs * n + xd)  # sorted; duplicates in the exclude set are harmless
        if ex_keys.numel():
            pos = torch.searchsorted(ex_keys, uniq).clamp(max=ex_keys.numel() - 1)
            both = ex_keys[pos] == uniq
            if bool(both.any()):
                k = int(uniq[both][0])
                raise EvaluationError(
                    f"{int(both.sum())} held-out edge(s) are also in the exclude set, e.g. ({k // n}, {k % n}); "
                    "their target would be excluded (training and held-out edges must be disjoint)"
                )
        return src, dst, ex_keys


# ---------------------------------------------------------------------- direction
def pair_fn_from_score_fn(score_fn: ScoreFn, num_products: int, chunk_elems: int = 2**25) -> PairScoreFn:
    """A :data:`PairScoreFn` from a row :data:`ScoreFn`: ``score[u, v]`` by chunked row scoring.

    ``score_fn`` is called once per distinct ``u`` (in chunks of ``max(1, chunk_elems // N)``
    rows) and the row entries are gathered; results are returned on the CPU as float64.
    """
    n = int(num_products)
    step = _rows_per_chunk(n, chunk_elems)

    def pair_fn(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        u, v = _check_pairs(u, v, "u", "v", n)
        out = torch.empty(u.numel(), dtype=torch.float64)
        if u.numel() == 0:
            return out
        order = torch.argsort(u)
        su, sv = u[order], v[order]
        uq, counts = torch.unique_consecutive(su, return_counts=True)
        ptr = torch.zeros(uq.numel() + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(counts, 0)
        row = torch.repeat_interleave(torch.arange(uq.numel()), counts)
        vals = torch.empty(u.numel(), dtype=torch.float64)
        for a in range(0, uq.numel(), step):
            b = min(a + step, uq.numel())
            with torch.no_grad():
                s = _check_scores(score_fn(uq[a:b].clone()), b - a, n)
            ea, eb = int(ptr[a]), int(ptr[b])
            vals[ea:eb] = s[(row[ea:eb] - a).to(s.device), sv[ea:eb].to(s.device)].to("cpu", torch.float64)
        out[order] = vals
        return out

    return pair_fn


def direction_accuracy(
    pair_score_fn: PairScoreFn,
    src: torch.Tensor,
    dst: torch.Tensor,
    num_products: int | None = None,
    chunk_size: int = 2**20,
) -> float:
    """Fraction of edges ``u -> v`` with ``score(u -> v) > score(v -> u)``; ties count 0.5.

    Args:
        pair_score_fn: ``(u, v) -> (E,)`` scores of pairs ``u -> v`` (see
            :func:`pair_fn_from_score_fn` to derive one from a :data:`ScoreFn`).
        src, dst: one-way edges only (the caller drops reciprocal pairs); no self-loops.
        num_products: if given, indexes are range-checked against ``[0, num_products)``.
        chunk_size: edges scored per call of ``pair_score_fn``.

    A method that ignores direction (symmetric scores) gets exactly 0.5.
    """
    n = int(num_products) if num_products is not None else None
    bound = n if n is not None else torch.iinfo(torch.long).max
    src, dst = _check_pairs(src, dst, "src", "dst", bound)
    if src.numel() == 0:
        raise EvaluationError("no edges to compute direction accuracy over")
    loops = src == dst
    if bool(loops.any()):
        raise EvaluationError(f"{int(loops.sum())} edge(s) are self-loops (src == dst); they have no direction")
    if int(chunk_size) < 1:
        raise EvaluationError(f"chunk_size must be positive, got {chunk_size!r}")
    total = 0.0
    E = src.numel()
    for a in range(0, E, int(chunk_size)):
        u, v = src[a : a + chunk_size], dst[a : a + chunk_size]
        with torch.no_grad():
            fwd = pair_score_fn(u, v)
            bwd = pair_score_fn(v, u)
        for name, s in (("forward", fwd), ("backward", bwd)):
            if not isinstance(s, torch.Tensor) or s.reshape(-1).numel() != u.numel() or s.dim() > 1:
                shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
                raise EvaluationError(f"pair_score_fn ({name}) returned {shape}; expected ({u.numel()},)")
            n_nan = int(torch.isnan(s).sum()) if s.is_floating_point() else 0
            if n_nan:
                raise EvaluationError(f"pair_score_fn ({name}) returned {n_nan} NaN score(s)")
        fwd, bwd = fwd.reshape(-1), bwd.reshape(-1).to(fwd.device)
        total += float((fwd > bwd).sum()) + 0.5 * float((fwd == bwd).sum())
    return total / E


# ---------------------------------------------------------------------------- popularity bias
def long_tail_targets(in_degree: torch.Tensor, share: float = 0.5) -> torch.Tensor:
    """Boolean mask of the *long tail*: the ``share`` of products with the lowest training in-degree.

    Ties at the cut-off are broken by product index, so exactly ``round(share * N)`` products
    are in the tail.
    """
    n = in_degree.numel()
    order = torch.argsort(in_degree.double() + torch.arange(n, dtype=torch.float64) / (2.0 * n), stable=True)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[: int(round(share * n))]] = True
    return mask


@torch.no_grad()
def recommendation_bias(
    score_fn: ScoreFn,
    queries: torch.Tensor,
    in_degree: torch.Tensor,
    k: int = 10,
    exclude_src: torch.Tensor | None = None,
    exclude_dst: torch.Tensor | None = None,
    head_share: float = 0.01,
    chunk_elems: int = 2**25,
) -> dict:
    """Popularity bias of top-k lists over ``queries``.

    Returns ``head_share@k``: the share of all top-k slots taken by the ``head_share`` (1 %)
    most popular products (by ``in_degree``); ``coverage@k``: distinct recommended products /
    N; ``long_tail_share@k``: share of slots taken by the lower 50 % by in-degree. The query
    and its ``exclude`` pairs are never recommended (as in ranking evaluation). Ties are broken
    by ``torch.topk`` (scores are continuous for learned models).
    """
    n = in_degree.numel()
    queries = torch.unique(queries)
    n_head = max(1, int(round(head_share * n)))
    head = torch.zeros(n, dtype=torch.bool)
    head[torch.argsort(in_degree, descending=True, stable=True)[:n_head]] = True
    tail = long_tail_targets(in_degree)
    if exclude_src is not None:
        order = torch.argsort(exclude_src, stable=True)
        ex_src, ex_dst = exclude_src[order], exclude_dst[order]
    seen = torch.zeros(n, dtype=torch.bool)
    slots = head_slots = tail_slots = 0
    rows = max(1, chunk_elems // max(n, 1))
    for lo in range(0, queries.numel(), rows):
        q = queries[lo : lo + rows]
        s = score_fn(q).clone().float()
        s[torch.arange(q.numel()), q] = float("-inf")
        if exclude_src is not None:
            a = torch.searchsorted(ex_src, q)
            b = torch.searchsorted(ex_src, q, right=True)
            r, pos = ranges(a, b - a)
            s[r, ex_dst[pos]] = float("-inf")
        top = torch.topk(s, min(k, n - 1), dim=1)
        idx = top.indices[torch.isfinite(top.values)]
        seen[idx] = True
        slots += idx.numel()
        head_slots += int(head[idx].sum())
        tail_slots += int(tail[idx].sum())
    return {
        f"head_share@{k}": head_slots / max(slots, 1),
        f"coverage@{k}": int(seen.sum()) / n,
        f"long_tail_share@{k}": tail_slots / max(slots, 1),
    }


#: the cut-offs every benchmark table reports
KS = (5, 10, 20)


class RowMemo:
    """Caches the score rows of an expensive ``score_fn`` (up to ``max_bytes``).

    The evaluation asks for a query's row up to three times (ranks, popularity bias, direction
    accuracy); a two-stage row costs candidate generation and a boosted-tree pass, so it is
    computed once. Rows beyond the budget are recomputed, never dropped.
    """

    def __init__(self, score_fn, num_products: int, max_bytes: int = 2 << 30):
        self.score_fn, self.n = score_fn, int(num_products)
        self.max_rows = max(0, int(max_bytes) // (4 * self.n))
        self.rows: dict[int, torch.Tensor] = {}

    def __call__(self, query: torch.Tensor) -> torch.Tensor:
        q = query.tolist()
        missing = sorted({u for u in q if u not in self.rows})
        fresh = {}
        if missing:
            got = self.score_fn(torch.tensor(missing, dtype=torch.long))
            fresh = dict(zip(missing, got))
            for u in missing[: max(0, self.max_rows - len(self.rows))]:
                self.rows[u] = fresh[u].clone()  # a view would keep the whole batch alive
        if not q:
            return torch.empty(0, self.n)
        return torch.stack([self.rows[u] if u in self.rows else fresh[u] for u in q])


# ---------------------------------------------------------------------- evaluation
def evaluate_method(
    graph: ProductGraph,
    split: EdgeSplit,
    score_fn,
    pair_score_fn,
    part: int = TEST,
    max_edges: int | None = None,
    seed: int = 0,
    edge_mask: torch.Tensor | None = None,
    bias: bool = False,
    show_progress: bool = False,
) -> dict:
    """HitRate/MRR@{5,10,20} + direction accuracy of a method on one split part.

    Exactly :func:`dualrec.train.evaluate_embeddings` for any score function: the same
    subsample (``max_edges``, ``seed``), the same known-edge exclusion (TRAIN, and VAL for the
    test), the same one-way edges for direction. ``num_queries`` = edges evaluated and
    ``num_one_way`` = edges in the direction accuracy are added, and ``long_tail``: HitRate/MRR@10
    over the edges whose target is in the long tail (the lower 50 % of products by TRAIN
    in-degree, :func:`~dualrec.evaluate.long_tail_targets`). ``edge_mask`` evaluates those
    edges instead of the whole ``part`` (cold start); ``bias=True`` adds the popularity bias
    of the top-10 lists of the evaluated queries (:func:`~dualrec.evaluate.recommendation_bias`).
    """
    mask = split.mask(part) if edge_mask is None else edge_mask
    src, dst = graph.cp_src[mask], graph.cp_dst[mask]
    if src.numel() == 0:
        raise DualrecError("the split has no held-out edges to evaluate (the graph is too small)")
    if max_edges is not None and src.numel() > max_edges:
        keep = torch.randperm(src.numel(), generator=torch.Generator().manual_seed(seed))[:max_edges]
        src, dst = src[keep], dst[keep]
    known = split.mask(TRAIN) | (split.mask(VAL) if part == TEST else torch.zeros_like(mask))
    ex_src, ex_dst = graph.cp_src[known], graph.cp_dst[known]
    g, e = RankingEvaluator(graph.num_products, ks=KS).ranks(score_fn, src, dst, ex_src, ex_dst, show_progress)
    out = metrics_from_ranks(g, e, KS)
    in_degree = torch.bincount(graph.cp_dst[split.mask(TRAIN)], minlength=graph.num_products)
    tail = long_tail_targets(in_degree)[dst]
    out["long_tail"] = metrics_from_ranks(g[tail], e[tail], (10,)) if tail.any() else None
    if bias:
        out["bias"] = recommendation_bias(score_fn, src, in_degree, 10, ex_src, ex_dst)
    one_way = ~graph.reciprocal_mask(src, dst)
    out["num_one_way"] = int(one_way.sum())
    out["direction_accuracy"] = (
        direction_accuracy(pair_score_fn, src[one_way], dst[one_way], graph.num_products)
        if one_way.any() and pair_score_fn is not None
        else float("nan")
    )
    return out
