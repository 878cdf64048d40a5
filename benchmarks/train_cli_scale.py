"""A large catalogue trained to convergence through the command a user types.

A synthetic store with small categories (the learnable store of ``train_scale.py
--products-per-category``) is saved as a dataset folder, then ``dualrec train DATASET --encoder
hash --no-rerank`` runs (with any ``--set`` options given) until early stopping ends it. Recorded:
the command's wall time (start-up, features, training, validation passes and writing the model
folder), the validation passes with their MRR@10, the pass the stored model comes from, and the
command's log lines, each stamped with the seconds since it started.

    THP_MEM_ALLOC_ENABLE=1 .venv/bin/python benchmarks/train_cli_scale.py --products 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from train_scale import machine, synthetic_store
from train_workers import _dualrec, train_cli

DEFAULT_OUT = Path(__file__).parent / "results" / "train_cli_scale.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=1_000_000)
    ap.add_argument("--products-per-category", type=int, default=50)
    ap.add_argument("--edges-per-product", type=float, default=28.0)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="KEY=VALUE, passed to dualrec train")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(a.products, a.products_per_category, a.edges_per_product)
        edges = store.num_copurchase
        dataset = store.save(Path(tmp) / "dataset")
        del store
        model = Path(tmp) / "model"
        cmd = [_dualrec(), "train", str(dataset), "--out", str(model), "--encoder", "hash", "--no-rerank", "--quiet"]
        for s in a.sets:
            cmd += ["--set", s]
        log: list[str] = []
        wall, hist = train_cli(cmd, model, log)
    best = max(hist, key=lambda h: h["val_MRR@10"])
    out = {
        "benchmark": "train_cli_scale",
        "command": ("THP_MEM_ALLOC_ENABLE=1 " if os.environ.get("THP_MEM_ALLOC_ENABLE") == "1" else "")
        + f"python benchmarks/train_cli_scale.py --products {a.products} --products-per-category "
        + f"{a.products_per_category} --edges-per-product {a.edges_per_product}"
        + "".join(f" --set {s}" for s in a.sets)
        + (f" --out {a.out}" if a.out != DEFAULT_OUT else ""),
        "train_command": " ".join(cmd[1:]).replace(str(dataset), "DATASET").replace(str(model), "MODEL"),
        "products": a.products,
        "copurchase_edges": edges,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": round(wall, 1),
        "validation_passes": len(hist),
        "steps_per_pass": [h["steps"] for h in hist],
        "seconds_per_pass": [round(h["seconds"], 1) for h in hist],
        "train_seconds_per_pass": [round(h["train_seconds"], 1) for h in hist],
        "val_MRR@10": [round(h["val_MRR@10"], 4) for h in hist],
        "best_pass": best["epoch"],
        "best_val_MRR@10": round(best["val_MRR@10"], 4),
        "log": log,  # the command's own lines, stamped with seconds since it started
    }
    print(json.dumps(out, indent=2))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
