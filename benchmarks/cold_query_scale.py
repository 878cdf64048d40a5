"""A new product's neighbour search at catalogue scale: the stored text index against the
search built on first use (exact, or 8-bit codes above 200k products with history).

A product without history (a new one) finds its ``cold_neighbours`` text-nearest products with
logged co-purchases (:meth:`dualrec.rerank.CandidateReranker._cold_pool`). On catalogues above
``TEXT_INDEX_FROM`` (50k) products training stores an index over the catalogue's text (IVF, 16-bit)
(:meth:`~dualrec.rerank.CandidateReranker.build_text_index`), searched with a selector that
admits only products with history; below, a flat index over those products is built on the first
such query. For each synthetic store (``--sizes``; hash text features, as ``serve_scale.py``)
this measures both searches through the reranker's own code: build seconds, index bytes,
p50/p99 of one query (k = 21, what ``cold_neighbours=20`` asks), and the stored index's
recall@20 against exact search over the same products (a tie with the 21st exact neighbour's
score counts: the synthetic titles repeat).

    .venv/bin/python benchmarks/cold_query_scale.py --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import faiss
import numpy as np

from dualrec.index import recall_at_k

OUT = Path(__file__).parent / "results" / "cold_query_scale.json"


def latency_ms(search, xq: np.ndarray, k: int) -> tuple[dict, np.ndarray]:
    times, found = [], []
    for row in xq:
        t0 = time.perf_counter()
        _, nb = search(row[None, :], k)
        times.append((time.perf_counter() - t0) * 1000)
        found.append(nb[0])
    t = np.array(times)
    return {"p50_ms": round(float(np.percentile(t, 50)), 3), "p99_ms": round(float(np.percentile(t, 99)), 3)}, np.array(
        found
    )


class UnitRows:
    """``x``'s rows, unit length, read on demand (what the text searches compare)."""

    def __init__(self, x: np.ndarray):
        self.x = x

    def __getitem__(self, rows):
        from dualrec.rerank import _unit

        return _unit(self.x[rows])


def measure(n: int, queries: int, log) -> dict:
    from dualrec.features import build_features
    from dualrec.rerank import CandidateReranker, _unit
    from dualrec.synthetic import make_store

    t0 = time.perf_counter()
    g = make_store(n_products=n, seed=0)
    x = build_features(g.products, "hash", show_progress=False).astype(np.float16)  # as a version stores them
    has = np.bincount(g.cp_src.numpy(), minlength=n) > 0
    log(f"{n:,} products ({has.sum():,} with history), features {x.shape} in {time.perf_counter() - t0:.0f} s")
    rr = CandidateReranker.__new__(CandidateReranker)  # only the text searches are measured
    rr.x, rr._cold, rr.text_index = x, None, None
    rng = np.random.default_rng(0)
    q = rng.choice(n, queries, replace=False)
    xq = _unit(x[q])
    k = 21

    t0 = time.perf_counter()
    built = rr._built_search(np.flatnonzero(has))
    built_s = time.perf_counter() - t0
    flat_lat, flat_nb = latency_ms(built, xq, k)
    t0 = time.perf_counter()
    rr.build_text_index(log=log)
    stored_s = time.perf_counter() - t0
    stored = CandidateReranker._stored_search(rr.text_index, has)
    stored_lat, stored_nb = latency_ms(stored, xq, k)
    # exact neighbours among the products with history, for recall
    exact = faiss.IndexFlatIP(x.shape[1])
    rows = np.flatnonzero(has)
    for a in range(0, rows.size, 65_536):
        exact.add(_unit(x[rows[a : a + 65_536]]))
    want = rows[exact.search(xq, k)[1]]
    unit = UnitRows(x)  # (a tie with the k-th exact neighbour's score counts: duplicate titles)
    recall = recall_at_k(stored_nb, want, k, target=unit, queries=xq)
    built_recall = recall_at_k(flat_nb, want, k, target=unit, queries=xq)
    return {
        "products": n,
        "with_history": int(has.sum()),
        "dim": int(x.shape[1]),
        "queries": queries,
        "built_on_first_query": {
            "kind": "8-bit codes" if has.sum() > 200_000 else "exact",
            "build_seconds": round(built_s, 2),
            "recall_at_20_vs_exact": round(built_recall, 4),
            **flat_lat,
        },
        "stored_index": {
            "kind": rr.text_index.kind,
            "storage": rr.text_index.meta.get("storage"),
            "build_seconds": round(stored_s, 2),
            "params": rr.text_index.params,
            "index_recall_at_10": rr.text_index.meta.get("recall_at_10"),
            "recall_at_20_vs_exact": round(recall, 4),
            "index_bytes": int(faiss.serialize_index(rr.text_index.index).nbytes),
            **stored_lat,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    import torch

    out = {
        "benchmark": "cold_query_scale",
        "command": "python benchmarks/cold_query_scale.py --sizes " + " ".join(map(str, args.sizes)),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, faiss {faiss.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "results": [],
    }
    for n in args.sizes:
        r = measure(n, args.queries, print)
        print(json.dumps(r), flush=True)
        out["results"].append(r)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {OUT}")


if __name__ == "__main__":
    main()
