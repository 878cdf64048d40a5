"""`dualrec export`: every product's top-k to Parquet, streamed in chunks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from typer.testing import CliRunner

from dualrec.cli import app
from dualrec.index import write_model_index
from dualrec.serve.export import export_recommendations

from .conftest import embeddings, product_ids, write_model


def test_export_matches_exact_topk(tmp_path):
    m = write_model(tmp_path / "m", n=300)
    out = tmp_path / "recs.parquet"
    r = CliRunner().invoke(app, ["export", str(m), "--k", "7", "--out", str(out), "--batch", "64", "--quiet"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["rows"] == 300 * 7 and rep["index"] == "exact"
    f = pq.ParquetFile(out)
    assert f.metadata.num_row_groups == 5  # ceil(300 / 64) chunks, one row group each
    assert [(x.name, str(x.type)) for x in f.schema_arrow] == [
        ("id", "string"),
        ("rank", "int32"),
        ("related_id", "string"),
        ("score", "float"),
    ]
    df = pd.read_parquet(out)
    assert len(df) == 300 * 7
    assert not (df["id"] == df["related_id"]).any()  # no self-recommendations
    ids = np.asarray(product_ids(m))
    s, t = embeddings(m)
    full = s @ t.T
    np.fill_diagonal(full, -np.inf)
    top = np.argsort(-full, axis=1)[:, :7]
    assert df["id"].tolist() == np.repeat(ids, 7).tolist()
    assert df["rank"].tolist() == list(range(1, 8)) * 300
    assert df["related_id"].tolist() == ids[top].ravel().tolist()
    np.testing.assert_allclose(df["score"].to_numpy(), np.take_along_axis(full, top, 1).ravel(), atol=1e-5)
    assert not list(tmp_path.glob(".recs.parquet.tmp*"))  # temp file renamed into place


def test_export_uses_stored_index_and_caps_k(tmp_path):
    m = write_model(tmp_path / "m", n=200)
    write_model_index(m, "hnsw", sample=100)
    rep = export_recommendations(m, tmp_path / "a.parquet", k=5, batch=50, progress=False)
    assert rep["index"] == "hnsw" and rep["rows"] == 200 * 5
    df = pd.read_parquet(tmp_path / "a.parquet")
    assert not (df["id"] == df["related_id"]).any()
    assert df.groupby("id")["related_id"].nunique().eq(5).all()

    small = write_model(tmp_path / "s", n=60)
    # k larger than the catalogue: k' = N - 1 per product
    rep = export_recommendations(small, tmp_path / "b.parquet", k=1000, batch=7, progress=False)
    n = rep["products"]
    assert rep["k"] == n - 1 and rep["rows"] == n * (n - 1)


def test_export_errors(tmp_path):
    r = CliRunner().invoke(app, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "x.parquet")])
    assert r.exit_code == 2 and "model folder not found" in r.output
    m = write_model(tmp_path / "m", n=50)
    r = CliRunner().invoke(app, ["export", str(m), "--out", str(tmp_path / "x.parquet"), "--k", "0"])
    assert r.exit_code == 2
    r = CliRunner().invoke(app, ["export", str(m), "--out", str(tmp_path)])  # a folder, not a file
    assert r.exit_code == 2 and "is a folder" in r.output and "Traceback" not in r.output
