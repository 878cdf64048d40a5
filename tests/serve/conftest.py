"""Model folders for the serving tests: a model version (dualrec.store) with what serving reads
(products.parquet from a synthetic store, source.npy / target.npy, model.json), with random
continuous L2-normalised embeddings (no ties), so they are built in milliseconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dualrec.store import ModelStore, open_version
from dualrec.synthetic import make_store


def normalised(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_model(
    path: Path, n: int = 300, d: int = 16, seed: int = 0, created: str = "2026-01-01T00:00:00", store_seed: int = 0
) -> Path:
    """A model folder of ``n`` synthetic products with random embeddings (``seed``)."""
    path = Path(path)
    products = make_store(n_products=n, seed=store_seed).products.copy()
    products["price"] = products["price"].astype(float)
    products.loc[5, "price"] = np.nan  # missing metadata must come back as null, not NaN
    products["brand"] = products["brand"].astype(object)
    products.loc[6, "brand"] = None
    rng = np.random.default_rng(seed)
    store = ModelStore(path)
    store.prepare_new()
    with store.lock(0), store.writer(None) as w:
        w.save_parquet("products.parquet", products)
        w.save_array("source.npy", normalised(rng, len(products), d))
        w.save_array("target.npy", normalised(rng, len(products), d))
        w.commit({"created": created, "num_products": len(products), "ranker": "daemon"})
    return path


def embeddings(model: Path) -> tuple[np.ndarray, np.ndarray]:
    return open_version(model).embeddings()


def product_ids(model: Path) -> list[str]:
    return open_version(model).ids().tolist()


def exact_topk(model: Path, row: int, k: int) -> tuple[list[int], np.ndarray]:
    """Brute-force top-k rows for the product at ``row`` (never itself), and their scores."""
    s, t = embeddings(model)
    scores = t @ s[row]
    scores[row] = -np.inf
    order = np.argsort(-scores, kind="stable")[: min(k, len(t) - 1)]
    return order.tolist(), scores[order]


@pytest.fixture(scope="session")
def model_a(tmp_path_factory) -> Path:
    return write_model(tmp_path_factory.mktemp("serve") / "model_a", seed=0, created="2026-01-01T00:00:00")


@pytest.fixture(scope="session")
def model_b(tmp_path_factory) -> Path:
    return write_model(tmp_path_factory.mktemp("serve") / "model_b", seed=1, created="2026-01-02T00:00:00")
