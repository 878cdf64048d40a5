"""The DAEMON aggregation rule, checked by perturbing one neighbour's features."""

import pytest
import torch

from dualrec.model import DAEMON, DualAdjacency


def _adj(n, edges, sim=()):
    src = torch.tensor([e[0] for e in edges], dtype=torch.long)
    dst = torch.tensor([e[1] for e in edges], dtype=torch.long)
    a = torch.tensor([p[0] for p in sim], dtype=torch.long)
    b = torch.tensor([p[1] for p in sim], dtype=torch.long)
    return DualAdjacency.build(n, src, dst, sim_a=a, sim_b=b)


def _embed(model, x, adj):
    model.eval()
    with torch.no_grad():
        return model(x, adj)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_out_neighbour_changes_source_not_target(num_layers):
    # 0 -> 1 only. Source(0) reads the target side of its out-neighbour 1; target(0) reads the
    # source side of 0's in-neighbours (none), so node 1 can never reach target(0).
    torch.manual_seed(0)
    n, f = 4, 8
    model = DAEMON(f, 16, 8, num_layers=num_layers)
    adj = _adj(n, [(0, 1), (2, 3)])
    x = torch.randn(n, f)
    s0, t0 = _embed(model, x, adj)
    x2 = x.clone()
    x2[1] += torch.randn(f)
    s1, t1 = _embed(model, x2, adj)
    assert not torch.allclose(s0[0], s1[0], atol=1e-5), "source(0) must depend on out-neighbour 1"
    assert torch.allclose(t0[0], t1[0], atol=1e-6), "target(0) must not depend on out-neighbour 1"
    # and symmetrically, node 1's target reads 0 (its in-neighbour), its source does not.
    x3 = x.clone()
    x3[0] += torch.randn(f)
    s2, t2 = _embed(model, x3, adj)
    assert not torch.allclose(t0[1], t2[1], atol=1e-5), "target(1) must depend on in-neighbour 0"
    assert torch.allclose(s0[1], s2[1], atol=1e-6), "source(1) must not depend on in-neighbour 0"
    # unrelated nodes are untouched
    assert torch.allclose(s0[2:], s2[2:], atol=1e-6) and torch.allclose(t0[2:], t2[2:], atol=1e-6)


def test_similar_node_reaches_both_sides():
    torch.manual_seed(0)
    model = DAEMON(6, 8, 4, num_layers=2)
    adj = _adj(3, [], sim=[(0, 1)])
    x = torch.randn(3, 6)
    s0, t0 = _embed(model, x, adj)
    x2 = x.clone()
    x2[1] += 1.0
    s1, t1 = _embed(model, x2, adj)
    assert not torch.allclose(s0[0], s1[0], atol=1e-5)
    assert not torch.allclose(t0[0], t1[0], atol=1e-5)
    # without the similarity channel, the pair is invisible
    m2 = DAEMON(6, 8, 4, num_layers=2, use_similar=False)
    a0, b0 = _embed(m2, x, adj)
    a1, b1 = _embed(m2, x2, adj)
    assert torch.allclose(a0[0], a1[0], atol=1e-6) and torch.allclose(b0[0], b1[0], atol=1e-6)


def test_layer1_source_equals_target_for_isolated_nodes_and_shared_ablation():
    # Isolated node (cold start): it still gets embeddings, from its features alone.
    torch.manual_seed(0)
    model = DAEMON(5, 8, 4, num_layers=2)
    adj = _adj(3, [(0, 1)])
    s, t = _embed(model, torch.randn(3, 5), adj)
    assert torch.isfinite(s[2]).all() and torch.isfinite(t[2]).all()
    assert torch.allclose(s.norm(dim=1), torch.ones(3)) and torch.allclose(t.norm(dim=1), torch.ones(3))
    shared = DAEMON(5, 8, 4, num_layers=2, dual=False)
    adj_sym = DualAdjacency.build(3, torch.tensor([0]), torch.tensor([1]), symmetric=True)
    s, t = _embed(shared, torch.randn(3, 5), adj_sym)
    assert torch.equal(s, t)


def test_id_embeddings_and_reset_parameters():
    torch.manual_seed(0)
    model = DAEMON(5, 8, 4, num_nodes=3, id_dim=8)
    adj = _adj(3, [(0, 1)])
    x = torch.zeros(3, 5)
    s, _ = _embed(model, x, adj)
    # identical features, different products: the per-product embedding separates them
    assert not torch.allclose(s[0], s[2], atol=1e-4)
    # an unknown id row (-1, a new product) gets no per-product embedding
    s_new, _ = model.eval()(x, adj, node_ids=torch.tensor([0, 1, -1]))
    s_none, _ = DAEMON.forward(model, x, adj, node_ids=torch.tensor([-1, -1, -1]))
    assert torch.allclose(s_new[2], s_none[2])
    before = model.layers[0].out_t.weight.clone()
    model.reset_parameters()
    assert not torch.equal(before, model.layers[0].out_t.weight)


def test_score_is_inner_product_of_source_and_target():
    s = torch.nn.functional.normalize(torch.randn(4, 3), dim=1)
    t = torch.nn.functional.normalize(torch.randn(4, 3), dim=1)
    u, v = torch.tensor([0, 1]), torch.tensor([2, 3])
    assert torch.allclose(DAEMON.score(s, t, u, v), (s[u] * t[v]).sum(1))
    assert not torch.allclose(DAEMON.score(s, t, u, v), DAEMON.score(s, t, v, u))


def _random_graph(n=60, e=240, s=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    src, dst = torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g)
    keep = src != dst
    a, b = torch.randint(0, n, (s,), generator=g), torch.randint(0, n, (s,), generator=g)
    return DualAdjacency.build(n, src[keep], dst[keep], sim_a=a[a != b], sim_b=b[a != b])


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"id_dim": 8, "num_nodes": 60},
        {"dual": False},
        {"use_reverse": True, "num_layers": 3},
        {"use_similar": False},
    ],
)
def test_layerwise_inference_equals_forward(kwargs):
    torch.manual_seed(0)
    adj = _random_graph()
    x = torch.randn(60, 12)
    model = DAEMON(12, 16, 8, **{"num_layers": 2, **kwargs})
    s, t = _embed(model, x, adj)
    hist = []
    s1, t1 = model.inference(x.half().float(), adj, chunk_size=7)  # chunks of 7 rows
    s3, t3 = _embed(model, x.half().float(), adj)
    assert torch.allclose(s1, s3, atol=1e-5) and torch.allclose(t1, t3, atol=1e-5)
    assert torch.allclose(s1, s, atol=5e-2)  # the float16 round trip of x changes little
    # with a history, the layer inputs are held and aggregated in its dtype only: equal up to its rounding
    s2, t2 = model.inference(x.half().float(), adj, chunk_size=7, history=hist)
    assert torch.allclose(s2, s3, atol=1e-2) and torch.allclose(t2, t3, atol=1e-2)
    assert not torch.equal(s2, s3) or model.num_layers == 1  # (so the history path is the one measured)
    assert len(hist) == model.num_layers and all(h.dtype == torch.float16 for pair in hist for h in pair)
    assert s2.dtype == t2.dtype == torch.float32
    s4, t4 = model.inference(x.half(), adj, chunk_size=7)  # float16 features are widened per chunk
    assert torch.allclose(s4, s3, atol=1e-5) and torch.allclose(t4, t3, atol=1e-5)


@pytest.mark.parametrize("dual", [True, False])
def test_rows_with_an_exact_history_equal_the_full_forward(dual):
    torch.manual_seed(1)
    adj = _random_graph()
    x = torch.randn(60, 12)
    model = DAEMON(12, 16, 8, num_nodes=60, id_dim=8, dual=dual).eval()
    s, t = _embed(model, x, adj)
    hist = []
    model.inference(x, adj, history=hist)
    rows = torch.tensor([3, 0, 17, 59])
    rs, rt, fresh = model.forward_rows(x[rows], rows, adj, hist, rows)
    # the history is float16: equal up to its rounding
    assert torch.allclose(rs, s[rows], atol=1e-2) and torch.allclose(rt, t[rows], atol=1e-2)
    assert len(fresh) == model.num_layers and torch.allclose(fresh[0][0].half(), hist[0][0][rows], atol=1e-2)
    # a bfloat16 history, read by bfloat16 steps (the history mode's default precision)
    hist16 = []
    model.inference(x, adj, history=hist16, history_dtype=torch.bfloat16)
    assert all(h.dtype == torch.bfloat16 for pair in hist16 for h in pair)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bs, bt, bfresh = model.forward_rows(x[rows].bfloat16(), rows, adj, hist16, rows)
    assert bfresh[1][0].dtype == torch.bfloat16  # stored without a conversion
    assert torch.allclose(bs.float(), s[rows], atol=5e-2) and torch.allclose(bt.float(), t[rows], atol=5e-2)
    # gradients reach the weights and the rows' own id embeddings, never other rows or the history
    model.train()
    model.dropout = model.id_dropout = 0.0
    rs, rt, _ = model.forward_rows(x[rows], rows, adj, hist, rows)
    (rs.sum() + rt.sum()).backward()
    touched = (model.id_emb.weight.grad.abs().sum(1) > 0).nonzero().view(-1)
    assert set(touched.tolist()) <= set(rows.tolist()) and touched.numel() > 0
    assert all(h.grad is None for pair in hist for h in pair)
    assert model.layers[0].out_t.weight.grad.abs().sum() > 0


def test_training_dropout_drops_at_its_rate_and_keeps_the_mean():
    from dualrec.model import _dropout

    torch.manual_seed(0)
    h = torch.ones(1000, 500)
    for p in (0.1, 0.5):
        d = _dropout(h, p)
        assert abs(float((d == 0).float().mean()) - p) < 0.005
        assert abs(float(d.mean()) - 1.0) < 0.01
    torch.manual_seed(1)
    a = _dropout(h[:7, :3], 0.3)
    torch.manual_seed(1)
    assert torch.equal(a, _dropout(h[:7, :3], 0.3))  # the global seed makes it reproducible
