"""In-process latency of one `related` query on a model folder: the second stage's online path
(when the folder has one), its precomputed lists, and DAEMON alone through the retrieval index
(exact unless MODEL/index).

    .venv/bin/python benchmarks/query_latency.py MODEL [--queries 200] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from dualrec.index import load_model_index
from dualrec.rerank import load_model_reranker
from dualrec.store import open_version


def per_query_ms(fn, rows: np.ndarray) -> list[float]:
    fn(rows[:3])  # warm-up
    out = []
    for r in rows:
        t = time.perf_counter()
        fn(np.array([r]))
        out.append((time.perf_counter() - t) * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    v = open_version(a.model)
    source, target = (np.ascontiguousarray(x, dtype=np.float32) for x in v.embeddings())
    rows = np.random.default_rng(0).integers(0, len(source), a.queries)
    index = load_model_index(v, source, target)
    res = {
        "model": str(a.model),
        "num_products": int(len(source)),
        "queries": a.queries,
        "k": a.k,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": f"python benchmarks/query_latency.py {a.model} --queries {a.queries}",
    }
    runs = {"daemon_index": lambda q: index.recommend(q, a.k)}
    rr = load_model_reranker(v, source, target, index)
    if rr is not None:
        from dualrec.lists import StoredLists
        from dualrec.retrieval import Recommender

        runs["two_stage"] = lambda q: rr.top_k(q, a.k)  # the online path
        lists = StoredLists.load(v)
        if lists is not None and a.k <= lists.k:
            rec = Recommender(v.products(["id"]), source, target, reranker=rr, index=index, lists=lists)
            runs["two_stage_precomputed"] = lambda q: rec.top_k(q, a.k)
        res["rerank_bytes"] = sum(m["bytes"] for f, m in v.files.items() if f.startswith("rerank/"))
    for name, fn in runs.items():
        ms = np.array(per_query_ms(fn, rows))
        res[name] = {
            "p50_ms": round(float(np.median(ms)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2),
        }
        print(name, res[name], flush=True)
    if a.out:
        a.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
