"""The training-at-scale plot: seconds per epoch against catalogue size, and validation MRR@10
against wall time, drawn from the committed results of ``train_scale.py``.

    .venv/bin/python benchmarks/plot_train_scale.py    # -> benchmarks/results/train_scale.png

Left: one point per measured store (``train_scale*.json``), full-graph and history mode, with the
issue's 5-minute epoch as a line. Right: the convergence runs (``train_convergence_*.json``), each
curve marked where it first comes within 1 % of its best. Reads only result files; runs nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RES = Path(__file__).parent / "results"
SCALE = ("train_scale.json", "train_scale_history.json", "train_scale_5m.json")
CURVES = ("train_convergence_full.json", "train_convergence_history.json", "train_convergence_history_1m.json")


def _rows(name: str) -> list[dict]:
    p = RES / name
    return json.loads(p.read_text())["results"] if p.exists() else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RES / "train_scale.png")
    a = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    by_mode: dict[str, list[tuple[int, float]]] = {}
    for name in SCALE:
        for r in _rows(name):
            by_mode.setdefault(r.get("batching", "full"), []).append((r["products"], r["seconds_per_epoch"]))
    for mode, pts in sorted(by_mode.items()):
        pts.sort()
        left.plot([p for p, _ in pts], [s for _, s in pts], marker="o", label=f"{mode} mode")
    left.axhline(300, color="grey", linestyle="--", linewidth=1, label="5 minutes")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("products")
    left.set_ylabel("seconds per epoch (2 cores)")
    left.set_title("Epoch time")
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=8)

    for name in CURVES:
        for r in _rows(name):
            curve = r["curve"]
            x = [c["elapsed_seconds"] / 60 for c in curve]
            y = [c["val_MRR@10"] for c in curve]
            per_cat = r.get("products_per_category")
            store = f"{per_cat}/category" if per_cat else "50 categories"
            (line,) = right.plot(x, y, marker=".", label=f"{r['batching']}, {r['products']:,} products, {store}")
            hit = next(c for c in curve if c["elapsed_seconds"] == r["seconds_to_within_1pct_of_best"])
            right.plot(hit["elapsed_seconds"] / 60, hit["val_MRR@10"], "*", ms=12, color=line.get_color())
    right.axvline(30, color="grey", linestyle="--", linewidth=1, label="30 minutes")
    right.set_xlabel("minutes (training and validation passes)")
    right.set_ylabel("validation MRR@10")
    right.set_title("Convergence (star: within 1 % of the best)")
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out)
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
