"""DAEMON: dual source/target embeddings on a directed product graph.

Virinchi, Saladi, Mondal, *Recommending Related Products Using Graph Neural Networks in
Directed Graphs*, ECML PKDD 2022.

Every product ``v`` has a **source** embedding ``s_v`` (its role as the query: "I am looking at
v") and a **target** embedding ``t_v`` (its role as the recommendation). With ``x_v`` the
metadata features, ``e_v`` an optional per-product embedding, ``N_out(v)`` / ``N_in(v)`` the
co-purchase out-/in-neighbours and ``N_sim(v)`` the similar (co-viewed) products:

.. math::

    s^0_v = t^0_v = \\mathrm{MLP}(x_v) + e_v

    s^{l+1}_v = \\sigma\\big(W^l_{s} s^l_v + W^l_{out} \\operatorname{mean}_{u \\in N_{out}(v)} t^l_u
                 + W^l_{ss} \\operatorname{mean}_{u \\in N_{sim}(v)} s^l_u\\big)

    t^{l+1}_v = \\sigma\\big(W^l_{t} t^l_v + W^l_{in} \\operatorname{mean}_{u \\in N_{in}(v)} s^l_u
                 + W^l_{tt} \\operatorname{mean}_{u \\in N_{sim}(v)} t^l_u\\big)

    \\mathrm{score}(u \\to v) = \\langle \\hat s_u, \\hat t_v \\rangle, \\quad \\hat s = s^L / \\lVert s^L \\rVert

so a phone's source embedding is built from the *target* embeddings of what is bought after
it (cases, chargers) and a case's target embedding from the *source* embeddings of what is
bought before it (phones). ``score`` is a cosine, so top-k is a maximum-inner-product search
over the normalised target embeddings (``faiss.IndexFlatIP``). The last layer has no
non-linearity. Aggregation is a weighted mean via sparse CSR matrix products; no Python loop
touches an edge.

Beyond the paper (each can be switched off, and the paper's form is ``id_dim=0``):

* ``e_v`` (``id_dim > 0``): a free per-product embedding added to the input. It is what lets
  the model memorise product-specific co-purchase patterns that metadata cannot explain. Free
  embeddings overfit within a few epochs, so they are regularised (weight decay in the loop,
  and *ID dropout*: during training ``e_v`` is zeroed for a random share of products, which
  also teaches the model to embed products that have no ``e_v`` — new, cold-start products).

* ``use_reverse`` (off by default): two more channels read the co-purchase edges backwards,
  ``s_v += W mean_{u in N_in(v)} t_u`` and ``t_v += W mean_{u in N_out(v)} s_u``, because
  19-38 % of Amazon co-purchases are reciprocated. Measured on clothing: +3 % val MRR@10 at
  epoch 7, but a new product (no edges) then ranks far below known ones as a target, so it is
  not the default.

The co-view augmentation (against the selection bias of purchase data: customers buy what they
were shown) is the similarity channel: co-viewed pairs are bidirectional edges that enter the
aggregation (``N_sim`` above, in both the source and the target pass) *and* the training
signal (a contrastive term on similar pairs, see :mod:`dualrec.loss`), so a product that was
rarely bought still receives messages and gradients through what it was viewed with. The
paper does not spell out its recipe; this one is measured in the benchmark (``daemon_no_similar``
turns both parts off; long-tail metrics in ``results.md``).

Ablations: ``use_similar=False`` drops the similarity channel; ``dual=False`` ties source and
target (one embedding per product, aggregated over the undirected co-purchase graph).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dualrec.graph import csr_adjacency, csr_adjacency_pair, csr_row_bags, csr_row_range


@dataclass
class DualAdjacency:
    """Row-normalised CSR adjacency for the three aggregation channels (with transposes).

    ``out[v, u] > 0`` iff ``v -> u`` is a (message-passing) co-purchase edge; ``inn`` has the
    reverse pattern (``inn[v, u] > 0`` iff ``u -> v``); ``sim`` the similarity pairs. Each is
    stored with its transpose (``*_t``) so that the backward pass of ``A @ X`` is one more
    CSR product instead of a transpose per step (3x faster, measured).
    """

    out: Tensor
    out_t: Tensor | None
    inn: Tensor
    inn_t: Tensor | None
    sim: Tensor
    sim_t: Tensor | None
    num_nodes: int

    @classmethod
    def build(
        cls,
        num_nodes: int,
        src: Tensor,
        dst: Tensor,
        weight: Tensor | None = None,
        sim_a: Tensor | None = None,
        sim_b: Tensor | None = None,
        sim_weight: Tensor | None = None,
        symmetric: bool = False,
        transposes: bool = True,
    ) -> "DualAdjacency":
        """``transposes=False`` leaves the ``*_t`` fields ``None``: enough for :meth:`DAEMON.inference`
        and :meth:`DAEMON.forward_rows`, which never take a gradient through the aggregation."""
        n = num_nodes
        pair = csr_adjacency_pair if transposes else lambda r, c, n, w: (csr_adjacency(r, c, n, w), None)
        if symmetric:  # single-embedding ablation: direction is ignored
            src, dst = torch.cat([src, dst]), torch.cat([dst, src])
            weight = None if weight is None else torch.cat([weight, weight])
        out, out_t = pair(src, dst, n, weight)
        inn, inn_t = (out, out_t) if symmetric else pair(dst, src, n, weight)
        if sim_a is None or sim_a.numel() == 0:
            sim_a = sim_b = torch.empty(0, dtype=torch.long)
            sim_weight = None
        a, b = torch.cat([sim_a, sim_b]), torch.cat([sim_b, sim_a])
        sw = None if sim_weight is None else torch.cat([sim_weight, sim_weight])
        sim, sim_t = pair(a, b, n, sw)
        return cls(out, out_t, inn, inn_t, sim, sim_t, n)


class _SpMM(torch.autograd.Function):
    """``A @ X`` with a precomputed ``A^T`` for the gradient (torch would transpose A every time)."""

    @staticmethod
    def forward(ctx, a: Tensor, a_t: Tensor, x: Tensor) -> Tensor:
        ctx.a_t = a_t
        return torch.sparse.mm(a, x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, None, torch.sparse.mm(ctx.a_t, grad.contiguous())


def _spmm(a: Tensor, a_t: Tensor, x: Tensor) -> Tensor:
    return _SpMM.apply(a, a_t, x)


def _dropout(h: Tensor, p: float) -> Tensor:
    """Inverted dropout, the same as ``F.dropout`` in training but several times cheaper on the
    CPU, where a history-mode step spends a large share of its time drawing dropout masks: the
    CPU generator's cost is per draw, so each 64-bit draw gives four 16-bit uniform numbers
    (drop rate ``p`` to within 2^-17) instead of one per value."""
    bits = torch.empty((h.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    keep = bits.view(torch.int16)[: h.numel()].view_as(h) >= round(p * 65536) - 32768
    return h * keep * (1.0 / (1.0 - p))


class DualLayer(nn.Module):
    """One DAEMON hop: source from out-neighbours' targets, target from in-neighbours' sources."""

    def __init__(self, in_channels: int, out_channels: int, use_similar: bool = True, use_reverse: bool = False):
        super().__init__()
        self.use_similar, self.use_reverse = use_similar, use_reverse
        self.self_s = nn.Linear(in_channels, out_channels)
        self.self_t = nn.Linear(in_channels, out_channels)
        # Neighbour maps have no bias: linear maps commute with the mean, so we transform
        # first and aggregate the (usually narrower) result.
        self.out_t = nn.Linear(in_channels, out_channels, bias=False)
        self.in_s = nn.Linear(in_channels, out_channels, bias=False)
        if use_similar:
            self.sim_s = nn.Linear(in_channels, out_channels, bias=False)
            self.sim_t = nn.Linear(in_channels, out_channels, bias=False)
        if use_reverse:
            self.rev_t = nn.Linear(in_channels, out_channels, bias=False)
            self.rev_s = nn.Linear(in_channels, out_channels, bias=False)

    def reset_parameters(self) -> None:
        for m in self.children():
            m.reset_parameters()

    def channels(self) -> list[tuple[str, nn.Linear, str, str]]:
        """``(output, neighbour map, adjacency, input)`` of each aggregation channel: ``("s",
        out_t, "out", "t")`` adds ``A_out @ out_t(t)`` to the new source embeddings."""
        ch = [("s", self.out_t, "out", "t"), ("t", self.in_s, "inn", "s")]
        if self.use_similar:
            ch += [("s", self.sim_s, "sim", "s"), ("t", self.sim_t, "sim", "t")]
        if self.use_reverse:
            ch += [("s", self.rev_t, "inn", "t"), ("t", self.rev_s, "out", "s")]
        return ch

    def forward(self, s: Tensor, t: Tensor, adj: DualAdjacency) -> tuple[Tensor, Tensor]:
        h = {"s": s, "t": t}
        new = {"s": self.self_s(s), "t": self.self_t(t)}
        for o, lin, a, i in self.channels():
            new[o] = new[o] + _spmm(getattr(adj, a), getattr(adj, a + "_t"), lin(h[i]))
        return new["s"], new["t"]


class DAEMON(nn.Module):
    r"""Dual-embedding GNN for related-product recommendation (see the module docstring).

    Args:
        in_channels: width of the metadata features ``x``.
        hidden_channels: width of the input MLP and of hidden layers.
        out_channels: width of the final source/target embeddings.
        num_layers: number of aggregation hops (2 in the paper).
        num_nodes: number of products, needed when ``id_dim > 0``.
        id_dim: width of the per-product embedding (0 = the paper's metadata-only model).
        id_dropout: share of products whose ``e_v`` is zeroed in a training forward pass.
        dropout: feature dropout between layers.
        use_similar: aggregate over similarity (co-view) edges.
        dual: separate source and target embeddings (``False`` = one shared embedding).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int = 128,
        out_channels: int = 64,
        num_layers: int = 2,
        num_nodes: int = 0,
        id_dim: int = 0,
        id_dropout: float = 0.0,
        dropout: float = 0.0,
        use_similar: bool = True,
        dual: bool = True,
        use_reverse: bool = False,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        if id_dim and num_nodes <= 0:
            raise ValueError("id_dim > 0 needs num_nodes")
        self.in_channels, self.out_channels, self.num_layers = in_channels, out_channels, num_layers
        self.dual, self.use_similar = dual, use_similar
        self.dropout, self.id_dropout = dropout, id_dropout
        self.input = nn.Sequential(
            nn.Linear(in_channels, hidden_channels), nn.ReLU(), nn.Linear(hidden_channels, hidden_channels)
        )
        self.id_emb = nn.Embedding(num_nodes, hidden_channels) if id_dim else None
        dims = [hidden_channels] * num_layers + [out_channels]
        self.layers = nn.ModuleList(
            DualLayer(dims[i], dims[i + 1], use_similar, use_reverse and dual) for i in range(num_layers)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.input:
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        if self.id_emb is not None:
            nn.init.normal_(self.id_emb.weight, std=0.01)
        for layer in self.layers:
            layer.reset_parameters()

    def encode_input(self, x: Tensor, node_ids: Tensor | None = None) -> Tensor:
        """Layer-1 input: ``MLP(x) + e_v`` (``e_v`` = 0 for products without an id row)."""
        h = self.input(x)
        if self.id_emb is not None:
            ids = torch.arange(x.size(0)) if node_ids is None else node_ids
            known = (ids >= 0) & (ids < self.id_emb.num_embeddings)
            rows = known.nonzero().view(-1)
            e = torch.zeros_like(h).index_copy(0, rows, self.id_emb(ids.index_select(0, rows)))
            if self.training and self.id_dropout > 0:
                e = e * (torch.rand(e.size(0), 1) >= self.id_dropout)
            h = h + e
        return h

    def forward(
        self,
        x: Tensor,
        adj: DualAdjacency,
        node_ids: Tensor | None = None,
        rows: Tensor | None = None,
        history: list | None = None,
    ):
        """Normalised ``(source, target)`` embeddings of all nodes, each ``(N, out_channels)``;
        with ``rows`` and ``history``, :meth:`forward_rows` (``x`` = the rows' features)."""
        if rows is not None:
            return self.forward_rows(x, rows, adj, history, node_ids)
        s = t = self.encode_input(x, node_ids)
        for i, layer in enumerate(self.layers):
            if self.dual:
                s, t = layer(s, t, adj)
            else:
                s = t = layer(s, s, adj)[0]
            if i < self.num_layers - 1:
                s, t = F.relu(s), F.relu(t)
                if self.dropout and self.training:
                    s, t = _dropout(s, self.dropout), _dropout(t, self.dropout)
        return F.normalize(s, dim=-1), F.normalize(t, dim=-1)

    def forward_rows(
        self,
        x: Tensor,
        rows: Tensor,
        adj: DualAdjacency,
        history: list[tuple[Tensor, Tensor]],
        node_ids: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
        """Normalised ``(source, target)`` of the products ``rows`` only (``x`` = their features),
        with their neighbours' layer inputs read from ``history`` (GNNAutoScale: Fey et al.,
        ICML 2021): ``history[l]`` = every product's ``(s^l, t^l)``, no gradient flows into it.

        Linear maps commute with the mean, so each channel aggregates the stored rows first and
        transforms ``len(rows)`` vectors: the cost follows the rows and their edges, not N. Also
        returns the fresh ``(s^l, t^l)`` of ``rows`` for every layer input, to refresh the history.
        """
        entries: dict[str, tuple[Tensor, Tensor, Tensor]] = {}

        def mean_of(a: str, h: Tensor) -> Tensor:  # (A @ h)[rows], the rows' entries read once per A
            if a not in entries:
                entries[a] = csr_row_bags(getattr(adj, a), rows)
            offsets, col, val = entries[a]
            # EmbeddingBag gathers, weights and sums in one fused kernel, an order of magnitude
            # faster than a row gather + index_add (in the history's dtype, so is its sum)
            out = F.embedding_bag(col, h, offsets, mode="sum", per_sample_weights=val.to(h.dtype))
            return out.to(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)

        s = t = self.encode_input(x, node_ids)
        fresh = []
        for i, layer in enumerate(self.layers):
            fresh.append((s, t))
            hs, ht = history[i]
            cur = {"s": s, "t": t if self.dual else s}
            hist = {"s": hs, "t": ht if self.dual else hs}
            new = {"s": layer.self_s(cur["s"])}
            if self.dual:  # (the shared ablation has no target side: its maps would get no gradient)
                new["t"] = layer.self_t(cur["t"])
            for o, lin, a, inp in layer.channels():
                if o in new:
                    new[o] = new[o] + lin(mean_of(a, hist[inp]))
            s = new["s"]
            t = new.get("t", s)
            if i < self.num_layers - 1:
                s, t = F.relu(s), F.relu(t)
                if self.dropout and self.training:
                    s, t = _dropout(s, self.dropout), _dropout(t, self.dropout)
        return F.normalize(s, dim=-1), F.normalize(t, dim=-1), fresh

    @torch.no_grad()
    def inference(
        self,
        x: Tensor,
        adj: DualAdjacency,
        node_ids: Tensor | None = None,
        chunk_size: int = 65536,
        history: list | None = None,
        history_dtype: torch.dtype = torch.float16,
        inner_dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The eval-mode :meth:`forward` of all nodes, layer by layer without autograd.

        The dense maps run over ``chunk_size`` rows at a time (``x`` may be float16: it is
        widened a chunk at a time), so memory is a few ``(N, hidden)`` buffers whatever the
        depth: this is how embeddings of catalogues too large for a full-graph training step
        are computed (validation, the stored embeddings). A ``history`` list receives every
        layer's input ``(s^l, t^l)`` in ``history_dtype`` (see :meth:`forward_rows`): half the
        memory of float32, and bfloat16 where the steps run in it, so a step reads and refreshes
        its rows without converting them. With a history, the layer inputs exist only in that
        dtype and are aggregated in it, as the steps read them: no float32 copy of a layer's
        input is held beside it (the peak memory of a validation pass over a large catalogue).
        ``inner_dtype`` holds them in another dtype (default: the history's, else float32); the
        returned embeddings are float32 either way.
        """
        was_training = self.training
        self.eval()
        n = x.size(0)
        ids = torch.arange(n) if node_ids is None else node_ids
        inner = inner_dtype or (torch.float32 if history is None else history_dtype)  # the layer inputs' dtype
        if history is not None and inner != history_dtype:
            raise ValueError("a history holds the layer inputs themselves: inner_dtype must be history_dtype")

        def chunked(f, a: Tensor | None, width: int, out: Tensor | None = None) -> Tensor:
            out = torch.empty(n, width, dtype=inner) if out is None else out  # out=a: in place, chunk by chunk
            for i in range(0, n, chunk_size):
                r = slice(i, min(i + chunk_size, n))
                out[r] = f(r) if a is None else f(a[r])
            return out

        # (no name keeps a layer's input alive once the next layer has been computed)
        s = t = chunked(lambda r: self.encode_input(x[r].float(), ids[r]), None, self.input[-1].out_features)
        for i, layer in enumerate(self.layers):
            if history is not None:
                history.append((s, t))
            cur = {"s": s, "t": t if self.dual else s}
            width = layer.self_s.out_features
            outs = ("s", "t") if self.dual else ("s",)
            last = i == self.num_layers - 1
            new = {o: torch.empty(n, width, dtype=torch.float32 if last else inner) for o in outs}
            # A chunk of output rows at a time, each channel aggregating its input rows first
            # (the maps have no bias, so they commute with the mean, as in forward_rows): the
            # layer's outputs are the only (N, width) buffers beside its input, the peak memory
            # of a pass over a large catalogue.
            for i0 in range(0, n, chunk_size):
                r = slice(i0, min(i0 + chunk_size, n))
                part = {o: getattr(layer, f"self_{o}")(cur[o][r].float()) for o in outs}
                for o, lin, a, inp in layer.channels():
                    if o in part:
                        offsets, col, val = csr_row_range(getattr(adj, a), r.start, r.stop)
                        h = cur[inp]
                        agg = F.embedding_bag(col, h, offsets, mode="sum", per_sample_weights=val.to(h.dtype))
                        part[o] += lin(agg.float())
                for o in outs:
                    new[o][r] = part[o] if last else part[o].relu_()
            s = new["s"]
            t = new.get("t", s)
        s = chunked(lambda a: F.normalize(a, dim=-1), s, s.size(1), out=s)
        t = s if not self.dual else chunked(lambda a: F.normalize(a, dim=-1), t, t.size(1), out=t)
        self.train(was_training)
        return s, t

    @staticmethod
    def score(s: Tensor, t: Tensor, src: Tensor, dst: Tensor) -> Tensor:
        """score(src[i] -> dst[i]) = <s[src[i]], t[dst[i]]> (a cosine in [-1, 1])."""
        return (s[src] * t[dst]).sum(-1)
