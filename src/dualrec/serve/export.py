"""Bulk export: every product's top-k related products to one Parquet file.

Columns ``id`` (query product), ``rank`` (1 = best), ``related_id``, ``score``. Queries go
through the model's second stage when it has one (the same lists as
``dualrec recommend`` and ``serve``), else its retrieval index (``MODEL_DIR/index`` when
present, else exact), in chunks of ``batch`` products, each chunk written as its own row group,
so memory stays bounded by the chunk plus the embeddings (the second stage cuts each chunk
further, to about 16M dense scores at a time). The file is written under a temporary name and
renamed into place when complete.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from dualrec.graph import DualrecError
from dualrec.index import load_model_index
from dualrec.rerank import load_model_reranker, ranker_name
from dualrec.store import open_version

__all__ = ["export_recommendations", "SCHEMA"]

SCHEMA = pa.schema([("id", pa.string()), ("rank", pa.int32()), ("related_id", pa.string()), ("score", pa.float32())])


def export_recommendations(
    model_dir: str | Path,
    out: str | Path,
    k: int = 20,
    batch: int = 4096,
    progress: bool = True,
    log=None,
    version: str | None = None,
) -> dict:
    """Write every product's top-k (never itself) to ``out``; returns a small report."""
    if not 1 <= k <= 1000:
        raise DualrecError("k must be in 1..1000")
    if batch < 1:
        raise DualrecError("batch must be at least 1")
    out = Path(out)
    if out.is_dir():
        raise DualrecError(f"{out} is a folder; give the Parquet file to write, e.g. {out / 'recs.parquet'}")
    t0 = time.time()
    v = open_version(model_dir, version)
    source, target = (np.ascontiguousarray(a, dtype=np.float32) for a in v.embeddings())
    ids = v.products(["id"])["id"].astype(str)
    if len(ids) != len(target):
        raise DualrecError(f"model version {v.name}: {len(ids)} products but {len(target)} embeddings")
    reranker = load_model_reranker(v, source, target)
    index = None if reranker is not None else load_model_index(v, source, target, log=log)
    ids_pa = pa.array(ids.to_numpy(dtype=object), type=pa.string())
    n = len(ids)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    rows_written = 0
    kk = 0
    try:
        with (
            pq.ParquetWriter(tmp, SCHEMA) as writer,
            tqdm(total=n, desc="export", unit="product", disable=not progress) as bar,
        ):
            for lo in range(0, n, batch):
                q = np.arange(lo, min(n, lo + batch), dtype=np.int64)
                if reranker is None:
                    scores, idx = index.recommend(q, k)
                else:
                    scores, idx = reranker.top_k(q, k)
                kk = idx.shape[1]
                valid = (idx >= 0).ravel()
                qi = np.repeat(q, kk)[valid]
                ri = idx.ravel()[valid]
                rank = np.tile(np.arange(1, kk + 1, dtype=np.int32), len(q))[valid]
                table = pa.table(
                    {
                        "id": ids_pa.take(pa.array(qi)),
                        "rank": pa.array(rank),
                        "related_id": ids_pa.take(pa.array(ri)),
                        "score": pa.array(scores.ravel()[valid].astype(np.float32)),
                    },
                    schema=SCHEMA,
                )
                writer.write_table(table)
                rows_written += len(table)
                bar.update(len(q))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {
        "out": str(out),
        "version": v.name,
        "products": n,
        "k": int(kk),
        "rows": int(rows_written),
        "ranker": ranker_name(reranker),
        "index": None if index is None else index.kind,
        "index_recall_at_10": None if index is None else index.recall_at_10,
        "seconds": round(time.time() - t0, 2),
    }
