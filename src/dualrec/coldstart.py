"""Cold start: embed products that were not in the trained graph, without retraining.

A new product is embedded by the trained model from its metadata (encoded exactly like the
catalogue: same text columns, same numeric stats, see :func:`dualrec.features.feature_spec`)
and from any co-purchase / similarity edges it already has to known products. It gets no
per-product embedding (``e_v = 0``): the model was trained with ID dropout for that case.

Old products keep their embeddings, so their recommendations change only where a new product
enters their top-k. The model folder is updated atomically: the new folder is staged next to
the old one and swapped in with two renames; a reader sees either the old or the new folder.
A retrieval index in the folder stays valid: it covers the old rows, and the loader
(:func:`dualrec.index.load_model_index`) appends the added rows when it opens the index.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dualrec.features import build_features, load_or_build_features
from dualrec.graph import DualrecError, ProductGraph, UnknownProductError
from dualrec.model import DualAdjacency
from dualrec.split import TRAIN
from dualrec.train import TrainConfig, build_model

ADDED_EDGES = "added_edges.parquet"   # kind ("copurchase"|"similar"), a, b: row indexes
ADDED_FEATURES = "added_features.npy"


def _read_table(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise DualrecError(f"file not found: {p}")
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    if p.suffix in (".csv", ".gz"):
        return pd.read_csv(p, dtype={"id": str, "src": str, "dst": str, "a": str, "b": str})
    if p.suffix in (".json", ".jsonl"):
        return pd.read_json(p, lines=p.suffix == ".jsonl", dtype={"id": str})
    raise DualrecError(f"{p}: unsupported file type (use .csv, .parquet, .json or .jsonl)")


def load_model(model_dir: Path):
    """(config, model, checkpoint, info) of a model folder."""
    best = model_dir / "best.pt"
    if not best.exists():
        raise DualrecError(f"{model_dir} is not a trained dualrec model (no best.pt); train one with `dualrec train`")
    ck = torch.load(best, weights_only=False)
    cfg = TrainConfig.from_dict(ck["config"])
    model = build_model(cfg, ck["in_channels"], ck["num_nodes"])
    model.load_state_dict(ck["model"])
    model.eval()
    info = json.loads((model_dir / "model.json").read_text()) if (model_dir / "model.json").exists() else {}
    return cfg, model, ck, info


def embed_new_products(model_dir: str | Path, new_products: pd.DataFrame, copurchase: pd.DataFrame | None = None,
                       similar: pd.DataFrame | None = None, progress: bool = False):
    """Embeddings of new products; returns (products_all, source_new, target_new, edges_all, features_added)."""
    d = Path(model_dir)
    cfg, model, ck, info = load_model(d)
    if "dataset" not in info:
        raise DualrecError(f"{d}/model.json does not name the dataset the model was trained on")
    graph = ProductGraph.load(info["dataset"])
    known = pd.read_parquet(d / "products.parquet")
    new = _check_new_products(new_products, known)
    spec_path = d / "features.json"
    if not spec_path.exists():
        raise DualrecError(f"{d} has no features.json (trained with an older dualrec?); retrain to add products")
    spec = json.loads(spec_path.read_text())

    x_graph = load_or_build_features(graph.products, info["dataset"], spec["encoder"], show_progress=progress)
    x_added = np.load(d / ADDED_FEATURES) if (d / ADDED_FEATURES).exists() else np.zeros((0, x_graph.shape[1]), np.float32)
    x_new = build_features(new, spec=spec, show_progress=progress)
    x = torch.cat([x_graph, torch.from_numpy(x_added), torch.from_numpy(x_new)])
    all_products = pd.concat([known, new], ignore_index=True)
    n_all = len(all_products)
    index = pd.Index(all_products["id"].astype(str))

    def map_ids(frame, a, b, kind):
        if frame is None or len(frame) == 0:
            return pd.DataFrame({"kind": [], "a": [], "b": []}).astype({"a": np.int64, "b": np.int64})
        for c in (a, b):
            if c not in frame.columns:
                raise DualrecError(f"{kind} edges need columns {a!r} and {b!r} (found: {list(frame.columns)})")
        ia = index.get_indexer(frame[a].astype(str))
        ib = index.get_indexer(frame[b].astype(str))
        bad = (ia < 0) | (ib < 0)
        if bad.any():
            miss = [v for v, i in zip(frame[a].astype(str), ia) if i < 0] + \
                   [v for v, i in zip(frame[b].astype(str), ib) if i < 0]
            raise UnknownProductError(miss)
        return pd.DataFrame({"kind": kind, "a": ia.astype(np.int64), "b": ib.astype(np.int64)})

    edges_new = pd.concat([map_ids(copurchase, "src", "dst", "copurchase"), map_ids(similar, "a", "b", "similar")],
                          ignore_index=True)
    edges_old = pd.read_parquet(d / ADDED_EDGES) if (d / ADDED_EDGES).exists() else edges_new.iloc[:0]
    edges = pd.concat([edges_old, edges_new], ignore_index=True)

    # Message passing over the training graph plus every edge that came with added products.
    train = ck["split"]["labels"] == TRAIN
    cp = edges[edges["kind"] == "copurchase"]
    sm = edges[edges["kind"] == "similar"]
    t = lambda s: torch.from_numpy(s.to_numpy(dtype=np.int64, copy=True))  # noqa: E731
    src = torch.cat([graph.cp_src[train], t(cp["a"])])
    dst = torch.cat([graph.cp_dst[train], t(cp["b"])])
    w = torch.cat([graph.cp_weight[train], torch.ones(len(cp))])
    sa, sb = torch.cat([graph.sim_a, t(sm["a"])]), torch.cat([graph.sim_b, t(sm["b"])])
    sw = torch.cat([graph.sim_weight, torch.ones(len(sm))])
    adj = DualAdjacency.build(n_all, src, dst, w, *((sa, sb, sw) if cfg.use_similar else (None, None, None)),
                              symmetric=not cfg.dual)
    node_ids = torch.arange(n_all)
    node_ids[graph.num_products:] = -1  # added products have no per-product embedding
    with torch.no_grad():
        s, tt = model(x, adj, node_ids)
    k = len(new)
    return all_products, s[-k:], tt[-k:], edges, np.concatenate([x_added, x_new])


def _check_new_products(new: pd.DataFrame, known: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(new, pd.DataFrame) or len(new) == 0:
        raise DualrecError("no new products given")
    if "id" not in new.columns:
        raise DualrecError(f"new products need an 'id' column (found: {list(new.columns)})")
    new = new.reset_index(drop=True).copy()
    if new["id"].isna().any() or (new["id"].astype(str).str.strip() == "").any():
        raise DualrecError("some new products have an empty id")
    new["id"] = new["id"].astype(str)
    dup = new["id"].duplicated()
    if dup.any():
        raise DualrecError(f"duplicate id(s) among the new products, e.g. {new['id'][dup].iloc[0]!r}")
    exists = new["id"].isin(set(known["id"].astype(str)))
    if exists.any():
        raise DualrecError(f"{int(exists.sum())} product id(s) already exist, e.g. {new['id'][exists].iloc[0]!r}; "
                           "ids must be new")
    for c in known.columns:  # keep metadata columns aligned (and dtypes sane) with the catalogue
        if c not in new.columns:
            new[c] = np.nan if pd.api.types.is_numeric_dtype(known[c]) else ""
    return new


def add_products(model_dir: str | Path, new_products: pd.DataFrame, copurchase: pd.DataFrame | None = None,
                 similar: pd.DataFrame | None = None, progress: bool = False) -> list[str]:
    """Add products to a trained model folder (no retraining); returns their ids.

    ``copurchase`` (columns ``src``, ``dst``) and ``similar`` (``a``, ``b``) may give edges
    between the new products and known or new products.
    """
    d = Path(model_dir)
    products, s_new, t_new, edges, x_added = embed_new_products(d, new_products, copurchase, similar, progress)
    source = np.concatenate([np.load(d / "source.npy"), s_new.numpy()])
    target = np.concatenate([np.load(d / "target.npy"), t_new.numpy()])

    staging = d.parent / f".{d.name}.staging-{uuid.uuid4().hex[:8]}"
    shutil.copytree(d, staging, copy_function=os.link)  # hard links: cheap; every changed file is rewritten
    try:
        for name in ("source.npy", "target.npy", "products.parquet", ADDED_EDGES, ADDED_FEATURES):
            (staging / name).unlink(missing_ok=True)  # break the hard link before writing
        np.save(staging / "source.npy", source)
        np.save(staging / "target.npy", target)
        products.to_parquet(staging / "products.parquet", index=False)
        edges.to_parquet(staging / ADDED_EDGES, index=False)
        np.save(staging / ADDED_FEATURES, x_added)
        old = d.parent / f".{d.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(d, old)
        os.rename(staging, d)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return new_products["id"].astype(str).tolist()

