"""Retrieval speed and quality: exact (faiss IndexFlatIP) vs HNSW, top-10, at 100k and 1M products.

For each catalogue size and index kind: single-query latency p50/p99 (one ``recommend`` call
per query, the code path of ``GET /products/{id}/related``: over-fetch k+1, drop the query
itself), queries/s both one-at-a-time and batched, build time, and recall@10 against exact
search. HNSW's efSearch is tuned by :meth:`dualrec.index.RetrievalIndex.build` until
recall@10 on a sample of the queries reaches ``--target-recall``; the recall reported here is
measured separately on the benchmark queries.

Embeddings (64-d, L2-normalised, the model's width), chosen with ``--embeddings``:

* ``clustered`` — synthetic vectors with the structure of :func:`dualrec.synthetic.make_store`:
  one random direction per category, one per (category, accessory kind) group around it, each
  product's target = its group's direction + noise; a main product's source points at one of
  its category's accessory groups, an accessory's source at another group of its category.
  Fast at 1M; used when training is too slow.
* ``trained`` — a DAEMON model quick-trained on a synthetic store of that size (hash text
  features, ``--train-steps`` optimiser steps). On 2 CPU cores only a few steps fit in
  minutes, so this model is barely trained (its validation MRR is printed); such embeddings are
  nearly collapsed (top-10 scores within ~1e-4 of each other), where recall@10 by id says
  little: ``score_recall_at_10`` (share of returned items scoring at least the exact 10th
  score) is reported next to it.

    .venv/bin/python benchmarks/retrieval.py                         # 100k and 1M, clustered
    .venv/bin/python benchmarks/retrieval.py --sizes 100000 --embeddings trained
    .venv/bin/python benchmarks/retrieval.py --sizes 1000000 --queries 300 --latency-queries 50 --tune-queries 200

Results are merged into ``benchmarks/results/retrieval.json`` (one row per size, embeddings and
index kind; a rerun replaces its own rows).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import faiss
import numpy as np

from dualrec.index import RetrievalIndex, recall_at_k
from dualrec.synthetic import make_store

K = 10


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered_embeddings(
    n: int, dim: int = 64, seed: int = 0, noise: float = 0.6
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(source, target, info) for a synthetic store of ~n products (see module docstring)."""
    g = make_store(n_products=n, seed=seed)
    p = g.products
    rng = np.random.default_rng(seed)
    cat = p["category_id"].to_numpy()
    group_key = p["category"].astype(str).to_numpy()  # "Electronics > Phones" or "... > Cases"
    groups, grp = np.unique(group_key, return_inverse=True)
    grp_cat = np.zeros(len(groups), dtype=np.int64)
    grp_cat[grp] = cat
    n_cat = int(cat.max()) + 1
    cat_dir = _unit(rng.standard_normal((n_cat, dim)))
    grp_dir = _unit(cat_dir[grp_cat] + 0.7 * _unit(rng.standard_normal((len(groups), dim))))
    target = _unit(grp_dir[grp] + noise * rng.standard_normal((len(p), dim)) / np.sqrt(dim) * 2)
    # each product's source points at another group of its category (main -> an accessory kind)
    by_cat = [np.flatnonzero(grp_cat == c) for c in range(n_cat)]
    other = np.array([rng.choice(by_cat[c]) for c in grp_cat])  # one related group per group
    source = _unit(grp_dir[other[grp]] + noise * rng.standard_normal((len(p), dim)) / np.sqrt(dim) * 2)
    return source, target, {"embeddings": "clustered", "groups": int(len(groups)), "categories": n_cat, "noise": noise}


def trained_embeddings(n: int, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    import torch

    from dualrec.features import build_features
    from dualrec.train import TrainConfig, train

    t0 = time.time()
    g = make_store(n_products=n, seed=seed)
    x = torch.from_numpy(build_features(g.products, "hash", False))
    cfg = TrainConfig(
        encoder="hash", epochs=1, max_steps_per_epoch=steps, batch_size=8192, max_val_edges=2000, seed=seed
    )
    res = train(g, x, cfg, progress=False, log=lambda m: print("   ", m, flush=True))
    return (
        res.source.numpy(),
        res.target.numpy(),
        {
            "embeddings": "trained",
            "train_steps": steps,
            "train_batch_size": 8192,
            "encoder": "hash",
            "val_MRR@10": round(float(res.val_metrics.get("MRR@10", float("nan"))), 4),
            "train_seconds": round(time.time() - t0, 1),
        },
    )


def measure(
    idx: RetrievalIndex,
    rows: np.ndarray,
    lat_rows: np.ndarray,
    gt: np.ndarray,
    t_all: np.ndarray,
    s_all: np.ndarray,
    batch: int,
    threads: int,
    batch_threads: int,
) -> dict:
    faiss.omp_set_num_threads(threads)
    idx.recommend(lat_rows[:5], K)  # warm-up
    lat = []
    for r in lat_rows:
        t0 = time.perf_counter()
        idx.recommend(r[None], K)
        lat.append(time.perf_counter() - t0)
    lat = np.array(lat)
    faiss.omp_set_num_threads(batch_threads)
    t0 = time.perf_counter()
    got = np.concatenate([idx.recommend(rows[lo : lo + batch], K)[1] for lo in range(0, len(rows), batch)])
    batched_s = time.perf_counter() - t0
    # ties-tolerant recall: a returned item counts if it scores at least the exact 10th score
    kth = np.einsum("qd,qd->q", s_all[rows], t_all[gt[:, K - 1]])
    sc = np.einsum("qd,qkd->qk", s_all[rows], t_all[np.maximum(got, 0)])
    score_recall = float(((sc >= kth[:, None] - 1e-6) & (got >= 0)).sum() / (K * len(rows)))
    return {
        "latency_ms_p50": round(float(np.percentile(lat, 50)) * 1e3, 3),
        "latency_ms_p99": round(float(np.percentile(lat, 99)) * 1e3, 3),
        "qps_single": round(len(lat) / float(lat.sum()), 1),
        "qps_batched": round(len(rows) / batched_s, 1),
        "batch_size": batch,
        "recall_at_10": round(recall_at_k(got, gt, K), 4),
        "score_recall_at_10": round(score_recall, 4),
        "latency_queries": int(len(lat_rows)),
        "recall_queries": int(len(rows)),
        "faiss_threads_single": threads,
        "faiss_threads_batched": batch_threads,
    }


def run(n: int, embeddings: str, a, emit) -> None:
    t0 = time.time()
    if embeddings == "trained":
        s, t, info = trained_embeddings(n, a.train_steps, a.seed)
    else:
        s, t, info = clustered_embeddings(n, seed=a.seed)
    info["generate_seconds"] = round(time.time() - t0, 1)
    n = len(t)
    top2 = np.sort(s[:200] @ t.T, axis=1)[:, -(K + 1) :]
    info["median_gap_score10_score11"] = float(np.median(top2[:, 1] - top2[:, 0]))
    info["mean_target_cosine"] = round(float((lambda x: (x @ x.T).mean())(t[:2000])), 4)
    print(f"{n} products, {info}", flush=True)
    rng = np.random.default_rng(a.seed + 1)
    rows = rng.choice(n, size=min(a.queries, n), replace=False)
    lat_rows = rows[: a.latency_queries]
    for kind in ("exact", "hnsw"):
        tb = time.time()
        params = {"efConstruction": a.ef_construction, "M": a.M} if kind == "hnsw" else {}
        idx = RetrievalIndex.build(
            t,
            kind,
            source=s,
            target_recall=a.target_recall,
            sample=a.tune_queries,
            seed=a.seed + 2,
            log=lambda m: print("   ", m, flush=True),
            **params,
        )
        build_s = time.time() - tb
        if kind == "exact":
            gt = idx.recommend(rows, K)[1]
        m = measure(idx, rows, lat_rows, gt, t, s, a.batch, a.threads, a.batch_threads)
        faiss.omp_set_num_threads(a.batch_threads)
        row = {
            "products": n,
            "dim": int(t.shape[1]),
            "index": kind,
            "params": idx.params,
            "build_seconds": round(build_s, 1),
            "index_json_recall_at_10": idx.recall_at_10,
            **m,
            **info,
        }
        print(json.dumps(row), flush=True)
        emit(row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--embeddings", choices=["clustered", "trained"], default="clustered")
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--queries", type=int, default=2000, help="queries for recall and batched throughput")
    ap.add_argument("--latency-queries", type=int, default=200, help="one-at-a-time queries for p50/p99")
    ap.add_argument(
        "--tune-queries", type=int, default=500, help="queries for tuning efSearch (and as many for its check)"
    )
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--M", type=int, default=16, help="HNSW M (16 keeps the 1M build to minutes on 2 cores)")
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="faiss threads for one-at-a-time queries (1, as `dualrec serve`: concurrency comes from requests)",
    )
    ap.add_argument(
        "--batch-threads",
        type=int,
        default=faiss.omp_get_max_threads(),
        help="faiss threads for index builds and batched queries",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "retrieval.json")
    a = ap.parse_args()
    t0 = time.time()
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None
    faiss.omp_set_num_threads(a.batch_threads)
    prev = json.loads(a.out.read_text()) if a.out.exists() else {"results": []}
    cmd = " ".join(
        [
            "python benchmarks/retrieval.py",
            "--sizes",
            *map(str, a.sizes),
            "--embeddings",
            a.embeddings,
            "--queries",
            str(a.queries),
            "--latency-queries",
            str(a.latency_queries),
            "--tune-queries",
            str(a.tune_queries),
            "--M",
            str(a.M),
            "--ef-construction",
            str(a.ef_construction),
        ]
    )
    rows: list[dict] = []

    def write(final: bool) -> None:  # after every row, so an interrupted run keeps what it measured
        done = {(r["products"], r["embeddings"], r["index"]) for r in rows}
        keep = [r for r in prev.get("results", []) if (r["products"], r["embeddings"], r["index"]) not in done]
        results = sorted(keep + rows, key=lambda r: (r["embeddings"], r["products"], r["index"]))
        runs = prev.get("runs", []) + [
            {
                "command": cmd,
                "seconds": round(time.time() - t0, 1),
                "complete": final,
                "loadavg_at_start": load,
                "date": time.strftime("%Y-%m-%d %H:%M"),
            }
        ]
        out = {
            "benchmark": "retrieval",
            "k": K,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, faiss {faiss.__version__}",
            "notes": "latency = one recommend() call per query (over-fetch k+1, drop self); qps_single = 1/mean "
            "latency; qps_batched = queries in batches of batch_size; recall_at_10 vs exact on the same "
            "queries; peak RSS covers the whole run",
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "runs": runs,
            "results": results,
        }
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(out, indent=2))

    for n in a.sizes:
        run(n, a.embeddings, a, lambda row: (rows.append(row), write(False)))
    write(True)
    print(f"written to {a.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
