"""A bounded load test of `dualrec serve`: throughput and latency of GET /products/{id}/related?k=10.

Starts the server (uvicorn, one worker process) in a subprocess on a free port of 127.0.0.1,
waits for /health, then ``--clients`` concurrent clients (asyncio, one process) send
exactly ``--requests`` requests for random product ids (after ``--warmup`` uncounted ones),
and the server is stopped. The clients are aiohttp's (httpx's cost several times the CPU, which
the server loses on a 2-core machine). Client and server share the machine's cores, so the numbers are a
floor for what the server alone would do.

Without ``--model``, a small demo model is trained first (synthetic store of ``--products``
products, hash text features, a few epochs: about half a minute).

    .venv/bin/python benchmarks/serve_load.py                       # demo model, 16 clients, 2000 requests
    .venv/bin/python benchmarks/serve_load.py --model runs/demo/model --clients 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_model(root: Path, n: int, epochs: int) -> Path:
    from dualrec.pipeline import train_dataset
    from dualrec.synthetic import make_store
    from dualrec.train import TrainConfig

    g = make_store(n_products=n, seed=0)
    g.save(root / "dataset")
    train_dataset(
        root / "dataset",
        root / "model",
        TrainConfig(encoder="hash", epochs=epochs, seed=0),
        progress=False,
        log=lambda m: print("   ", m, flush=True),
    )
    return root / "model"


def _tree(pid: int) -> list[int]:
    pids = [pid]
    kids = Path(f"/proc/{pid}/task/{pid}/children")
    if kids.exists():
        pids += [int(k) for k in kids.read_text().split()]
    return pids


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn's workers), in MiB (Linux). Pages
    that several processes share (a memory-mapped model) count once per process."""
    total = 0.0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except FileNotFoundError:
            pass
    return round(total, 1)


def tree_memory_mib(pid: int) -> list[dict]:
    """Per process of the tree (the parent first; ``role``: ``main``, a ``worker`` of
    ``--workers N``, or multiprocessing's ``tracker``): resident memory (``rss``), its proportional
    share (``pss``: a page shared by k processes counts 1/k in each, so the sum is what the
    server really holds), the pages no other process maps now (``private``: with one worker
    that includes every page of the model files it read) and its anonymous memory (``anon``:
    what no other process can share, so what one more worker adds at least), in MiB."""
    keys = {"Rss": "rss", "Pss": "pss", "Private_Clean": "private", "Private_Dirty": "private", "Anonymous": "anon"}
    out = []
    for p in _tree(pid):
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except (FileNotFoundError, PermissionError):
            continue
        cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        role = "tracker" if "resource_tracker" in cmd else "worker" if "spawn_main" in cmd else "main"
        row = {"pid": p, "role": role, "rss": 0.0, "pss": 0.0, "private": 0.0, "anon": 0.0}
        for line in text.splitlines():
            key, _, val = line.partition(":")
            if key in keys:
                row[keys[key]] += int(val.split()[0]) / 1024
        out.append({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()})
    return out


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not become ready")


async def load(base: str, ids: list[str], clients: int, requests: int, warmup: int, k: int, seed: int) -> dict:
    """``clients`` concurrent keep-alive connections (aiohttp: its client costs a fraction of
    httpx's CPU, which matters when client and server share 2 cores), ``requests`` counted ones
    for random product ids after ``warmup`` uncounted ones."""
    import aiohttp

    rng = np.random.default_rng(seed)
    picks = [ids[i] for i in rng.integers(0, len(ids), size=requests + warmup)]
    lat: list[float] = []
    status: dict = {}
    nxt = 0
    async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def worker(counted: bool, stop: int) -> None:
            nonlocal nxt
            while nxt < stop:
                pid = picks[nxt]
                nxt += 1
                t0 = time.perf_counter()
                try:
                    async with session.get(f"/products/{pid}/related", params={"k": str(k)}) as r:
                        body = await r.json()
                        code = r.status if r.status != 200 or len(body["results"]) == k else "short"
                except aiohttp.ClientError as e:
                    code = type(e).__name__
                if counted:
                    lat.append(time.perf_counter() - t0)
                    status[code] = status.get(code, 0) + 1

        await asyncio.gather(*(worker(False, warmup) for _ in range(clients)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(True, warmup + requests) for _ in range(clients)))
        wall = time.perf_counter() - t0
    a = np.array(lat) * 1e3
    return {
        "requests": len(lat),
        "seconds": round(wall, 2),
        "throughput_rps": round(len(lat) / wall, 1),
        "latency_ms_p50": round(float(np.percentile(a, 50)), 2),
        "latency_ms_p90": round(float(np.percentile(a, 90)), 2),
        "latency_ms_p99": round(float(np.percentile(a, 99)), 2),
        "latency_ms_max": round(float(a.max()), 2),
        "status": {str(c): v for c, v in sorted(status.items(), key=str)},
        "errors": int(sum(v for c, v in status.items() if c != 200)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="model folder to serve (default: train a small demo model)")
    ap.add_argument("--products", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--version", default=None, help="serve this model version (default: the current one)")
    ap.add_argument("--workers", type=int, default=1, help="server worker processes (dualrec serve --workers)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve_load.json")
    a = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="serve_load-")
    model = a.model
    if model is None:
        print(f"training a demo model ({a.products} products, hash features, {a.epochs} epochs)", flush=True)
        model = demo_model(Path(tmp.name), a.products, a.epochs)
    from dualrec.store import open_version

    v = open_version(model, a.version)
    ids = v.ids()[: int(v.info.get("trained_products", 0)) or None].tolist()  # known products
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(Path(tmp.name) / "server.log", "w")
    load_before = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None
    cmd = [sys.executable, "-m", "dualrec.cli", "serve", str(model), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", str(a.workers)] + (["--version", a.version] if a.version else [])
    env = {k: x for k, x in os.environ.items() if not k.startswith("DUALREC_ADMIN")}  # --workers: no writes
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        t0 = time.time()
        wait_ready(base, proc, timeout=1800)
        startup = time.time() - t0
        rss_ready = tree_rss_mib(proc.pid)
        health = httpx.get(base + "/health").json()
        print(
            f"server ready in {startup:.1f} s: {health['num_products']} products, ranker {health.get('ranker')}, "
            f"index {health['index']['kind']}",
            flush=True,
        )
        res = asyncio.run(load(base, ids, a.clients, a.requests, a.warmup, a.k, a.seed))
        res["rss_mib_ready"], res["rss_mib_after"] = rss_ready, tree_rss_mib(proc.pid)
        res["memory_mib_after"] = tree_memory_mib(proc.pid)
        res["pss_mib_after"] = round(sum(r["pss"] for r in res["memory_mib_after"]), 1)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    out = {
        "benchmark": "serve_load",
        "endpoint": f"GET /products/{{id}}/related?k={a.k}",
        "command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared by client and server)",
        "loadavg_at_start": load_before,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "server": f"uvicorn, {a.workers} worker process(es), FastAPI sync endpoints (thread pool), "
        "faiss 1 thread per search",
        "client": "aiohttp",
        "workers": a.workers,
        "version": v.name,
        "model": str(a.model) if a.model else f"demo: {a.products} products, hash features, {a.epochs} epochs",
        "num_products": health["num_products"],
        "ranker": health.get("ranker", "daemon"),
        "index": health["index"]["kind"],
        "clients": a.clients,
        "warmup_requests": a.warmup,
        "startup_seconds": round(startup, 1),
        **res,
    }
    print(json.dumps(out, indent=2))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2))
    print(f"written to {a.out}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
