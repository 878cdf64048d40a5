"""What a benchmark run writes: results.json / run.json, the markdown table and the plots."""

from __future__ import annotations

import json
import shlex
from datetime import datetime, timezone
from pathlib import Path

from dualrec.benchmark.registry import COLD_FRACTION, COLD_WARM_FRACTION, METRICS, QUICK_DAEMON
from dualrec.evaluate import KS


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _command_line(
    format,
    input,
    out,
    seeds,
    quick,
    methods,
    encoder,
    options,
    daemon_config=None,
    cold_start=True,
    cold_start_seeds=1,
    converge=False,
) -> str:
    parts = ["dualrec", "benchmark", "--format", format, "--input", str(input), "--out", str(out)]
    parts += ["--quick"] if quick else ["--seeds", str(seeds)]
    if not cold_start:
        parts += ["--no-cold-start"]
    elif cold_start_seeds != 1:
        parts += ["--cold-start-seeds", str(cold_start_seeds)]
    if converge:
        parts += ["--converge"]
    parts += ["--methods", ",".join(methods), "--encoder", encoder]
    for k, v in (options or {}).items():
        parts += ["--option", f"{k}={v}"]
    for k, v in (daemon_config or {}).items():
        parts += ["--set", f"{k}={v}"]
    return " ".join(shlex.quote(p) for p in parts)


# ---------------------------------------------------------------------- outputs
def write_outputs(out: Path, results: dict, run: dict) -> None:
    """results.json, run.json, results.md and the two plots (rewritten after every seed)."""
    out = Path(out)
    (out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False))
    (out / "run.json").write_text(json.dumps(_jsonable(run), indent=2))
    (out / "results.md").write_text(results_markdown(results, run))
    plot_results(results, out)


def _pm(mean, std, digits=4) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def results_markdown(results: dict, run: dict) -> str:
    seeds = results["seeds"]
    lines = [
        f"# Benchmark: {results['dataset']}",
        "",
        f"- Command: `{run['command']}`",
        f"- Date: {run.get('finished') or run['started']}"
        + ("" if run.get("finished") else f" (partial: seeds {seeds} done)"),
        f"- Dataset: {results['dataset']} ({run['format']}), {results['n_products']:,} products, "
        f"{results['n_edges']['copurchase']:,} co-purchase edges, {results['n_edges']['similar']:,} co-view pairs; "
        f"text encoder {run['encoder']}",
        "- Protocol: per seed, `edge_split(graph, 0.1, 0.1, seed)`; methods learn from TRAIN edges (+ all co-view "
        "pairs), tune on VAL, are scored on TEST over all products with the query and the TRAIN/VAL edges "
        "excluded (tie-aware); direction accuracy on one-way TEST edges.",
        f"- Seeds: {seeds}; mean ± sample std over seeds" + (" (std 0 with one seed)" if len(seeds) == 1 else ""),
    ]
    if run.get("quick"):
        lines.append(
            f"- Quick mode: one seed, DAEMON at most {QUICK_DAEMON['epochs']} epochs "
            f"(patience {QUICK_DAEMON['patience']})"
            + (
                f"; TEST metrics on a seeded subsample of at most {run['max_test_edges']:,} test edges "
                f"(the same for every method)"
                if run.get("max_test_edges")
                else "; all test edges"
            )
        )
    if run.get("converge"):
        lines.append(
            "- Budget: trained to convergence: the GNN baselines until their validation score stops improving "
            "(their own epoch limits and patience), DAEMON as its TrainConfig says"
        )
    if run.get("daemon_config"):
        lines.append(
            "- DAEMON TrainConfig overrides: " + ", ".join(f"{k}={v}" for k, v in run["daemon_config"].items())
        )
    counts = [v["split"] for v in run["seeds"].values()]
    if counts:
        lines.append(
            f"- Split (seed {seeds[0]}): {counts[0]['train']:,} train / {counts[0]['val']:,} val / "
            f"{counts[0]['test']:,} test edges"
        )
    lines += [
        "",
        "| method | HR@5 | HR@10 | HR@20 | MRR@5 | MRR@10 | MRR@20 | dir. acc. | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in results["methods"].items():
        cells = [_pm(m[k], m["std"][k]) for k in METRICS]
        cells.append(_pm(m["direction_accuracy"], m["std"]["direction_accuracy"], 3))
        cells.append(f"{m['train_seconds']:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += _bias_markdown(results)
    lines += _cold_markdown(results, run)
    if run.get("failures"):
        lines += ["", "Failed (left out):"]
        lines += [f"- {f['method']} (seed {f['seed']}): {f['error']}" for f in run["failures"]]
    lines += ["", "Plots: `hitrate_at_k.png`, `mrr_at_k.png`. Per-seed numbers, tuned settings: `run.json`.", ""]
    return "\n".join(lines)


def _bias_markdown(results: dict) -> list[str]:
    rows = [(name, m) for name, m in results["methods"].items() if m.get("long_tail") or m.get("bias")]
    if not rows:
        return []
    lines = [
        "",
        "## Long tail and popularity bias",
        "",
        "Long tail = test edges whose target is in the lower 50 % of products by training in-degree. "
        "head share@10 = share of all top-10 slots (over the test queries) taken by the 1 % most popular "
        "products; coverage@10 = distinct products recommended / all products. "
        "`daemon_no_similar` is DAEMON without the co-view augmentation.",
        "",
        "| method | long-tail edges | long-tail HR@10 | long-tail MRR@10 | head share@10 | coverage@10 "
        "| long-tail share@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in rows:
        lt, b = m.get("long_tail") or {}, m.get("bias") or {}
        cells = [f"{lt['num_queries']:,.0f}" if lt.get("num_queries") is not None else "n/a"]
        cells += [_pm(lt.get(k), (lt.get("std") or {}).get(k)) for k in ("HitRate@10", "MRR@10")]
        cells += [
            _pm(b.get(k), (b.get("std") or {}).get(k), 3)
            for k in ("head_share@10", "coverage@10", "long_tail_share@10")
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _cold_markdown(results: dict, run: dict) -> list[str]:
    cold = results.get("cold_start")
    if not cold:
        return []
    info = next((v["cold_start"] for v in run["seeds"].values() if "cold_start" in v), {})
    cold_seeds = run.get("cold_start_seeds", results["seeds"][:1])
    lines = [
        "",
        "## Cold start",
        "",
        f"Seeds {cold_seeds}: `cold_split(graph, {COLD_FRACTION}, 0.1, seed, warm_fraction={COLD_WARM_FRACTION})` "
        f"holds out {COLD_FRACTION:.0%} "
        "of the products "
        "entirely (their co-purchase edges and co-view pairs are removed from training and message passing; "
        "DAEMON gives them no per-product embedding and never samples them as negatives). *As query*: the cold "
        "product's own held-out out-edges, all products ranked. *As target*: held-out edges from a known product "
        "to a cold one: is the new product recommended? Methods marked *popularity fallback* know nothing of an "
        "unseen product: a cold query gets the best-sellers and a cold product is never recommended. "
        "*Warm*: held-out edges between known products, ranked in the same catalogue (what the room given "
        "to new products costs). `daemon`: the shipped ranking (new products get up to 2 slots from position 9 "
        "where their gate score (DAEMON's score plus the list's gap) reaches the 20 % quantile of the validation "
        "co-purchases', `RerankConfig.new_min_confidence`); `daemon_new0`: no slots; `daemon_always`: the "
        "slots always filled; `daemon_confC`: the C % quantile. A new product as query gets its text neighbours' "
        "co-purchases, then DAEMON's order (`text_neighbours`: the same without DAEMON; `daemon_query_alone`: "
        "DAEMON alone)."
        + (
            f" Seed {results['seeds'][0]}: {info.get('cold_products', 0):,} cold products, "
            f"{info.get('query_edges', 0):,} query edges, {info.get('target_edges', 0):,} target edges, "
            f"{info.get('warm_edges', 0):,} warm edges."
            if info
            else ""
        ),
        "",
        "| method | query HR@5 | query HR@10 | query HR@20 | query MRR@10 | target HR@10 | target MRR@10 "
        "| warm HR@10 | warm MRR@10 | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in cold.items():
        t = m.get("as_target") or {}
        label = name + (f" ({m['fallback']} fallback)" if m.get("fallback") else "")
        cells = [_pm(m[k], m["std"][k]) for k in ("HitRate@5", "HitRate@10", "HitRate@20", "MRR@10")]
        cells += [_pm(t.get(k), (t.get("std") or {}).get(k)) for k in ("HitRate@10", "MRR@10")]
        w = m.get("warm") or {}
        cells += [_pm(w.get(k), (w.get("std") or {}).get(k)) for k in ("HitRate@10", "MRR@10")]
        cells.append(f"{m['train_seconds']:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def plot_results(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for metric, fname in (("HitRate", "hitrate_at_k.png"), ("MRR", "mrr_at_k.png")):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
        for name, m in results["methods"].items():
            y = [m[f"{metric}@{k}"] for k in KS]
            e = [m["std"][f"{metric}@{k}"] or 0.0 for k in KS]
            ax.errorbar(KS, y, yerr=e, marker="o", capsize=3, label=name)
        ax.set_xticks(KS)
        ax.set_xlabel("k")
        ax.set_ylabel(f"{metric}@k")
        ax.set_title(f"{results['dataset']}: {metric}@k (mean ± std over {len(results['seeds'])} seed(s))")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / fname)
        plt.close(fig)
