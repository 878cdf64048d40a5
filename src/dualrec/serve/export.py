"""Bulk export: every product's top-k related products to one Parquet file.

Columns ``id`` (query product), ``rank`` (1 = best), ``related_id``, ``score``. The lists
come from :class:`dualrec.retrieval.Recommender`, the same path as ``dualrec recommend`` and
``serve`` (the version's precomputed lists when ``k`` fits in them, else the second stage or
the retrieval index), in chunks of ``batch`` products, each chunk written as its own row group,
so memory stays bounded by the chunk plus the memory-mapped model. The file is written under a temporary name and
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
from dualrec.rerank import ranker_name
from dualrec.retrieval import Recommender

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
    rec = Recommender.load(model_dir, version=version, log=log)
    v, reranker, index = rec.version, rec.reranker, rec.index
    ids = rec.products["id"].astype(str)
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
                scores, idx = rec.top_k(q, k)
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
        "index": index.kind,
        "index_recall_at_10": index.recall_at_10,
        "precomputed": rec.lists is not None and k <= rec.lists.k,
        "seconds": round(time.time() - t0, 2),
    }
