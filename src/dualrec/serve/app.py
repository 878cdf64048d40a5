"""HTTP API over a model folder (FastAPI): ``create_app(model_dir)``; ``dualrec serve`` runs it.

Endpoints (an unknown id is a 404 that names it; a malformed body or parameter is a 422; any
:class:`~dualrec.errors.DualrecError` is a 400; see :class:`Limits` for the sizes accepted):

    GET  /products/{id}/related?k=10   top-k recommended products (ids, scores, metadata): the second
                                       stage's reranked candidates when the model has one
                                       (known co-purchases first), else the index's top-k
    POST /related                      {"ids": [...], "k": 10} -> one result list per id
    GET  /products/{id}                the product's catalogue row
    GET  /products/{id}/incoming?k=10  products that recommend it (top sources by s_u . t_id)
    GET  /search?q=words&limit=20      id match or all words in id/title/category
    GET  /health                       model version, counts, index kind and recall
    POST /products                     WRITES: cold start, adds products as a new model version
    POST /admin/reload                 WRITES: {"version": optional} serve a version of the folder
    GET  /                             a small web page over these endpoints (static/, not in OpenAPI)

What a request cannot do (see SECURITY.md): name a path (the folder is fixed at start; reload
takes a version name inside it), run code (model folders hold no pickle, see
:mod:`dualrec.store`), write without the admin token (the two write endpoints answer 403 while
none is configured), reach the API under a ``Host`` not allowed (DNS rebinding), POST anything
but ``application/json`` (no cross-origin form posts), or exceed :class:`Limits` (413/422), the
concurrency limit (503) or the request timeout (503). ``/health`` runs on the event loop, outside
the worker threads and the concurrency limit, so it stays fast while they are busy. Errors name
ids, never server paths.

The model and its index load once, in :func:`create_app`. A reload builds the new service
completely and then swaps one reference (:class:`~dualrec.serve.service.ServiceHolder`); each
request reads that reference once, so it is answered entirely by the old or the new model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import pandas as pd
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.middleware.trustedhost import TrustedHostMiddleware

from dualrec.errors import DualrecError, ModelBusyError, UnknownProductError
from dualrec.serve.service import MAX_K, RecommenderService, ServiceHolder

log = logging.getLogger("dualrec.serve")

#: the web page's files (package data): index.html, app.js, style.css
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Host names accepted by default: the loopback interface only
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

__all__ = ["create_app", "Limits", "admin_token_from_env", "LOOPBACK_HOSTS"]


RANKER_DOC = (
    "how this list was ranked: 'two-stage', 'neighbours' (a new product's own list: its text "
    "neighbours' co-purchases, then DAEMON's order) or 'daemon'"
)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. Beyond these: 413 (body) or 422 (fields), at once."""

    max_body_bytes: int = 256 * 1024  # any request body
    max_batch_ids: int = 100  # ids in POST /related
    max_batch_results: int = 10_000  # ids x k in POST /related
    max_new_products: int = 100  # products in one POST /products
    max_id_chars: int = 200
    max_field_chars: int = 2_000  # any metadata value of a new product
    max_search_chars: int = 200
    max_search_words: int = 8
    max_concurrent: int = 4  # requests in flight; /health is not counted
    max_queued: int = 32  # more requests waiting for a slot (beyond: 503 at once)
    queue_s: float = 2.0  # the longest wait for a slot (then 503)
    timeout_s: float = 10.0  # a read still running after this: 503 (writes are not timed out)


def admin_token_from_env() -> str | None:
    """``DUALREC_ADMIN_TOKEN``, else the first line of the file ``DUALREC_ADMIN_TOKEN_FILE``."""
    tok = os.environ.get("DUALREC_ADMIN_TOKEN")
    if tok:
        return tok.strip() or None
    f = os.environ.get("DUALREC_ADMIN_TOKEN_FILE")
    if f:
        try:
            return Path(f).read_text().strip().splitlines()[0].strip() or None
        except (OSError, IndexError) as e:
            raise DualrecError(f"cannot read the admin token file named by DUALREC_ADMIN_TOKEN_FILE ({e})") from e
    return None


_PATHLIKE = re.compile(r"(?:[A-Za-z]:)?(?:\.{0,2}[\\/][^\\/\s'\"(),;:]+)+")


def _scrub(msg: str, roots: tuple[str, ...] = ()) -> str:
    """An error message without server paths (they tell a client how the server is laid out):
    the served folder's own path first (it may hold spaces), then anything path-like."""
    for r in sorted(roots, key=len, reverse=True):
        if r:
            msg = msg.replace(r, "<model>")
    return _PATHLIKE.sub("<path>", msg)


# -- schemas ---------------------------------------------------------------------------------------


class Item(BaseModel):
    """A product in a result list: id, score (for rankings) and catalogue metadata when the
    catalogue has the column (null when missing for this product). Metadata is passed through
    as stored (usually strings and a number for price)."""

    model_config = ConfigDict(extra="allow")
    id: str
    score: Optional[float] = None
    kind: Optional[str] = Field(None, description="'logged' (a co-purchase in the shop's data) or 'predicted'")
    reason: Optional[str] = Field(None, description="why it is recommended, in words")
    title: Any = None
    category: Any = None
    brand: Any = None
    price: Any = None


class RelatedResponse(BaseModel):
    id: str
    k: int
    model_version: str
    ranker: Optional[str] = Field(None, description=RANKER_DOC)
    scores: Optional[str] = Field(None, description="what the scores are (comparable within a list)")
    results: list[Item]


class BatchEntry(BaseModel):
    id: str
    k: int
    ranker: Optional[str] = Field(None, description=RANKER_DOC)
    scores: Optional[str] = Field(None, description="what the scores are (comparable within a list)")
    results: list[Item]


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[Annotated[str, Field(max_length=Limits.max_id_chars)]] = Field(
        ..., min_length=1, max_length=Limits.max_batch_ids, description="product ids (at most 100)"
    )
    k: int = Field(10, ge=1, le=MAX_K, description="products per id; ids x k at most 10,000")
    explain: bool = Field(False, description="add each item's reason in words")


class BatchResponse(BaseModel):
    k: int
    model_version: str
    results: list[BatchEntry]


class SearchResponse(BaseModel):
    q: str
    total: int
    results: list[Item]


class IndexInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    kind: str
    n: int
    recall_at_10: Optional[float] = None


class HealthResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: str
    model_version: str
    num_products: int
    dim: int
    ranker: str = Field("daemon", description="'two-stage' (reranked candidates) or 'daemon' (the index's top-k)")
    index: IndexInfo


class NewProduct(BaseModel):
    """A catalogue row for cold start: ``id`` plus metadata columns of the served catalogue
    (any other field is refused with 422)."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(..., min_length=1, max_length=Limits.max_id_chars)
    title: Optional[str] = Field(None, max_length=Limits.max_field_chars)
    category: Optional[str] = Field(None, max_length=Limits.max_field_chars)
    brand: Optional[str] = Field(None, max_length=Limits.max_field_chars)
    price: Optional[float] = Field(None, ge=0, le=1e9)

    @field_validator("id")
    @classmethod
    def _id_text(cls, v: str) -> str:
        if not v.strip() or any(ord(c) < 32 for c in v):
            raise ValueError("id must be printable text")
        return v


class AddProductsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    products: list[NewProduct] = Field(..., min_length=1, max_length=Limits.max_new_products)


class AddProductsResponse(BaseModel):
    added: list[str]
    num_products: int
    model_version: str


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Optional[str] = Field(
        None, pattern=r"^v[0-9]{6}$", description="a version of the served model folder (default: its current one)"
    )


class ErrorResponse(BaseModel):
    detail: Any


_K = Annotated[int, Query(ge=1, le=MAX_K, description="how many products (1..1000)")]
_ID = Annotated[str, PathParam(description="product id", max_length=Limits.max_id_chars)]
_E404 = {404: {"model": ErrorResponse, "description": "unknown product id"}}
_E400 = {400: {"model": ErrorResponse, "description": "invalid request"}}
_EWRITE = {
    403: {
        "model": ErrorResponse,
        "description": "writes are off (no admin token configured) or the X-Admin-Token header is missing or wrong",
    },
    409: {"model": ErrorResponse, "description": "the served version is not the folder's current one"},
    503: {"model": ErrorResponse, "description": "another writer holds the model folder"},
}


class Guard:
    """ASGI middleware: POSTs must be JSON and at most ``max_body_bytes``; at most
    ``max_concurrent`` requests in flight and ``max_queued`` waiting (``queue_s`` at most) for a
    slot; none longer than ``timeout_s``. ``/health`` is exempt from the last three, so it
    answers while the workers are busy."""

    EXEMPT = ("/health",)

    def __init__(self, app, limits: Limits):
        self.app, self.limits = app, limits
        self.active = self.queued = 0
        self._slots: asyncio.Semaphore | None = None

    @staticmethod
    async def _reply(send, status: int, detail: str, headers: list | None = None) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        lim = self.limits
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        if scope["method"] == "POST":
            ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if ctype != b"application/json":
                return await self._reply(send, 415, "POST bodies must be application/json")
        clen = headers.get(b"content-length")
        if clen is not None:
            try:
                too_big = int(clen) > lim.max_body_bytes
            except ValueError:
                return await self._reply(send, 400, "bad Content-Length")
            if too_big:
                return await self._reply(send, 413, f"request body over {lim.max_body_bytes} bytes")
        # The body is read here, whole and bounded, then replayed to the app: an oversized body
        # sent without Content-Length is a 413 too (inside the app it would be a parse error).
        body, more = [], True
        size = 0
        while more and scope["method"] in ("POST", "PUT", "PATCH"):
            msg = await receive()
            if msg["type"] != "http.request":
                return  # the client went away
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > lim.max_body_bytes:
                return await self._reply(send, 413, f"request body over {lim.max_body_bytes} bytes")
            body.append(chunk)
            more = msg.get("more_body", False)
        replayed = False

        async def limited_receive():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(body), "more_body": False}
            return await receive()

        if scope["path"] in self.EXEMPT:
            return await self.app(scope, limited_receive, send)
        # at most max_concurrent requests run; up to max_queued more wait (at most queue_s) for a
        # slot, so a burst of normal traffic queues briefly instead of failing; beyond: 503 at once
        if self._slots is None:
            self._slots = asyncio.Semaphore(lim.max_concurrent)  # created in the server's event loop
        if self._slots.locked():
            if self.queued >= lim.max_queued:
                return await self._reply(send, 503, "server busy, try again", [(b"retry-after", b"1")])
            self.queued += 1
            try:
                await asyncio.wait_for(self._slots.acquire(), lim.queue_s)
            except asyncio.TimeoutError:
                return await self._reply(send, 503, "server busy, try again", [(b"retry-after", b"1")])
            finally:
                self.queued -= 1
        else:
            await self._slots.acquire()
        self.active += 1
        started = False
        abandoned = False

        async def guarded_send(msg):
            nonlocal started
            if abandoned:
                return
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        async def run():
            try:
                await self.app(scope, limited_receive, guarded_send)
            except Exception:
                if abandoned:  # nobody awaits it any more: log it here
                    log.exception("error in a request that had timed out (%s %s)", scope["method"], scope["path"])
                    return
                raise
            finally:
                self.active -= 1  # the slot is freed when the work ends, not when we stop waiting
                self._slots.release()

        task = asyncio.ensure_future(run())
        # writes (cold start embeds through the whole graph, a reload reads a model) may take long:
        # only the admin token reaches them, and a 503 would hide that they went through
        writes = scope["method"] == "POST" and (scope["path"] == "/products" or scope["path"].startswith("/admin/"))
        done, _ = await asyncio.wait({task}, timeout=None if writes else lim.timeout_s)
        if task in done:
            return task.result()
        if not started:
            abandoned = True  # its answer, when it comes, is dropped
            return await self._reply(send, 503, f"request took longer than {lim.timeout_s:g} s")
        await task


def _unprocessable(loc: list, msg: str) -> JSONResponse:
    """A 422 in FastAPI's own shape (the documented ``HTTPValidationError``)."""
    return JSONResponse(status_code=422, content={"detail": [{"loc": loc, "msg": msg, "type": "value_error"}]})


def _json(body: dict) -> Response:
    """Render in the worker thread: FastAPI would encode a returned dict on the event loop,
    where a 10,000-item batch blocks every other request (and /health) for a few hundred ms.
    The service's answers are JSON-safe already (:func:`~dualrec.serve.service.jsonable`)."""
    return Response(content=json.dumps(body, separators=(",", ":"), allow_nan=False), media_type="application/json")


#: environment variable through which ``dualrec serve --workers N`` configures each worker
SERVE_ENV = "DUALREC_SERVE_CONFIG"


def app_from_env() -> FastAPI:
    """The app of one worker of ``dualrec serve --workers N`` (uvicorn calls it in every worker
    process; the settings come in :data:`SERVE_ENV`). The model's arrays are memory-mapped, so
    the workers share one copy of them through the page cache."""
    cfg = json.loads(os.environ[SERVE_ENV])
    return create_app(
        cfg["model"], faiss_threads=cfg["faiss_threads"], allowed_hosts=cfg["hosts"], version=cfg["version"]
    )


def create_app(
    model_dir: str | Path,
    admin_token: str | None = None,
    faiss_threads: int | None = 1,
    allowed_hosts: list[str] | tuple[str, ...] | None = None,
    limits: Limits | None = None,
    version: str | None = None,
) -> FastAPI:
    """The API for one model folder, loaded now (a bad folder raises DualrecError here).

    ``admin_token`` (default: :func:`admin_token_from_env`) turns the write endpoints on;
    without one they answer 403. ``allowed_hosts``: the ``Host`` names accepted (default
    :data:`LOOPBACK_HOSTS`; ``["*"]`` accepts any, e.g. behind a proxy that checks it).
    ``version`` serves that version of the folder instead of its current one.

    ``faiss_threads``: OpenMP threads per faiss search and torch threads, process-wide (None:
    leave as is). 1 suits a server: requests already run in parallel, and a single query gains
    nothing from more threads, while waiting for them on a busy machine costs milliseconds.
    """
    if faiss_threads is not None:
        import faiss
        import torch

        faiss.omp_set_num_threads(max(1, int(faiss_threads)))
        torch.set_num_threads(max(1, int(faiss_threads)))  # the second stage's dense steps: the same reasoning
    # A worker thread holding the GIL delays the event loop (and /health) by up to one switch
    # interval per turn; a shorter one keeps /health fast while the workers are busy.
    sys.setswitchinterval(0.001)
    limits = limits or Limits()
    holder = ServiceHolder(RecommenderService.load(model_dir, log=log.warning, version=version), log=log.warning)
    token = admin_token if admin_token is not None else admin_token_from_env()

    # the API docs (/docs, /redoc) from files shipped in a package, not a CDN: they work offline
    from fastapi_offline import FastAPIOffline

    app = FastAPIOffline(
        title="dualrec",
        version="1",
        description="Related-product recommendations from DAEMON dual (source/target) embeddings. "
        "The write endpoints (POST /products, POST /admin/reload) need the X-Admin-Token "
        "header and are off while the server has no admin token.",
    )
    app.state.holder = holder
    app.state.writes_enabled = token is not None
    app.add_middleware(Guard, limits=limits)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts or LOOPBACK_HOSTS))

    @app.exception_handler(UnknownProductError)
    async def _unknown(request: Request, exc: UnknownProductError):
        return JSONResponse(status_code=404, content={"detail": str(exc), "missing": exc.missing})

    @app.exception_handler(ModelBusyError)
    async def _busy(request: Request, exc: ModelBusyError):
        return JSONResponse(
            status_code=503,
            headers={"Retry-After": "5"},
            content={"detail": "the model folder is being written by another process; try again"},
        )

    roots = (str(Path(model_dir)), str(Path(model_dir).resolve()))

    @app.exception_handler(DualrecError)
    async def _user_error(request: Request, exc: DualrecError):
        return JSONResponse(status_code=400, content={"detail": _scrub(str(exc), roots)})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = [
            {"loc": e.get("loc"), "msg": _scrub(str(e.get("msg", "")), roots), "type": e.get("type")}
            for e in exc.errors()[:20]
        ]
        return JSONResponse(status_code=422, content={"detail": errs})

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error (see the server log)"})

    def admin(x_admin_token: Annotated[Optional[str], Header()] = None) -> None:
        """A dependency of the write endpoints: it runs before their body is validated."""
        if token is None:
            raise HTTPException(
                403,
                "writes are off on this server: start it with DUALREC_ADMIN_TOKEN or "
                "DUALREC_ADMIN_TOKEN_FILE set to enable them",
            )
        if not (x_admin_token and secrets.compare_digest(x_admin_token.encode(), token.encode())):
            raise HTTPException(403, "missing or wrong X-Admin-Token")

    @app.get(
        "/products/{product_id}/related",
        response_model=RelatedResponse,
        response_model_exclude_unset=True,
        responses=_E404,
        summary="Top-k related products",
    )
    def related(
        product_id: _ID,
        k: _K = 10,
        explain: Annotated[
            bool, Query(description="add each item's reason in words (the web page asks for it)")
        ] = False,
    ):
        return _json(holder.service.related(product_id, k, explain))

    @app.post(
        "/related",
        response_model=BatchResponse,
        response_model_exclude_unset=True,
        responses={**_E404, **_E400},
        summary="Top-k related products for several ids",
    )
    def related_batch(req: BatchRequest):
        if len(req.ids) * req.k > limits.max_batch_results:
            return _unprocessable(
                ["body", "ids"], f"ids x k is {len(req.ids) * req.k}; at most {limits.max_batch_results} per request"
            )
        return _json(holder.service.related_batch(req.ids, req.k, req.explain))

    @app.get(
        "/products/{product_id}/incoming",
        response_model=RelatedResponse,
        response_model_exclude_unset=True,
        responses=_E404,
        summary="Products that recommend this one",
    )
    def incoming(product_id: _ID, k: _K = 10):
        return _json(holder.service.incoming(product_id, k))

    @app.get(
        "/products/{product_id}", response_model=dict[str, Any], responses=_E404, summary="A product's catalogue row"
    )
    def product(product_id: _ID):
        return _json(holder.service.product(product_id))

    @app.get(
        "/search",
        response_model=SearchResponse,
        response_model_exclude_unset=True,
        summary="Find products by id or words",
    )
    def search(
        q: Annotated[str, Query(min_length=1, max_length=Limits.max_search_chars, description="id or words")],
        limit: Annotated[int, Query(ge=1, le=MAX_K)] = 20,
    ):
        if len(q.split()) > limits.max_search_words:
            return _unprocessable(["query", "q"], f"at most {limits.max_search_words} words per search")
        return _json(holder.service.search(q, limit))

    @app.get("/health", response_model=HealthResponse, summary="Model version, counts, index")
    async def health():  # on the event loop: answers while every worker thread is busy
        return holder.service.health() | {"writes": "on" if token is not None else "off"}

    @app.post(
        "/products",
        response_model=AddProductsResponse,
        status_code=201,
        responses={**_E400, **_EWRITE},
        dependencies=[Depends(admin)],
        summary="WRITES (admin token): add new products to the served model (cold start)",
    )
    def add_products(req: AddProductsRequest):
        from dualrec.coldstart import add_products as add

        current = holder.service
        from dualrec.store import ModelStore

        latest = ModelStore(current.model_dir).current_name()
        if current.version != latest:  # new products go into the current version: say so, never switch silently
            return JSONResponse(
                status_code=409,
                content={
                    "detail": f"this server serves {current.version}, not the folder's current version {latest}; "
                    "reload it (POST /admin/reload {}) before adding products"
                },
            )
        allowed = set(map(str, current.products.columns))
        rows = [p.model_dump(exclude_unset=True) for p in req.products]
        extra = sorted({k for r in rows for k in r} - allowed)
        if extra:
            return _unprocessable(
                ["body", "products"],
                f"unknown field(s) {', '.join(extra[:10])}; the catalogue's columns are: {', '.join(sorted(allowed))}",
            )
        for r in rows:
            for k_, v in r.items():
                if isinstance(v, str) and len(v) > limits.max_field_chars:
                    return _unprocessable(
                        ["body", "products", k_], f"{k_} of {r['id']!r} is over {limits.max_field_chars} characters"
                    )
                if isinstance(v, float) and not math.isfinite(v):
                    return _unprocessable(["body", "products", k_], f"{k_} of {r['id']!r} is not finite")
                if not isinstance(v, (str, int, float, bool, type(None))):
                    return _unprocessable(["body", "products", k_], f"{k_} of {r['id']!r} must be text or a number")
        df = pd.DataFrame(rows)
        with holder.lock:  # no reload in between: add to the folder being served, then reload it
            try:
                added = add(current.model_dir, df, wait=5.0)
            except DualrecError:
                raise
            except (ValueError, KeyError, TypeError) as e:
                raise DualrecError(f"cannot add these products: {e}") from e
            new = holder.swap()
        return {"added": [str(a) for a in added], "num_products": new.num_products, "model_version": new.model_version}

    @app.post(
        "/admin/reload",
        response_model=HealthResponse,
        responses={**_E400, **_EWRITE},
        dependencies=[Depends(admin)],
        summary="WRITES (admin token): serve a version of the model folder (default: its current one)",
    )
    def reload(req: ReloadRequest):
        new = holder.swap(req.version)
        return new.health()

    # The web page: GET / and its assets under /static/ (left out of the OpenAPI schema).
    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    return app
