"""Node features: text assembly, hash / MiniLM / static encoders, numeric features, the feature cache."""

from __future__ import annotations

import json
import socket

import numpy as np
import pandas as pd
import pytest
import torch

from dualrec import features
from dualrec.features import (
    build_features,
    encode_texts,
    hash_encode,
    load_or_build_features,
    numeric_columns,
    numeric_features,
    product_texts,
    text_columns,
)
from dualrec.graph import DualrecError


def catalogue() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "title": ["Red Shirt", "  ", None, "garden hose"],
            "category": ["Clothing", "Clothing > Jeans", "", "Garden"],
            "brand": ["Acme", None, "", "Hoser"],
            "price": [19.0, np.nan, 4.0, 99.0],
            "stock": np.array([0, 10, 100, 1000], dtype=np.int64),
            "role": ["main", "accessory", "main", "main"],  # ground truth: never a feature
            "category_id": np.array([1, 2, 3, 4], dtype=np.int64),  # ground truth: never a feature
            "flag": [True, False, True, False],
        }
    )


# ---------------------------------------------------------------------- hash encoder
def test_hash_encode_deterministic_and_normalised():
    texts = ["Phone case black", "garden hose", "phone phone case", "", "!!!"]
    a, b = hash_encode(texts), hash_encode(list(texts))
    assert a.dtype == np.float32 and a.shape == (5, 256)
    assert np.array_equal(a, b)
    norms = np.linalg.norm(a, axis=1)
    np.testing.assert_allclose(norms[:3], 1.0, rtol=1e-6)
    # no tokens: an all-zero row, not NaN
    assert np.array_equal(a[3], np.zeros(256)) and np.array_equal(a[4], np.zeros(256))
    assert np.isfinite(a).all()


def test_hash_encode_is_a_stable_bag_of_words():
    # stable across processes and machines (no salted Python hash()): pinned bucket of "phone"
    x = hash_encode(["phone"])
    assert np.flatnonzero(x[0]).tolist() == [231]
    # order- and case-insensitive bag of words; counts matter
    y = hash_encode(["Black case for PHONE", "phone for case black", "phone phone case"])
    np.testing.assert_allclose(y[0], y[1])
    phone, case = 231, int(np.flatnonzero(hash_encode(["case"])[0])[0])
    assert y[2][phone] == pytest.approx(2 * y[2][case])
    assert hash_encode(["a b"], dim=16).shape == (1, 16)


def test_encode_texts_unknown_encoder():
    with pytest.raises(DualrecError, match="unknown text encoder 'bert'"):
        encode_texts(["x"], "bert")


# ---------------------------------------------------------------------- text
def test_text_columns_exclude_ground_truth_and_numbers():
    p = catalogue()
    assert text_columns(p) == ["title", "category", "brand"]
    assert numeric_columns(p) == ["price", "stock"]


def test_product_texts_skips_empty_values_and_ground_truth():
    got = product_texts(catalogue())
    assert got == [
        "title: Red Shirt. category: Clothing. brand: Acme",
        "category: Clothing > Jeans",
        "",
        "title: garden hose. category: Garden. brand: Hoser",
    ]
    for t in got:
        assert "role" not in t and "category_id" not in t and "main" not in t and "accessory" not in t


def test_product_texts_without_text_columns():
    assert product_texts(pd.DataFrame({"id": ["x", "y"], "price": [1.0, 2.0]})) == ["", ""]


# ---------------------------------------------------------------------- numeric
def test_numeric_features_log_standardised_with_missing_indicator():
    x, stats = numeric_features(catalogue())
    assert x.dtype == np.float32
    # columns: price, price-missing indicator, stock (no missing -> no indicator)
    assert x.shape == (4, 3)
    lp = np.log1p(np.array([19.0, 4.0, 99.0]))
    z = (lp - lp.mean()) / lp.std()
    np.testing.assert_allclose(x[[0, 2, 3], 0], z, rtol=1e-5)
    assert x[1, 0] == 0.0
    assert x[:, 1].tolist() == [0.0, 1.0, 0.0, 0.0]
    ls = np.log1p(np.array([0.0, 10.0, 100.0, 1000.0]))
    np.testing.assert_allclose(x[:, 2], (ls - ls.mean()) / ls.std(), rtol=1e-5)
    # standardised over the known values
    assert x[[0, 2, 3], 0].mean() == pytest.approx(0.0, abs=1e-6)
    assert x[[0, 2, 3], 0].std() == pytest.approx(1.0, abs=1e-5)


def test_numeric_features_signed_log_constant_and_all_missing():
    p = pd.DataFrame(
        {
            "id": list("abc"),
            "delta": [-9.0, 0.0, 9.0],
            "const": [5.0, 5.0, 5.0],
            "empty": [np.nan, np.nan, np.nan],
            "inf": [1.0, np.inf, 1.0],
        }
    )
    x, _ = numeric_features(p)
    # delta, const, empty, empty-missing, inf, inf-missing
    assert x.shape == (3, 6)
    v = np.array([-np.log1p(9.0), 0.0, np.log1p(9.0)])
    np.testing.assert_allclose(x[:, 0], v / v.std(), rtol=1e-5)
    assert x[:, 1].tolist() == [0.0, 0.0, 0.0]  # constant: centred, not divided by 0
    assert x[:, 2].tolist() == [0.0, 0.0, 0.0] and x[:, 3].tolist() == [1.0, 1.0, 1.0]
    assert x[:, 4].tolist() == [0.0, 0.0, 0.0] and x[:, 5].tolist() == [0.0, 1.0, 0.0]
    assert np.isfinite(x).all()
    x0, stats0 = numeric_features(pd.DataFrame({"id": ["a"], "t": ["x"]}))
    assert x0.shape == (1, 0) and stats0 == {}


def test_numeric_stats_reapplied_to_new_products():
    p = catalogue()
    x, stats = numeric_features(p)
    assert list(stats) == ["price", "stock"]
    assert stats["price"]["indicator"] is True and stats["stock"]["indicator"] is False
    # the catalogue itself, re-encoded with its own stats: identical
    y, same = numeric_features(p, stats)
    np.testing.assert_array_equal(x, y)
    assert same is stats
    # new products: same columns and scales, not re-fitted (a single row would otherwise be all 0)
    new = pd.DataFrame(
        {"id": ["n1", "n2"], "price": [19.0, np.nan], "stock": [10, 10], "extra": [1.0, 2.0]}
    )  # a column the catalogue did not have: ignored
    z, _ = numeric_features(new, stats)
    assert z.shape == (2, 3)
    np.testing.assert_allclose(z[0, 0], x[0, 0], rtol=1e-6)  # price 19 -> same value as in the catalogue
    assert z[:, 1].tolist() == [0.0, 1.0]
    np.testing.assert_allclose(z[:, 2], x[1, 2], rtol=1e-6)  # stock 10 -> as for product b
    # a new table lacking a column: all missing (0), indicator only where the catalogue had one
    w, _ = numeric_features(pd.DataFrame({"id": ["n3"], "stock": [0]}), stats)
    assert w.tolist() == [[0.0, 1.0, pytest.approx(float(x[0, 2]))]]


def test_constant_column_stats_do_not_blow_up_new_products():
    p = pd.DataFrame({"id": list("abcd"), "qty": [5.0, 5.0, 5.0, 5.0]})
    x, stats = numeric_features(p)
    assert x[:, 0].tolist() == [0.0] * 4
    z, _ = numeric_features(pd.DataFrame({"id": ["n"], "qty": [6.0]}), stats)
    assert np.isfinite(z).all() and abs(float(z[0, 0])) < 1.0


def test_build_features_layout():
    p = catalogue()
    x = build_features(p, "hash", show_progress=False)
    assert x.shape == (4, 256 + 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, :256], hash_encode(product_texts(p)))
    np.testing.assert_array_equal(x[:, 256:], numeric_features(p)[0])


# ---------------------------------------------------------------------- cache
@pytest.fixture
def count_encodes(monkeypatch):
    calls = []
    real = features.encode_texts

    def counting(texts, encoder="minilm", show_progress=True, pool=None):
        calls.append((len(texts), encoder))
        return real(texts, encoder, show_progress, pool)

    monkeypatch.setattr(features, "encode_texts", counting)
    return calls


def test_load_or_build_features_caches(tmp_path, count_encodes):
    p = catalogue()
    x1 = load_or_build_features(p, tmp_path, "hash", show_progress=False)
    assert count_encodes == [(4, "hash")]
    assert (tmp_path / "features-hash.npy").exists()
    meta = json.loads((tmp_path / "features-hash.json").read_text())
    assert meta["shape"] == [4, 259] and meta["encoder"] == "hash"
    assert meta["fingerprint"]
    # no temp file or part left behind (the lock file stays: removing one races its next user)
    assert [f.name for f in tmp_path.glob(".features-*")] == [".features-hash.lock"]

    x2 = load_or_build_features(p.copy(), tmp_path, "hash", show_progress=False)
    assert count_encodes == [(4, "hash")]  # served from the cache
    assert isinstance(x2, torch.Tensor) and torch.equal(x1, x2)


def test_load_or_build_features_rebuilds_when_metadata_changes(tmp_path, count_encodes):
    p = catalogue()
    x1 = load_or_build_features(p, tmp_path, "hash", show_progress=False)
    q = p.copy()
    q.loc[0, "title"] = "Blue Shirt"
    x2 = load_or_build_features(q, tmp_path, "hash", show_progress=False)
    assert len(count_encodes) == 2
    assert not torch.equal(x1, x2)
    assert torch.equal(x2[1:], x1[1:]) and not torch.equal(x2[0], x1[0])  # only the edited row moved
    # a new product: rebuilt with the new row count
    r = pd.concat([q, q.iloc[[0]].assign(id="e")], ignore_index=True)
    assert load_or_build_features(r, tmp_path, "hash", show_progress=False).shape == (5, 259)
    assert len(count_encodes) == 3
    # back to the latest: cached again
    load_or_build_features(r, tmp_path, "hash", show_progress=False)
    assert len(count_encodes) == 3


def test_corrupt_cache_is_rebuilt(tmp_path, count_encodes):
    p = catalogue()
    x1 = load_or_build_features(p, tmp_path, "hash", show_progress=False)
    (tmp_path / "features-hash.npy").write_bytes(b"not an npy file at all")
    x2 = load_or_build_features(p, tmp_path, "hash", show_progress=False)
    assert len(count_encodes) == 2 and torch.equal(x1, x2)


def test_no_dataset_dir_means_no_cache(tmp_path, count_encodes):
    p = catalogue()
    load_or_build_features(p, None, "hash", show_progress=False)
    load_or_build_features(p, None, "hash", show_progress=False)
    assert len(count_encodes) == 2


# ---------------------------------------------------------------------- MiniLM (offline)
def test_minilm_offline_384d_normalised_and_semantic(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(features, "_MINILM", None)  # load it here, under the no-network guard
    x = encode_texts(["phone case black", "black case for phone", "garden hose"], "minilm", show_progress=False)
    assert x.shape == (3, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-4)
    sim = x @ x.T
    assert sim[0, 1] > sim[0, 2] + 0.3
    assert sim[0, 1] > sim[1, 2] + 0.3
    # output is in input order (the encoder sorts by length internally)
    y = encode_texts(["garden hose", "phone case black"], "minilm", show_progress=False)
    np.testing.assert_allclose(y[0], x[2], atol=1e-5)
    np.testing.assert_allclose(y[1], x[0], atol=1e-5)


def _offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)


def test_static_encoder_is_distilled_offline_once_and_semantic(tmp_path, monkeypatch):
    _offline(monkeypatch)
    monkeypatch.setenv("DUALREC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(features, "_STATIC", None)
    x = encode_texts(["phone case black", "black case for phone", "garden hose", ""], "static")
    assert x.shape == (4, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x[:3], axis=1), 1.0, rtol=1e-4)
    assert not x[3].any()  # no token: zeros, not NaN
    sim = x @ x.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3
    built = features.static_model_path()
    assert built.parent == tmp_path and not list(tmp_path.glob(".*tmp*"))
    stamp = (built / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(features, "_STATIC", None)
    np.testing.assert_allclose(encode_texts(["garden hose"], "static")[0], x[2], atol=1e-6)
    assert (built / "model.safetensors").stat().st_mtime_ns == stamp  # read again, not distilled again


def test_a_killed_encoding_resumes_from_its_finished_chunks(tmp_path, monkeypatch):
    p = pd.concat([catalogue()] * 3, ignore_index=True).assign(id=[f"p{i}" for i in range(12)])
    p["title"] = [f"product {i} title" for i in range(12)]
    monkeypatch.setattr(features, "CHUNK_ROWS", 4)
    calls = []

    def fake_model(texts, encoder="minilm", show_progress=True, pool=None):  # a costly encoder: hashing here
        calls.append(texts[0])
        if len(calls) == 3 and fail:
            raise KeyboardInterrupt  # killed in the third chunk
        return hash_encode(texts)

    monkeypatch.setattr(features, "encode_texts", fake_model)
    fail = True
    with pytest.raises(KeyboardInterrupt):
        load_or_build_features(p, tmp_path, "minilm", show_progress=False)
    parts = sorted((tmp_path / ".features-minilm.parts").glob("*.npy"))
    assert len(parts) == 2 and not (tmp_path / "features-minilm.npy").exists()
    fail, calls[:] = False, []
    x = load_or_build_features(p, tmp_path, "minilm", show_progress=False)
    assert len(calls) == 1  # only the chunk that was not finished
    np.testing.assert_array_equal(x[:, :256].numpy(), hash_encode(product_texts(p)))
    assert not (tmp_path / ".features-minilm.parts").exists()  # whole now: the parts are gone
    # a changed catalogue: only the new and edited products are encoded, the rest is copied
    q = pd.concat([p, p.iloc[[0]].assign(id="new", title="brand new product")], ignore_index=True)
    q.loc[5, "title"] = "an edited title"
    calls[:] = []
    y = load_or_build_features(q, tmp_path, "minilm", show_progress=False)
    # one call per chunk holding a change, with the changed text only
    assert [c.split(".")[0] for c in calls] == ["title: an edited title", "title: brand new product"]
    np.testing.assert_array_equal(y[:, :256].numpy(), hash_encode(product_texts(q)))
    np.testing.assert_array_equal(y[:, 256:].numpy(), numeric_features(q)[0])
    # a cache without its keys (or of another encoder version) is not trusted: all encoded again
    (tmp_path / "features-minilm.keys.npy").unlink()
    q.loc[0, "title"] = "edited again"
    calls[:] = []
    load_or_build_features(q, tmp_path, "minilm", show_progress=False)
    assert len(calls) == 4


def test_minilm_in_two_processes_equals_one(monkeypatch):
    texts = [f"{c} case for phone model {i}" for i, c in enumerate(["black", "red", "blue"] * 6)]
    p = pd.DataFrame({"id": [f"p{i}" for i in range(len(texts))], "title": texts})
    one = features.encode_products(p, "minilm", show_progress=False)
    two = features.encode_products(p, "minilm", show_progress=False, workers=2)
    np.testing.assert_allclose(two, one, atol=1e-5)
    with pytest.raises(DualrecError, match="workers"):
        features.encode_products(p, "minilm", workers=0)


def test_new_products_are_never_encoded_by_another_recipe():
    p = catalogue()
    spec = features.feature_spec(p, "hash")
    assert spec["recipe"] == features.recipe("hash")
    np.testing.assert_array_equal(build_features(p, spec=spec, show_progress=False), build_features(p, "hash"))
    with pytest.raises(DualrecError, match="retrain"):
        build_features(p, spec={**spec, "recipe": "hash-128"}, show_progress=False)
    del spec["recipe"]  # a model folder written before recipes were recorded
    assert build_features(p, spec=spec, show_progress=False).shape == (4, 259)
