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
from dualrec.split import TEST, VAL, EdgeSplit
from dualrec.train import TrainConfig, TrainResult, evaluate_embeddings, train


def train_dataset(dataset_dir: str | Path, model_dir: str | Path, config: TrainConfig | None = None,
                  resume: bool = False, progress: bool = True, log=print) -> TrainResult:
    """Train on a dataset folder made by ``dualrec ingest`` and write a model folder."""
    config = config or TrainConfig()
    graph = ProductGraph.load(dataset_dir)
    x = load_or_build_features(graph.products, dataset_dir, config.encoder, show_progress=progress)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    result = train(graph, x, config, model_dir, resume=resume, progress=progress, log=log)
    info = {"dataset": str(Path(dataset_dir).resolve()), "encoder": config.encoder,
            "num_products": graph.num_products, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "best_epoch": result.best_epoch, "train_seconds": result.seconds}
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
    return evaluate_embeddings(graph, split, s, t, TEST if part == "test" else VAL, show_progress=progress)
