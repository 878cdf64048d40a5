"""Where a history-mode training step spends its time: the profile behind the 1M epoch time.

Trains DAEMON on a synthetic store (the same store and features as benchmarks/train_scale.py):
plain for --warmup and for --steps optimiser steps (the difference gives the seconds per step
past the warm-up), then for --steps under torch.profiler. The profiled run's operators are
attributed to the step's named phases (dualrec.train.PHASES: the batch's products, forward,
loss, backward, optimiser, the history refresh), and the loop's work between the steps to
"between" (a fold's adjacency build too, where one falls among the counted steps); the
validation passes are not counted. The first --warmup steps of the profiled run are left out
(allocator and kernel warm-up).

    THP_MEM_ALLOC_ENABLE=1 .venv/bin/python benchmarks/train_profile.py --products 1000000

The result has, per step: milliseconds per phase (and "between": the loop's own work between
the steps, such as drawing the negatives), aten operator calls, self time per operator kind
(matrix products, dtype conversions and copies, gathers and scatters, element-wise, ...; the
optimiser step's operators as one) and the operators that take the most time. Profiled times
include the profiler's own overhead (a few microseconds per operator), so the plain run's seconds
per step is the one to quote.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time
from pathlib import Path

from torch.profiler import ProfilerActivity, profile
from train_scale import machine, make_inputs

from dualrec.train import PHASES, TrainConfig, train

# operator -> kind; anything else is "other"
KINDS = {
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv", "aten::mv"),
    "dtype conversions and copies": ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous"),
    "gathers and scatters": (
        "aten::index",
        "aten::index_select",
        "aten::index_copy_",
        "aten::index_copy",
        "aten::index_add_",
        "aten::index_put_",
        "aten::scatter_add_",
        "aten::gather",
        "aten::embedding",
        "aten::_embedding_bag",
        "aten::_embedding_bag_forward_only",
        "aten::_embedding_bag_backward",
        "aten::embedding_dense_backward",
        "aten::_embedding_bag_dense_backward",
        "aten::_embedding_bag_per_sample_weights_backward",
        "aten::take",
    ),
    "sorting and unique": ("aten::sort", "aten::_unique2", "aten::unique_dim", "aten::argsort", "aten::searchsorted"),
    "allocation and fill": ("aten::empty", "aten::empty_strided", "aten::fill_", "aten::zero_", "aten::zeros"),
}
KIND_OF = {op: kind for kind, ops in KINDS.items() for op in ops}
ELEMENTWISE = ("mul", "add", "sub", "div", "exp", "log", "relu", "threshold", "clamp", "where", "neg", "sqrt", "pow")


def kind_of(name: str, phase: str) -> str:
    if phase == "optimiser":  # (its element-wise updates too: the optimiser's cost as one figure)
        return "optimiser step"
    if not name.startswith("aten::"):  # autograd nodes, optimiser and module ranges: their own time
        return "autograd and other bookkeeping"
    if name in KIND_OF:
        return KIND_OF[name]
    base = name[6:].rstrip("_")
    if base in ELEMENTWISE or base.split("_")[0] in ELEMENTWISE and "softmax" not in base:
        return "element-wise"
    return "other operators"


def config(steps: int, batch_size: int) -> TrainConfig:
    return TrainConfig(
        epochs=1,
        patience=1,
        batch_size=batch_size,
        history_batch_size=batch_size,
        max_steps_per_epoch=steps,
        max_val_edges=500,
        seed=0,
        batching="history",
    )


def attribute(events, skip: int) -> tuple[dict, int]:
    """Self time and calls of every event from the first counted step's start to the last step's
    end, by (phase, name); events in no phase range (the loop's own work between the steps:
    drawing negatives, slicing the batch) under the phase "between". Ranges of the first ``skip``
    steps are left out."""
    names = {v: k for k, v in PHASES.items()}
    starts = sorted(e.time_range.start for e in events if e.name == PHASES["batch"])
    if len(starts) <= skip:
        raise SystemExit(f"only {len(starts)} steps were profiled: fewer than --warmup {skip}")
    start = starts[skip]
    end = max(e.time_range.end for e in events if e.name in names)
    counted = len(starts) - skip
    by = collections.defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.time_range.start < start or e.time_range.end > end:
            continue
        if e.name in names:  # the range itself: its total
            by[(names[e.name], "(phase total)")][0] += e.cpu_time_total
            continue
        p = e.cpu_parent
        while p is not None and p.name not in names:
            p = p.cpu_parent
        row = by[(names[p.name] if p is not None else "between", e.name)]
        row[0] += e.self_cpu_time_total
        row[1] += 1
    by[("between", "(phase total)")][0] = sum(v[0] for (ph, op), v in by.items() if ph == "between")
    return by, counted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=200, help="optimiser steps in each run")
    ap.add_argument("--warmup", type=int, default=50, help="profiled steps left out at the start")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_profile.json")
    a = ap.parse_args()
    if not 0 < a.warmup < a.steps:
        raise SystemExit("--warmup must be below --steps")

    g, x, _ = make_inputs(a.products)
    # the plain seconds per step past the warm-up: a run of --warmup steps subtracted from one of
    # --steps (a large store's first steps are slower: first touches of the optimiser state)
    spent = []
    for steps in (a.warmup, a.steps):
        res = train(g, x, config(steps, a.batch_size), progress=False, log=lambda *_: None)
        h = res.history[0]
        spent.append((h["train_seconds"] - h.get("adjacency_seconds", 0.0), h["steps"]))
    step_s = (spent[1][0] - spent[0][0]) / (spent[1][1] - spent[0][1])
    print(f"plain run: {step_s * 1000:.1f} ms per step over steps {a.warmup} to {a.steps}")

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train(g, x, config(a.steps, a.batch_size), progress=False, log=lambda *_: None)
    by, n = attribute(prof.events(), a.warmup)

    phases = {p: round(by[(p, "(phase total)")][0] / n / 1000, 2) for p in [*PHASES, "between"]}
    kinds = collections.defaultdict(float)
    calls = 0
    for (phase, op), (us, c) in by.items():
        if op != "(phase total)":
            kinds[kind_of(op, phase)] += us
            calls += c if op.startswith("aten::") else 0
    ops = sorted(((us, c, p, op) for (p, op), (us, c) in by.items() if op != "(phase total)"), reverse=True)
    out = {
        "benchmark": "train_profile",
        "command": ("THP_MEM_ALLOC_ENABLE=1 " if os.environ.get("THP_MEM_ALLOC_ENABLE") == "1" else "")
        + f"python benchmarks/train_profile.py --products {a.products} --batch-size {a.batch_size} "
        f"--steps {a.steps} --warmup {a.warmup}",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "products": a.products,
        "batch_size": a.batch_size,
        "precision": res.precision,
        "ms_per_step_plain": round(step_s * 1000, 1),
        "profiled_steps": n,
        # the phases and the loop's work between them, from the first counted step to the last
        "ms_per_step_profiled": round(sum(phases.values()), 1),
        "aten_calls_per_step": round(calls / n),
        "ms_per_step_by_phase": phases,
        "self_ms_per_step_by_kind": {k: round(v / n / 1000, 2) for k, v in sorted(kinds.items(), key=lambda i: -i[1])},
        "top_operators": [
            {"operator": op, "phase": p, "self_ms_per_step": round(us / n / 1000, 2), "calls_per_step": round(c / n, 1)}
            for us, c, p, op in ops[: a.top]
        ],
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "top_operators"}, indent=1))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
