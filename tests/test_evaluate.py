"""The evaluator: exact tie-aware metrics, filtering, chunking, validation, direction accuracy."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import pytest
import torch

from dualrec.evaluate import (
    EvaluationError,
    RankingEvaluator,
    direction_accuracy,
    metrics_from_ranks,
    pair_fn_from_score_fn,
)
from dualrec.graph import DualrecError

NEG_INF = float("-inf")


def table_fn(table: torch.Tensor, calls: list | None = None):
    """A score function backed by a full (N, N) score table; records the queries it gets."""

    def fn(q: torch.Tensor) -> torch.Tensor:
        if calls is not None:
            calls.append(q.tolist())
        return table[q]

    return fn


def L(*xs) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.long)


# ---------------------------------------------------------------------- metrics by hand
def test_metrics_from_ranks_by_hand():
    # query A: g=0, e=0 -> position 1 for sure.
    #   HR@1 = 1, HR@2 = 1, MRR@1 = 1, MRR@2 = 1
    # query B: g=1, e=2 -> position uniform on {2, 3, 4}.
    #   HR@1 = 0; HR@2 = P(pos <= 2) = (2-1)/3 = 1/3
    #   MRR@1 = 0; MRR@2 = (1/2)/3 = 1/6
    # query C: g=3, e=0 -> position 4.  HR@1 = HR@2 = 0, MRR = 0.
    m = metrics_from_ranks(L(0, 1, 3), L(0, 2, 0), ks=(1, 2, 4))
    assert m["num_queries"] == 3
    assert m["HitRate@1"] == pytest.approx(1 / 3)
    assert m["MRR@1"] == pytest.approx(1 / 3)
    assert m["HitRate@2"] == pytest.approx((1 + 1 / 3) / 3)
    assert m["MRR@2"] == pytest.approx((1 + 1 / 6) / 3)
    # @4: A: 1, 1.  B: pos in {2,3,4} all <= 4 -> HR 1, MRR (1/2+1/3+1/4)/3 = 13/36.  C: HR 1, MRR 1/4.
    assert m["HitRate@4"] == pytest.approx(1.0)
    assert m["MRR@4"] == pytest.approx((1 + 13 / 36 + 1 / 4) / 3)
    assert set(m) == {"num_queries", "HitRate@1", "MRR@1", "HitRate@2", "MRR@2", "HitRate@4", "MRR@4"}


def test_metrics_large_counts_are_precise():
    # e huge, target can only be in the top k with tiny probability: k / (e + 1).
    g, e = L(0, 5, 10**6), L(10**6, 3, 0)
    m = metrics_from_ranks(g, e, ks=(10,))
    hr = (10 / (10**6 + 1) + 1.0 + 0.0) / 3  # 2nd: pos in {6..9} all <= 10
    mrr = (sum(1 / p for p in range(1, 11)) / (10**6 + 1) + (1 / 6 + 1 / 7 + 1 / 8 + 1 / 9) / 4) / 3
    assert m["HitRate@10"] == pytest.approx(hr, rel=1e-12)
    assert m["MRR@10"] == pytest.approx(mrr, rel=1e-12)


def brute_force(scores: list[float], target: int, k: int) -> tuple[Fraction, Fraction]:
    """Average over ALL candidate orderings used as tie-breakers: exact E[hit@k], E[rr@k]."""
    n = len(scores)
    hit = rr = Fraction(0)
    perms = list(itertools.permutations(range(n)))
    for perm in perms:  # perm[j] = tie-break priority of candidate j (lower goes first)
        ranked = sorted(range(n), key=lambda j: (-scores[j], perm[j]))
        pos = ranked.index(target) + 1
        if pos <= k:
            hit += 1
            rr += Fraction(1, pos)
    return hit / len(perms), rr / len(perms)


def test_tie_formula_matches_brute_force_enumeration():
    rng = random.Random(0)
    for _ in range(25):
        n = rng.randint(1, 6)
        scores = [float(rng.randint(0, 2)) for _ in range(n)]
        target = rng.randrange(n)
        g = sum(s > scores[target] for s in scores)
        e = sum(s == scores[target] for s in scores) - 1
        for k in (1, 2, 3, 5):
            hit, rr = brute_force(scores, target, k)
            m = metrics_from_ranks(L(g), L(e), ks=(k,))
            assert m[f"HitRate@{k}"] == pytest.approx(float(hit), abs=1e-12)
            assert m[f"MRR@{k}"] == pytest.approx(float(rr), abs=1e-12)


def test_constant_scores_give_random_baseline():
    # 11 products minus the query (0) and the excluded 2: 9 candidates incl. the target, all
    # tied -> g=0, e=8, position uniform on 1..9.
    n = 11
    ev = RankingEvaluator(n, ks=(5,))
    m = ev.eval(lambda q: torch.zeros(q.numel(), n), L(0), L(1), exclude_src=L(0), exclude_dst=L(2))
    assert m["HitRate@5"] == pytest.approx(5 / 9)
    assert m["MRR@5"] == pytest.approx(sum(1 / p for p in range(1, 6)) / 9)


# ---------------------------------------------------------------------- filtering
def test_exclusions_change_the_rank_as_expected():
    # Query 0 over 6 products. Scores for row 0:
    #   product: 0    1    2    3    4    5
    #   score:   9.0  5.0  8.0  7.0  1.0  7.0
    table = torch.zeros(6, 6)
    table[0] = torch.tensor([9.0, 5.0, 8.0, 7.0, 1.0, 7.0])
    ev = RankingEvaluator(6, ks=(1, 3))
    fn = table_fn(table)
    # Target 1 (score 5). Query itself (9) excluded always -> greater: {2, 3, 5} = 3.
    g, e = ev.ranks(fn, L(0), L(1))
    assert g.tolist() == [3] and e.tolist() == [0]
    # Training neighbour 2 excluded -> greater {3, 5}.
    g, e = ev.ranks(fn, L(0), L(1), exclude_src=L(0), exclude_dst=L(2))
    assert g.tolist() == [2]
    # Also held-out 3: filtered out of target 1's candidates, and vice versa.
    g, e = ev.ranks(fn, L(0, 0), L(1, 3), exclude_src=L(0), exclude_dst=L(2))
    # target 1: greater {5} (3 filtered); target 3 (7.0): greater {} (2 excluded, 0 is query), equal {5}.
    assert g.tolist() == [1, 0] and e.tolist() == [0, 1]
    # An exclusion of ANOTHER query's neighbour does not matter.
    g2, _ = ev.ranks(fn, L(0, 0), L(1, 3), exclude_src=L(0, 4), exclude_dst=L(2, 5))
    assert g2.tolist() == [1, 0]


def test_excluded_candidate_with_equal_score_does_not_count():
    table = torch.zeros(5, 5)
    table[0] = torch.tensor([3.0, 2.0, 2.0, 2.0, 0.0])
    ev = RankingEvaluator(5, ks=(1,))
    g, e = ev.ranks(table_fn(table), L(0), L(1), exclude_src=L(0), exclude_dst=L(2))
    assert (g.tolist(), e.tolist()) == ([0], [1])  # only 3 ties; 2 is excluded, 0 is the query
    # -inf target: excluded entries are masked to -inf internally but still must not tie.
    table[0] = torch.tensor([NEG_INF, NEG_INF, NEG_INF, NEG_INF, 1.0])
    g, e = ev.ranks(table_fn(table), L(0, 0), L(1, 4), exclude_src=L(0), exclude_dst=L(2))
    # target 1: candidates {1, 3}: 3 ties; 4 is another held-out target (filtered). target 4: nothing above.
    assert (g.tolist(), e.tolist()) == ([0, 0], [1, 0])


def test_score_fn_called_once_per_query_and_output_untouched():
    n = 30
    table = torch.randn(n, n)
    before = table.clone()
    calls: list = []
    src = L(5, 3, 5, 5, 3, 7)
    dst = L(1, 2, 2, 9, 8, 0)
    RankingEvaluator(n, chunk_elems=2 * n).ranks(table_fn(table, calls), src, dst)
    flat = sorted(x for c in calls for x in c)
    assert flat == [3, 5, 7]
    assert all(len(c) <= 2 for c in calls)
    assert torch.equal(table, before)


def test_expanded_view_scores_are_supported():
    n = 8
    pop = torch.arange(n, dtype=torch.float32)  # a popularity baseline: same row for every query
    ev = RankingEvaluator(n, ks=(1,))
    g, e = ev.ranks(lambda q: pop.expand(q.numel(), n), L(0, 1), L(6, 7))
    # query 0, target 6: 7 is higher -> g=1; query 1, target 7 -> g=0
    assert g.tolist() == [1, 0] and e.tolist() == [0, 0]


# ---------------------------------------------------------------------- chunking
def test_chunking_invariance():
    torch.manual_seed(1)
    n = 50
    table = torch.randint(0, 6, (n, n)).float()
    src = torch.randint(0, n, (200,))
    dst = torch.randint(0, n, (200,))
    keys = torch.unique(src * n + dst)
    src, dst = keys // n, keys % n
    keep = src != dst
    src, dst = src[keep], dst[keep]
    ex_s = torch.randint(0, n, (300,))
    ex_d = torch.randint(0, n, (300,))
    clash = torch.isin(ex_s * n + ex_d, src * n + dst)
    ex_s, ex_d = ex_s[~clash], ex_d[~clash]
    results = [
        RankingEvaluator(n, chunk_elems=c).ranks(table_fn(table), src, dst, ex_s, ex_d) for c in (1, 3 * n, 10**9)
    ]
    for g, e in results[1:]:
        assert torch.equal(g, results[0][0]) and torch.equal(e, results[0][1])


# ---------------------------------------------------------------------- validation
@pytest.fixture
def ev():
    return RankingEvaluator(10)


def zeros_fn(n=10):
    return lambda q: torch.zeros(q.numel(), n)


@pytest.mark.parametrize(
    "src, dst, ex, match",
    [
        (L(0, 10), L(1, 2), None, "out of range"),
        (L(-1), L(1), None, "out of range"),
        (L(0), L(1, 2), None, "entries"),
        (L(0, 0), L(1, 1), None, r"duplicate held-out edge.*\(0, 1\)"),
        (L(3), L(3), None, "self-loop"),
        (L(0, 2), L(1, 5), (L(2, 4), L(5, 4)), r"also in the exclude set, e\.g\. \(2, 5\)"),
        (L(0), L(1), (L(0), L(11)), "exclude_dst has 1 index"),
        (torch.tensor([0.0]), L(1), None, "integer"),
        (torch.tensor([[0]]), L(1), None, "1-D"),
        (L(), L(), None, "empty"),
    ],
)
def test_validation_errors(ev, src, dst, ex, match):
    kw = {} if ex is None else {"exclude_src": ex[0], "exclude_dst": ex[1]}
    with pytest.raises(ValueError, match=match):
        ev.eval(zeros_fn(), src, dst, **kw)


def test_error_is_a_dualrec_error(ev):
    with pytest.raises(DualrecError):
        ev.eval(zeros_fn(), L(0), L(0))
    with pytest.raises(EvaluationError, match="both"):
        ev.eval(zeros_fn(), L(0), L(1), exclude_src=L(0))


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda q: torch.zeros(q.numel(), 9), r"shape \(1, 9\)"),
        (lambda q: torch.zeros(q.numel()), "shape"),
        (lambda q: torch.zeros(q.numel(), 10, dtype=torch.long), "floating"),
        (lambda q: torch.full((q.numel(), 10), float("nan")), "10 NaN"),
        (lambda q: torch.full((q.numel(), 10), float("inf")), r"\+inf"),
    ],
)
def test_bad_scores(ev, fn, match):
    with pytest.raises(ValueError, match=match):
        ev.eval(fn, L(0), L(1))


def test_bad_constructor_args():
    with pytest.raises(ValueError):
        RankingEvaluator(10, ks=(0, 5))
    with pytest.raises(ValueError):
        RankingEvaluator(10, ks=(5, 5))
    with pytest.raises(ValueError):
        RankingEvaluator(10, chunk_elems=0)


# ---------------------------------------------------------------------- direction
def test_direction_accuracy_with_ties():
    n = 4
    table = torch.zeros(n, n)
    table[0, 1], table[1, 0] = 2.0, 1.0  # right way round
    table[1, 2], table[2, 1] = 0.0, 3.0  # wrong
    table[2, 3], table[3, 2] = 5.0, 5.0  # tie
    src, dst = L(0, 1, 2), L(1, 2, 3)
    expected = (1 + 0 + 0.5) / 3
    pair = lambda u, v: table[u, v]  # noqa: E731
    assert direction_accuracy(pair, src, dst) == pytest.approx(expected)
    assert direction_accuracy(pair, src, dst, chunk_size=1) == pytest.approx(expected)
    derived = pair_fn_from_score_fn(table_fn(table), n, chunk_elems=1)
    assert torch.equal(derived(L(0, 2, 0, 1), L(1, 3, 3, 0)), torch.tensor([2.0, 5.0, 0.0, 1.0], dtype=torch.float64))
    assert direction_accuracy(derived, src, dst, num_products=n) == pytest.approx(expected)
    sym = torch.randn(n, n)
    assert direction_accuracy(lambda u, v: (sym + sym.T)[u, v], src, dst) == 0.5


def test_direction_accuracy_validation():
    pair = lambda u, v: torch.zeros(u.numel())  # noqa: E731
    with pytest.raises(ValueError, match="self-loop"):
        direction_accuracy(pair, L(1), L(1))
    with pytest.raises(ValueError, match="out of range"):
        direction_accuracy(pair, L(1), L(4), num_products=4)
    with pytest.raises(ValueError, match="NaN"):
        direction_accuracy(lambda u, v: torch.full((u.numel(),), float("nan")), L(0), L(1))
    with pytest.raises(ValueError, match="expected"):
        direction_accuracy(lambda u, v: torch.zeros(2), L(0), L(1))


# ---------------------------------------------------------------------- against a naive reference
def naive_counts(table, src, dst, ex_src, ex_dst):
    """Plain-Python reference: (g, e) per held-out edge."""
    n = len(table)
    excluded: dict[int, set] = {}
    for s, d in zip(ex_src, ex_dst):
        excluded.setdefault(s, set()).add(d)
    held: dict[int, set] = {}
    for s, d in zip(src, dst):
        held.setdefault(s, set()).add(d)
    out = []
    for s, d in zip(src, dst):
        t = table[s][d]
        g = e = 0
        for c in range(n):
            if c == s or c == d or c in excluded.get(s, ()) or c in held[s]:
                continue
            if table[s][c] > t:
                g += 1
            elif table[s][c] == t:
                e += 1
        out.append((g, e))
    return out


def naive_metrics(counts, k):
    hr = mrr = 0.0
    for g, e in counts:
        for p in range(g + 1, g + e + 2):  # each position equally likely
            if p <= k:
                hr += 1 / (e + 1)
                mrr += 1 / p / (e + 1)
    return hr / len(counts), mrr / len(counts)


def test_random_2000_products_against_naive_reference():
    rng = random.Random(7)
    n = 2000
    gen = torch.Generator().manual_seed(7)
    table = torch.randint(0, 40, (n, n), generator=gen).float()  # many ties
    table[table == 0] = NEG_INF  # and some -inf
    queries = rng.sample(range(n), 25)
    held, ex = set(), set()
    for q in queries:
        for _ in range(rng.randint(1, 4)):
            d = rng.randrange(n)
            if d != q:
                held.add((q, d))
        for _ in range(rng.randint(0, 60)):
            d = rng.randrange(n)
            if (q, d) not in held:
                ex.add((q, d))
    ex |= {(rng.randrange(n), rng.randrange(n)) for _ in range(300)} - held  # other products' edges
    held, ex = sorted(held), sorted(ex)
    rng.shuffle(held)
    src, dst = [h[0] for h in held], [h[1] for h in held]
    ex_src, ex_dst = [x[0] for x in ex], [x[1] for x in ex]

    ev = RankingEvaluator(n, ks=(1, 5, 20, 100), chunk_elems=7 * n)
    g, e = ev.ranks(table_fn(table), torch.tensor(src), torch.tensor(dst), torch.tensor(ex_src), torch.tensor(ex_dst))
    tl = table.tolist()
    ref = naive_counts(tl, src, dst, ex_src, ex_dst)
    assert list(zip(g.tolist(), e.tolist())) == ref
    m = ev.eval(table_fn(table), torch.tensor(src), torch.tensor(dst), torch.tensor(ex_src), torch.tensor(ex_dst))
    assert m["num_queries"] == len(held)
    for k in ev.ks:
        hr, mrr = naive_metrics(ref, k)
        assert m[f"HitRate@{k}"] == pytest.approx(hr, rel=1e-12, abs=1e-15)
        assert m[f"MRR@{k}"] == pytest.approx(mrr, rel=1e-12, abs=1e-15)
    assert not math.isnan(m["MRR@100"])


def test_long_tail_and_recommendation_bias_by_hand():
    from dualrec.evaluate import long_tail_targets, recommendation_bias

    deg = torch.tensor([5.0, 0.0, 3.0, 0.0, 9.0, 1.0])
    tail = long_tail_targets(deg)
    assert tail.tolist() == [False, True, False, True, False, True]
    # popularity scores: every query gets products 4, 0 (then 2): top-2 slots are all head-ish
    pop = lambda q: deg.expand(q.numel(), -1)  # noqa: E731
    b = recommendation_bias(pop, torch.tensor([1, 3]), deg, k=2, head_share=1 / 6)
    assert b["head_share@2"] == 0.5  # product 4 (the 1 most popular) takes 2 of 4 slots
    assert b["coverage@2"] == 2 / 6 and b["long_tail_share@2"] == 0.0
    # the query itself and excluded pairs are never recommended
    b = recommendation_bias(
        pop, torch.tensor([4]), deg, k=2, head_share=1 / 6, exclude_src=torch.tensor([4]), exclude_dst=torch.tensor([0])
    )
    assert b["head_share@2"] == 0.0 and b["coverage@2"] == 2 / 6  # recommends 2 and 5
