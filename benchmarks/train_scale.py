"""Training cost at scale: seconds per optimiser step / per epoch and peak RSS.

Synthetic stores (dualrec.synthetic) of 100k and 1M products with ~20 co-purchase edges per
product (average degree). Features are random 384-d vectors, the width of MiniLM, so the
measurement is of the GNN and its loop, not of text encoding (MiniLM encodes ~1k titles/s on
2 cores: ~17 min for 1M products, done once and cached).

An epoch is one pass over all training edges as loss targets (see dualrec.train). For large
graphs the measured run is capped at --max-steps optimiser steps; the full-epoch time is then
extrapolated (steps x seconds per step + the folds' adjacency builds + the validation pass) and
labelled as such in the output; seconds per step leave the adjacency builds out.
--batching picks the training mode (TrainConfig.batching): "full" computes every product in
every step, "history" only the step's batch (neighbours read from stored layer inputs).

    .venv/bin/python benchmarks/train_scale.py            # 100k and 1M, full-graph steps
    THP_MEM_ALLOC_ENABLE=1 .venv/bin/python benchmarks/train_scale.py --batching history --batch-size 1024 \
        --max-steps 0 --out benchmarks/results/train_scale_history.json   # whole epochs
    .venv/bin/python benchmarks/train_scale.py --sizes 1000000 --batching history --batch-size 1024 \
        --features hash --epochs 12 --curve-steps 1500   # validation MRR@10 every 1,500 steps

With --epochs E > 1 the result has the validation curve against wall time (training and
validation passes) and the time until validation MRR@10 is within 1 % of its best.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import time
from pathlib import Path

import torch

from dualrec.features import build_features
from dualrec.synthetic import make_store
from dualrec.train import TrainConfig, train


def machine() -> str:
    """Architecture, CPU model (from /proc/cpuinfo), threads and torch: the same 2-core machine can
    run on different hosts from one day to the next, and their speeds differ."""
    cpu = platform.processor() or "unknown CPU"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{platform.machine()}, {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def synthetic_store(n: int, per_category: int = 0, edges_per_product: float = 20.0):
    """The benchmark's synthetic store of ``n`` products (seed 0); ``per_category`` > 0: categories
    of about that many products instead of the generator's fixed 50 (``--products-per-category``)."""
    cats = {"n_categories": max(1, round(n / per_category))} if per_category > 0 else {}
    return make_store(n_products=n, edges_per_product=edges_per_product, seed=0, **cats)


def make_inputs(
    n: int,
    batching: str = "history",
    features: str = "random",
    dim: int = 384,
    per_category: int = 0,
    edges_per_product: float = 20.0,
):
    """The synthetic store of ``n`` products, its features as ``dualrec train`` passes them, and
    the seconds the store took to generate."""
    t0 = time.time()
    g = synthetic_store(n, per_category, edges_per_product)
    gen_s = time.time() - t0
    if features == "hash":  # the synthetic products' own text, hashed: something to learn from
        x = torch.from_numpy(build_features(g.products, "hash", show_progress=False))
    else:  # (float16 in the history mode, as `dualrec train` passes them: dualrec.pipeline._training_features)
        gen, step = torch.Generator().manual_seed(0), 100_000
        x = torch.empty(n, dim, dtype=torch.float16 if batching == "history" else torch.float32)
        for i in range(0, n, step):  # a chunk at a time: no float32 copy of 5M x 384 beside it
            x[i : i + step] = torch.randn(min(step, n - i), dim, generator=gen)
    return g, (x.half() if batching == "history" else x), gen_s


def run(
    n: int,
    batch_size: int,
    max_steps: int,
    batching: str = "full",
    epochs: int = 1,
    features: str = "random",
    dim: int = 384,
    val_edges: int = 2000,
    per_category: int = 0,
    edges_per_product: float = 20.0,
) -> dict:
    g, x, gen_s = make_inputs(n, batching, features, dim, per_category, edges_per_product)
    dim = x.shape[1]
    cfg = TrainConfig(
        epochs=epochs,
        patience=epochs,
        batch_size=batch_size,
        history_batch_size=batch_size,
        max_steps_per_epoch=max_steps,
        max_val_edges=val_edges,
        seed=0,
        batching=batching,
    )
    t1 = time.time()
    res = train(g, x, cfg, progress=False, log=print)
    total_s = time.time() - t1
    h = res.history[0]
    train_edges = int(res.split.mask(0).sum())
    folds = max(2, round(1 / cfg.target_fraction))
    full_steps = folds * math.ceil(train_edges / folds / batch_size)
    # the folds' adjacency builds are a fixed cost per epoch, not per step (a capped run would
    # otherwise spread them over its few steps and inflate the extrapolated epoch)
    adj_s = h.get("adjacency_seconds", 0.0)
    step_s = (h["train_seconds"] - adj_s) / h["steps"]
    out = {
        "products": n,
        "copurchase_edges": g.num_copurchase,
        "similar_pairs": g.num_similar,
        "train_edges": train_edges,
        "batching": res.batching,
        "precision": res.precision,
        "id_optimizer": res.id_optimizer,
        "batch_size": batch_size,
        "feature_dim": dim,
        "products_per_category": per_category or None,
        "generate_seconds": round(gen_s, 2),
        "measured_steps": h["steps"],
        "seconds_per_step": round(step_s, 3),
        "steps_per_full_epoch": full_steps,
        "adjacency_seconds": round(adj_s, 2),
        "seconds_per_epoch": round(step_s * full_steps + adj_s + h["seconds"] - h["train_seconds"], 1),
        "seconds_per_epoch_is_extrapolated": h["steps"] < full_steps,
        "validation_seconds": round(h["seconds"] - h["train_seconds"], 2),
        "run_seconds": round(total_s, 1),
        "peak_rss_gib": round(peak_rss_gib(), 2),
    }
    if epochs > 1:  # the validation curve against wall time (training + validation passes)
        elapsed, curve = 0.0, []
        steps = 0
        for row in res.history:
            elapsed += row["seconds"]
            steps += row["steps"]
            curve.append(
                {
                    "epoch": row["epoch"],
                    "steps": steps,
                    "elapsed_seconds": round(elapsed, 1),
                    "val_MRR@10": row["val_MRR@10"],
                }
            )
        best = max(c["val_MRR@10"] for c in curve)
        out["curve"] = curve
        out["best_val_MRR@10"] = best
        out["seconds_to_within_1pct_of_best"] = next(
            c["elapsed_seconds"] for c in curve if c["val_MRR@10"] >= 0.99 * best
        )
    return out


DEFAULT_OUT = Path(__file__).parent / "results" / "train_scale.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--batch-size", type=int, default=65536)
    ap.add_argument("--max-steps", type=int, default=8)
    ap.add_argument("--batching", choices=["full", "history"], default="full")
    ap.add_argument("--features", choices=["random", "hash"], default="random")
    ap.add_argument(
        "--epochs",
        type=int,
        default=1,
        help=">1: that many epochs with the validation curve: whole epochs, or with --curve-steps S, "
        "rounds of S steps each followed by a validation pass (a curve with more points on a large store)",
    )
    ap.add_argument("--curve-steps", type=int, default=0)
    ap.add_argument(
        "--val-edges", type=int, default=2000, help="validation edges ranked per pass (more: a less noisy curve)"
    )
    ap.add_argument(
        "--products-per-category",
        type=int,
        default=0,
        help="about this many products per category (0: the generator's 50 categories). With 50 categories a "
        "1M store's co-purchases are drawn among ~20k same-category products by popularity alone, so a "
        "model's validation MRR@10 stays at noise level; categories of tens of products (50) give it "
        "something to learn and a convergence curve to read",
    )
    ap.add_argument(
        "--edges-per-product",
        type=float,
        default=20.0,
        help="co-purchase draws per product (the generator's edges_per_product); repeated draws of a pair "
        "merge into one weighted edge, so smaller categories need more draws for the same edge count",
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = ap.parse_args()
    rows = []
    for n in a.sizes:  # ascending, so peak RSS of the larger run dominates
        steps = a.curve_steps if a.epochs > 1 else a.max_steps
        r = run(
            n,
            a.batch_size,
            steps,
            a.batching,
            a.epochs,
            a.features,
            val_edges=a.val_edges,
            per_category=a.products_per_category,
            edges_per_product=a.edges_per_product,
        )
        print(json.dumps(r))
        rows.append(r)
    out = {
        "benchmark": "train_scale",
        "command": ("THP_MEM_ALLOC_ENABLE=1 " if os.environ.get("THP_MEM_ALLOC_ENABLE") == "1" else "")
        + "python benchmarks/train_scale.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v if not isinstance(v, list) else ' '.join(map(str, v))}"
            for k, v in (
                ("sizes", a.sizes),
                ("batch_size", a.batch_size),
                ("max_steps", a.max_steps),
                ("batching", a.batching),
                ("epochs", a.epochs),
                ("features", a.features),
            )
            + ((("curve_steps", a.curve_steps),) if a.curve_steps else ())
            + ((("val_edges", a.val_edges),) if a.val_edges != 2000 else ())
            + ((("products_per_category", a.products_per_category),) if a.products_per_category else ())
            + ((("edges_per_product", a.edges_per_product),) if a.edges_per_product != 20.0 else ())
        )
        + (f" --out {a.out}" if a.out != DEFAULT_OUT else ""),
        "machine": machine(),
        # as the dualrec command sets it (dualrec.cli): large tensors on transparent huge pages
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "0"),
        "date": time.strftime("%Y-%m-%d"),
        "results": rows,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
