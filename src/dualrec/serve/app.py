"""HTTP API over a model folder (FastAPI): ``create_app(model_dir)``; ``dualrec serve`` runs it.

Endpoints (k and limit are 1..1000; an unknown id is a 404 that names it; a malformed body or
parameter is a 422; any :class:`~dualrec.graph.DualrecError` is a 400):

    GET  /products/{id}/related?k=10   top-k recommended products (ids, scores, metadata): the second
                                       stage's reranked candidates when the model has one
                                       (known co-purchases first), else the index's top-k
    POST /related                      {"ids": [...], "k": 10} -> one result list per id
    GET  /products/{id}                the product's catalogue row
    GET  /products/{id}/incoming?k=10  products that recommend it (top sources by s_u . t_id)
    GET  /search?q=words&limit=20      id match or all words in id/title/category
    GET  /health                       model version, counts, index kind and recall
    POST /products                     cold start: add products (dualrec.coldstart), then reload
    POST /admin/reload                 {"model_dir": optional} load a model folder and swap to it
    GET  /                             a small web page over these endpoints (static/, not in OpenAPI)

The model and its index load once, in :func:`create_app`. A reload builds the new service
completely and then swaps one reference (:class:`~dualrec.serve.service.ServiceHolder`); each
request reads that reference once, so it is answered entirely by the old or the new model.
If ``admin_token`` is set (or ``DUALREC_ADMIN_TOKEN``), the two POST endpoints that change the
served model require it in the ``X-Admin-Token`` header.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
from pathlib import Path
from typing import Annotated, Any, Optional

import pandas as pd
from fastapi import Body, FastAPI, Header, Path as PathParam, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from dualrec.graph import DualrecError, UnknownProductError
from dualrec.serve.service import MAX_K, RecommenderService, ServiceHolder

log = logging.getLogger("dualrec.serve")

#: the web page's files (package data): index.html, app.js, style.css
STATIC_DIR = Path(__file__).resolve().parent / "static"

__all__ = ["create_app"]


# -- schemas ---------------------------------------------------------------------------------------

class Item(BaseModel):
    """A product in a result list: id, score (for rankings) and catalogue metadata when the
    catalogue has the column (null when missing for this product). Metadata is passed through
    as stored (usually strings and a number for price)."""
    model_config = ConfigDict(extra="allow")
    id: str
    score: Optional[float] = None
    title: Any = None
    category: Any = None
    brand: Any = None
    price: Any = None


class RelatedResponse(BaseModel):
    id: str
    k: int
    model_version: str
    results: list[Item]


class BatchEntry(BaseModel):
    id: str
    k: int
    results: list[Item]


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[str] = Field(..., min_length=1, max_length=MAX_K, description="product ids")
    k: int = Field(10, ge=1, le=MAX_K)


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
    """A catalogue row for cold start: ``id`` plus any metadata columns."""
    model_config = ConfigDict(extra="allow")
    id: str = Field(..., min_length=1, max_length=512)
    title: Optional[str] = None
    category: Optional[str] = None
    brand: Optional[str] = None
    price: Optional[float] = None


class AddProductsRequest(BaseModel):
    products: list[NewProduct] = Field(..., min_length=1, max_length=10_000)


class AddProductsResponse(BaseModel):
    added: list[str]
    num_products: int
    model_version: str


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_dir: Optional[str] = Field(None, description="model folder to serve (default: the current one)")


class ErrorResponse(BaseModel):
    detail: Any


_K = Annotated[int, Query(ge=1, le=MAX_K, description="how many products (1..1000)")]
_ID = Annotated[str, PathParam(description="product id")]
_E404 = {404: {"model": ErrorResponse, "description": "unknown product id"}}
_E400 = {400: {"model": ErrorResponse, "description": "invalid request"}}


def create_app(model_dir: str | Path, admin_token: str | None = None, faiss_threads: int | None = 1) -> FastAPI:
    """The API for one model folder, loaded now (a bad folder raises DualrecError here).

    ``faiss_threads``: OpenMP threads per faiss search, process-wide (None: leave as is). 1 suits
    a server: requests already run in parallel, and a single query gains nothing from more
    threads, while waiting for them on a busy machine costs milliseconds per query.
    """
    if faiss_threads is not None:
        import faiss

        faiss.omp_set_num_threads(max(1, int(faiss_threads)))
    holder = ServiceHolder(RecommenderService.load(model_dir, log=log.warning), log=log.warning)
    token = admin_token if admin_token is not None else os.environ.get("DUALREC_ADMIN_TOKEN") or None

    app = FastAPI(title="dualrec", version="1",
                  description="Related-product recommendations from DAEMON dual (source/target) embeddings.")
    app.state.holder = holder

    @app.exception_handler(UnknownProductError)
    async def _unknown(request: Request, exc: UnknownProductError):
        return JSONResponse(status_code=404, content={"detail": str(exc), "missing": exc.missing})

    @app.exception_handler(DualrecError)
    async def _user_error(request: Request, exc: DualrecError):
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    def _admin(x_admin_token: str | None) -> JSONResponse | None:
        if token is not None and not (x_admin_token and secrets.compare_digest(x_admin_token, token)):
            return JSONResponse(status_code=403, content={"detail": "missing or wrong X-Admin-Token"})
        return None

    @app.get("/products/{product_id}/related", response_model=RelatedResponse, response_model_exclude_unset=True, responses=_E404,
             summary="Top-k related products")
    def related(product_id: _ID, k: _K = 10):
        return holder.service.related(product_id, k)

    @app.post("/related", response_model=BatchResponse, response_model_exclude_unset=True, responses={**_E404, **_E400},
              summary="Top-k related products for several ids")
    def related_batch(req: BatchRequest):
        return holder.service.related_batch(req.ids, req.k)

    @app.get("/products/{product_id}/incoming", response_model=RelatedResponse, response_model_exclude_unset=True, responses=_E404,
             summary="Products that recommend this one")
    def incoming(product_id: _ID, k: _K = 10):
        return holder.service.incoming(product_id, k)

    @app.get("/products/{product_id}", response_model=dict[str, Any], responses=_E404,
             summary="A product's catalogue row")
    def product(product_id: _ID):
        return holder.service.product(product_id)

    @app.get("/search", response_model=SearchResponse, response_model_exclude_unset=True, summary="Find products by id or words")
    def search(q: Annotated[str, Query(min_length=1, max_length=200, description="id or words")],
               limit: Annotated[int, Query(ge=1, le=MAX_K)] = 20):
        return holder.service.search(q, limit)

    @app.get("/health", response_model=HealthResponse, summary="Model version, counts, index")
    def health():
        return holder.service.health()

    @app.post("/products", response_model=AddProductsResponse, status_code=201,
              responses={**_E400, 403: {"model": ErrorResponse}, 501: {"model": ErrorResponse,
                         "description": "cold start (dualrec.coldstart) is not available"}},
              summary="Cold start: add new products to the served model")
    def add_products(req: AddProductsRequest,
                     x_admin_token: Annotated[Optional[str], Header()] = None):
        denied = _admin(x_admin_token)
        if denied is not None:
            return denied
        try:
            coldstart = importlib.import_module("dualrec.coldstart")
            add = coldstart.add_products
        except (ImportError, AttributeError) as e:
            return JSONResponse(status_code=501, content={
                "detail": f"cold start is not available in this installation (dualrec.coldstart: {e})"})
        df = pd.DataFrame([p.model_dump(exclude_unset=True) for p in req.products])
        with holder.lock:  # no reload in between: add to the folder being served, then reload it
            current = holder.service
            try:
                added = add(current.model_dir, df)
            except DualrecError:
                raise
            except (ValueError, KeyError, TypeError) as e:
                raise DualrecError(f"cannot add these products: {e}") from e
            new = holder.swap(current.model_dir)
        return {"added": [str(a) for a in added], "num_products": new.num_products,
                "model_version": new.model_version}

    @app.post("/admin/reload", response_model=HealthResponse,
              responses={**_E400, 403: {"model": ErrorResponse}},
              summary="Load a model folder (default: the current one again) and swap to it atomically")
    def reload(req: Annotated[Optional[ReloadRequest], Body()] = None,
               x_admin_token: Annotated[Optional[str], Header()] = None):
        denied = _admin(x_admin_token)
        if denied is not None:
            return denied
        new = holder.swap(req.model_dir if req is not None and req.model_dir else None)
        return new.health()

    # The web page: GET / and its assets under /static/ (left out of the OpenAPI schema).
    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    return app
