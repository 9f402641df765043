"""The API's own pages and the files the explorer serves itself: /docs (Swagger UI) and /redoc from npm packages,
the vendored front-end libraries (/vendor/...), the favicon, and /api/schema (the store's schema, documented)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from featureflow.explorer.rendering import render
from featureflow.explorer.vendor import STATIC, VENDOR

router = APIRouter()


@router.get("/vendor/{name}", include_in_schema=False)
def vendor(name: str):
    path = VENDOR.get(name)
    if path is None or not path.exists():
        return Response(f"vendor file '{name}' is not installed",
                        status_code=404, media_type="text/plain")
    kind = "text/css" if name.endswith(".css") else "text/javascript"
    return FileResponse(path, media_type=kind, headers={"Cache-Control": "public, max-age=86400"})


@router.get("/favicon.ico", include_in_schema=False)
def favicon():
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml",
                        headers={"Cache-Control": "public, max-age=86400"})


@router.get("/docs", include_in_schema=False)
def docs(request: Request):
    """Swagger UI from the swagger-ui-dist npm package (started by static/docs.js: no inline script)."""
    return render(request, "docs.html", {"title": request.app.title, "kind": "swagger"})


@router.get("/redoc", include_in_schema=False)
def redoc(request: Request):
    """ReDoc from the redoc npm package."""
    return render(request, "docs.html", {"title": request.app.title, "kind": "redoc"})


@router.get("/api/schema", summary="The store's schema, documented")
def schema() -> dict:
    from featureflow.store.schema import SCHEMA_VERSION, TABLES

    return {"version": SCHEMA_VERSION, "tables": {k: {"doc": d, "columns": " ".join(b.split())}
                                                  for k, (d, b) in TABLES.items()}}
