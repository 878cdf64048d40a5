"""Command-line interface: a thin face over the library.

    dualrec demo                                   # synthetic store, end to end, about a minute
    dualrec ingest --format amazon2014 --input DIR --out DATASET
    dualrec train DATASET --out MODEL
    dualrec evaluate MODEL
    dualrec recommend MODEL ID [ID ...] --k 10
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from dualrec.graph import DualrecError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="dualrec: related-product recommendations from a directed product graph (DAEMON dual embeddings).\n\n"
         "Typical flow: `dualrec ingest` -> `dualrec train` -> `dualrec evaluate` / `dualrec recommend`. "
         "Try `dualrec demo` first.",
)


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
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
    format: str = typer.Option(..., "--format", "-f", help="amazon2014 | amazon2018 | orders | csv"),
    input: Path = typer.Option(..., "--input", "-i", help="source file or folder"),
    out: Path = typer.Option(..., "--out", "-o", help="dataset folder to write"),
    option: list[str] = typer.Option([], "--option", help="format option KEY=VALUE (repeatable), "
                                     "e.g. --option min_support=3 --option customer_col=user"),
):
    """Read a catalogue + co-purchase/co-view data into a dataset folder (Parquet)."""
    from dualrec.ingest import FORMATS, ingest as do_ingest

    def body():
        if format not in FORMATS:
            raise DualrecError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
        opts = {}
        for o in option:
            if "=" not in o:
                raise DualrecError(f"--option needs KEY=VALUE, got {o!r}")
            k, v = o.split("=", 1)
            opts[k.strip()] = _parse_value(v.strip())
        report = do_ingest(format, input, out, **opts)
        typer.echo(json.dumps(report, indent=2, default=str))
        typer.echo(f"dataset written to {out}")

    _run(body)


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
    encoder: str = typer.Option(None, help="text encoder: minilm (default) or hash (fast, weaker)"),
    config: Optional[Path] = typer.Option(None, help="JSON file of TrainConfig fields"),
    set_: list[str] = typer.Option([], "--set", help="override a TrainConfig field, KEY=VALUE (repeatable)"),
    seed: int = typer.Option(None, help="random seed (split, init, sampling)"),
    resume: bool = typer.Option(False, help="continue from OUT/last.pt"),
    quiet: bool = typer.Option(False, help="no progress bars"),
):
    """Train the DAEMON model; prints one line per epoch and the validation metrics."""
    from dualrec.pipeline import train_dataset
    from dualrec.train import TrainConfig

    def body():
        d = {}
        if config is not None:
            if not config.exists():
                raise DualrecError(f"config file not found: {config}")
            try:
                d.update(json.loads(config.read_text()))
            except json.JSONDecodeError as e:
                raise DualrecError(f"{config} is not valid JSON: {e}") from e
        for s in set_:
            if "=" not in s:
                raise DualrecError(f"--set needs KEY=VALUE, got {s!r}")
            k, v = s.split("=", 1)
            d[k.strip()] = _parse_value(v.strip())
        for k, v in (("epochs", epochs), ("encoder", encoder), ("seed", seed)):
            if v is not None:
                d[k] = v
        cfg = TrainConfig.from_dict(d)
        res = train_dataset(dataset, out, cfg, resume=resume, progress=not quiet)
        _print_metrics(res.val_metrics, f"validation (best epoch {res.best_epoch}):")
        typer.echo(f"model written to {out}")

    _run(body)


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="model folder made by `dualrec train`"),
    part: str = typer.Option("test", help="test or val"),
    dataset: Optional[Path] = typer.Option(None, help="dataset folder (default: the one the model was trained on)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the metrics to this JSON file"),
):
    """HitRate@k / MRR@k (k = 5, 10, 20) on held-out co-purchase edges, ranking all products."""
    from dualrec.pipeline import evaluate_model

    def body():
        m = evaluate_model(model, part, dataset)
        _print_metrics(m, f"{part} ({m['num_queries']} held-out edges, all products ranked):")
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
):
    """Top-k related products for each given product id."""
    from dualrec.retrieval import Recommender

    def body():
        rec = Recommender.load(model)
        recs = rec.recommend(ids, k)
        if as_json:
            typer.echo(json.dumps([r.__dict__ for r in recs], indent=2))
            return
        col = show if show and show in rec.products.columns else None
        meta = rec.products.set_index("id")[col] if col else None
        for r in recs:
            head = f"{r.query}" + (f"  {meta[r.query]}" if col else "")
            typer.echo(head)
            for rank, (i, s) in enumerate(zip(r.ids, r.scores), 1):
                typer.echo(f"  {rank:2d}. {i}  {s:+.3f}" + (f"  {meta[i]}" if col else ""))

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


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
