"""Command-line interface: a thin face over the library.

dualrec demo                                   # synthetic store, end to end, about a minute
dualrec ingest --format amazon2014 --input DIR --out DATASET
dualrec train DATASET --out MODEL
dualrec evaluate MODEL
dualrec recommend MODEL ID [ID ...] --k 10
dualrec index MODEL --kind hnsw               # faiss index (a new model version)
dualrec rollback MODEL                        # the previous model version becomes current
dualrec serve MODEL --port 8000               # HTTP API (FastAPI)
dualrec export MODEL --k 20 --out recs.parquet
dualrec benchmark --format amazon2014 --input DIR --out RESULTS [--quick]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from dualrec.errors import DualrecError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="dualrec: related-product recommendations from a directed product graph (DAEMON dual embeddings).\n\n"
    "Typical flow: `dualrec ingest` -> `dualrec train` -> `dualrec evaluate` / `dualrec recommend`. "
    "Try `dualrec demo` first.",
)


#: each format's --option keys (tests/test_cli.py checks them against dualrec.ingest.options_for)
ENCODER_HELP = (
    "text encoder: minilm (a transformer: the best quality), static (distilled from minilm: many times "
    "faster, for very large catalogues; benchmarks/README.md has its cost) or hash (tests)"
)
INGEST_OPTIONS = (
    "orders: invoice_col, product_col, customer_col, time_col, description_col, quantity_col, price_col, "
    "min_support, min_basket_support, basket_edges, max_basket_size, products, engine, work_dir, memory_limit; "
    "csv: id_col, src_col, dst_col, a_col, b_col, weight_col; amazon2014, amazon2018: none; "
    "every format: progress"
)


def _show_version(value: bool) -> None:
    if value:
        from dualrec import __version__

        typer.echo(f"dualrec {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="print the version and exit"
    ),
    threads: Optional[int] = typer.Option(
        None,
        "--threads",
        min=1,
        max=1024,
        envvar="DUALREC_THREADS",
        help="CPU threads for torch, faiss and LightGBM (default: all cores). Give each of several dualrec "
        "processes on one machine its share, e.g. --threads 1 for each of 2 on 2 cores: threads that "
        "outnumber the cores slow torch down many times over",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="more log lines (debug)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="warnings and errors only, no progress bars"),
):
    import logging

    # log lines (epochs, fitting, notes) go to stderr through the standard logging module; results
    # (metrics, recommendations, reports) to stdout
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    _STATE["quiet"] = quiet
    # Large tensors on transparent huge pages (read by torch when it starts): training at scale
    # allocates and frees buffers of hundreds of MB, and faulting them in 4 KiB pages costs a
    # large share of an epoch (benchmarks/README.md). A value the user set is kept.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    if threads is not None:
        # read by torch, faiss (OpenMP) and LightGBM when they start; set before any of them is imported
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(threads)
        if "torch" in sys.modules:  # already imported (tests, an embedding program): set it directly
            sys.modules["torch"].set_num_threads(threads)


_STATE = {"quiet": False}  # the global --quiet, for the commands' progress bars


def _bars(quiet: bool = False) -> bool:
    """Whether to show progress bars: not under the global --quiet or the command's own."""
    return not (quiet or _STATE["quiet"])


def _log(msg: str) -> None:
    import logging

    logging.getLogger("dualrec").info(msg)


def _fail(msg: str) -> None:
    # on its own line, also after a progress bar that an error interrupted mid-line
    typer.secho(("\n" if "tqdm" in sys.modules else "") + f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _run(fn):
    """Run a command body; user mistakes (DualrecError) print one clear line, not a traceback."""
    try:
        return fn()
    except DualrecError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted")


def _print_metrics(m: dict, title: str) -> None:
    typer.echo(title)
    for k in (5, 10, 20):
        typer.echo(f"  HitRate@{k:<2d} {m[f'HitRate@{k}']:.4f}   MRR@{k:<2d} {m[f'MRR@{k}']:.4f}")
    if "direction_accuracy" in m:
        typer.echo(f"  direction accuracy (one-way held-out edges) {m['direction_accuracy']:.4f}")


@app.command()
def ingest(
    format: str = typer.Option(
        ..., "--format", "-f", help="one of: orders, csv, amazon2014, amazon2018 (docs/data-formats.md)"
    ),
    input: Path = typer.Option(..., "--input", "-i", help="source file or folder"),
    out: Path = typer.Option(..., "--out", "-o", help="dataset folder to write"),
    option: list[str] = typer.Option([], "--option", help="format option KEY=VALUE (repeatable). " + INGEST_OPTIONS),
    products: Optional[Path] = typer.Option(
        None,
        "--products",
        help="orders: a products table (id + metadata columns such as title, category, brand) joined by product id",
    ),
    as_json: bool = typer.Option(False, "--json", help="print the whole report as JSON (also in OUT/graph.json)"),
):
    """Read a catalogue + co-purchase/co-view data into a dataset folder (Parquet)."""
    from dualrec.ingest import FORMATS, summary
    from dualrec.ingest import ingest as do_ingest

    def body():
        if format not in FORMATS:
            raise DualrecError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
        opts = _key_values(option, "--option")
        if not _bars():
            opts.setdefault("progress", False)
        if products is not None:
            if format != "orders":
                raise DualrecError("--products is for --format orders (the other formats read their own catalogue)")
            opts["products"] = str(products)
        report = do_ingest(format, input, out, **opts)
        if as_json:
            typer.echo(json.dumps(report, indent=2, default=str))
        else:
            typer.echo(summary(report))
        typer.echo(f"dataset written to {out} (full report: {Path(out) / 'graph.json'})", err=as_json)

    _run(body)


@app.command()
def features(
    dataset: Path = typer.Argument(..., help="dataset folder made by `dualrec ingest`"),
    encoder: str = typer.Option("minilm", help=ENCODER_HELP),
    workers: int = typer.Option(
        1, min=1, max=64, help="encode in N processes (minilm; each gets its share of the cores)"
    ),
    quiet: bool = typer.Option(False, help="no progress bar"),
):
    """Encode a dataset's product text ahead of `train`, which reads the cache this writes.

    Streams over the catalogue in chunks; a killed run resumes from the chunks it finished."""
    from dualrec.features import load_or_build_features
    from dualrec.graph import ProductGraph

    def body():
        graph = ProductGraph.load(dataset)
        t0 = time.perf_counter()
        x = load_or_build_features(graph.products, dataset, encoder, show_progress=_bars(quiet), workers=workers)
        typer.echo(
            f"features of {x.shape[0]:,} products ({x.shape[1]} columns, {encoder}) cached in "
            f"{Path(dataset) / f'features-{encoder}.npy'} ({time.perf_counter() - t0:.1f} s)"
        )

    _run(body)


def _key_values(items: list[str], flag: str) -> dict:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; a clear error for an item without ``=``."""
    out = {}
    for item in items:
        if "=" not in item:
            raise DualrecError(f"{flag} needs KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = _parse_value(v.strip())
    return out


def _parse_value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


@app.command()
def train(
    dataset: Path = typer.Argument(..., help="dataset folder made by `dualrec ingest`"),
    out: Path = typer.Option(..., "--out", "-o", help="model folder to write"),
    epochs: int = typer.Option(None, help="maximum epochs (early stopping on validation MRR@10)"),
    encoder: str = typer.Option(None, help=ENCODER_HELP + "  [default: minilm]"),
    config: Optional[Path] = typer.Option(None, help="JSON file of TrainConfig fields"),
    set_: list[str] = typer.Option([], "--set", help="override a TrainConfig field, KEY=VALUE (repeatable)"),
    seed: int = typer.Option(None, help="random seed (split, init, sampling)"),
    batching: str = typer.Option(
        None,
        help="training steps, one of: full (DAEMON over the whole graph each step), history (each step "
        "computes only its batch; for large catalogues), auto (the default: history above 10,000 products)",
    ),
    resume: bool = typer.Option(False, help="continue from the training checkpoint in OUT (after a crash or Ctrl-C)"),
    workers: int = typer.Option(
        1,
        min=1,
        max=256,
        help="train data-parallel in N processes on this machine (torchrun, DDP over gloo; history mode). "
        "Across machines, start `torchrun ... -m dualrec.cli train` on each (see the README)",
    ),
    quiet: bool = typer.Option(False, help="no progress bars"),
    rerank: bool = typer.Option(
        True,
        help="also fit the second stage (co-occurrence candidates + a "
        "LambdaMART reranker learned from the validation edges); "
        "--no-rerank ranks by DAEMON alone",
    ),
    keep: int = typer.Option(3, min=1, help="model versions kept in OUT (older ones are deleted)"),
    tune_trials: int = typer.Option(
        0,
        min=0,
        max=200,
        help="first choose settings on the validation edges: N trainings (Optuna), the co-view choice "
        "first, then the learning rate; the best is kept and recorded in model.json (0: no tuning)",
    ),
    tune_budget: Optional[float] = typer.Option(
        None, min=1, help="seconds for tuning: no trial starts after that (default: no limit)"
    ),
    new_slots: Optional[int] = typer.Option(
        None,
        min=0,
        max=100,
        help="room for new products (added with add-products): at most this many of them in a list, "
        "the most related first (0: none)  [default: 2]",
    ),
    new_position: Optional[int] = typer.Option(
        None, min=1, max=1000, help="the list position (1-based) of the first new product  [default: 9]"
    ),
    new_min_confidence: Optional[float] = typer.Option(
        None,
        min=0.0,
        max=1.0,
        help="a new product takes a slot only where its gate score (DAEMON's score plus how much weaker the "
        "list's 10th place is than its first) reaches this quantile of the validation co-purchases' "
        "(0: the slots are always filled)  [default: 0.2]",
    ),
    new_gate: Optional[str] = typer.Option(
        None,
        help="what the gate reads as 'likely related': daemon (DAEMON's score), text (the text cosine "
        "of the pair) or both  [default: daemon]",
    ),
    list_k: int = typer.Option(
        50,
        min=0,
        max=1000,
        help="precompute every product's top-K with the second stage, served by key lookup (0: none; "
        "larger k is computed online)",
    ),
):
    """Train the DAEMON model (and the second stage); prints one line per epoch and the validation metrics."""
    from dualrec.pipeline import train_dataset
    from dualrec.rerank import RerankConfig
    from dualrec.train import TrainConfig, init_distributed

    if workers > 1 and tune_trials:
        _fail("tuning runs in one process: drop --workers or --tune-trials")
    if tune_trials == 1:
        _fail("--tune-trials needs at least 2 trials (one trial is a plain training)")
    if tune_budget is not None and not tune_trials:
        _fail("--tune-budget needs --tune-trials")
    new_settings = {
        k: v
        for k, v in (
            ("new_slots", new_slots),
            ("new_position", new_position),
            ("new_min_confidence", new_min_confidence),
            ("new_gate", new_gate),
        )
        if v is not None
    }
    try:
        RerankConfig(**new_settings)  # a wrong value is refused before any work
    except DualrecError as e:
        _fail(str(e))
    if not rerank and new_settings:
        _fail(
            "--new-slots, --new-position, --new-min-confidence and --new-gate set the second stage, "
            "which --no-rerank skips"
        )
    if workers > 1 and "LOCAL_RANK" in os.environ:
        _log("already started by a launcher (torchrun): --workers is ignored, the launcher's workers train")
    elif workers > 1:
        _run(lambda: _relaunch_under_torchrun(workers, batching))
        return

    def body():
        d = {}
        if config is not None:
            if not config.is_file():
                raise DualrecError(f"config file not found: {config}")
            try:
                loaded = json.loads(config.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DualrecError(f"{config} is not valid JSON: {e}") from e
            if not isinstance(loaded, dict):
                raise DualrecError(f"{config} must hold a JSON object of TrainConfig fields")
            d.update(loaded)
        d.update(_key_values(set_, "--set"))
        for k, v in (("epochs", epochs), ("encoder", encoder), ("seed", seed), ("batching", batching)):
            if v is not None:
                d[k] = v
        cfg = TrainConfig.from_dict(d)
        rank, world = init_distributed()
        if world > 1 and batching is None and "batching" not in d:
            cfg.batching = "history"  # what several workers need; `auto` might pick full
        try:
            res = train_dataset(
                dataset,
                out,
                cfg,
                resume=resume,
                progress=_bars(quiet),
                rerank=rerank,
                keep=keep,
                log=_log,
                list_k=list_k,
                rerank_config=RerankConfig(**new_settings),
                tune_trials=tune_trials,
                tune_budget=tune_budget,
            )
        finally:
            if world > 1:
                import torch.distributed

                torch.distributed.destroy_process_group()
        if rank:
            return  # the first worker reports
        _print_metrics(res.val_metrics, f"validation, DAEMON alone (best epoch {res.best_epoch}):")
        from dualrec.store import open_version

        two = open_version(out, res.version, verify=False).has_reranker
        typer.echo(
            f"model version {res.version} written to {out} (ranker: {'two-stage' if two else 'DAEMON alone'}; "
            "`dualrec evaluate` gives its test metrics)"
        )

    _run(body)


def _relaunch_under_torchrun(workers: int, batching: str | None) -> None:
    """``dualrec train ... --workers N``: the same command under ``torchrun --standalone`` (the
    launcher a multi-machine run uses too), N processes on this machine, without ``--workers``."""
    import subprocess

    if batching not in (None, "auto", "history"):
        raise DualrecError("several workers train in the history mode only (--batching history)")
    if "train" not in sys.argv[1:] or not any(a == "--workers" or a.startswith("--workers=") for a in sys.argv):
        raise DualrecError("--workers restarts the `dualrec train` command line; from Python, start torchrun yourself")
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--workers":
            skip = True
        elif not a.startswith("--workers="):
            args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={workers}"]
    cmd += ["-m", "dualrec.cli", *args]
    _log(f"running {workers} workers: torchrun --standalone --nproc-per-node={workers} -m dualrec.cli {' '.join(args)}")
    env = dict(os.environ)
    # torchrun gives each worker one thread unless told otherwise: share the cores instead
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    rc = subprocess.call(cmd, env=env)
    if rc:
        raise typer.Exit(rc)


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="model folder made by `dualrec train`"),
    part: str = typer.Option("test", help="held-out edges to score, one of: test, val"),
    dataset: Optional[Path] = typer.Option(
        None,
        help="check that this dataset folder is still the one the model "
        "was trained on (the model folder holds its graph)",
    ),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the metrics to this JSON file"),
    version: Optional[str] = typer.Option(None, "--version", help="a model version (default: the current one)"),
):
    """HitRate@k / MRR@k (k = 5, 10, 20) on held-out co-purchase edges, ranking all products."""
    from dualrec.pipeline import evaluate_model

    def body():
        m = evaluate_model(model, part, dataset, version=version, progress=_bars())
        _print_metrics(m, f"{part}, {m['ranker']} ({m['num_queries']} held-out edges, all products ranked):")
        if "daemon_alone" in m:
            note = " (the reranker learned from these edges: optimistic)" if part == "val" else ""
            _print_metrics(m["daemon_alone"], f"{part}, DAEMON alone, the first stage{note}:")
        if json_out:
            json_out.write_text(json.dumps(m, indent=2))

    _run(body)


@app.command()
def recommend(
    model: Path = typer.Argument(..., help="model folder made by `dualrec train`"),
    ids: list[str] = typer.Argument(..., help="product id(s) to recommend for"),
    k: int = typer.Option(10, "--k", "-k", min=1, max=1000, help="how many related products"),
    show: str = typer.Option("title", help="metadata column to print next to each id ('' for none)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    exclude_linked: bool = typer.Option(
        False, help="leave out products the query already links to (its co-purchase out-neighbours in the dataset)"
    ),
    two_stage: bool = typer.Option(
        True,
        "--two-stage/--one-stage",
        help="rerank with the model's second stage when it has one (its known "
        "co-purchases first); --one-stage ranks by DAEMON alone",
    ),
    version: Optional[str] = typer.Option(None, "--version", help="a model version (default: the current one)"),
):
    """Top-k related products for each given product id."""
    from dualrec.retrieval import Recommender, linked_products

    def body():
        from dualrec.explain import SCORE_LABELS

        rec = Recommender.load(model, two_stage=two_stage, version=version)
        exclude = linked_products(rec.version, ids) if exclude_linked else None
        recs = rec.recommend(ids, k, exclude=exclude, explain=True)
        titles = rec.products.set_index("id")[show] if show and show in rec.products.columns else None
        label = lambda i: None if titles is None else _text(titles.get(i))  # noqa: E731
        if as_json:
            typer.echo(
                json.dumps(
                    [
                        {
                            "query": r.query,
                            "title": label(r.query),
                            "ranker": r.ranker,
                            "score_meaning": SCORE_LABELS[r.ranker],
                            "ids": r.ids,
                            "scores": r.scores,
                            "items": [
                                {"id": i, "title": label(i), "score": s_, "kind": kd, "reason": why}
                                for i, s_, kd, why in zip(r.ids, r.scores, r.kinds, r.reasons)
                            ],
                        }
                        for r in recs
                    ],
                    indent=2,
                )
            )
            return
        for r in recs:
            typer.echo(
                f"{r.query}"
                + (f"  {label(r.query)}" if titles is not None else "")
                + f"   [{r.ranker}; scores: {SCORE_LABELS[r.ranker]}]"
            )
            for rank, (i, s_, kd, why) in enumerate(zip(r.ids, r.scores, r.kinds, r.reasons), 1):
                typer.echo(
                    f"  {rank:2d}. {i}  {kd:<9} {s_:+.3f}"
                    + (f"  {label(i)}" if titles is not None else "")
                    + f"\n        why: {why}"
                )

    _run(body)


def _text(v) -> str | None:
    import math

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return str(v)


@app.command()
def incoming(
    model: Path = typer.Argument(..., help="model folder made by `dualrec train`"),
    ids: list[str] = typer.Argument(..., help="product id(s)"),
    k: int = typer.Option(10, "--k", "-k", min=1, max=1000, help="how many products"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    version: Optional[str] = typer.Option(None, "--version", help="a model version (default: the current one)"),
):
    """The products that recommend each given product (<-): highest DAEMON score s_u . t_id."""

    def body():
        from dualrec.serve.service import RecommenderService

        svc = RecommenderService.load(model, version=version)
        out = [svc.incoming(i, k) for i in ids]
        if as_json:
            typer.echo(json.dumps(out, indent=2))
            return
        for o in out:
            typer.echo(f"{o['id']}  {_text(svc.product(o['id']).get('title')) or ''}   [{o['scores']}]")
            for rank, item in enumerate(o["results"], 1):
                typer.echo(f"  {rank:2d}. {item['id']}  {item['score']:+.3f}  {item.get('title') or ''}")

    _run(body)


@app.command("add-products")
def add_products_cmd(
    model: Path = typer.Argument(..., help="model folder made by `dualrec train`"),
    products: Path = typer.Argument(..., help="new products (.csv/.parquet/.jsonl): `id` + metadata columns"),
    copurchase: Optional[Path] = typer.Option(None, help="optional co-purchase edges of the new products (src, dst)"),
    similar: Optional[Path] = typer.Option(None, help="optional similarity edges of the new products (a, b)"),
    wait: float = typer.Option(60.0, min=0, help="seconds to wait for another writer of the model folder"),
    keep: int = typer.Option(3, min=1, help="model versions kept (older ones are deleted)"),
):
    """Cold start: embed new products from their metadata (and edges, if given) without retraining;
    writes a new model version."""
    from dualrec.coldstart import _read_table, add_products

    def body():
        new = _read_table(products)
        cp = _read_table(copurchase) if copurchase else None
        sim = _read_table(similar) if similar else None
        ids = add_products(model, new, cp, sim, progress=_bars(), wait=wait, keep=keep)
        typer.echo(f"added {len(ids)} product(s) to {model}: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}")

    _run(body)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="working folder for the demo's dataset and model"),
    products: int = typer.Option(5000, help="products in the synthetic store"),
    epochs: int = typer.Option(30, help="maximum epochs"),
    seed: int = typer.Option(0),
):
    """Synthetic store end to end: generate, train, evaluate against popularity, show recommendations."""
    from dualrec.demo import run_demo

    _run(lambda: run_demo(out, products, epochs, seed))


@app.command("sample-data")
def sample_data(
    out: Path = typer.Argument(..., help="folder to write products.csv and orders.csv into"),
    products: int = typer.Option(1000, min=20, max=200_000, help="products in the sample shop"),
    seed: int = typer.Option(0),
):
    """Write a small shop's products.csv and orders.csv (synthetic), to try `dualrec ingest --format orders`."""
    from dualrec.synthetic import write_shop_csv

    def body():
        rep = write_shop_csv(out, products, seed)
        typer.echo(
            f"wrote {out / 'products.csv'} ({rep['products']} products) and {out / 'orders.csv'} "
            f"({rep['order_lines']} order lines, {rep['orders']} orders, {rep['customers']} customers)"
        )

    _run(body)


@app.command()
def benchmark(
    format: str = typer.Option(..., "--format", "-f", help="one of: orders, csv, amazon2014, amazon2018"),
    input: Path = typer.Option(..., "--input", "-i", help="source file or folder (as for `dualrec ingest`)"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for results.json, results.md, plots, dataset/"),
    seeds: int = typer.Option(3, help="number of seeded splits (mean ± std over them)"),
    quick: bool = typer.Option(False, help="one seed, DAEMON <= 8 epochs, <= 5000 test edges on >10k products"),
    methods: Optional[str] = typer.Option(None, help="comma-separated method names (default: all available)"),
    encoder: str = typer.Option("minilm", help=ENCODER_HELP),
    option: list[str] = typer.Option([], "--option", help="format option KEY=VALUE (repeatable), as for ingest"),
    set_: list[str] = typer.Option([], "--set", help="DAEMON TrainConfig field KEY=VALUE (repeatable), e.g. epochs=20"),
    cold_start: bool = typer.Option(True, help="also run the cold-start section (10 % of products held out)"),
    cold_start_seeds: int = typer.Option(1, help="how many of the seeds also run the cold-start section"),
    converge: bool = typer.Option(
        False,
        help="the GNN baselines train until validation MRR@10 stops improving (their own epoch limits), "
        "not the benchmark's short budget; DAEMON's budget is --set's (TrainConfig's defaults train to convergence)",
    ),
):
    """Compare DAEMON with baselines on held-out co-purchase edges (same splits, same evaluator)."""
    from dualrec.benchmark import run_benchmark

    def body():
        opts, daemon = _key_values(option, "--option"), _key_values(set_, "--set")
        run_benchmark(
            format,
            input,
            out,
            seeds,
            quick,
            methods,
            encoder,
            opts,
            daemon,  # records the command line
            cold_start=cold_start,
            cold_start_seeds=cold_start_seeds,
            converge=converge,
            progress=_bars(),
            log=_log,
        )

    _run(body)


@app.command("index")
def index_cmd(
    model: Path = typer.Argument(..., help="model folder made by `dualrec train`"),
    kind: str = typer.Option("exact", help="one of: exact (faiss flat), hnsw, ivf"),
    target_recall: float = typer.Option(
        0.95,
        help="hnsw/ivf: raise efSearch/nprobe until recall@10 vs exact "
        "reaches this, measured on the model's own source embeddings",
    ),
    sample: int = typer.Option(1000, help="queries sampled to tune, and as many more to measure recall"),
    param: list[str] = typer.Option(
        [],
        "--param",
        help="fix an index parameter, KEY=VALUE (repeatable): hnsw M, efConstruction, efSearch; ivf nlist, nprobe",
    ),
    seed: int = typer.Option(0),
):
    """Build the retrieval index of a model folder (written as a new model version)."""
    from dualrec.index import write_model_index

    def body():
        params = _key_values(param, "--param")
        bad = [k_ for k_, v in params.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1]
        if bad:
            raise DualrecError(f"--param values must be positive integers: {', '.join(bad)}")
        meta = write_model_index(
            model,
            kind,
            target_recall=target_recall,
            sample=sample,
            seed=seed,
            log=_log,
            progress=_bars(False),
            **params,
        )
        meta.pop("target_fingerprint", None)
        typer.echo(json.dumps(meta, indent=2))
        typer.echo(f"index written to a new version of {model}")
        if not meta.get("target_met", True):
            typer.secho(
                f"warning: measured recall@10 {meta['recall_at_10']} is below the target {target_recall}; "
                "serve with --kind exact, or try --param M=64 / a larger efConstruction or nlist",
                fg=typer.colors.YELLOW,
                err=True,
            )

    _run(body)


@app.command()
def serve(
    model: Path = typer.Argument(..., help="model folder made by `dualrec train`"),
    host: str = typer.Option("127.0.0.1", help="interface to bind (0.0.0.0 for all)"),
    port: int = typer.Option(8000, min=1, max=65535),
    admin_token_file: Optional[Path] = typer.Option(
        None,
        envvar="DUALREC_ADMIN_TOKEN_FILE",
        help="file whose first line is the admin token (or set DUALREC_ADMIN_TOKEN). Without a token the "
        "two write endpoints, POST /products and POST /admin/reload, answer 403",
    ),
    allowed_host: list[str] = typer.Option(
        [],
        "--allowed-host",
        envvar="DUALREC_ALLOWED_HOSTS",
        help="Host header names accepted (repeatable; default: loopback names, plus this machine's "
        "names when binding another interface; '*' for any, e.g. behind a proxy that checks it)",
    ),
    version: Optional[str] = typer.Option(
        None, "--version", help="serve this model version (default: the current one)"
    ),
    faiss_threads: int = typer.Option(1, min=1, help="OpenMP threads per faiss search (1 suits concurrent requests)"),
    workers: int = typer.Option(
        1,
        min=1,
        max=64,
        help="worker processes (they share the memory-mapped model; the write endpoints need 1 worker)",
    ),
):
    """Serve the model over HTTP (FastAPI + uvicorn); API docs at /docs.

    Read endpoints are open to any client that reaches the port. The write endpoints (POST
    /products: add products; POST /admin/reload: serve another version) need the X-Admin-Token
    header and are off unless an admin token is configured (DUALREC_ADMIN_TOKEN or
    --admin-token-file; never on the command line, where `ps` shows it). See SECURITY.md.
    """

    def body():
        import os
        import socket

        import uvicorn

        from dualrec.serve.app import LOOPBACK_HOSTS, admin_token_from_env, create_app

        if admin_token_file is not None:  # the flag wins over the environment
            os.environ.pop("DUALREC_ADMIN_TOKEN", None)
            os.environ["DUALREC_ADMIN_TOKEN_FILE"] = str(admin_token_file)
        token = admin_token_from_env()
        if workers > 1 and token is not None:
            raise DualrecError(
                "the write endpoints need one worker process (a write in one worker would not reach "
                "the others): serve with --workers 1, or unset the admin token and run "
                "`dualrec add-products` / `dualrec rollback`, then restart the server"
            )
        loopback = host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
        if not loopback and token is not None and len(token) < 16:
            raise DualrecError(
                f"refusing to serve writes on {host} with an admin token under 16 characters; "
                "use a long random token (e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`)"
            )
        hosts = [h.strip() for item in allowed_host for h in item.split(",") if h.strip()]
        for h in hosts:  # Starlette's rules: a name, "*", or "*.domain"; no port
            if (
                ":" in h.strip("[]")
                and not h.startswith("[")
                and h.count(":") == 1
                or ("*" in h and h != "*" and not (h.startswith("*.") and "*" not in h[2:]))
            ):
                raise DualrecError(f"--allowed-host {h!r}: give a host name without port, '*', or '*.domain'")
        if not hosts:
            hosts = list(LOOPBACK_HOSTS)
            if not loopback:
                hosts += [h for h in {socket.gethostname(), socket.getfqdn()} if h]
                if host not in ("0.0.0.0", "::"):
                    hosts.append(host)
        typer.echo(
            f"writes: {'on (X-Admin-Token required)' if token else 'off (no admin token configured)'}; "
            f"allowed Host names: {', '.join(hosts)}",
            err=True,
        )
        if workers > 1:
            from dualrec.serve.app import SERVE_ENV
            from dualrec.store import open_version

            open_version(model, version)  # a bad folder fails here, once, not in every worker
            os.environ[SERVE_ENV] = json.dumps(
                {"model": str(model), "faiss_threads": faiss_threads, "hosts": hosts, "version": version}
            )
            uvicorn.run(
                "dualrec.serve.app:app_from_env",
                factory=True,
                workers=workers,
                host=host,
                port=port,
                log_level="info",
                server_header=False,
            )
            return
        api = create_app(model, admin_token=token, faiss_threads=faiss_threads, allowed_hosts=hosts, version=version)
        uvicorn.run(api, host=host, port=port, log_level="info", server_header=False)

    _run(body)


@app.command()
def rollback(
    model: Path = typer.Argument(..., help="model folder made by `dualrec train`"),
    to: Optional[str] = typer.Option(None, "--to", help="version to make current (default: the one before it)"),
    list_: bool = typer.Option(False, "--list", help="only list the versions"),
):
    """Make an earlier model version current again (servers pick it up on POST /admin/reload)."""
    from dualrec.store import ModelStore

    def body():
        store = ModelStore(model)
        cur = store.current_name()
        if list_:
            for name in store.versions():
                info = store.version(name, verify=False).info
                typer.echo(
                    f"{'*' if name == cur else ' '} {name}  {info.get('written', '')}  "
                    f"{info.get('num_products')} products  ranker {info.get('ranker')}"
                )
            return
        name = store.rollback(to)
        typer.echo(f"{model}: current version {cur} -> {name}")

    _run(body)


@app.command()
def export(
    model: Path = typer.Argument(..., help="model folder made by `dualrec train`"),
    out: Path = typer.Option(..., "--out", "-o", help="Parquet file to write (id, rank, related_id, score)"),
    k: int = typer.Option(20, "--k", "-k", min=1, max=1000, help="related products per product"),
    batch: int = typer.Option(4096, min=1, help="products per chunk (bounds memory)"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    version: Optional[str] = typer.Option(None, "--version", help="a model version (default: the current one)"),
):
    """Every product's top-k related products to one Parquet file (the second stage's lists when
    the model has one, else the retrieval index's)."""
    from dualrec.serve.export import export_recommendations

    def body():
        rep = export_recommendations(model, out, k=k, batch=batch, progress=_bars(quiet), log=_log, version=version)
        typer.echo(json.dumps(rep, indent=2))

    _run(body)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
