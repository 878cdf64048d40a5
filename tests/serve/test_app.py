"""The HTTP API: every endpoint, error statuses, cold start, atomic model swaps."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
import types

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from dualrec.graph import DualrecError
from dualrec.index import write_model_index
from dualrec.serve.app import create_app
from dualrec.serve.service import RecommenderService, ServiceHolder, jsonable

from .conftest import exact_topk, write_model


@pytest.fixture(scope="module")
def client(model_a):
    return TestClient(create_app(model_a))


def _ids(model):
    return pd.read_parquet(model / "products.parquet")["id"].astype(str).tolist()


def test_related(client, model_a):
    ids = _ids(model_a)
    r = client.get(f"/products/{ids[3]}/related", params={"k": 7})
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == ids[3] and body["k"] == 7 and body["model_version"] == "2026-01-01T00:00:00"
    rows, scores = exact_topk(model_a, 3, 7)
    assert [x["id"] for x in body["results"]] == [ids[i] for i in rows]
    np.testing.assert_allclose([x["score"] for x in body["results"]], scores, atol=1e-5)
    assert set(body["results"][0]) == {"id", "score", "title", "category", "brand", "price"}
    assert ids[3] not in [x["id"] for x in body["results"]]
    assert len(client.get(f"/products/{ids[3]}/related").json()["results"]) == 10  # default k


def test_missing_metadata_is_null(client, model_a):
    ids = _ids(model_a)
    r = client.get(f"/products/{ids[5]}")
    assert r.status_code == 200 and "NaN" not in r.text
    assert r.json()["price"] is None and r.json()["title"]
    assert client.get(f"/products/{ids[6]}").json()["brand"] is None
    # ... and inside result lists: product 5 appears in somebody's list (search lists everything)
    res = client.get("/search", params={"q": ids[5]}).json()["results"][0]
    assert res["id"] == ids[5] and res["price"] is None


def test_product(client, model_a):
    ids = _ids(model_a)
    body = client.get(f"/products/{ids[0]}").json()
    p = pd.read_parquet(model_a / "products.parquet").iloc[0]
    assert body["id"] == ids[0] and body["title"] == p["title"] and body["category_id"] == int(p["category_id"])


def test_batch_equals_single(client, model_a):
    ids = _ids(model_a)
    q = [ids[1], ids[2], ids[1]]
    r = client.post("/related", json={"ids": q, "k": 4})
    assert r.status_code == 200
    body = r.json()
    assert body["k"] == 4 and [x["id"] for x in body["results"]] == q
    for entry in body["results"]:
        single = client.get(f"/products/{entry['id']}/related", params={"k": 4}).json()
        assert entry["results"] == single["results"]
    assert client.post("/related", json={"ids": [ids[1]]}).json()["k"] == 10


def test_incoming(client, model_a):
    ids = _ids(model_a)
    s, t = np.load(model_a / "source.npy"), np.load(model_a / "target.npy")
    scores = s @ t[9]
    scores[9] = -np.inf
    expect = np.argsort(-scores)[:6]
    body = client.get(f"/products/{ids[9]}/incoming", params={"k": 6}).json()
    assert [x["id"] for x in body["results"]] == [ids[i] for i in expect]
    np.testing.assert_allclose([x["score"] for x in body["results"]], scores[expect], atol=1e-5)


def test_search(client, model_a):
    p = pd.read_parquet(model_a / "products.parquet")
    ids = p["id"].astype(str).tolist()
    body = client.get("/search", params={"q": ids[42].lower()}).json()
    assert body["results"][0]["id"] == ids[42]  # an id match comes first (case-insensitive)
    word = p["title"].iloc[0].split()[1]  # e.g. the product noun
    cat = p["category"].iloc[0].split(" > ")[-1].split()[0]
    body = client.get("/search", params={"q": f"{word.upper()} {cat}", "limit": 5}).json()
    assert 1 <= len(body["results"]) <= 5 and body["total"] >= len(body["results"])
    for x in body["results"]:
        hay = f"{x['id']} {x['title']} {x['category']}".lower()
        assert word.lower() in hay and cat.lower() in hay
    assert client.get("/search", params={"q": "zzzz-no-such-thing"}).json() == {
        "q": "zzzz-no-such-thing", "total": 0, "results": []}
    assert client.get("/search", params={"q": "   "}).json()["total"] == 0
    assert client.get("/search").status_code == 422
    assert client.get("/search", params={"q": "a", "limit": 0}).status_code == 422


def test_health(client, model_a):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model_version"] == "2026-01-01T00:00:00"
    assert h["num_products"] == 300 and h["dim"] == 16
    assert h["index"]["kind"] == "exact" and h["index"]["stored"] is False and h["index"]["n"] == 300


@pytest.mark.parametrize("path", ["/products/NOPE-1/related", "/products/NOPE-1/incoming", "/products/NOPE-1"])
def test_unknown_id_is_404_naming_it(client, path):
    r = client.get(path)
    assert r.status_code == 404
    assert "NOPE-1" in r.json()["detail"] and r.json()["missing"] == ["NOPE-1"]


def test_unknown_id_in_batch_is_404(client, model_a):
    r = client.post("/related", json={"ids": [_ids(model_a)[0], "NOPE-2"], "k": 3})
    assert r.status_code == 404 and "NOPE-2" in r.json()["detail"]


@pytest.mark.parametrize("k", ["0", "100000", "-1", "abc", "1.5"])
def test_k_out_of_range_is_422(client, model_a, k):
    pid = _ids(model_a)[0]
    assert client.get(f"/products/{pid}/related?k={k}").status_code == 422
    assert client.get(f"/products/{pid}/incoming?k={k}").status_code == 422


@pytest.mark.parametrize("body", [
    b"{not json", b"", b"[]", b'{"ids": "P0000001"}', b'{"ids": []}', b'{"ids": ["P0000001"], "k": 0}',
    b'{"ids": ["P0000001"], "k": 100000}', b'{"k": 3}', b'{"ids": [1, 2]}', b'{"ids": ["P0000001"], "x": 1}',
])
def test_malformed_body_is_422(client, body):
    r = client.post("/related", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text


def test_openapi_lists_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/products/{product_id}/related", "/related", "/products/{product_id}",
            "/products/{product_id}/incoming", "/search", "/health", "/products", "/admin/reload"} <= set(paths)
    assert "501" in paths["/products"]["post"]["responses"]


def test_add_products_without_coldstart_is_501(tmp_path, monkeypatch):
    m = write_model(tmp_path / "m", n=50)
    c = TestClient(create_app(m))
    monkeypatch.setitem(sys.modules, "dualrec.coldstart", None)  # makes `import dualrec.coldstart` fail
    r = c.post("/products", json={"products": [{"id": "NEW-1", "title": "new phone case"}]})
    assert r.status_code == 501 and "cold start" in r.json()["detail"]
    assert c.post("/products", json={"products": []}).status_code == 422
    assert c.post("/products", json={"products": [{"title": "no id"}]}).status_code == 422


def _fake_coldstart(calls):
    """A stand-in for dualrec.coldstart: appends rows (embedding = an existing product's)."""
    mod = types.ModuleType("dualrec.coldstart")

    def add_products(model_dir, new_products):
        calls.append((model_dir, new_products.copy()))
        if new_products["id"].isin(pd.read_parquet(model_dir / "products.parquet")["id"]).any():
            raise DualrecError("product id(s) already in the model")
        p = pd.read_parquet(model_dir / "products.parquet")
        s, t = np.load(model_dir / "source.npy"), np.load(model_dir / "target.npy")
        p = pd.concat([p, new_products], ignore_index=True)
        np.save(model_dir / "source.npy", np.vstack([s, s[:len(new_products)]]))
        np.save(model_dir / "target.npy", np.vstack([t, s[:len(new_products)]]))  # t_new = s_0: best for 0
        p.to_parquet(model_dir / "products.parquet", index=False)
        return new_products["id"].astype(str).tolist()

    mod.add_products = add_products
    return mod


def test_add_products_then_served(tmp_path, monkeypatch):
    m = write_model(tmp_path / "m", n=60)
    write_model_index(m, "hnsw", sample=50)  # a stored index: the new row is appended in memory
    c = TestClient(create_app(m))
    first = _ids(m)[0]
    calls = []
    monkeypatch.setitem(sys.modules, "dualrec.coldstart", _fake_coldstart(calls))
    r = c.post("/products", json={"products": [{"id": "NEW-1", "title": "Novara phone case", "price": 9.5,
                                                "colour": "red"}]})
    assert r.status_code == 201, r.text
    assert r.json()["added"] == ["NEW-1"] and r.json()["num_products"] == 61
    assert calls[0][0] == m and calls[0][1]["colour"].tolist() == ["red"]
    assert c.get("/products/NEW-1").json()["title"] == "Novara phone case"
    assert c.get(f"/products/{first}/related", params={"k": 1}).json()["results"][0]["id"] == "NEW-1"
    h = c.get("/health").json()
    assert h["num_products"] == 61 and h["index"]["kind"] == "hnsw" and h["index"]["appended_rows"] == 1
    r = c.post("/products", json={"products": [{"id": "NEW-1"}]})
    assert r.status_code == 400 and "already" in r.json()["detail"]


def test_reload_and_admin_token(tmp_path, model_b):
    m = write_model(tmp_path / "m", n=50)
    c = TestClient(create_app(m, admin_token="s3cret"))
    assert c.post("/admin/reload").status_code == 403
    assert c.post("/admin/reload", headers={"X-Admin-Token": "wrong"}).status_code == 403
    assert c.post("/products", json={"products": [{"id": "x"}]}).status_code == 403
    r = c.post("/admin/reload", headers={"X-Admin-Token": "s3cret"}, json={"model_dir": str(model_b)})
    assert r.status_code == 200 and r.json()["model_version"] == "2026-01-02T00:00:00"
    r = c.post("/admin/reload", headers={"X-Admin-Token": "s3cret"}, json={"model_dir": str(tmp_path / "nope")})
    assert r.status_code == 400 and "not found" in r.json()["detail"]
    assert c.get("/health").json()["model_version"] == "2026-01-02T00:00:00"  # the old one stays
    assert c.post("/admin/reload", headers={"X-Admin-Token": "s3cret"},
                  json={"model_dir": 3, "other": 1}).status_code == 422


def test_create_app_on_a_bad_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DualrecError, match="not a trained dualrec model"):
        create_app(tmp_path)


def test_swap_is_atomic_under_concurrent_requests(tmp_path, model_a, model_b):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(model_a, a)
    shutil.copytree(model_b, b)
    write_model_index(b, "exact")  # the two also differ in where their index comes from
    ids = _ids(a)
    assert ids == _ids(b)
    probe = ids[:4]
    expected = {}
    for m in (a, b):
        svc = RecommenderService.load(m)
        single = {pid: jsonable(svc.related(pid, 5)) for pid in probe}
        batch = jsonable(svc.related_batch(probe, 5))
        expected[svc.model_version] = (single, batch)
    assert len(expected) == 2
    app = create_app(a)
    c = TestClient(app)
    stop = threading.Event()
    seen, bad = [], []

    def worker(w):
        i = 0
        while not stop.is_set():
            pid = probe[i % len(probe)]
            if i % 3 == 0:
                body = c.post("/related", json={"ids": probe, "k": 5}).json()
                ok = body["model_version"] in expected and body == expected[body["model_version"]][1]
            else:
                body = c.get(f"/products/{pid}/related", params={"k": 5}).json()
                ok = body.get("model_version") in expected and body == expected[body["model_version"]][0][pid]
            seen.append(body.get("model_version"))
            if not ok:
                bad.append(body)
            i += 1

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    holder: ServiceHolder = app.state.holder
    try:
        for i in range(8):
            if i % 2 == 0:
                assert c.post("/admin/reload", json={"model_dir": str(b)}).status_code == 200
            else:
                holder.swap(a)  # the same swap, through the Python API
            n, deadline = len(seen), time.time() + 30
            while len(seen) < n + 10 and time.time() < deadline:  # let requests run against this model
                time.sleep(0.005)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not bad, bad[:2]
    assert set(seen) == set(expected)


def test_unusual_metadata_types_are_passed_through(tmp_path):
    m = write_model(tmp_path / "m", n=40)
    p = pd.read_parquet(m / "products.parquet")
    p["brand"] = np.arange(len(p))  # numeric codes
    p["price"] = ["n/a"] + [f"{x:.2f}" for x in range(1, len(p))]  # strings
    p["released"] = pd.Timestamp("2024-05-01")
    p.to_parquet(m / "products.parquet", index=False)
    c = TestClient(create_app(m))
    pid = p["id"].iloc[1]
    r = c.get(f"/products/{pid}/related", params={"k": 39})
    assert r.status_code == 200
    assert any(x["price"] == "n/a" for x in r.json()["results"])
    assert c.get(f"/products/{pid}").json()["released"].startswith("2024-05-01")
    assert c.get("/search", params={"q": pid}).json()["results"][0]["brand"] == 1
