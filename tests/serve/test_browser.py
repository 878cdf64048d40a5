"""The web page at / in a real browser: Debian's Chromium (/usr/bin/chromium), driven headless by
Playwright, against `dualrec serve` running in a subprocess on 127.0.0.1.

The model is a tiny trained one (synthetic store, hash encoder), so cold start through the page's
form (POST /products) really embeds the new product. Without /usr/bin/chromium (or Playwright)
the browser test is skipped with the reason; with DUALREC_REQUIRE_BROWSER=1 (set by .ci/run)
it fails instead, so CI never passes without having run it. DUALREC_CHROMIUM overrides the path.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from dualrec.serve.app import STATIC_DIR, create_app
from dualrec.store import open_version

from .conftest import write_model

CHROMIUM = os.environ.get("DUALREC_CHROMIUM", "/usr/bin/chromium")
# Flags for this machine's closed network (see the machines notes); Playwright adds --headless
# itself and starts every browser with a new, empty profile (its own temporary user-data-dir).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
K = 6
TIMEOUT_MS = 30_000
ADMIN_TOKEN = "browser-test-token-0123456789"


def _browser_unavailable(reason: str):
    if os.environ.get("DUALREC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, but DUALREC_REQUIRE_BROWSER=1 (CI) requires the browser test to run")
    pytest.skip(reason)


# -- without a browser: the page and its assets are served (and shipped) ----------------------------


def test_page_and_assets_are_served(tmp_path):
    assert {"index.html", "app.js", "style.css"} <= {p.name for p in STATIC_DIR.iterdir()}
    c = TestClient(create_app(write_model(tmp_path / "m", n=30)), base_url="http://127.0.0.1")
    r = c.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for testid in ("search-input", "related-list", "incoming-list", "add-form", "error"):
        assert f'data-testid="{testid}"' in r.text
    assert "http://" not in r.text and "https://" not in r.text  # nothing from a CDN: works offline
    js = c.get("/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert c.get("/static/style.css").headers["content-type"].startswith("text/css")
    assert c.get("/static/nope.js").status_code == 404
    assert "/" not in c.get("/openapi.json").json()["paths"]  # the page is not part of the API


# -- in the browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def playwright_api():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _browser_unavailable(
            f"{CHROMIUM} not found: install Debian's chromium "
            "(apt-get install chromium chromium-driver) to run the browser test"
        )
    try:
        from playwright import sync_api
    except ImportError:
        _browser_unavailable("the playwright package is not installed (pip install -e '.[test]')")
    return sync_api


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory) -> Path:
    from dualrec.pipeline import train_dataset
    from dualrec.synthetic import make_store
    from dualrec.train import TrainConfig

    root = tmp_path_factory.mktemp("browser")
    make_store(n_products=300, seed=3).save(root / "dataset")
    cfg = TrainConfig(
        encoder="hash", epochs=3, patience=2, seed=0, hidden_channels=32, out_channels=16, num_negatives=64
    )
    train_dataset(root / "dataset", root / "model", cfg, progress=False, log=lambda m: None)
    return root / "model"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_model, tmp_path_factory):
    """`dualrec serve MODEL` on a free port; yields its base URL."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("server") / "serve.log"
    env = {
        **{k: v for k, v in os.environ.items() if k != "DUALREC_ADMIN_TOKEN_FILE"},
        "DUALREC_ADMIN_TOKEN": ADMIN_TOKEN,
    }  # writes on: the page's form adds a product
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dualrec.cli",
                "serve",
                str(trained_model),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dualrec serve exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dualrec serve did not answer /health in 120 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def page(playwright_api, tmp_path):
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 900})
            pg = context.new_page()
            pg.set_default_timeout(TIMEOUT_MS)
            console_errors = []
            pg.on("pageerror", lambda e: console_errors.append(str(e)))
            yield pg
            assert not console_errors, f"JavaScript errors on the page: {console_errors}"
        finally:
            browser.close()


def _api_ids(base: str, path: str, **params) -> list[str]:
    r = httpx.get(base + path, params=params, timeout=30)
    assert r.status_code == 200, r.text
    return [x["id"] for x in r.json()["results"]]


def _shown_product(page, expect, pid: str):
    """Wait until the product panel shows ``pid`` with both lists filled."""
    expect(page.locator(f'[data-testid="product"][data-ready="true"][data-id="{pid}"]')).to_be_visible()


def _list_ids(page, testid: str) -> list[str]:
    return page.locator(f'[data-testid="{testid}"]').evaluate_all("els => els.map(e => e.dataset.id)")


def test_page_in_chromium(playwright_api, server, trained_model, page, tmp_path):
    expect = playwright_api.expect
    expect.set_options(timeout=TIMEOUT_MS)
    products = open_version(trained_model).products()
    title0 = str(products.loc[0, "title"])
    word = title0.split()[1]  # a product word (the first one is the brand), e.g. "drone"

    page.goto(server + "/")
    expect(page.get_by_test_id("health")).to_contain_text(f"{len(products)} products")
    expect(page.get_by_test_id("error")).to_be_hidden()

    # search a word: the page lists what GET /search lists
    page.get_by_test_id("search-input").fill(word)
    page.get_by_test_id("search-button").click()
    expect(page.locator('[data-testid="search-results"][data-ready="true"]')).to_be_attached()
    want = _api_ids(server, "/search", q=word, limit=20)
    assert want, f"no product matches {word!r}"
    expect(page.get_by_test_id("search-result")).to_have_count(len(want))
    assert _list_ids(page, "search-result") == want
    expect(page.get_by_test_id("search-summary")).to_contain_text("match")

    # click a product: metadata, related (→) and incoming (←) as the API gives them
    pid = want[0]
    page.locator(f'[data-testid="search-result"][data-id="{pid}"] a').click()
    _shown_product(page, expect, pid)
    expect(page.get_by_test_id("related-item")).to_have_count(10)  # the default k
    page.get_by_test_id("k-input").fill(str(K))
    page.get_by_test_id("k-input").press("Tab")  # "change": the lists reload with k = K
    row = products[products["id"] == pid].iloc[0]
    expect(page.get_by_test_id("product-title")).to_have_text(str(row["title"]))
    expect(page.get_by_test_id("product-id")).to_have_text(pid)
    expect(page.locator('[data-testid="product-meta"] dd[data-field="brand"]')).to_have_text(str(row["brand"]))
    expect(page.locator('[data-testid="product-meta"] dd[data-field="price"]')).to_have_text(f"${row['price']:.2f}")
    expect(page.get_by_test_id("related-item")).to_have_count(K)
    assert _list_ids(page, "related-item") == _api_ids(server, f"/products/{pid}/related", k=K)
    # each recommendation says why: logged co-purchase or predicted, and its reason, as the API does
    expect(page.get_by_test_id("related-item-why")).to_have_count(K)
    api = httpx.get(f"{server}/products/{pid}/related", params={"k": K, "explain": "true"}).json()["results"]
    shown = page.get_by_test_id("related-item-why").all_inner_texts()
    assert all(x["reason"] in t for x, t in zip(api, shown)), (api, shown)
    expect(page.get_by_test_id("incoming-item")).to_have_count(K)
    assert _list_ids(page, "incoming-item") == _api_ids(server, f"/products/{pid}/incoming", k=K)
    assert pid not in _list_ids(page, "related-item") + _list_ids(page, "incoming-item")
    expect(page.locator("#product h3").first).to_contain_text("→ Customers who buy this may also want")
    expect(page.locator("#product h3").nth(1)).to_contain_text("← Recommended from")

    # the lists are clickable: follow an incoming product, then come back with the browser's Back
    src = _list_ids(page, "incoming-item")[0]
    page.locator(f'[data-testid="incoming-item"][data-id="{src}"] a').click()
    _shown_product(page, expect, src)
    assert _list_ids(page, "related-item") == _api_ids(server, f"/products/{src}/related", k=K)
    page.go_back()
    _shown_product(page, expect, pid)

    # the API docs render from files the server ships (the browser has no network here)
    page.goto(server + "/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    page.go_back()
    _shown_product(page, expect, pid)

    # an API error shows in the page: an unknown id
    page.evaluate("location.hash = 'product=NO-SUCH-ID'")
    expect(page.get_by_test_id("error")).to_be_visible()
    expect(page.get_by_test_id("error")).to_contain_text("NO-SUCH-ID")

    # cold start through the form: the new product is served with its recommendations
    new_id = "NEW-BROWSER-1"
    page.get_by_test_id("new-id").fill(new_id)
    page.get_by_test_id("new-title").fill("Novara " + " ".join(title0.split()[1:]))
    page.get_by_test_id("new-category").fill(str(products.loc[0, "category"]))
    page.get_by_test_id("new-brand").fill("Novara")
    page.get_by_test_id("new-price").fill("19.99")
    page.get_by_test_id("new-token").fill(ADMIN_TOKEN)
    page.get_by_test_id("add-button").click()
    _shown_product(page, expect, new_id)
    expect(page.get_by_test_id("error")).to_be_hidden()
    expect(page.get_by_test_id("add-status")).to_contain_text(f"added {new_id}")
    expect(page.get_by_test_id("health")).to_contain_text(f"{len(products) + 1} products")
    expect(page.get_by_test_id("related-item")).to_have_count(K)
    assert _list_ids(page, "related-item") == _api_ids(server, f"/products/{new_id}/related", k=K)
    assert _list_ids(page, "incoming-item") == _api_ids(server, f"/products/{new_id}/incoming", k=K)
    expect(page.locator('[data-testid="product-meta"] dd[data-field="brand"]')).to_have_text("Novara")
    expect(page.locator('[data-testid="product-meta"] dd[data-field="price"]')).to_have_text("$19.99")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways overflow
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # adding the same id again is refused, and the page says why
    page.get_by_test_id("new-id").fill(new_id)
    page.get_by_test_id("add-button").click()
    expect(page.get_by_test_id("error")).to_contain_text(f"could not add {new_id}")
    expect(page.get_by_test_id("add-status")).to_contain_text("not added")
    page.screenshot(path=str(tmp_path / "error.png"))
    if os.environ.get("DUALREC_SCREENSHOT_DIR"):  # keep a copy outside pytest's tmp folders
        for name in ("page.png", "error.png"):
            shutil.copy(tmp_path / name, Path(os.environ["DUALREC_SCREENSHOT_DIR"]) / name)
