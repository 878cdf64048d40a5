"""The co-occurrence component at catalogue scale: its build time and memory.

The second stage's co-occurrence scorer (:class:`dualrec.cooccurrence.Cooccurrence`) is fitted
once at training: the training graph's co-purchase, reverse co-purchase and co-view matrices,
row-normalised, its path weights tuned on validation edges, then folded into the sparse matrices
a query walks (its own rows only, never the catalogue). The model folder stores those matrices
(``rerank/arrays/``), memory-mapped when served, so the workers share them.

For each synthetic store (``--sizes``; ~10 co-purchase edges per product, as ``serve_scale.py``)
this measures, through the second stage's own code: the fit's seconds, the process's peak
resident memory during the fit above what it held before (the graph, the split), and the bytes
of the stored arrays.

    .venv/bin/python benchmarks/cooc_scale.py --sizes 1000000 5000000
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "cooc_scale.json"


def rss_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def measure(n: int, log) -> dict:
    from dualrec.cooccurrence import Cooccurrence
    from dualrec.split import TRAIN, VAL, edge_split
    from dualrec.synthetic import make_store

    t0 = time.perf_counter()
    g = make_store(n_products=n, edges_per_product=10.0, seed=0)
    split = edge_split(g, seed=0)
    train, val = split.mask(TRAIN), split.mask(VAL)
    log(f"{n:,} products, {g.num_copurchase:,} co-purchase edges in {time.perf_counter() - t0:.0f} s")
    Path("/proc/self/clear_refs").write_text("5")  # the peak from here on (Linux: resets VmHWM)
    before = rss_kib("VmRSS")
    t0 = time.perf_counter()
    c = Cooccurrence(seed=0).fit(g, train, val=(g.cp_src[val], g.cp_dst[val]))
    fit_s = time.perf_counter() - t0
    peak = rss_kib("VmHWM")
    arrays = c.arrays()
    return {
        "products": n,
        "copurchase_edges": int(g.num_copurchase),
        "similar_pairs": int(g.num_similar),
        "train_edges": int(train.sum()),
        "fit_seconds": round(fit_s, 1),
        "tuning_evaluations": c.info_.get("tuning_evaluations"),
        "peak_rss_above_before_mib": round((peak - before) / 1024, 1),
        "rss_before_mib": round(before / 1024, 1),
        "stored_arrays_mib": round(sum(a.nbytes for a in arrays.values()) / 2**20, 1),
        "stored_nonzeros": {
            name: int(arrays[f"{name}.data"].size) for name in ("An", "ATn", "Sn", "_R2") if f"{name}.data" in arrays
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000])
    args = ap.parse_args()
    import torch

    out = {
        "benchmark": "cooc_scale",
        "command": "python benchmarks/cooc_scale.py --sizes " + " ".join(map(str, args.sizes)),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d"),
        "results": [],
    }
    for n in args.sizes:
        r = measure(n, print)
        print(json.dumps(r), flush=True)
        out["results"].append(r)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {OUT}")


if __name__ == "__main__":
    main()
