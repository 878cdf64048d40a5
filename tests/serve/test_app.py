"""The HTTP API: every endpoint, error statuses, cold start, atomic model swaps."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from dualrec.graph import DualrecError
from dualrec.index import write_model_index
from dualrec.serve.app import create_app
from dualrec.serve.service import RecommenderService, ServiceHolder, jsonable
from dualrec.store import ModelStore, open_version

from .conftest import embeddings, exact_topk, product_ids, write_model


def http(app) -> TestClient:
    """A client that sends a loopback Host (the only one a default app accepts)."""
    return TestClient(app, base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def client(model_a):
    return http(create_app(model_a))


def _ids(model):
    return product_ids(model)


def _products(model):
    return open_version(model).products()


def test_related(client, model_a):
    ids = _ids(model_a)
    r = client.get(f"/products/{ids[3]}/related", params={"k": 7})
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == ids[3] and body["k"] == 7 and body["model_version"] == "v000001"
    rows, scores = exact_topk(model_a, 3, 7)
    assert [x["id"] for x in body["results"]] == [ids[i] for i in rows]
    np.testing.assert_allclose([x["score"] for x in body["results"]], scores, atol=1e-5)
    assert set(body["results"][0]) == {"id", "score", "kind", "title", "category", "brand", "price"}
    assert body["ranker"] == "daemon" and "cosine" in body["scores"]
    why = client.get(f"/products/{ids[3]}/related", params={"k": 7, "explain": "true"}).json()["results"]
    assert [x["id"] for x in why] == [x["id"] for x in body["results"]]
    assert {x["kind"] for x in why} == {"predicted"} and "DAEMON score" in why[0]["reason"]
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
    p = _products(model_a).iloc[0]
    assert body["id"] == ids[0] and body["title"] == p["title"] and body["category_id"] == int(p["category_id"])


def test_batch_equals_single(client, model_a):
    ids = _ids(model_a)
    q = [ids[1], ids[2], ids[1]]
    r = client.post("/related", json={"ids": q, "k": 4})
    assert r.status_code == 200
    body = r.json()
    assert body["k"] == 4 and [x["id"] for x in body["results"]] == q
    for entry in body["results"]:
        single = client.get(f"/products/{entry['id']}/related", params={"k": 4, "explain": "false"}).json()
        assert entry["results"] == single["results"]
    assert client.post("/related", json={"ids": [ids[1]]}).json()["k"] == 10


def test_incoming(client, model_a):
    ids = _ids(model_a)
    s, t = embeddings(model_a)
    scores = s @ t[9]
    scores[9] = -np.inf
    expect = np.argsort(-scores)[:6]
    body = client.get(f"/products/{ids[9]}/incoming", params={"k": 6}).json()
    assert [x["id"] for x in body["results"]] == [ids[i] for i in expect]
    np.testing.assert_allclose([x["score"] for x in body["results"]], scores[expect], atol=1e-5)


def test_search(client, model_a):
    p = _products(model_a)
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
        "q": "zzzz-no-such-thing",
        "total": 0,
        "results": [],
    }
    assert client.get("/search", params={"q": "   "}).json()["total"] == 0
    assert client.get("/search").status_code == 422
    assert client.get("/search", params={"q": "a", "limit": 0}).status_code == 422


def test_health(client, model_a):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model_version"] == "v000001" and h["writes"] == "off"
    assert "model_dir" not in h and "/" not in json.dumps({k: v for k, v in h.items() if k != "loaded_at"})
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


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'{"ids": "P0000001"}',
        b'{"ids": []}',
        b'{"ids": ["P0000001"], "k": 0}',
        b'{"ids": ["P0000001"], "k": 100000}',
        b'{"k": 3}',
        b'{"ids": [1, 2]}',
        b'{"ids": ["P0000001"], "x": 1}',
    ],
)
def test_malformed_body_is_422(client, body):
    r = client.post("/related", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text


def test_openapi_lists_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/products/{product_id}/related",
        "/related",
        "/products/{product_id}",
        "/products/{product_id}/incoming",
        "/search",
        "/health",
        "/products",
        "/admin/reload",
    } <= set(paths)
    assert "403" in paths["/products"]["post"]["responses"]
    assert "WRITES" in paths["/products"]["post"]["summary"] and "WRITES" in paths["/admin/reload"]["post"]["summary"]


def _fake_add_products(calls):
    """A stand-in for dualrec.coldstart.add_products on these weightless models: a new version
    with the rows appended (embedding = an existing product's)."""

    def add_products(model_dir, new_products, wait=0.0, **kw):
        calls.append((model_dir, new_products.copy()))
        store = ModelStore(model_dir)
        with store.lock(wait):
            parent = store.version()
            p = parent.products()
            if new_products["id"].isin(p["id"]).any():
                raise DualrecError("product id(s) already in the model")
            s, t = parent.embeddings()
            with store.writer(parent) as w:
                w.link_all(except_={"products.parquet", "source.npy", "target.npy", "model.json"})
                w.save_parquet("products.parquet", pd.concat([p, new_products], ignore_index=True))
                w.save_array("source.npy", np.vstack([s, s[: len(new_products)]]))
                w.save_array("target.npy", np.vstack([t, s[: len(new_products)]]))  # t_new = s_0: best for 0
                w.commit(parent.info)
        return new_products["id"].astype(str).tolist()

    return add_products


def test_writes_are_off_without_a_token(tmp_path):
    m = write_model(tmp_path / "m", n=50)
    c = http(create_app(m, admin_token=None))
    r = c.post("/products", json={"products": [{"id": "NEW-1", "title": "new phone case"}]})
    assert r.status_code == 403 and "writes are off" in r.json()["detail"]
    assert c.post("/admin/reload", json={}).status_code == 403
    assert c.get("/health").json()["model_version"] == "v000001"


def test_add_products_then_served(tmp_path, monkeypatch):
    m = write_model(tmp_path / "m", n=60)
    write_model_index(m, "hnsw", sample=50)  # a stored index: the new row is appended in memory
    c = http(create_app(m, admin_token="s3cret"))
    tok = {"X-Admin-Token": "s3cret"}
    first = _ids(m)[0]
    calls = []
    import dualrec.coldstart

    monkeypatch.setattr(dualrec.coldstart, "add_products", _fake_add_products(calls))
    before = c.get("/health").json()["model_version"]
    r = c.post(
        "/products",
        headers=tok,
        json={"products": [{"id": "NEW-1", "title": "Novara phone case", "price": 9.5, "brand": "Novara"}]},
    )
    assert r.status_code == 201, r.text
    assert r.json()["added"] == ["NEW-1"] and r.json()["num_products"] == 61
    assert r.json()["model_version"] != before  # every catalogue change is a new version
    assert calls[0][0] == m and calls[0][1]["brand"].tolist() == ["Novara"]
    assert c.get("/products/NEW-1").json()["title"] == "Novara phone case"
    assert c.get(f"/products/{first}/related", params={"k": 1}).json()["results"][0]["id"] == "NEW-1"
    h = c.get("/health").json()
    assert h["num_products"] == 61 and h["index"]["kind"] == "hnsw" and h["index"]["appended_rows"] == 1
    r = c.post("/products", headers=tok, json={"products": [{"id": "NEW-1"}]})
    assert r.status_code == 400 and "already" in r.json()["detail"]
    # only the catalogue's columns, bounded sizes, bounded counts
    r = c.post("/products", headers=tok, json={"products": [{"id": "NEW-2", "colour": "red"}]})
    assert r.status_code == 422 and "colour" in r.json()["detail"][0]["msg"]
    assert (
        c.post("/products", headers=tok, json={"products": [{"id": "NEW-3", "title": "x" * 5000}]}).status_code == 422
    )
    many = {"products": [{"id": f"N{i}"} for i in range(101)]}
    assert c.post("/products", headers=tok, json=many).status_code == 422
    assert c.post("/products", headers=tok, json={"products": []}).status_code == 422
    assert c.post("/products", headers=tok, json={"products": [{"title": "no id"}]}).status_code == 422
    assert len(calls) == 2  # none of the refused requests reached the folder


def test_reload_takes_a_version_never_a_path(tmp_path):
    m = write_model(tmp_path / "m", n=50, seed=0)
    write_model(m, n=50, seed=1)  # a second version in the same folder
    c = http(create_app(m, admin_token="s3cret"))
    tok = {"X-Admin-Token": "s3cret"}
    assert c.get("/health").json()["model_version"] == "v000002"
    assert c.post("/admin/reload", json={}).status_code == 403
    assert c.post("/admin/reload", headers={"X-Admin-Token": "wrong"}, json={}).status_code == 403
    assert c.post("/products", json={"products": [{"id": "x"}]}).status_code == 403
    r = c.post("/admin/reload", headers=tok, json={"version": "v000001"})
    assert r.status_code == 200 and r.json()["model_version"] == "v000001"
    r = c.post("/admin/reload", headers=tok, json={"version": "v000009"})
    assert r.status_code == 400 and "no version v000009" in r.json()["detail"]
    for bad in ({"model_dir": str(tmp_path)}, {"version": "../../etc"}, {"version": str(m)}, {"version": 3}):
        assert c.post("/admin/reload", headers=tok, json=bad).status_code == 422, bad
    assert c.get("/health").json()["model_version"] == "v000001"  # the old one stays
    r = c.post("/admin/reload", headers=tok, json={})
    assert r.status_code == 200 and r.json()["model_version"] == "v000002"  # the current one again


def test_create_app_on_a_bad_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DualrecError, match="not a trained dualrec model"):
        create_app(tmp_path)


def test_swap_is_atomic_under_concurrent_requests(tmp_path):
    m = write_model(tmp_path / "m", seed=0)
    write_model(m, seed=1)
    write_model_index(m, "exact")  # the two also differ in where their index comes from
    a, b = "v000001", "v000003"
    ids = _ids(m)
    probe = ids[:4]
    expected = {}
    for v in (a, b):
        svc = RecommenderService.load(m, version=v)
        single = {pid: jsonable(svc.related(pid, 5)) for pid in probe}
        batch = jsonable(svc.related_batch(probe, 5))
        expected[svc.model_version] = (single, batch)
    assert len(expected) == 2
    app = create_app(m, admin_token="s3cret", version=a)
    c = http(app)
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
                body = c.get(f"/products/{pid}/related", params={"k": 5, "explain": "false"}).json()
                ok = body.get("model_version") in expected and body == expected[body["model_version"]][0][pid]
            seen.append(body.get("model_version"))
            if not ok:
                bad.append(body)
            i += 1

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    holder: ServiceHolder = app.state.holder
    try:
        for i in range(8):
            if i % 2 == 0:
                assert (
                    c.post("/admin/reload", json={"version": b}, headers={"X-Admin-Token": "s3cret"}).status_code == 200
                )
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
    v = open_version(m)
    p = v.products()
    p["brand"] = np.arange(len(p))  # numeric codes
    p["price"] = ["n/a"] + [f"{x:.2f}" for x in range(1, len(p))]  # strings
    p["released"] = pd.Timestamp("2024-05-01")
    store = ModelStore(m)
    with store.lock(0), store.writer(v) as w:
        w.link_all(except_={"products.parquet", "model.json"})
        w.save_parquet("products.parquet", p)
        w.commit(v.info)
    c = http(create_app(m))
    pid = p["id"].iloc[1]
    r = c.get(f"/products/{pid}/related", params={"k": 39})
    assert r.status_code == 200
    assert any(x["price"] == "n/a" for x in r.json()["results"])
    assert c.get(f"/products/{pid}").json()["released"].startswith("2024-05-01")
    assert c.get("/search", params={"q": pid}).json()["results"][0]["brand"] == 1


def test_requests_are_bounded(client, model_a):
    ids = _ids(model_a)
    assert TestClient(client.app).get("/health").status_code == 400  # Host "testserver": not allowed
    assert TestClient(client.app, base_url="http://evil.example").get("/health").status_code == 400
    r = client.post("/related", content=b'{"ids": ["P1"]}', headers={"content-type": "text/plain"})
    assert r.status_code == 415  # no cross-origin "simple" form posts
    assert client.post("/admin/reload", content=b"", headers={"content-type": "text/plain"}).status_code == 415
    big = b'{"ids": ["' + b"x" * 300_000 + b'"]}'
    assert client.post("/related", content=big, headers={"content-type": "application/json"}).status_code == 413
    r = client.post("/related", json={"ids": ids[:100], "k": 101})
    assert r.status_code == 422 and "ids x k" in r.json()["detail"][0]["msg"]
    assert client.post("/related", json={"ids": ids[:101], "k": 1}).status_code == 422
    assert client.post("/related", json={"ids": ids[:100], "k": 100}).status_code == 200
    assert client.get("/search", params={"q": " ".join(["ab"] * 9)}).status_code == 422
    assert client.get("/search", params={"q": "a" * 201}).status_code == 422
    assert client.get("/products/" + "x" * 201).status_code == 422


def test_errors_never_show_server_paths(tmp_path):
    from dualrec.serve.app import _scrub

    assert _scrub("cannot read /srv/models/m/versions/v000001/products.parquet: bad") == "cannot read <path>: bad"
    m = write_model(tmp_path / "m", n=30)
    c = http(create_app(m, admin_token="s3cret"))
    r = c.post("/admin/reload", headers={"X-Admin-Token": "s3cret"}, json={"version": "v000002"})
    assert r.status_code == 400 and str(tmp_path) not in r.text


def test_the_concurrency_limit_and_the_timeout_answer_503(tmp_path):
    import asyncio

    from dualrec.serve.app import Guard, Limits

    async def slow_app(scope, receive, send):
        await asyncio.sleep(0.3)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def call(guard, path="/x"):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(msg):
            sent.append(msg)

        await guard({"type": "http", "method": "GET", "path": path, "headers": []}, receive, send)
        return sent[0]["status"]

    async def main():
        g = Guard(slow_app, Limits(max_concurrent=2, max_queued=0, timeout_s=5))
        got = await asyncio.gather(*(call(g) for _ in range(3)), call(g, "/health"))
        queued = Guard(slow_app, Limits(max_concurrent=2, max_queued=1, queue_s=2, timeout_s=5))
        waited = await asyncio.gather(*(call(queued) for _ in range(3)))  # the third waits for a slot
        short = Guard(slow_app, Limits(max_concurrent=1, max_queued=4, queue_s=0.05, timeout_s=5))
        late = await asyncio.gather(*(call(short) for _ in range(2)))  # the second waits too long
        g2 = Guard(slow_app, Limits(timeout_s=0.05))
        return got, waited, late, await call(g2), await call(g2, "/health")

    (a, b, c, health), waited, late, timed_out, health_untimed = asyncio.run(main())
    assert sorted([a, b, c]) == [200, 200, 503] and health == 200
    assert waited == [200, 200, 200] and sorted(late) == [200, 503]
    assert timed_out == 503 and health_untimed == 200


def test_an_oversized_body_without_content_length_is_413(client):
    def chunks():
        for _ in range(40):
            yield b" " * 10_000

    r = client.post("/related", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_adding_products_to_a_version_that_is_not_current_is_409(tmp_path, monkeypatch):
    m = write_model(tmp_path / "m", n=40, seed=0)
    write_model(m, n=40, seed=1)
    c = http(create_app(m, admin_token="s3cret", version="v000001"))
    r = c.post("/products", headers={"X-Admin-Token": "s3cret"}, json={"products": [{"id": "N1"}]})
    assert r.status_code == 409 and "v000002" in r.json()["detail"]
    assert c.get("/health").json()["model_version"] == "v000001"


def test_api_docs_work_offline(client):
    import re

    r = client.get("/docs")
    assert r.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert assets and all(a.startswith("/") for a in assets)  # nothing from a CDN
    assert all(client.get(a).status_code == 200 for a in assets)
