"""Library-level pipeline: dataset folder -> features -> trained model folder -> metrics.

The CLI is a thin face over these functions; benchmarks and tests call them directly.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from dualrec.features import feature_spec, load_or_build_features
from dualrec.graph import DualrecError, ProductGraph
from dualrec.rerank import RERANK_FILE, fit_two_stage, load_model_reranker
from dualrec.split import TEST, TRAIN, VAL, EdgeSplit
from dualrec.train import TrainConfig, TrainResult, evaluate_embeddings, train


def train_dataset(dataset_dir: str | Path, model_dir: str | Path, config: TrainConfig | None = None,
                  resume: bool = False, progress: bool = True, log=print, rerank: bool = True) -> TrainResult:
    """Train on a dataset folder made by ``dualrec ingest`` and write a model folder.

    ``rerank`` (default) also fits the second stage (:mod:`dualrec.rerank`: co-occurrence
    candidates and a LambdaMART pair model, learned from the validation edges) and writes it
    as ``MODEL_DIR/rerank.pkl``; ``recommend``, ``evaluate`` and ``serve`` then use it.
    """
    config = config or TrainConfig()
    graph = ProductGraph.load(dataset_dir)
    x = load_or_build_features(graph.products, dataset_dir, config.encoder, show_progress=progress)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / RERANK_FILE).unlink(missing_ok=True)  # a stale second stage must not outlive its model
    result = train(graph, x, config, model_dir, resume=resume, progress=progress, log=log)
    info = {"dataset": str(Path(dataset_dir).resolve()), "encoder": config.encoder,
            "num_products": graph.num_products, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "best_epoch": result.best_epoch, "train_seconds": result.seconds, "ranker": "daemon"}
    if rerank:
        split = result.split
        vm = split.mask(VAL)
        t0 = time.time()
        try:
            rr = fit_two_stage(graph, split.mask(TRAIN), graph.cp_src[vm], graph.cp_dst[vm], x,
                               result.source, result.target, seed=config.seed, log=log)
        except Exception as e:  # e.g. too few validation edges on a toy graph: say so, keep DAEMON
            # (DAEMON is already written; the folder must still get model.json / features.json)
            msg = str(e) if isinstance(e, DualrecError) else f"{type(e).__name__}: {e}"
            log(f"second stage not fitted ({msg}); recommendations rank by DAEMON alone")
            info["rerank_error"] = msg
        else:
            rr.save(model_dir / RERANK_FILE)
            info.update(ranker="two-stage", rerank_seconds=round(time.time() - t0, 3),
                        rerank={k: v for k, v in rr.info_.items() if k != "features"})
    (model_dir / "model.json").write_text(json.dumps(info, indent=2))
    # How features were built: new products (cold start) are encoded the same way.
    (model_dir / "features.json").write_text(json.dumps(feature_spec(graph.products, config.encoder), indent=2))
    return result


def load_split(model_dir: str | Path) -> EdgeSplit:
    p = Path(model_dir) / "best.pt"
    if not p.exists():
        raise DualrecError(f"{model_dir} is not a trained dualrec model (no best.pt); train one with `dualrec train`")
    return EdgeSplit.from_state_dict(torch.load(p, weights_only=False)["split"])


def evaluate_model(model_dir: str | Path, part: str = "test", dataset_dir: str | Path | None = None,
                   progress: bool = True) -> dict:
    """Metrics of a model folder on its held-out ``test`` (or ``val``) edges, ranking all products."""
    if part not in ("test", "val"):
        raise DualrecError("part must be 'test' or 'val'")
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise DualrecError(f"model folder not found: {model_dir}")
    split = load_split(model_dir)  # first: a folder that is not a model is reported as such
    info_path = model_dir / "model.json"
    if dataset_dir is None:
        if not info_path.exists():
            raise DualrecError(f"{model_dir} has no model.json; pass the dataset folder explicitly")
        dataset_dir = json.loads(info_path.read_text())["dataset"]
    graph = ProductGraph.load(dataset_dir)
    if split.labels.numel() != graph.num_copurchase:
        raise DualrecError(f"the dataset at {dataset_dir} changed since this model was trained")
    s = torch.from_numpy(np.load(model_dir / "source.npy"))
    t = torch.from_numpy(np.load(model_dir / "target.npy"))
    # Products added since training (cold start) have no held-out edges: rank the trained ones.
    n = graph.num_products
    s, t = s[:n], t[:n]
    p = TEST if part == "test" else VAL
    rr = load_model_reranker(model_dir, s, t, progress=progress, dataset_dir=dataset_dir, graph=graph)
    if rr is None:
        return evaluate_embeddings(graph, split, s, t, p, show_progress=progress) | {"ranker": "daemon"}
    from dualrec.benchmark import RowMemo, evaluate_method
    from dualrec.evaluate import pair_fn_from_score_fn

    score_fn = RowMemo(rr.score_fn, n)  # direction accuracy reads the same rows again
    out = evaluate_method(graph, split, score_fn, pair_fn_from_score_fn(score_fn, n), p)
    out["ranker"] = "two-stage"
    # the first stage alone, for comparison (on VAL the reranker was fitted: optimistic there)
    out["daemon_alone"] = {k: v for k, v in evaluate_embeddings(graph, split, s, t, p).items()
                           if k.startswith(("HitRate", "MRR"))}
    return out
