"""Cold start: embed products that were not in the trained graph, without retraining.

A new product is embedded by the trained model from its metadata (encoded exactly like the
catalogue: same text columns, same numeric stats, see :func:`dualrec.features.feature_spec`)
and from any co-purchase / similarity edges it already has to known products. It gets no
per-product embedding (``e_v = 0``): the model was trained with ID dropout for that case.

Old products keep their embeddings, so their recommendations change only where a new product
enters their top-k. Each call writes a new model version (:mod:`dualrec.store`) under the
folder's writer lock, so concurrent calls serialise and a reader sees the old or the new
version whole. A retrieval index in the folder stays valid: it covers the old rows, and the
loader (:func:`dualrec.index.load_model_index`) appends the added rows when it opens the index.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dualrec.errors import DualrecError, UnknownProductError
from dualrec.features import build_features
from dualrec.model import DualAdjacency
from dualrec.pipeline import load_daemon
from dualrec.split import TRAIN
from dualrec.store import ADDED_EDGES, DEFAULT_KEEP, ModelStore, ModelVersion


def _ids(col: pd.Series) -> pd.Series:
    """Ids as ingest writes them (``12.0`` is product ``12``), so new rows and edges match."""
    from dualrec.ingest._common import as_id_strings

    return as_id_strings(col).fillna("").astype(str)


def _read_table(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise DualrecError(f"file not found: {p}")
    if p.suffix not in (".parquet", ".csv", ".gz", ".json", ".jsonl"):
        raise DualrecError(f"{p}: unsupported file type (use .csv, .parquet, .json or .jsonl)")
    try:
        if p.suffix == ".parquet":
            return pd.read_parquet(p)
        if p.suffix in (".csv", ".gz"):
            return pd.read_csv(p, dtype={"id": str, "src": str, "dst": str, "a": str, "b": str})
        return pd.read_json(p, lines=p.suffix == ".jsonl", dtype={"id": str})
    except pd.errors.EmptyDataError:
        raise DualrecError(f"{p} is empty: it needs a header line and at least one row") from None
    except (ValueError, OSError) as e:  # a malformed table: say which file, not a traceback
        raise DualrecError(f"cannot read {p}: {str(e).splitlines()[0][:200]}") from None


def embed_new_products(
    version: ModelVersion,
    new_products: pd.DataFrame,
    copurchase: pd.DataFrame | None = None,
    similar: pd.DataFrame | None = None,
    progress: bool = False,
):
    """Embeddings of new products; returns (products_all, source_new, target_new, edges_all, x_new)."""
    cfg, model, meta = load_daemon(version)
    graph = version.graph()
    known = version.products()
    new = _check_new_products(new_products, known)
    spec = version.json("features.json")
    # trained catalogue + products added before; stored as float16 (the rounding, ~1e-3, moves a
    # new product's embedding far less than its metadata does)
    x_all = np.asarray(version.features(mmap=True), dtype=np.float32)
    x_new = build_features(new, spec=spec, show_progress=progress)
    if x_new.shape[1] != x_all.shape[1]:
        raise DualrecError("the new products' features do not match the model's (was it trained by another dualrec?)")
    x = torch.from_numpy(np.concatenate([x_all, x_new]))
    all_products = pd.concat([known, new], ignore_index=True)
    n_all = len(all_products)
    index = pd.Index(all_products["id"].astype(str))

    def map_ids(frame, a, b, kind):
        if frame is None or len(frame) == 0:
            return pd.DataFrame(
                {
                    "kind": pd.Series([], dtype=str),
                    "a": pd.Series([], dtype=np.int64),
                    "b": pd.Series([], dtype=np.int64),
                }
            )
        for c in (a, b):
            if c not in frame.columns:
                raise DualrecError(f"{kind} edges need columns {a!r} and {b!r} (found: {list(frame.columns)})")
        fa, fb = _ids(frame[a]), _ids(frame[b])
        ia = index.get_indexer(fa)
        ib = index.get_indexer(fb)
        bad = (ia < 0) | (ib < 0)
        if bad.any():
            miss = [v for v, i in zip(fa, ia) if i < 0] + [v for v, i in zip(fb, ib) if i < 0]
            raise UnknownProductError(miss)
        return pd.DataFrame({"kind": kind, "a": ia.astype(np.int64), "b": ib.astype(np.int64)})

    edges_new = pd.concat(
        [map_ids(copurchase, "src", "dst", "copurchase"), map_ids(similar, "a", "b", "similar")], ignore_index=True
    )
    edges = pd.concat([version.added_edges(), edges_new], ignore_index=True)

    # Message passing over the training graph plus every edge that came with added products.
    train = version.split().mask(TRAIN)
    cp = edges[edges["kind"] == "copurchase"]
    sm = edges[edges["kind"] == "similar"]
    t = lambda s: torch.from_numpy(s.to_numpy(dtype=np.int64, copy=True))  # noqa: E731
    src = torch.cat([graph.cp_src[train], t(cp["a"])])
    dst = torch.cat([graph.cp_dst[train], t(cp["b"])])
    w = torch.cat([graph.cp_weight[train], torch.ones(len(cp))])
    sa, sb = torch.cat([graph.sim_a, t(sm["a"])]), torch.cat([graph.sim_b, t(sm["b"])])
    sw = torch.cat([graph.sim_weight, torch.ones(len(sm))])
    adj = DualAdjacency.build(
        n_all,
        src,
        dst,
        w,
        *((sa, sb, sw) if cfg.use_similar else (None, None, None)),
        symmetric=not cfg.dual,
        transposes=False,
    )
    node_ids = torch.arange(n_all)
    node_ids[graph.num_products :] = -1  # added products have no per-product embedding
    s, tt = model.inference(x, adj, node_ids)  # layer by layer: bounded memory on big catalogues
    k = len(new)
    return all_products, s[-k:], tt[-k:], edges, x_new


def _check_new_products(new: pd.DataFrame, known: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(new, pd.DataFrame) or len(new) == 0:
        raise DualrecError("no new products given")
    if "id" not in new.columns:
        raise DualrecError(f"new products need an 'id' column (found: {list(new.columns)})")
    new = new.reset_index(drop=True).copy()
    if new["id"].isna().any() or (new["id"].astype(str).str.strip() == "").any():
        raise DualrecError("some new products have an empty id")
    new["id"] = _ids(new["id"])
    dup = new["id"].duplicated()
    if dup.any():
        raise DualrecError(f"duplicate id(s) among the new products, e.g. {new['id'][dup].iloc[0]!r}")
    exists = new["id"].isin(set(known["id"].astype(str)))
    if exists.any():
        raise DualrecError(
            f"{int(exists.sum())} product id(s) already exist, e.g. {new['id'][exists].iloc[0]!r}; ids must be new"
        )
    for c in known.columns:  # keep metadata columns aligned (and dtypes sane) with the catalogue
        if c not in new.columns:
            new[c] = np.nan if pd.api.types.is_numeric_dtype(known[c]) else ""
        elif pd.api.types.is_numeric_dtype(known[c]) and not pd.api.types.is_numeric_dtype(new[c]):
            raw = new[c]
            num = pd.to_numeric(raw, errors="coerce")
            bad = num.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise DualrecError(
                    f"{c} of product {new['id'].iloc[i]!r} is {raw.iloc[i]!r}, not a number "
                    f"({int(bad.sum())} such value(s)); leave it empty if unknown"
                )
            new[c] = num
    return new


def add_products(
    model_dir: str | Path,
    new_products: pd.DataFrame,
    copurchase: pd.DataFrame | None = None,
    similar: pd.DataFrame | None = None,
    progress: bool = False,
    wait: float = 60.0,
    keep: int = DEFAULT_KEEP,
) -> list[str]:
    """Add products to a trained model folder (no retraining) as a new version; returns their ids.

    ``copurchase`` (columns ``src``, ``dst``) and ``similar`` (``a``, ``b``) may give edges
    between the new products and known or new products. Writers are serialised: this waits up
    to ``wait`` seconds for another writer, then fails with
    :class:`~dualrec.errors.ModelBusyError`.
    """
    store = ModelStore(model_dir)
    store.check_model()
    from tqdm.auto import tqdm

    with (
        store.lock(wait, "dualrec add-products"),
        tqdm(total=3, desc="add products", unit="step", disable=not progress) as bar,
    ):
        parent = store.version()  # read under the lock: the latest version, whoever wrote it
        bar.set_postfix_str("embed through the graph")
        products, s_new, t_new, edges, x_new = embed_new_products(parent, new_products, copurchase, similar, progress)
        bar.update(2)
        bar.set_postfix_str("write a new version")
        source, target = parent.embeddings()
        with store.writer(parent) as w:
            w.link_all(
                except_={"source.npy", "target.npy", "products.parquet", "features.npy", ADDED_EDGES, "model.json"}
            )
            w.save_array("source.npy", np.concatenate([source, s_new.numpy()]))
            w.save_array("target.npy", np.concatenate([target, t_new.numpy()]))
            w.save_parquet("products.parquet", products)
            w.save_array("features.npy", np.concatenate([parent.features(), x_new.astype(np.float16)]))
            w.save_parquet(ADDED_EDGES, edges)
            info = {
                **parent.info,
                "num_products": len(products),
                "added_products": len(products) - int(parent.info["trained_products"]),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            w.commit(info, keep=keep)
        bar.update(1)
    return _ids(new_products["id"]).tolist()
