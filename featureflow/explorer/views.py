"""What the explorer's routers share: the query and path parameters they declare, the store and the view state as
dependencies, and `view()`, which registers a view as a page, its JSON twin under /api and its CSV under /csv.

A view is one function returning a dict. `view()` adds it to a router three ways: the JSON twin at `/api<path>`
(the function itself: in the OpenAPI schema), the page at `path` (the dict rendered by a Jinja2 template, or
its htmx fragment) and, for a view with a main list, that list as CSV at `/csv<path>`; all three take the same
parameters and dependencies.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Annotated, Callable
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from featureflow.explorer.queries import Store
from featureflow.explorer.rendering import csv_text, render
from featureflow.explorer.serving import wants_fragment
from featureflow.modes import mode_label

# ------------------------------------------------------------------------------------ parameters
Threshold = Annotated[float | None, Query(gt=-1, lt=1, allow_inf_nan=False,
                                          description="similarity above which a match persists")]
Mode = Annotated[str | None, Query(max_length=40, description="matching mode, e.g. pearson, pearson-1to1, decoder "
                                   "(default: the run's first)")]
Variant = Annotated[str, Query(pattern="^delta-(hidden|mlp|logits)$", description="fingerprint variant")]
Stable = Annotated[str | None, Query(pattern="^(true|false)?$", description="true: only features reproducible "
                                     "across their member's seed replicas (matched above the threshold in every one); "
                                     "false: only measured features that are not; empty or absent: all")]
TokenLevel = Annotated[str | None, Query(pattern="^(true|false)?$", description="true: only token-level features "
                                         "(they also persist into their member's random-weights control, an untrained "
                                         "model of the same architecture and tokenizer); false: only features measured "
                                         "against a control that do not; empty or absent: all")]
Population = Annotated[str | None, Query(pattern="^(reproducible|all)$", description="the Sankey's features: "
                                         "'reproducible' (only the features of replicated members that reproduce "
                                         "in every seed replica) or 'all' (default: reproducible where replicas "
                                         "exist)")]

# Every integer parameter is bounded, so no value reaches DuckDB that overflows its INTEGER / BIGINT columns.
MAX_FEATURE = 2**31 - 1  # features.feature is an INTEGER
MAX_PAGE = 10**6
FeatureId = Annotated[int, PathParam(ge=0, le=MAX_FEATURE, description="the SAE latent index")]
FeatureQuery = Annotated[int, Query(ge=0, le=MAX_FEATURE)]
Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based page number")]
PerPage = Annotated[int, Query(ge=1, le=200, description="rows per page")]
Density = Annotated[float, Query(ge=0, le=1, allow_inf_nan=False)]
FeatureRef = Annotated[str | None, Query(min_length=3, max_length=200, pattern=r"^.+:[0-9]{1,9}$",
                                            description="model:feature, e.g. lua:12")]


def stable_flag(value: str | None) -> bool | None:
    """The `stable` (or `token_level`) filter as a bool (None: no filter)."""
    return None if not value else value == "true"


# ------------------------------------------------------------------------------------ dependencies
async def get_store(request: Request) -> Store:
    """The app's store (opened once by `create_app`, read-only)."""
    return request.app.state.store


StoreDep = Annotated[Store, Depends(get_store)]


class ViewState(BaseModel):
    """The threshold and matching mode every page honours and every link carries (`query`). Answered as
    {threshold, mode, mode_label, query, default}; `modes` (what the page's mode `<select>` offers) is not."""

    model_config = ConfigDict(frozen=True)

    threshold: float
    mode: str
    mode_label: str
    query: str = Field(description="threshold=..&mode=.. for links")
    default: bool = Field(description="both are the run's defaults")
    modes: list[str] = Field(exclude=True, description="the store's matching modes")

    @property
    def choices(self) -> dict:
        """The mode `<select>`'s options, as pages answer them: {"modes": [...], "mode_labels": {mode: label}}."""
        return {"modes": self.modes, "mode_labels": {m: mode_label(m) for m in self.modes}}


def resolve_state(store: Store, threshold: float | str | None, mode: str | None) -> ViewState:
    """The one check of the view state, for pages that declare it (`State`) and pages that only carry it in their
    links: a threshold that is not a finite number in (-1, 1) (the `Threshold` rule) or a mode the store lacks
    is refused (422), so it is never written into a link. None: the run's default."""
    if threshold is not None:
        try:
            threshold = float(threshold)
        except ValueError:
            threshold = math.nan
        if not (math.isfinite(threshold) and -1 < threshold < 1):
            raise RequestValidationError([{"loc": ("query", "threshold"), "type": "value_error",
                                           "msg": "threshold must be a finite number greater than -1 and less "
                                                  "than 1"}])
    t = store.run["default_threshold"] if threshold is None else threshold
    m = store.mode(mode)
    return ViewState(threshold=t, mode=m, mode_label=mode_label(m), query=urlencode({"threshold": t, "mode": m}),
                     default=t == store.run["default_threshold"] and m == store.default_mode, modes=store.modes)


async def view_state(store: StoreDep, threshold: Threshold = None, mode: Mode = None) -> ViewState:
    """The view state of a page that declares `threshold` and `mode`."""
    return resolve_state(store, threshold, mode)


State = Annotated[ViewState, Depends(view_state)]


async def sankey_population(store: StoreDep, population: Population = None) -> str:
    """The overview's population: as asked, else 'reproducible' where seed replicas exist."""
    return population or ("reproducible" if store.replicated else "all")


SankeyPopulation = Annotated[str, Depends(sankey_population)]


# ------------------------------------------------------------------------------------ view()
def view(router: APIRouter, path: str, template: str, fragment: str | None = None,
         table: Callable[[dict], list[dict]] | None = None):
    """Register `fn` on `router` as the page `path` and its JSON twin `/api<path>`; with `table` (the view's main
    list from its answer), also that list as CSV at `/csv<path>` (same parameters), linked from the page. An
    htmx request for the page gets `fragment` where the view has one."""

    def deco(fn: Callable[..., dict]):
        summary = " ".join((fn.__doc__ or "").split()).split(". ")[0].rstrip(".")
        router.add_api_route("/api" + path, fn, methods=["GET"], name=f"api_{fn.__name__}", summary=summary)
        sig = inspect.signature(fn)
        with_request = sig.replace(parameters=[
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
            *sig.parameters.values()])

        @functools.wraps(fn)
        def page(request: Request, **kwargs):
            ctx = fn(**kwargs)
            if "state" not in ctx:  # pages that do not use the view state still carry it in their links
                ctx["state"] = resolve_state(request.app.state.store, request.query_params.get("threshold") or None,
                                             request.query_params.get("mode") or None)
            q = ("?" + request.url.query) if request.url.query else ""
            ctx["twins"] = {"json": "/api" + request.url.path + q,
                            "csv": ("/csv" + request.url.path + q) if table else None}
            return render(request, fragment if fragment and wants_fragment(request.headers) else template, ctx)

        page.__signature__ = with_request
        router.add_api_route(path, page, methods=["GET"], response_class=HTMLResponse, include_in_schema=False,
                             name=fn.__name__)
        if table:
            @functools.wraps(fn)
            def as_csv(request: Request, **kwargs):
                name = (request.url.path.strip("/").replace("/", "-") or "overview").removeprefix("csv-")
                return Response(csv_text(table(fn(**kwargs))), media_type="text/csv; charset=utf-8",
                                headers={"Content-Disposition": f'attachment; filename="{quote(name)}.csv"'})

            as_csv.__signature__ = with_request
            # beside the JSON twin it copies (same parameters), so not a second set of operations in /docs
            router.add_api_route("/csv" + path, as_csv, methods=["GET"], response_class=Response,
                                 name=f"csv_{fn.__name__}", include_in_schema=False)
        return fn

    return deco
