"""Data-parallel training on one machine: `dualrec train --workers N` against one process.

A synthetic store (dualrec.synthetic, ~20 co-purchase edges per product) is saved as a dataset
folder, then `dualrec train DATASET --encoder hash --batching history --epochs E --no-rerank` runs
once per worker count, each alone, through the command line a user types (torchrun and DDP
over gloo start for N > 1). Recorded per run: wall time of the command (start-up included),
training seconds per epoch (the epoch's steps, without its validation pass, from the version's
training history), the validation MRR@10 reached, and the seconds of the whole training.

    THP_MEM_ALLOC_ENABLE=1 .venv/bin/python benchmarks/train_workers.py --products 100000 --epochs 2 --workers 1 2

On a 2-core machine one process already uses both cores, so a second worker splits the
cores, not adds to them: the measurement says what that costs, not what more cores would give.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dualrec.synthetic import make_store

DEFAULT_OUT = Path(__file__).parent / "results" / "train_workers.json"


def _dualrec() -> str:
    exe = Path(sys.executable).with_name("dualrec")
    if not exe.exists():
        raise SystemExit(f"{exe} not found: install the project into this environment first (make test does)")
    return str(exe)


def train_cli(cmd: list[str], model: Path, log: list[str] | None = None) -> tuple[float, list[dict]]:
    """Run a ``dualrec train`` command line writing ``model``: its wall seconds and the stored
    version's training history (one row per epoch). ``log`` receives the command's output lines,
    each stamped with the seconds since the command started."""
    t0 = time.time()
    lines = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            lines.append(f"{time.time() - t0:7.1f} s  {line.rstrip()}")
    wall = time.time() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n" + "\n".join(lines))
    if log is not None:
        log.extend(lines)
    version = (model / "CURRENT").read_text().strip()  # the model-folder layout: dualrec.store
    return wall, json.loads((model / "versions" / version / "config.json").read_text())["history"]


def run(dataset: Path, model: Path, workers: int, epochs: int) -> dict:
    cmd = [_dualrec(), "train", str(dataset), "--out", str(model), "--encoder", "hash", "--batching", "history"]
    cmd += ["--epochs", str(epochs), "--no-rerank", "--workers", str(workers), "--quiet"]
    wall, hist = train_cli(cmd, model)
    return {
        "workers": workers,
        "command": " ".join(cmd[1:]).replace(str(dataset), "DATASET").replace(str(model), "MODEL"),
        "wall_seconds": round(wall, 1),
        "epochs": len(hist),
        "train_seconds_per_epoch": [round(h["train_seconds"], 1) for h in hist],
        "steps_per_epoch": [h["steps"] for h in hist],
        "val_MRR@10": [round(h["val_MRR@10"], 4) for h in hist],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=100_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset = make_store(n_products=a.products, edges_per_product=20.0, seed=0).save(Path(tmp) / "dataset")
        for w in a.workers:
            r = run(dataset, Path(tmp) / f"model-{w}", w, a.epochs)
            print(json.dumps(r), flush=True)
            rows.append(r)
    out = {
        "benchmark": "train_workers",
        "command": ("THP_MEM_ALLOC_ENABLE=1 " if os.environ.get("THP_MEM_ALLOC_ENABLE") == "1" else "")
        + f"python benchmarks/train_workers.py --products {a.products} --epochs {a.epochs} "
        + "--workers "
        + " ".join(map(str, a.workers))
        + (f" --out {a.out}" if a.out != DEFAULT_OUT else ""),
        "products": a.products,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "results": rows,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
