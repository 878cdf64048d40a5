"""One benchmark run: ingest, splits, every method per seed, cold start, aggregation, outputs."""

from __future__ import annotations

import math
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from dualrec.benchmark.registry import (
    COLD_FRACTION,
    COLD_METHODS,
    COLD_WARM_FRACTION,
    METRICS,
    QUICK_LARGE_PRODUCTS,
    QUICK_MAX_TEST_EDGES,
    BenchContext,
    Fitted,
    popularity_fallback,
    resolve_methods,
)
from dualrec.benchmark.report import _command_line, _jsonable, _now, write_outputs
from dualrec.errors import DualrecError
from dualrec.evaluate import evaluate_method
from dualrec.split import TEST, TRAIN, cold_split, edge_split


# ---------------------------------------------------------------------- the run
def dataset_name(input: str | Path) -> str:
    p = Path(input)
    return p.name.split(".")[0] if p.is_file() else p.name


def _finite(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def aggregate(per_seed: dict[str, list[dict]]) -> dict:
    """``{method: {metric: mean, "direction_accuracy", "std": {...}, "train_seconds"}}``."""
    out = {}
    for name, runs in per_seed.items():
        entry, std = {}, {}
        for m in METRICS + ("direction_accuracy",):
            vals = np.array([r[m] for r in runs if _finite(r[m]) is not None], dtype=np.float64)
            if vals.size == 0:
                entry[m], std[m] = None, None
                continue
            entry[m] = float(vals.mean())
            std[m] = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
        entry["std"] = std
        entry["train_seconds"] = float(np.mean([r["train_seconds"] for r in runs]))
        for sub in ("long_tail", "bias", "as_target", "warm"):  # nested metric groups: mean (and std) over seeds
            got = [r[sub] for r in runs if r.get(sub)]
            if got:
                keys = [k for k in got[0] if k != "num_queries" and isinstance(got[0][k], (int, float))]
                vals = {k: np.array([g[k] for g in got], dtype=np.float64) for k in keys}
                entry[sub] = {k: float(v.mean()) for k, v in vals.items()}
                entry[sub]["std"] = {k: float(v.std(ddof=1)) if v.size > 1 else 0.0 for k, v in vals.items()}
                if "num_queries" in got[0]:  # how many edges the numbers rest on (mean over seeds)
                    entry[sub]["num_queries"] = float(np.mean([g["num_queries"] for g in got]))
        if any("fallback" in r for r in runs):
            entry["fallback"] = runs[0].get("fallback")
        out[name] = entry
    return out


def run_benchmark(
    format: str,
    input: str | Path,
    out: str | Path,
    seeds: int = 3,
    quick: bool = False,
    methods: list[str] | str | None = None,
    encoder: str = "minilm",
    options: dict | None = None,
    daemon_config: dict | None = None,
    command: str | None = None,
    progress: bool = True,
    cold_start: bool = True,
    cold_start_seeds: int = 1,
    converge: bool = False,
    log=print,
) -> dict:
    """Ingest ``input``, run every method on ``seeds`` splits, write ``out/results.*``; returns results.json's dict.

    ``options`` are the format's ingest options (as ``dualrec ingest --option``); ``daemon_config``
    overrides :class:`~dualrec.train.TrainConfig` fields of every DAEMON variant (after the quick
    caps, e.g. ``{"epochs": 20}``); ``seed``/``encoder`` are set by the benchmark. ``cold_start``
    adds the cold-start section (the methods of ``COLD_METHODS`` that were asked for, refitted
    on :func:`~dualrec.split.cold_split` of the first ``cold_start_seeds`` seeds: a second
    training per method and seed, so by default only the first seed). ``converge`` lifts the
    GNN baselines' epoch caps (``GNN_BUDGET``): each trains until its validation score stops
    improving; DAEMON's epochs and patience are ``daemon_config``'s (TrainConfig's own defaults
    train to convergence).
    """
    from dualrec.features import check_encoder, load_or_build_features
    from dualrec.ingest import FORMATS, load_source

    if format not in FORMATS:
        raise DualrecError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    check_encoder(encoder)
    if int(seeds) < 1:
        raise DualrecError(f"--seeds must be at least 1, got {seeds}")
    from dualrec.train import TrainConfig

    daemon_config = dict(daemon_config or {})
    bad = sorted(set(daemon_config) & {"seed", "encoder", "val_fraction", "test_fraction"})
    if bad:
        raise DualrecError(f"{', '.join(bad)} cannot be overridden: the benchmark sets them for every method")
    TrainConfig.from_dict(daemon_config)  # unknown fields: a clear error before any work
    runners = resolve_methods(methods, log)
    seed_list = [0] if quick else list(range(int(seeds)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if command is None:
        command = _command_line(
            format,
            input,
            out,
            seeds,
            quick,
            list(runners),
            encoder,
            options,
            daemon_config,
            cold_start,
            cold_start_seeds,
            converge,
        )

    t0 = time.perf_counter()
    opts = {"progress": progress, **(options or {})}
    graph, report = load_source(format, input, **opts)
    if graph.num_copurchase == 0:
        raise DualrecError(f"{input} has no co-purchase edges: nothing to benchmark")
    dataset_dir = graph.save(out / "dataset")
    x = load_or_build_features(graph.products, dataset_dir, encoder, show_progress=progress)
    name = dataset_name(input)
    n = graph.num_products
    max_edges = QUICK_MAX_TEST_EDGES if quick and n > QUICK_LARGE_PRODUCTS else None
    log(
        f"{name}: {n} products, {graph.num_copurchase} co-purchase edges, {graph.num_similar} co-view pairs; "
        f"features {tuple(x.shape)} ({encoder}); methods {', '.join(runners)}; seeds {seed_list}"
        + (f"; at most {max_edges} test edges" if max_edges else "")
        + f"  [{time.perf_counter() - t0:.1f}s]"
    )

    run = {
        "dataset": name,
        "format": format,
        "input": str(input),
        "command": command,
        "quick": quick,
        "converge": converge,
        "encoder": encoder,
        "options": options or {},
        "daemon_config": daemon_config,
        "max_test_edges": max_edges,
        "ingest_report": report,
        "split": {"val_fraction": 0.1, "test_fraction": 0.1},
        "started": _now(),
        "seeds": {},
        "failures": [],
    }
    per_seed: dict[str, list[dict]] = {m: [] for m in runners}
    cold_runners = {m: r for m, r in runners.items() if m in COLD_METHODS} if cold_start else {}
    per_seed_cold: dict[str, list[dict]] = {m: [] for m in cold_runners}
    failed: set[str] = set()
    results: dict = {}

    def attempt(s: int, label: str, fn):
        """Run one method; a failure is recorded and the method dropped, the others go on."""
        if label in failed:
            return None
        try:
            return fn()
        except (KeyboardInterrupt, DualrecError):
            raise
        except Exception as e:  # one broken method must not lose the others' results
            failed.add(label)
            msg = f"{type(e).__name__}: {e}"
            run["failures"].append({"seed": s, "method": label, "error": msg, "traceback": traceback.format_exc()})
            log(f"seed {s}  {label:<18} FAILED ({msg}); left out of the results")
            return None

    for s in seed_list:
        split = edge_split(graph, 0.1, 0.1, seed=s)
        ctx = BenchContext(graph, split, x, s, quick, encoder, daemon_config, converge=converge)
        seed_info = {"split": split.counts(), "methods": {}}
        run["seeds"][str(s)] = seed_info
        for m, runner in runners.items():

            def one(m=m, runner=runner):
                fitted = runner(ctx)
                te = time.perf_counter()
                metrics = evaluate_method(
                    graph, split, fitted.score_fn, fitted.pair_score_fn, TEST, max_edges, s, bias=True
                )
                return fitted, metrics, time.perf_counter() - te

            got = attempt(s, m, one)
            if got is None:
                continue
            fitted, metrics, eval_seconds = got
            row = {k: metrics[k] for k in METRICS}
            row["direction_accuracy"] = _finite(metrics["direction_accuracy"])
            row["train_seconds"] = round(float(fitted.train_seconds), 3)
            row["long_tail"], row["bias"] = metrics["long_tail"], metrics["bias"]
            per_seed[m].append(row)
            seed_info["methods"][m] = {
                **row,
                "eval_seconds": round(eval_seconds, 3),
                "num_test_edges": metrics["num_queries"],
                "num_one_way": metrics["num_one_way"],
                "info": _jsonable(fitted.info),
            }
            del fitted  # free the model before the next method
            d = row["direction_accuracy"]
            log(
                f"seed {s}  {m:<18} HR@10 {row['HitRate@10']:.4f}  MRR@10 {row['MRR@10']:.4f}  "
                f"dir {'  n/a' if d is None else f'{d:.3f}'}  train {row['train_seconds']:.1f}s  "
                f"eval {eval_seconds:.1f}s  ({metrics['num_queries']} test edges)"
            )
        if cold_runners and seed_list.index(s) < cold_start_seeds:
            cs = cold_split(graph, COLD_FRACTION, 0.1, seed=s, warm_fraction=COLD_WARM_FRACTION)
            cctx = BenchContext(
                cs.graph, cs.split, x, s, quick, encoder, daemon_config, unseen=cs.cold, converge=converge
            )
            in_degree = torch.bincount(graph.cp_dst[cs.split.mask(TRAIN)], minlength=n)
            cold_info = {
                "cold_products": int(cs.cold.sum()),
                "query_edges": int(cs.query_mask().sum()),
                "target_edges": int(cs.target_mask().sum()),
                "warm_edges": int(cs.warm_mask().sum()),
                "methods": {},
            }
            seed_info["cold_start"] = cold_info
            for m, runner in cold_runners.items():

                def one_cold(m=m, runner=runner):
                    if COLD_METHODS[m]:
                        # A graph-only method's output here does not depend on its model: cold
                        # queries get the fallback, cold targets are never recommended. Not refitted.
                        pop = Fitted(lambda q: in_degree.float().expand(q.numel(), -1), None, 0.0)
                        fitted = popularity_fallback(pop, cs.cold, in_degree)
                    else:
                        fitted = runner(cctx)
                    te = time.perf_counter()
                    q = evaluate_method(
                        cs.graph, cs.split, fitted.score_fn, None, TEST, max_edges, s, edge_mask=cs.query_mask()
                    )
                    t = evaluate_method(
                        cs.graph, cs.split, fitted.score_fn, None, TEST, max_edges, s, edge_mask=cs.target_mask()
                    )
                    w = None  # the fallback stands in for new products only: no warm ranking of its own
                    if not COLD_METHODS[m]:
                        w = evaluate_method(
                            cs.graph, cs.split, fitted.score_fn, None, TEST, max_edges, s, edge_mask=cs.warm_mask()
                        )
                    return fitted, q, t, w, time.perf_counter() - te

                got = attempt(s, f"{m} (cold start)", one_cold)
                if got is None:
                    continue
                fitted, q, t, w, eval_seconds = got
                row = {k: q[k] for k in METRICS}
                row.update(
                    direction_accuracy=None,
                    train_seconds=round(float(fitted.train_seconds), 3),
                    as_target={k: t[k] for k in METRICS},
                    warm=None if w is None else {k: w[k] for k in METRICS},
                    fallback=COLD_METHODS[m],
                )
                per_seed_cold[m].append(row)
                cold_info["methods"][m] = {
                    **row,
                    "eval_seconds": round(eval_seconds, 3),
                    "info": _jsonable(fitted.info),
                }
                del fitted
                log(
                    f"seed {s}  {m + ' (cold)':<18} query HR@10 {row['HitRate@10']:.4f}  MRR@10 {row['MRR@10']:.4f}  "
                    f"as target HR@10 {t['HitRate@10']:.4f}  MRR@10 {t['MRR@10']:.4f}"
                    + (f"  warm HR@10 {w['HitRate@10']:.4f}" if w else "")
                    + (f"  [{COLD_METHODS[m]} fallback]" if COLD_METHODS[m] else "")
                    + f"  train {row['train_seconds']:.1f}s"
                )
        done = {m: r for m, r in per_seed.items() if r and m not in failed}
        results = {
            "dataset": name,
            "n_products": n,
            "n_edges": {"copurchase": graph.num_copurchase, "similar": graph.num_similar},
            "seeds": seed_list[: seed_list.index(s) + 1],
            "methods": aggregate(done),
        }
        cold_done = {m: r for m, r in per_seed_cold.items() if r and f"{m} (cold start)" not in failed}
        if cold_done:
            results["cold_start"] = aggregate(cold_done)
            run["cold_start_seeds"] = seed_list[:cold_start_seeds]
        run["finished_seeds"] = results["seeds"]
        write_outputs(out, results, run)
    if not results.get("methods"):
        raise DualrecError("every method failed; see run.json")
    run["finished"] = _now()
    run["seconds"] = round(time.perf_counter() - t0, 1)
    write_outputs(out, results, run)
    log(f"results written to {out / 'results.json'}, {out / 'results.md'} ({run['seconds']:.0f}s in all)")
    return results
