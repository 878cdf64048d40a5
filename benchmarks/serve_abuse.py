"""Abusive requests against a running `dualrec serve`: each must be answered with a 4xx/503 in
under a second, while `GET /health` keeps answering fast.

Starts the server (uvicorn, one worker) in a subprocess on a free port of 127.0.0.1 with an
admin token, then, while one client polls /health every 20 ms, sends each abusive request of
SECURITY.md (a path in reload, no token, a foreign Host, a form post, oversized bodies, 2,000
extra fields, a 6 MB title, 1,000 ids x k=1,000, many-word searches) and finally a flood of
concurrent heavy requests. Every request loop is bounded in count and time, and only loopback
is contacted. Client and server share the machine's cores, so latencies are pessimistic.

Without ``--model`` a small demo model is trained first (about half a minute).

    .venv/bin/python benchmarks/serve_abuse.py                   # demo model; writes results/serve_abuse.json
    .venv/bin/python benchmarks/serve_abuse.py --model runs/clothing
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import demo_model, free_port, wait_ready  # noqa: E402

TOKEN = "abuse-benchmark-token-0123456789"
POLLER = """
import sys, time, os, httpx
base, out, stop = sys.argv[1:4]
lat = []
with httpx.Client(base_url=base, timeout=10) as c:
    while not os.path.exists(stop) and len(lat) < 100000:
        t0 = time.perf_counter()
        ok = c.get("/health").status_code == 200
        lat.append((time.perf_counter() - t0) * 1e3 if ok else float("inf"))
        time.sleep(0.01)
open(out, "w").write(" ".join(map(str, lat)))
"""


def cases(ids: list[str]) -> list[tuple[str, dict, set]]:
    """(name, httpx request kwargs, accepted statuses)."""
    tok = {"X-Admin-Token": TOKEN}
    big_ids = [ids[i % len(ids)] for i in range(1000)]
    extra = {"id": "X-EXTRA", **{f"field{i}": "v" for i in range(2000)}}
    return [
        ("reload with a path, no token", dict(method="POST", url="/admin/reload", json={"model_dir": "/"}), {403}),
        (
            "reload with a path, with token",
            dict(method="POST", url="/admin/reload", json={"model_dir": "/"}, headers=tok),
            {422},
        ),
        (
            "reload with a traversal version",
            dict(method="POST", url="/admin/reload", json={"version": "../../etc"}, headers=tok),
            {422},
        ),
        (
            "cross-origin form post to reload, no body",
            dict(
                method="POST",
                url="/admin/reload",
                headers={"content-type": "text/plain", "origin": "http://evil.example"},
            ),
            {415},
        ),
        ("DNS rebinding: foreign Host", dict(method="GET", url="/health", headers={"host": "evil.example"}), {400}),
        (
            "add products without token",
            dict(method="POST", url="/products", json={"products": [{"id": "X1", "title": "x"}]}),
            {403},
        ),
        (
            "add a product with 2,000 extra fields",
            dict(method="POST", url="/products", json={"products": [extra]}, headers=tok),
            {413, 422},
        ),
        (
            "add a product with a 6 MB title",
            dict(
                method="POST", url="/products", headers=tok, json={"products": [{"id": "X2", "title": "x" * 6_000_000}]}
            ),
            {413},
        ),
        (
            "add 10,000 products",
            dict(
                method="POST", url="/products", headers=tok, json={"products": [{"id": f"Y{i}"} for i in range(10_000)]}
            ),
            {413, 422},
        ),
        ("1,000 ids x k=1,000", dict(method="POST", url="/related", json={"ids": big_ids, "k": 1000}), {413, 422}),
        ("100 ids x k=1,000", dict(method="POST", url="/related", json={"ids": big_ids[:100], "k": 1000}), {422}),
        ("search of 1,000 words", dict(method="GET", url="/search", params={"q": " ".join(["a"] * 1000)}), {422}),
        ("search of 50 words", dict(method="GET", url="/search", params={"q": " ".join(["ab"] * 50)}), {422}),
        ("k = 100,000", dict(method="GET", url=f"/products/{ids[0]}/related", params={"k": 100000}), {422}),
        (
            "a 1 MB body",
            dict(
                method="POST",
                url="/related",
                content=b"{" + b" " * 1_000_000 + b"}",
                headers={"content-type": "application/json"},
            ),
            {413},
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="model folder to serve (default: train a small demo model)")
    ap.add_argument("--products", type=int, default=2000)
    ap.add_argument("--flood", type=int, default=64, help="concurrent heavy requests in the flood")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the flood")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve_abuse.json")
    a = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="serve_abuse-")
    model = a.model or demo_model(Path(tmp.name), a.products, 3)
    from dualrec.store import open_version

    ids = open_version(model).ids().tolist()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(Path(tmp.name) / "server.log", "w")
    env = {**os.environ, "DUALREC_ADMIN_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dualrec.cli", "serve", str(model), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    health_file = Path(tmp.name) / "health.txt"
    stop_file = Path(tmp.name) / "stop"
    results = []
    poller = None
    try:
        wait_ready(base, proc)
        # /health is polled from its own process, so the flood's client threads do not slow the
        # poller down: what it measures is the server
        poller = subprocess.Popen([sys.executable, "-c", POLLER, base, str(health_file), str(stop_file)])
        time.sleep(1.0)
        with httpx.Client(base_url=base, timeout=30) as c:
            for name, req, ok in cases(ids):
                t0 = time.perf_counter()
                r = c.request(**req)
                ms = (time.perf_counter() - t0) * 1e3
                results.append(
                    {
                        "case": name,
                        "status": r.status_code,
                        "ms": round(ms, 1),
                        "ok": r.status_code in ok and ms < 1000,
                        "detail": str(r.json().get("detail"))[:120]
                        if r.headers.get("content-type", "").startswith("application/json")
                        else r.text[:120],
                    }
                )
                print(f"{r.status_code}  {ms:7.1f} ms  {name}", flush=True)
            # two of the heaviest at once, then a flood of valid but heavy batches
            heavy = {"ids": ids[:100], "k": 100}

            async def flood_rounds():
                # one client thread (asyncio) with --flood connections: the client's own CPU use
                # stays small, as it would for an attacker on another machine
                out = []
                lim = httpx.Limits(max_connections=a.flood, max_keepalive_connections=a.flood)
                async with httpx.AsyncClient(base_url=base, timeout=60, limits=lim) as ac:

                    async def one():
                        t0 = time.perf_counter()
                        r = await ac.post("/related", json=heavy)
                        return r.status_code, (time.perf_counter() - t0) * 1e3

                    for _ in range(a.rounds):
                        out += await asyncio.gather(*(one() for _ in range(a.flood)))
                return out

            t0 = time.perf_counter()
            flood = asyncio.run(flood_rounds())
            flood_s = time.perf_counter() - t0
        time.sleep(0.5)
    finally:
        stop_file.touch()
        if poller is not None:
            poller.wait(timeout=30)
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    codes = {}
    for code, _ in flood:
        codes[str(code)] = codes.get(str(code), 0) + 1
    fl = np.array([ms for _, ms in flood])
    h = np.array([float(x) for x in health_file.read_text().split()])
    out = {
        "command": "python benchmarks/serve_abuse.py" + (f" --model {a.model}" if a.model else ""),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "products": len(ids),
        "cases": results,
        "all_cases_ok": all(r["ok"] for r in results),
        "flood": {
            "requests": a.flood * a.rounds,
            "concurrent": a.flood,
            "body": "100 ids x k=100",
            "status": codes,
            "seconds": round(flood_s, 2),
            "ms_p50": round(float(np.percentile(fl, 50)), 1),
            "ms_max": round(float(fl.max()), 1),
        },
        "health": {
            "requests": int(h.size),
            "ms_p50": round(float(np.percentile(h, 50)), 2),
            "ms_p99": round(float(np.percentile(h, 99)), 2),
            "ms_max": round(float(h.max()), 2),
            "failed": int(np.isinf(h).sum()),
        },
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: out[k] for k in ("all_cases_ok", "flood", "health")}, indent=2))


if __name__ == "__main__":
    main()
