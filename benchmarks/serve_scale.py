"""Serving the two-stage ranking at catalogue scale, through the one recommendation path.

For each synthetic store (``--sizes``, ~10 co-purchase edges per product) a model folder is built
exactly as ``dualrec train`` builds it (:func:`dualrec.pipeline.train_dataset`: hash text
features, DAEMON, the second stage fitted on validation edges, an HNSW index above 200k
products, every product's precomputed top-50). DAEMON gets only ``--steps`` optimiser steps:
what a query costs does not depend on how well it is trained. ``--model`` measures an existing
model folder instead (e.g. Amazon clothing from ``benchmarks/cli_clothing.sh``).

Measured, for the two-stage ranking:

* model build: training, second-stage fit, index build and precomputing every list (seconds);
* in process: p50/p99 of one query (k=10) through the online path (candidates from the index
  and the query's co-occurrence paths, the pair model on those only) and through the stored
  lists, over ``--queries`` random known products; the first stage's recall@10 against exact
  search (measured when the index was built);
* HTTP: ``GET /products/{id}/related?k=10`` on ``dualrec serve`` (one worker, then ``--workers 2``)
  with ``--clients`` concurrent aiohttp clients on the same 2 cores, for known products
  (precomputed lists) and for the online path (a version of the same model without lists); the
  server's resident memory (all its processes) when ready and after the run;
* ``export`` of every product's top-20 (read from the lists).

    .venv/bin/python benchmarks/serve_scale.py --sizes 100000 1000000
    .venv/bin/python benchmarks/serve_scale.py --model /tmp/clothing-model --name clothing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "results" / "serve_scale"


def rss_mib(pid: int) -> dict:
    """Resident memory of a process: total, anonymous (private) and file-backed (shareable) pages."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = round(int(val.split()[0]) / 1024, 1)
    return out


def build(root: Path, n: int, steps: int, list_k: int, log) -> tuple[Path, dict]:
    from dualrec.pipeline import train_dataset
    from dualrec.synthetic import make_store
    from dualrec.train import TrainConfig

    t0 = time.time()
    g = make_store(n_products=n, edges_per_product=10.0, seed=0)
    g.save(root / "dataset")
    gen = time.time() - t0
    t0 = time.time()
    cfg = TrainConfig(encoder="hash", epochs=1, max_steps_per_epoch=steps, max_val_edges=2000, seed=0)
    train_dataset(root / "dataset", root / "model", cfg, progress=False, log=log, list_k=list_k)
    from dualrec.store import open_version

    info = open_version(root / "model").info
    return root / "model", {
        "generate_seconds": round(gen, 1),
        "build_seconds": round(time.time() - t0, 1),
        "copurchase_edges": int(g.num_copurchase),
        "similar_pairs": int(g.num_similar),
        "rerank_seconds": info.get("rerank_seconds"),
        "lists_seconds": (info.get("lists") or {}).get("seconds"),
        "train_seconds": info.get("train_seconds"),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def percentiles(x: list[float]) -> dict:
    a = np.array(x) * 1e3
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "mean_ms": round(float(a.mean()), 2),
    }


def in_process(model: Path, queries: int, seed: int, lists: bool) -> dict:
    import torch

    from dualrec.retrieval import Recommender

    torch.set_num_threads(1)  # as the server runs a request
    import faiss

    faiss.omp_set_num_threads(1)
    t0 = time.time()
    before = rss_mib(os.getpid())["VmRSS"]
    rec = Recommender.load(model)
    load_s = time.time() - t0
    rr = rec.reranker
    n = rr.n
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, size=queries + 50)
    online, lookup = [], []
    for i, r in enumerate(rows.tolist()):
        t = time.perf_counter()
        rr.top_k([r], 10)
        if i >= 50:
            online.append(time.perf_counter() - t)
        if lists:
            t = time.perf_counter()
            rec.top_k([r], 10)
            if i >= 50:
                lookup.append(time.perf_counter() - t)
    out = {
        "load_seconds": round(load_s, 1),
        "load_rss_mib": round(rss_mib(os.getpid())["VmRSS"] - before, 1),
        "rss_mib_after_queries": rss_mib(os.getpid()),
        "online": percentiles(online),
    }
    if lists:
        same = np.mean([np.array_equal(rr.top_k([r], 10)[1], rec.top_k([r], 10)[1]) for r in rows[:200].tolist()])
        out |= {"precomputed": percentiles(lookup), "lists_equal_online": float(same)}
    return out | {
        "first_stage": {
            "index": rec.index.kind,
            "params": rec.index.params,
            "recall_at_10_vs_exact": rec.index.recall_at_10,
        },
    }


def without_lists(model: Path) -> str:
    """A version of the model without its precomputed lists (every query takes the online path)."""
    from dualrec.store import ModelStore

    store = ModelStore(model)
    with store.lock(0, "serve_scale"):
        parent = store.version()
        with store.writer(parent) as w:
            w.link_all(except_={"model.json", "lists/"})
            v = w.commit(dict(parent.info), keep=5)
    return v.name


def http(model: Path, version: str | None, workers: int, clients: int, requests: int, seed: int) -> dict:
    """benchmarks/serve_load.py in a process of its own (a client in this process, which holds a
    loaded model, was measured 3x slower)."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "load.json"
        cmd = [sys.executable, str(Path(__file__).parent / "serve_load.py"), "--model", str(model)]
        cmd += ["--workers", str(workers), "--clients", str(clients), "--requests", str(requests)]
        cmd += ["--seed", str(seed), "--out", str(out)] + (["--version", version] if version else [])
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        r = json.loads(out.read_text())
    keep = ("workers", "startup_seconds", "rss_mib_ready", "rss_mib_after", "pss_mib_after", "memory_mib_after")
    keep += ("requests", "seconds", "throughput_rps")
    rest = {k: v for k, v in r.items() if k.startswith(("latency", "status", "errors"))}
    return {k: r[k] for k in keep if k in r} | rest


def export_time(model: Path) -> dict:
    from dualrec.serve.export import export_recommendations

    with tempfile.TemporaryDirectory() as d:
        rep = export_recommendations(model, Path(d) / "recs.parquet", k=20, progress=False)
    return {"seconds": rep["seconds"], "rows": rep["rows"], "precomputed": rep.get("precomputed")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--model", type=Path, help="measure this model folder instead of synthetic stores")
    ap.add_argument("--name", default=None, help="name of the result file for --model")
    ap.add_argument(
        "--keep-build",
        action="store_true",
        help="with --model: keep the build section of the existing result file (the model it measured)",
    )
    ap.add_argument("--steps", type=int, default=2, help="DAEMON optimiser steps for the synthetic models")
    ap.add_argument(
        "--list-k",
        type=int,
        default=50,
        help="precomputed list length of the synthetic models (0: none; every query and the export then take "
        "the online path, so the export is not timed)",
    )
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None, help="build the model folders here")
    ap.add_argument("--keep", action="store_true", help="keep the built model folders (in --workdir)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if a.workdir:
        a.workdir.mkdir(parents=True, exist_ok=True)
    jobs = [(a.name or a.model.name, None)] if a.model else [(f"{n // 1000}k", n) for n in a.sizes]
    for name, n in jobs:
        root = Path(tempfile.mkdtemp(prefix=f"serve_scale-{name}-", dir=a.workdir))
        result: dict = {
            "benchmark": "serve_scale",
            "command": "python benchmarks/serve_scale.py " + " ".join(sys.argv[1:]),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared by client and server)",
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
        if n is None:  # a linked copy: the benchmark adds a version without lists to it
            model = root / "model"
            shutil.copytree(a.model, model, copy_function=os.link)
            result["model"] = str(a.model)
            old = OUT / f"{name}.json"
            if a.keep_build and old.exists() and "build" in json.loads(old.read_text()):
                result["build"] = json.loads(old.read_text())["build"] | {"measured": "when the model was built"}
        else:
            print(f"== {name}: building the model", flush=True)
            model, result["build"] = build(root, n, a.steps, a.list_k, lambda m: print("   ", m, flush=True))
        from dualrec.store import open_version

        v = open_version(model)
        if "build" not in result and v.info.get("lists"):  # timed by `dualrec train` when it built the model
            result["build"] = {"lists_seconds": v.info["lists"]["seconds"], "measured": "by dualrec train"}
        result["products"] = int(v.info.get("num_products", len(v.ids())))
        result["ranker"] = v.info.get("ranker")
        print(f"== {name}: in process", flush=True)
        has_lists = bool(v.info.get("lists"))
        result["in_process"] = in_process(model, a.queries, a.seed, has_lists)
        result["peak_rss_gib_benchmark_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        print(json.dumps(result["in_process"]), flush=True)
        if has_lists:  # (without them, an export is one online query per product: hours at 5M)
            print(f"== {name}: export", flush=True)
            result["export_top20"] = export_time(model)
        if not a.no_http:
            result["http"] = {}
            with_lists = open_version(model).name
            online_version = without_lists(model) if has_lists else with_lists  # (the folder's current version)
            runs = [("precomputed", with_lists, 1, a.clients), ("precomputed_2_workers", with_lists, 2, a.clients)]
            runs = (runs if has_lists else []) + [
                ("online", online_version, 1, a.clients),
                ("online_2_workers", online_version, 2, a.clients),
                ("online_4_clients", online_version, 1, 4),
            ]
            for label, version, workers, clients in runs:
                print(f"== {name}: HTTP {label}", flush=True)
                result["http"][label] = http(model, version, workers, clients, a.requests, a.seed)
                result["http"][label]["clients"] = clients
                print(json.dumps(result["http"][label]), flush=True)
        (OUT / f"{name}.json").write_text(json.dumps(result, indent=2))
        print(f"written to {OUT / f'{name}.json'}", flush=True)
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"model folder kept: {root / 'model'}", flush=True)


if __name__ == "__main__":
    main()
