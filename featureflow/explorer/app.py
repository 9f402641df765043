"""The featureflow explorer: FastAPI + Jinja2 + htmx + Plotly over one run's DuckDB store (read-only).

`create_app` opens the store, sets up serving (headers, ETag / 304, the response cache, gzip: see serving.py),
the templates (rendering.py) and the error answers, and includes one router per area
(featureflow/explorer/routers/). Every view has a JSON twin under /api (views.py: `view()`), so anything a page
shows can be fetched as data. The app never imports torch and never runs a model.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.middleware.gzip import GZipMiddleware

from featureflow.explorer.queries import NotFound, Store
from featureflow.explorer.rendering import render, templates_for
from featureflow.explorer.routers import autointerp, cases, evidence, features, flows, meta, models
from featureflow.explorer.serving import ResponseCache, ServeHeaders, identity
from featureflow.explorer.vendor import STATIC, VENDOR, missing_message


class FieldError(BaseModel):
    loc: str = Field(description="where: e.g. query.page or path.feature")
    msg: str


class ErrorBody(BaseModel):
    """The one error shape: every 4xx answer under /api is one of these."""

    detail: str = Field(description="what was wrong and, where it helps, what exists instead")
    errors: list[FieldError] = Field(default_factory=list, description="one entry per invalid parameter (422)")


ERRORS = {404: {"model": ErrorBody, "description": "No such model, feature, edge or case (the message says "
                "which exist)"},
          422: {"model": ErrorBody, "description": "A parameter is invalid (`errors` names each one)"}}


class VendorMissing(FileNotFoundError):
    """A front-end file the explorer serves itself (never from a CDN) is not installed."""


# Scripts from this server only; styles may be inline (Plotly, Swagger UI and ReDoc set element styles);
# ReDoc runs its search in a blob: worker. Never framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

GZIP_MIN_BYTES = 1024  # smaller answers (304s, short JSON) gain less than the header and the CPU cost


def create_app(db_path: str | Path, duckdb_threads: int | None = None) -> FastAPI:
    """The explorer over the store at `db_path` (its DuckDB connection with `duckdb_threads` threads; None:
    DuckDB's default). Raises VendorMissing when a front-end file is not installed."""
    store = Store(db_path, threads=duckdb_threads)
    missing = [f"{name} ({path})" for name, path in VENDOR.items() if not path.exists()]
    if missing:
        raise VendorMissing(missing_message(missing))
    app = FastAPI(title="featureflow explorer", docs_url=None, redoc_url=None,
                  description=f"Features of run '{store.run['name']}' through fine-tuning and merging. "
                              "Every page has a JSON twin under /api.", responses=ERRORS)
    app.state.store = store
    app.state.templates = templates_for(store)
    # from the outside in (featureflow/explorer/serving.py): security headers on every response and ETag / 304; answers
    # kept per request (the store never changes while served); gzip
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MIN_BYTES, compresslevel=6)
    app.add_middleware(ResponseCache)
    app.add_middleware(ServeHeaders, security=SECURITY_HEADERS, seed=identity(store.path, store.run))
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ValueError, bad_value)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    for area in (meta, flows, features, models, cases, autointerp, evidence):
        app.include_router(area.router)
    return app


def error(request: Request, status: int, detail: str, errors: list[FieldError] = ()):
    """The same error as JSON (ErrorBody) under /api and /csv, as a page elsewhere."""
    if request.url.path.startswith(("/api/", "/csv/")):
        body = ErrorBody(detail=detail, errors=list(errors))
        return JSONResponse(body.model_dump(), status_code=status)
    title = "Not found" if status == 404 else "Bad request"
    return render(request, "error.html", {"status": status, "title": title, "message": detail}, status_code=status)


def not_found(request: Request, exc: NotFound):
    return error(request, 404, str(exc))


def invalid(request: Request, exc: RequestValidationError):
    errors = [FieldError(loc=".".join(str(x) for x in e["loc"]), msg=e["msg"]) for e in exc.errors()]
    detail = "; ".join(f"{'.'.join(str(x) for x in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                       for e in exc.errors())
    return error(request, 422, detail, errors)


def bad_value(request: Request, exc: ValueError):
    return error(request, 422, str(exc))
