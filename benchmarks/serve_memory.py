"""Memory of `dualrec serve --workers N` at catalogue scale: what one more worker costs.

A model folder (``--model``, or one built from a synthetic store of ``--products`` products by
``dualrec train``'s pipeline: hash text features, DAEMON for 2 steps, the second stage, no
precomputed lists) is served in two layouts, each with 1 and then 2 workers:

* ``mapped``: as ``dualrec train`` writes a version now: what the second stage derived from the
  training graph (co-occurrence's matrices, the known pairs, degrees) is stored in the version
  (``rerank/arrays/``) and memory-mapped, like the embeddings, the indexes and the lists;
* ``rebuilt``: the same version without those arrays (the layout before them): every worker
  reads the training graph and rebuilds them in its own memory.

Every request takes the online path (there are no stored lists), ``--requests`` of them from 4
clients through ``benchmarks/serve_load.py``. After them, for every process of the server: RSS,
PSS (a page shared by k processes counts 1/k: the sum is what the server holds) and private
memory (what one more worker adds). Writes ``benchmarks/results/serve_memory.json``.

    .venv/bin/python benchmarks/serve_memory.py --products 1000000 --workdir /tmp/sm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "serve_memory.json"


def build(root: Path, n: int) -> Path:
    from dualrec.pipeline import train_dataset
    from dualrec.synthetic import make_store
    from dualrec.train import TrainConfig

    make_store(n_products=n, edges_per_product=10.0, seed=0).save(root / "dataset")
    cfg = TrainConfig(encoder="hash", epochs=1, max_steps_per_epoch=2, max_val_edges=2000, seed=0)
    train_dataset(root / "dataset", root / "model", cfg, progress=False, list_k=0, log=lambda m: print("   ", m))
    return root / "model"


def layouts(model: Path) -> dict[str, str]:
    """Two versions of the model's current one, without lists: ``mapped`` and ``rebuilt``."""
    from dualrec.rerank import ARRAYS_DIR, RERANK_DIR
    from dualrec.store import ModelStore

    store = ModelStore(model)
    out = {}
    with store.lock(0, "serve_memory"):
        parent = store.version()
        if not parent.has(f"{RERANK_DIR}/{ARRAYS_DIR}/pop_order.npy"):
            raise SystemExit(f"{model}: its current version has no {RERANK_DIR}/{ARRAYS_DIR}/ (train it again)")
        for name, skip in (("mapped", set()), ("rebuilt", {f"{RERANK_DIR}/{ARRAYS_DIR}/"})):
            with store.writer(parent) as w:
                w.link_all(except_={"model.json", "lists/"} | skip)
                out[name] = w.commit(dict(parent.info), keep=10).name
    return out


def serve(model: Path, version: str, workers: int, requests: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "load.json"
        cmd = [sys.executable, str(Path(__file__).parent / "serve_load.py"), "--model", str(model)]
        cmd += ["--version", version, "--workers", str(workers), "--clients", "4", "--requests", str(requests)]
        cmd += ["--out", str(out)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        r = json.loads(out.read_text())
    procs = r["memory_mib_after"]
    # with --workers N uvicorn's main process only supervises; with 1 it is the worker
    workers_mem = [p for p in procs if p["role"] == "worker"] or [p for p in procs if p["role"] == "main"]
    return {
        "workers": workers,
        "startup_seconds": r["startup_seconds"],
        "requests": r["requests"],
        "errors": r["errors"],
        "throughput_rps": r["throughput_rps"],
        "rss_mib_sum": round(sum(p["rss"] for p in procs), 1),
        "pss_mib_sum": round(sum(p["pss"] for p in procs), 1),
        "anon_mib_per_worker": [p["anon"] for p in workers_mem],
        "private_mib_per_worker": [p["private"] for p in workers_mem],
        "processes": procs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="measure this model folder (a copy of it, hard-linked)")
    ap.add_argument("--products", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the built model folder (in --workdir)")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="serve_memory-", dir=a.workdir))
    result = {
        "benchmark": "serve_memory",
        "command": "python benchmarks/serve_memory.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if a.model:
        model = root / "model"
        shutil.copytree(a.model, model, copy_function=os.link)
        result["model"] = str(a.model)
    else:
        t0 = time.time()
        print(f"building a model of {a.products:,} products", flush=True)
        model = build(root, a.products)
        built = time.time() - t0
        result["model"] = f"synthetic store of {a.products:,} products, hash features, built in {built:.0f} s"
    from dualrec.store import open_version

    result["products"] = int(open_version(model).info.get("num_products", 0))
    result["runs"] = {}
    for name, version in layouts(model).items():
        for workers in (1, 2):
            print(f"== {name}, {workers} worker(s)", flush=True)
            r = serve(model, version, workers, a.requests)
            result["runs"][f"{name}_{workers}"] = r
            print(json.dumps({k: v for k, v in r.items() if k != "processes"}), flush=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(f"written to {OUT}")
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"model folder kept: {model}")


if __name__ == "__main__":
    main()
