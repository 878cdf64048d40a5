"""Text encoding at scale: products per second of each encoder, and what a changed catalogue costs.

Texts are the real clothing catalogue's (amazon2014, as ``dualrec ingest`` writes them: category
paths and brand), tiled to ``--products`` with a distinct suffix per copy, so their length is a
real shop's. MiniLM is measured on a sample (``--minilm-sample``; in one process and in
``--workers`` processes) and its time for the whole catalogue is extrapolated (labelled so);
the static and hash encoders run on the whole catalogue. Then ``--changed`` of the products get
a new title and the cache is rebuilt through ``load_or_build_features``: only those are encoded
again.

    .venv/bin/python benchmarks/encode_scale.py          # 1M products
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dualrec import features
from dualrec.features import encode_products, load_or_build_features
from dualrec.ingest import load_source

ROOT = Path(__file__).resolve().parents[1]


def catalogue(data: Path, n: int) -> pd.DataFrame:
    graph, _ = load_source("amazon2014", data / "amazon2014" / "clothing", progress=False)
    base = graph.products.drop(columns=["id"])
    reps = -(-n // len(base))
    p = pd.concat([base] * reps, ignore_index=True).iloc[:n].copy()
    copy = np.arange(n) // len(base)
    p["category"] = p["category"].astype(str) + np.where(copy > 0, " #" + copy.astype(str), "")
    p.insert(0, "id", [f"P{i:08d}" for i in range(n)])
    return p


def rate(fn, n: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    fn()
    s = time.perf_counter() - t0
    return s, n / s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=1_000_000)
    ap.add_argument("--minilm-sample", type=int, default=8192)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--changed", type=float, default=0.01)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/encode_scale.json")
    a = ap.parse_args()

    p = catalogue(a.data, a.products)
    n = len(p)
    res: dict = {
        "command": " ".join(["python", "benchmarks/encode_scale.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "products": n,
        "mean_text_chars": round(float(np.mean([len(t) for t in features.product_texts(p.iloc[:10000])])), 1),
        "encoders": {},
    }
    sample = p.sample(a.minilm_sample, random_state=0)
    features._minilm()  # loading the model is not encoding
    s, r = rate(lambda: encode_products(sample, "minilm", show_progress=False), len(sample))
    res["encoders"]["minilm"] = {
        "measured_on": len(sample),
        "products_per_s": round(r, 1),
        "seconds_for_catalogue_extrapolated": round(n / r),
    }
    s, r = rate(lambda: encode_products(sample, "minilm", show_progress=False, workers=a.workers), len(sample))
    res["encoders"][f"minilm_{a.workers}_processes"] = {
        "measured_on": len(sample),
        "products_per_s": round(r, 1),
        "seconds_for_catalogue_extrapolated": round(n / r),
        "note": "starting the processes included; on 2 cores they share the cores one process uses",
    }
    features._static()  # distilled once per machine (timed apart)
    for enc in ("static", "hash"):
        s, r = rate(lambda enc=enc: encode_products(p, enc, show_progress=False), n)
        res["encoders"][enc] = {"measured_on": n, "products_per_s": round(r, 1), "seconds": round(s, 1)}
        print(enc, res["encoders"][enc], flush=True)
    print(json.dumps(res["encoders"], indent=2), flush=True)

    # a changed catalogue: the cache re-encodes only the edited products
    d = Path(tempfile.mkdtemp(prefix="encode-scale-"))
    try:
        s_full, _ = rate(lambda: load_or_build_features(p, d, "static", show_progress=False), n)
        q = p.copy()
        edit = np.random.default_rng(0).choice(n, int(n * a.changed), replace=False)
        q.loc[edit, "category"] = q.loc[edit, "category"].astype(str) + " (new season)"
        s_inc, _ = rate(lambda: load_or_build_features(q, d, "static", show_progress=False), n)
        res["changed_catalogue"] = {
            "encoder": "static",
            "changed_products": int(edit.size),
            "first_build_seconds": round(s_full, 1),
            "rebuild_seconds": round(s_inc, 1),
            "minilm_rebuild_seconds_extrapolated": round(
                s_inc + edit.size / res["encoders"]["minilm"]["products_per_s"]
            ),
        }
    finally:
        shutil.rmtree(d, ignore_errors=True)
    res["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    print(json.dumps(res, indent=2))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
