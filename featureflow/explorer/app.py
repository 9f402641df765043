"""The featureflow explorer: FastAPI + Jinja2 + htmx + Plotly over one run's DuckDB store (read-only).

Every view is one function returning a dict. `view()` registers it twice: as a page at `path`
(rendered by a Jinja2 template) and as its JSON twin at `/api<path>`, so anything a page shows can be
fetched as data. The app never imports torch and never runs a model.
"""

from __future__ import annotations

import csv
import functools
import inspect
import io
import json
import math
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Callable
from urllib.parse import quote, urlencode

from fastapi import APIRouter, FastAPI, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.gzip import GZipMiddleware
from markupsafe import Markup, escape
from pydantic import BaseModel, Field

from featureflow.explorer import figures, numbers
from featureflow.explorer.text import escape_form, field_value, finalize, hidden as _hidden, visible_json
from featureflow.store.flows import mode_label

from featureflow.explorer.queries import NotFound, Ref, Store
from featureflow.explorer.serving import ResponseCache, ServeHeaders, identity, wants_fragment
from featureflow.explorer.vendor import missing_message, vendor_files

FRONTEND = Path(__file__).resolve().parent
VENDOR = vendor_files()  # served name -> file (featureflow/explorer/vendor.py)

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


def stable_flag(value: str | None) -> bool | None:
    """The `stable` (or `token_level`) filter as a bool (None: no filter)."""
    return None if not value else value == "true"
Population = Annotated[str | None, Query(pattern="^(reproducible|all)$", description="the Sankey's features: "
                                         "'reproducible' (only the features of replicated members that reproduce "
                                         "in every seed replica) or 'all' (default: reproducible where replicas "
                                         "exist)")]

# Every integer parameter is bounded, so no value reaches DuckDB that overflows its INTEGER / BIGINT columns.
MAX_FEATURE = 2**31 - 1  # features.feature is an INTEGER
MAX_PAGE = 10**6
FeatureId = Annotated[int, PathParam(ge=0, le=MAX_FEATURE, description="the SAE latent index")]
Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based page number")]
PerPage = Annotated[int, Query(ge=1, le=200, description="rows per page")]
Density = Annotated[float, Query(ge=0, le=1, allow_inf_nan=False)]
FeatureRef = Annotated[str | None, Query(min_length=3, max_length=200, pattern=r"^.+:[0-9]{1,9}$",
                                            description="model:feature, e.g. lua:12")]


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


# ------------------------------------------------------------------------------------ rendering
_WS = {" ": ("ws-space", "·"), "\t": ("ws-tab", "→"), "\n": ("ws-nl", "↵")}
_BYTE = re.compile(r"<0x[0-9A-F]{2}>")  # how `token_strings` writes a byte that is not a whole character


def _escape_chip(ch: str) -> str:
    name = unicodedata.name(ch, "") or ("control character" if unicodedata.category(ch) == "Cc" else "")
    return f'<span class="ws-esc" title="{escape(name.lower())}">{escape_form(ch)}</span>'


@functools.lru_cache(maxsize=1 << 16)  # a pure function of a vocabulary's few thousand token texts
def show_ws(text: str | None, prose: bool = False) -> Markup:
    """Escape text for HTML with nothing hidden in it.

    Tokens (default): · space, → tab, ↵ newline (no line break: the `tokens` macro breaks after a token that holds one),
    and every hidden character (see `_hidden`) as a visible escape such as ‹U+202E›, so no token can
    reverse, hide or join its neighbours; an empty token reads ‹empty›. Prose (`prose=True`, explanations):
    the same escapes, ↵ and →, but spaces stay spaces except inside double quotes (the explainers quote
    tokens: "·the") and in runs of two or more, which HTML would otherwise collapse. None renders as nothing."""
    if text is None:
        return Markup("")
    if text == "" and not prose:
        return Markup('<span class="ws-esc" title="empty token">‹empty›</span>')
    if "<0x" in text and _BYTE.search(text):  # bytes of a character split across tokens (see token_strings)
        parts, pos = [], 0
        for m in _BYTE.finditer(text):
            if m.start() > pos:
                parts.append(show_ws(text[pos:m.start()], prose))
            parts.append(f'<span class="ws-byte" title="byte {m.group(0)[1:-1]}: part of a UTF-8 character that '
                         f'spans several tokens">{escape(m.group(0))}</span>')
            pos = m.end()
        return Markup("".join(parts) + (show_ws(text[pos:], prose) if pos < len(text) else ""))
    out, quoted, backslash = [], False, False
    for i, ch in enumerate(text):
        if ch == '"' and not backslash:  # \" inside a quoted token neither opens nor closes
            quoted = not quoted
        backslash = ch == "\\" and not backslash
        if ch == " " and prose and not quoted and text[i - 1:i] != " " and text[i + 1:i + 2] != " ":
            out.append(" ")
        elif ch in _WS:
            cls, sym = _WS[ch]
            out.append(f'<span class="{cls}">{sym}</span>')
        elif _hidden(ch, i == 0):
            out.append(_escape_chip(ch))
        else:
            out.append(str(escape(ch)))
    return Markup("".join(out))


HEAT, COMPARE_B = figures.HEAT_A, figures.HEAT_B  # orange: a feature's activations; /compare draws B in blue


def heat(act: float, top: float, rgb: str = HEAT) -> str:
    """Background colour for a token: a darker `rgb` = higher activation relative to `top`."""
    if act <= 0 or top <= 0:
        return "transparent"
    return f"rgba({rgb}, {min(1.0, 0.12 + 0.88 * act / top):.3f})"


def chips(toks: list[dict], top: float, key: str = "act", rgb: str | None = None, breaks: bool = True) -> Markup:
    """A context as one chip per token, shaded by `key` relative to `top` in `rgb` (default: orange), the value
    and token id on hover; a token with an `index` (its sample token index) carries it as data-i. After a
    token that holds a newline a line break (after its chip, which never breaks inside), unless
    `breaks=False` (rows of one window stacked for comparison stay one line each); elsewhere a <wbr>, so a
    long window wraps between tokens. The `tokens` macro's HTML, made here: a Jinja loop took ~5 ms for a
    feature's 1,280 example tokens."""
    out = ['<div class="ctx">']
    for t in toks:
        index = f' data-i="{int(t["index"])}"' if "index" in t else ""
        colour = heat(t[key], top, rgb) if rgb else heat(t[key], top)
        attrs = f'{index} style="background: {colour}" title="{numbers.num(float(t[key]), 4)} · id {int(t["id"])}"'
        center = " center" if t.get("center") else ""
        text = t["text"]
        if not (breaks and "\n" in text):
            out.append(f'<span class="tok{center}"{attrs}>{show_ws(text)}</span><wbr>')
            continue
        # a token that holds a newline: the line breaks after its ↵, and what follows the newline (a code
        # line's indentation) starts the next line, drawn as a continuation of the same chip (same value,
        # id and colour; class "cont")
        lines = text.split("\n")
        for i, line in enumerate(lines):
            if i == len(lines) - 1 and not line:
                break
            body = (show_ws(line) if line else "") + (show_ws("\n") if i < len(lines) - 1 else "")
            out.append(f'<span class="tok{center}{" cont" if i else ""}"{attrs}>{body}</span>')
            out.append("<br>" if i < len(lines) - 1 else "<wbr>")
    out.append("</div>")
    return Markup("".join(out))


fmt, pct = numbers.num, numbers.pct  # kept for importers; every number is written by `numbers`


def csv_text(rows: list[dict]) -> str:
    """Rows as CSV: one column per key (in first-seen order), a nested value (list, dict) as its JSON,
    None as an empty cell."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else json.dumps(r[c], default=str) if isinstance(r.get(c), (list, dict))
                    else r[c] for c in cols])
    return buf.getvalue()


# ------------------------------------------------------------------------------------ the app
def create_app(db_path: str | Path, duckdb_threads: int | None = None) -> FastAPI:
    store = Store(db_path, threads=duckdb_threads)
    missing = [f"{name} ({path})" for name, path in VENDOR.items() if not path.exists()]
    if missing:
        raise VendorMissing(missing_message(missing))
    app = FastAPI(title="featureflow explorer", docs_url=None, redoc_url=None,
                  description=f"Features of run '{store.run['name']}' through fine-tuning and merging. "
                              "Every page has a JSON twin under /api.", responses=ERRORS)
    app.state.store = store
    # from the outside in (featureflow/explorer/serving.py): security headers on every response and ETag / 304; answers
    # kept per request (the store never changes while served); gzip
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MIN_BYTES, compresslevel=6)
    app.add_middleware(ResponseCache)
    app.add_middleware(ServeHeaders, security=SECURITY_HEADERS, seed=identity(store.path, store.run))
    templates = Jinja2Templates(directory=str(FRONTEND / "templates"))
    templates.env.auto_reload = False  # templates are part of the code: no stat() per render
    # One text rule for the pages (featureflow/explorer/text.py): every string a template prints and every string
    # of a figure shows its hidden characters (bidi controls, zero-width ...) as escapes; set before any
    # template compiles (finalize is compiled in).
    templates.env.finalize = finalize
    templates.env.policies["json.dumps_function"] = visible_json
    templates.env.filters.update(show_ws=show_ws, show_text=functools.partial(show_ws, prose=True), heat=heat,
                                 chips=chips, fmt=lambda x, d=3: numbers.num(x, d),
                                 pct=lambda x, d=1: numbers.pct(x, d), corr=lambda x: numbers.corr(x),
                                 thr=lambda x: numbers.thr(x), quantile=lambda k: numbers.quantile(k),
                                 field_value=field_value)
    templates.env.globals.update(run=store.run, models=store.models,
                                 models_by_name={m["model"]: m for m in store.models}, modes=store.modes,
                                 mode_labels={m: mode_label(m) for m in store.modes})
    app.mount("/static", StaticFiles(directory=str(FRONTEND / "static")), name="static")

    @app.get("/vendor/{name}", include_in_schema=False)
    def vendor(name: str):
        path = VENDOR.get(name)
        if path is None or not path.exists():
            return Response(f"vendor file '{name}' is not installed",
                            status_code=404, media_type="text/plain")
        kind = "text/css" if name.endswith(".css") else "text/javascript"
        return FileResponse(path, media_type=kind, headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return FileResponse(FRONTEND / "static" / "favicon.svg", media_type="image/svg+xml",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request):
        """Swagger UI from the swagger-ui-dist npm package (started by static/docs.js: no inline script)."""
        return templates.TemplateResponse(request, "docs.html", {"title": app.title, "kind": "swagger"})

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request):
        """ReDoc from the redoc npm package."""
        return templates.TemplateResponse(request, "docs.html", {"title": app.title, "kind": "redoc"})

    def error(request: Request, status: int, detail: str, errors: list[FieldError] = ()):
        """The same error as JSON (ErrorBody) under /api, as a page elsewhere."""
        if request.url.path.startswith(("/api/", "/csv/")):
            body = ErrorBody(detail=detail, errors=list(errors))
            return JSONResponse(body.model_dump(), status_code=status)
        title = "Not found" if status == 404 else "Bad request"
        return templates.TemplateResponse(request, "error.html", {"status": status, "title": title,
                                                                  "message": detail}, status_code=status)

    @app.exception_handler(NotFound)
    def not_found(request: Request, exc: NotFound):
        return error(request, 404, str(exc))

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError):
        errors = [FieldError(loc=".".join(str(x) for x in e["loc"]), msg=e["msg"]) for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(str(x) for x in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                           for e in exc.errors())
        return error(request, 422, detail, errors)

    @app.exception_handler(ValueError)
    def bad_value(request: Request, exc: ValueError):
        return error(request, 422, str(exc))

    router = APIRouter()

    def view(path: str, template: str, fragment: str | None = None, table: Callable[[dict], list[dict]] | None = None):
        """Register `fn` as the page `path` and its JSON twin `/api<path>`; with `table` (the view's main list
        from its answer), also that list as CSV at `/csv<path>` (same parameters), linked from the page."""

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
                    ctx["state"] = view_state(request.query_params.get("threshold") or None,
                                              request.query_params.get("mode") or None)
                q = ("?" + request.url.query) if request.url.query else ""
                ctx["twins"] = {"json": "/api" + request.url.path + q,
                                "csv": ("/csv" + request.url.path + q) if table else None}
                name = fragment if fragment and wants_fragment(request.headers) else template
                return templates.TemplateResponse(request, name, ctx)

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

    def thr(t: float | None) -> float:
        return store.run["default_threshold"] if t is None else t

    def view_state(threshold: float | str | None, mode: str | None) -> dict:
        """The threshold and matching mode every page honours and every link carries (`query`). The one check of
        the view state, for pages that declare it and pages that only carry it: a threshold that is not a
        finite number in (-1, 1) (the `Threshold` rule) or a mode the store lacks is refused (422), so it is
        never written into a link."""
        if threshold is not None:
            try:
                threshold = float(threshold)
            except ValueError:
                threshold = math.nan
            if not (math.isfinite(threshold) and -1 < threshold < 1):
                raise RequestValidationError([{"loc": ("query", "threshold"), "type": "value_error",
                                               "msg": "threshold must be a finite number greater than -1 and less "
                                                      "than 1"}])
        t, m = thr(threshold), store.mode(mode)
        return {"threshold": t, "mode": m, "mode_label": mode_label(m), "query": urlencode({"threshold": t, "mode": m}),
                "default": t == store.run["default_threshold"] and m == store.default_mode}

    # -- views ---------------------------------------------------------------------------------
    @view("/", "overview.html", fragment="_flows.html", table=lambda d: d["flows"])
    def overview(threshold: Threshold = None, mode: Mode = None, population: Population = None) -> dict:
        """The run: models, lineage, SAE health and the Sankey of feature flows at a threshold and matching
        mode (all features, or only reproducible ones: on by default where seed replicas exist), each edge's
        persistence beside its seed-control noise floor, its reproducible persistence with 95% intervals and
        reproducible floor, and its decoder PW-MCC beside chance."""
        t, mode = thr(threshold), store.mode(mode)
        population = population or ("reproducible" if store.replicated else "all")
        repro = population == "reproducible"
        models = store.overview_models()
        flows = store.flows(t, mode)
        emerged = store.emerged_in(t, mode)
        state = view_state(t, mode)
        # links out of the reproducible Sankey list reproducible features, where every member can have them
        links = state["query"] + ("&stable=true" if repro and len(store.replicated) == len(store.models) else "")
        return {"threshold": t, "mode": mode, "mode_label": mode_label(mode), "modes": store.modes,
                "mode_labels": {m: mode_label(m) for m in store.modes}, "models_overview": models, "flows": flows,
                "emerged": emerged, "floors": store.floors(t, mode), "edges": store.edges,
                "timings": store.timings, "state": state, "population": population,
                "replicated": store.replicated,
                "colors": {"persist": figures.PERSIST, "lost": figures.LOST, "new": figures.NEW},
                "sankey": figures.sankey(store.models, flows, store.node_flows(t, mode, repro), t, mode_label(mode),
                                         links, reproducible=repro, replicated=store.replicated)}

    @view("/edges/{parent}/{child}", "edge.html", fragment="_edge_rows.html", table=lambda d: d["rows"])
    def edge(parent: str, child: str,
             fate: Annotated[str, Query(pattern="^(persisting|disappearing|inherited|emerging)$",
                                        description="persisting / disappearing parent features, inherited / "
                                                    "emerging child features")] = "persisting",
             threshold: Threshold = None, mode: Mode = None,
             sort: Annotated[str, Query(pattern="^(r|density|llr|sim_score|feature)$")] = "r",
             order: Annotated[str, Query(pattern="^(desc|asc)$")] = "desc",
             page: Page = 1, per_page: PerPage = 50, stable: Stable = None, token_level: TokenLevel = None) -> dict:
        """The features behind one flow of edge parent -> child at a threshold and mode: sortable both ways by
        r, density, top-token LLR and explanation score, paginated, each with its match, top context, seed
        stability (`stable` keeps reproducible or other features only) and match in the random-weights control
        (`token_level` keeps token-level or other features only); the edge on its scale (reproducible
        persistence beside its random-weights control and seed floor, with intervals) and its PW-MCC."""
        state = view_state(threshold, mode)
        stable, token = stable_flag(stable), stable_flag(token_level)
        e = store.edge(parent, child)
        counts = next(f for f in store.flows(state["threshold"], state["mode"])
                      if f["parent"] == parent and f["child"] == child)
        res = store.edge_features(parent, child, fate, state["threshold"], state["mode"], sort, order == "desc",
                                  page, per_page, stable, token)
        params = {"fate": fate, "threshold": state["threshold"], "mode": state["mode"], "sort": sort, "order": order,
                  "per_page": per_page, **({} if stable is None else {"stable": str(stable).lower()}),
                  **({} if token is None else {"token_level": str(token).lower()})}
        resort = {k: urlencode({**params, "sort": k, "order": "asc" if (k, order) == (sort, "desc") else "desc"})
                  for k in ("r", "density", "llr", "sim_score")}
        return {**res, "edge": {**e, "parent_label": store.label(parent), "child_label": store.label(child)},
                "fate": fate, "counts": counts, "sort": sort, "order": order, "state": state, "stable": stable,
                "token_level": token,
                "stable_query": ("" if stable is None else f"&stable={str(stable).lower()}") +
                                ("" if token is None else f"&token_level={str(token).lower()}"),
                "query": urlencode(params), "resort": resort,
                "modes": store.modes, "mode_labels": {m: mode_label(m) for m in store.modes}}

    @view("/floors", "floors.html", table=lambda d: d["floors"])
    def floors(threshold: Threshold = None, mode: Mode = None) -> dict:
        """The seed-control noise floor: per replicated member, how many features two SAEs of the same model
        that differ only in their seed match above the threshold, and the distribution of their match r."""
        t, mode = thr(threshold), store.mode(mode)
        fl = store.floors(t, mode)
        for f in fl:
            f["figure"] = figures.floor_histogram(f["histogram"], f["label"], t)
        return {"threshold": t, "mode": mode, "mode_label": mode_label(mode), "modes": store.modes,
                "mode_labels": {m: mode_label(m) for m in store.modes}, "floors": fl}

    @view("/method", "method.html")
    def method(mode: Mode = None) -> dict:
        """How right the fate calls are: the planted-family scorecard (precision, recall and F1 of every mode's
        persisting / disappearing / inherited / emerging calls against planted truth, for all and for
        reproducible features), recall by drift angle, split detection and each SAE's MCC."""
        card = store.planted()
        mode = store.mode(mode)
        modes = sorted({s["mode"] for s in card["scores"]}) if card else []
        focus = mode if mode in modes else (modes[0] if modes else None)
        return {"planted": card, "mode": mode, "focus": focus, "modes": modes,
                "mode_labels": {m: mode_label(m) for m in modes}, "why": planted_why(card, focus),
                "headline": {p: next((s for s in card["scores"] if s["mode"] == focus and s["fate"] == "persisting"
                                      and s["population"] == p), None) for p in ("all", "reproducible")}
                if card else None}

    def planted_why(card: dict | None, focus: str | None, target: float = 0.9) -> dict | None:
        """Why the disappearing calls of `focus` (reproducible features) are right or wrong, from the scorecard:
        the calls, how many were planted-persisting features whose match stayed under the threshold, how many
        truly disappeared, and the persisting recall disappearing precision `target` would need: with D planted
        disappearing and S planted persisting features, all D found, precision D / (D + (1 - R) S) >= p needs
        R >= 1 - D (1 - p) / (p S)."""
        if not card:
            return None
        score = {s["fate"]: s for s in card["scores"] if s["mode"] == focus and s["population"] == "reproducible"}
        if "persisting" not in score or "disappearing" not in score:
            return None
        S, D = score["persisting"]["support"], score["disappearing"]["support"]
        by_truth = {c["truth"]: c["n"] for c in card["calls"] if c["mode"] == focus
                    and c["population"] == "reproducible" and c["fate"] == "disappearing"}
        return {"calls": score["disappearing"]["calls"], "correct": score["disappearing"]["correct"],
                "from_persisting": by_truth.get("persisting", 0), "persisting_support": S,
                "disappearing_support": D, "persisting_recall": score["persisting"]["recall"],
                "precision": score["disappearing"]["precision"],
                "target": target, "needed_recall": 1 - D * (1 - target) / (target * S) if S else None}

    @view("/models/{model}/features/{feature}", "feature.html",
          table=lambda d: [{"side": side, **m} for side in ("parents", "children") for m in d["matches"][side]])
    def feature(model: str, feature: FeatureId, threshold: Threshold = None, mode: Mode = None) -> dict:
        """One feature: statistics, histogram, top tokens, highlighted examples, and its matches and lineage
        at a threshold and matching mode."""
        state = view_state(threshold, mode)
        t, mode = state["threshold"], state["mode"]
        f = store.feature(model, feature)  # its explanation read with it
        matches = store.matches(model, feature, t, mode)
        return {"threshold": t, "state": state, "feature": f, "examples_url": examples_url(model, feature),
                "stability": store.stability(model, feature, t, mode),
                "control": store.control_match(model, feature, t, mode),
                "explanation": f.pop("explanation"), "matches": matches,
                "lineage": store.lineage(model, feature, t, mode, row=f),
                "histogram": figures.histogram(f["histogram"]["edges"], f["histogram"]["counts"]),
                "parents": store.parents(model), "children": store.children(model)}

    def examples_url(model: str, feature: int) -> str:
        return f"/models/{quote(model, safe='')}/features/{feature}/examples"

    @view("/models/{model}/features/{feature}/examples", "feature_examples.html", fragment="_examples.html")
    def feature_examples(model: str, feature: FeatureId) -> dict:
        """One feature's highlighted examples: its top activations, then random windows from each equal-count
        activation quantile (the feature page loads them with htmx after its first paint)."""
        f = store.feature_row(model, feature)
        examples = store.examples(model, feature)
        return {"feature": {"model": model, "feature": feature, "label": store.label(model), "max_act": f["max_act"]},
                "examples": examples, "quantile_bins": store.quantile_bins,
                "groups": example_groups(examples, store.quantile_ranges(model, feature))}

    def example_groups(examples: list[dict], ranges: dict[str, dict], radius: int = 3) -> list[dict]:
        """`examples` (in their order: top first, then quantiles from the highest) as groups by kind, each
        quantile group with its activation range (`Store.quantile_ranges`); within a group, a window whose
        tokens within `radius` of its centre read the same as an earlier window's is folded under that one
        (`repeats`: indices into `examples`), so twenty copies of one boilerplate line take one row."""
        groups: list[dict] = []
        seen: dict[tuple, dict] = {}
        for i, ex in enumerate(examples):
            if not groups or groups[-1]["kind"] != ex["kind"]:
                groups.append({"kind": ex["kind"], "range": ranges.get(ex["kind"]), "items": []})
                seen = {}
            c = ex["center"] - ex["start"]
            key = tuple(t["text"] for t in ex["tokens"][max(0, c - radius):c + radius + 1])
            if key in seen:
                seen[key]["repeats"].append(i)
            else:
                seen[key] = {"index": i, "repeats": []}
                groups[-1]["items"].append(seen[key])
        return groups

    @view("/compare", "compare.html")
    def compare(a: FeatureRef = None, b: FeatureRef = None) -> dict:
        """Two features side by side on the same contexts (A's and B's top windows, each row labelled and in its
        own colour), A against B over the sample as a scatter, and their exact correlation; without both
        features, only the picker."""
        ra, rb = Ref.parse(a) if a else None, Ref.parse(b) if b else None
        pick = {"a": ra and vars(ra), "b": rb and vars(rb)}  # what the picker shows selected
        if not (ra and rb):
            return {"a": None, "b": None, "r": None, "contexts": [], "scatter": None, "pick": pick,
                    "colors": {"a": HEAT, "b": COMPARE_B}}
        side = {}
        for key, ref in (("a", ra), ("b", rb)):
            side[key] = {**store.feature_row(ref.model, ref.feature), "label": store.label(ref.model)}
        contexts = []
        for src, other, key in ((ra, rb, "a"), (rb, ra, "b")):
            for ex in store.examples(src.model, src.feature, kinds="top")[:5]:
                other_acts = store.activations_at(other.model, other.feature, ex["start"], ex["end"])
                contexts.append({"from": key, "from_label": f"{side[key]['label']} #{src.feature}", "domain": ex["domain"],
                                 "tokens": [{**tok, "act_a": tok["act"] if src == ra else oa,
                                             "act_b": oa if src == ra else tok["act"]}
                                            for tok, oa in zip(ex["tokens"], other_acts)]})
        joint = store.joint_activations(ra.model, ra.feature, rb.model, rb.feature)
        r = joint["r"]
        names = [f"{side[k]['label']} #{side[k]['feature']}" for k in ("a", "b")]
        return {**side, "r": r, "contexts": contexts, "pick": pick, "colors": {"a": HEAT, "b": COMPARE_B},
                "scatter": figures.pair_scatter(joint, names[0], names[1], r)}

    @app.get("/compare/pick", include_in_schema=False)
    def compare_pick(a_model: str, a_feature: Annotated[int, Query(ge=0, le=MAX_FEATURE)], b_model: str,
                     b_feature: Annotated[int, Query(ge=0, le=MAX_FEATURE)], threshold: Threshold = None,
                     mode: Mode = None):
        """The compare picker's form: open /compare for the two features chosen."""
        store.feature_row(a_model, a_feature), store.feature_row(b_model, b_feature)
        q = urlencode({"a": f"{a_model}:{a_feature}", "b": f"{b_model}:{b_feature}"})
        state = "" if threshold is None and mode is None else "&" + view_state(threshold, mode)["query"]
        return RedirectResponse(f"/compare?{q}{state}", status_code=303)

    @view("/merge", "merge.html", table=lambda d: [{"model": m["model"], **p} for m in d["merges"] for p in m["points"]])
    def merge() -> dict:
        """SLERP sweeps: accuracy on each parent's domains against t, root baselines, the chosen t."""
        labels = {m["model"]: m["label"] for m in store.models}
        merges = store.merges()
        for m in merges:
            m["figure"] = figures.slerp_curves(m, labels)
        return {"merges": merges}

    @view("/features", "features.html", fragment="_feature_rows.html", table=lambda d: d["rows"])
    def features(
        model: Annotated[str | None, Query(description="model name")] = None,
        fate: Annotated[str | None, Query(pattern="^(persisting|disappearing|inherited|emerging|leaf|dead)?$",
                                          description="at the threshold and mode; empty: any")] = None,
        edge: Annotated[str | None, Query(max_length=200, pattern="^([^>]+>[^>]+)?$",
                                          description="parent>child: fates on that edge only; empty: all")] = None,
        min_density: Density = 0.0,
        max_density: Density = 1.0,
        token: Annotated[str | None, Query(max_length=100, description="text in the top token")] = None,
        q: Annotated[str | None, Query(max_length=200, description="text in the explanation")] = None,
        sort: Annotated[str, Query(pattern="^(density|max_act|feature|parent_r|best_child_r|sim_score|llr)$")] = "density",
        order: Annotated[str | None, Query(pattern="^(desc|asc)?$",
                                           description="empty: the sort's natural order (feature ascending, "
                                                       "the rest descending)")] = None,
        threshold: Threshold = None, mode: Mode = None,
        page: Page = 1,
        per_page: PerPage = 50,
        stable: Stable = None,
        token_level: TokenLevel = None,
    ) -> dict:
        """Browse and search features by model, edge, fate (at a threshold and matching mode), seed stability
        (`stable`), token level (`token_level`: also found in a random-weights model), density, top token and
        explanation; sorted either way and paginated."""
        state = view_state(threshold, mode)
        model = model or None
        stable, token_flag = stable_flag(stable), stable_flag(token_level)
        pair = tuple(edge.split(">")) if edge else None
        res = store.search(model, fate or None, min_density, max_density, token or None, sort, page, per_page,
                           text=q or None, threshold=state["threshold"], mode=state["mode"], edge=pair,
                           descending=None if not order else order == "desc", stable=stable, token_level=token_flag)
        filters = {"model": model or "", "edge": edge or "", "fate": fate or "",
                   "stable": "" if stable is None else str(stable).lower(),
                   "token_level": "" if token_flag is None else str(token_flag).lower(), "min_density": min_density,
                   "max_density": max_density, "token": token or "", "q": q or "", "sort": sort,
                   "order": order or "", "per_page": per_page, "threshold": state["threshold"], "mode": state["mode"]}
        query = urlencode({k: v for k, v in filters.items() if v != ""})
        return {**res, "filters": filters, "query": query, "fates": store.fates(), "state": state,
                "edges": [{**e, "value": f"{e['parent']}>{e['child']}"} for e in store.edges],
                "sorts": list(store.SORTS)}

    @app.get("/jump", include_in_schema=False)
    def jump(model: str, feature: Annotated[int, Query(ge=0, le=MAX_FEATURE)], threshold: Threshold = None,
             mode: Mode = None):
        store.model(model)
        state = "" if threshold is None and mode is None else "?" + view_state(threshold, mode)["query"]
        return RedirectResponse(f"/models/{quote(model)}/features/{feature}{state}", status_code=303)

    @view("/autointerp", "autointerp.html", table=lambda d: d["scores"])
    def autointerp(threshold: Threshold = None, mode: Mode = None) -> dict:
        """Explanation scores per model, persisting vs not at a threshold and matching mode (the paper's
        Figure 6), and what it cost."""
        state = view_state(threshold, mode)
        rows = store.score_distributions(state["threshold"], state["mode"])
        labels = [(m["model"], m["label"]) for m in store.models]
        return {"summary": store.autointerp_summary(), "sim_figure": figures.score_histograms(rows, labels),
                "det_figure": figures.score_histograms(rows, labels, "detection_score"),
                "scores": rows, "state": state, "modes": store.modes,
                "mode_labels": {m: mode_label(m) for m in store.modes}}

    @view("/cases", "cases.html", table=lambda d: d["cases"])
    def cases(threshold: Threshold = None, mode: Mode = None) -> dict:
        """The case studies this run found, each followed down its root feature's lineage at a threshold and
        matching mode."""
        state = view_state(threshold, mode)
        return {"cases": store.cases(state["threshold"], state["mode"]), "state": state,
                "modes": store.modes, "mode_labels": {m: mode_label(m) for m in store.modes}}

    @view("/cases/{slug}", "case.html", table=lambda d: d["case"]["hops"])
    def case(slug: str, threshold: Threshold = None, mode: Mode = None) -> dict:
        """One case study: its root feature's lineage at a threshold and matching mode (the feature page's), r
        and the token's LLR per hop, cross-correlations, and every feature's activations on the same contexts
        (the root feature's top windows and random windows from its activation quantiles)."""
        state = view_state(threshold, mode)
        c = store.case(slug, state["threshold"], state["mode"])
        out = {"case": c, "features": [], "matrix": [], "contexts": [], "state": state, "modes": store.modes,
               "mode_labels": {m: mode_label(m) for m in store.modes}}
        if c["status"] != "ok":
            return out
        feats = [{"model": c["root_model"], "feature": c["root_feature"], "llr": c["root_llr"]}]
        for h in c["hops"]:
            if not any((f["model"], f["feature"]) == (h["model"], h["feature"]) for f in feats):
                feats.append({"model": h["model"], "feature": h["feature"], "llr": h["llr"]})
        for f in feats:
            f["label"] = store.label(f["model"])
            f["explanation"] = store.explanation(f["model"], f["feature"])
            f["max_act"] = store.feature_row(f["model"], f["feature"])["max_act"]
        for h in c["hops"]:
            h["label"], h["parent_label"] = store.label(h["model"]), store.label(h["parent_model"])
            h["explanation"] = next(f["explanation"] for f in feats if (f["model"], f["feature"]) == (h["model"], h["feature"]))
        matrix = store.correlations([(f["model"], f["feature"]) for f in feats])
        return {**out, "features": feats, "matrix": matrix,
                "contexts": shared_contexts(case_windows(c["root_model"], c["root_feature"]), feats)}

    def case_windows(model: str, feature: int, top: int = 4, quantiles: int = 3) -> list[dict]:
        """The feature's first `top` top windows, then the first random window of `quantiles` of its
        activation quantiles spread from the highest to the lowest."""
        exs = store.examples(model, feature)
        tops = [e for e in exs if e["kind"] == "top"][:top]
        by_q = {}
        for e in exs:
            if e["kind"] != "top":
                by_q.setdefault(e["kind"], e)
        qs = sorted(by_q, key=lambda k: -int(k[1:]))
        picks = sorted({round(i * (len(qs) - 1) / max(1, quantiles - 1)) for i in range(min(quantiles, len(qs)))})
        return tops + [by_q[qs[i]] for i in picks]

    def shared_contexts(windows: list[dict], feats: list[dict]) -> list[dict]:
        """Each window's tokens once, and per feature its activation on every one of them ("rows")."""
        out = []
        for w in windows:
            toks = [{"text": t["text"], "id": t["id"], "center": t["center"], "index": w["start"] + i}
                    for i, t in enumerate(w["tokens"])]
            rows = [{"model": f["model"], "feature": f["feature"], "label": f["label"], "max_act": f["max_act"],
                     "tokens": [{**t, "act": a} for t, a in zip(toks, store.activations_at(
                         f["model"], f["feature"], w["start"], w["start"] + len(toks)))]} for f in feats]
            kind = (f"top window #{w['rank'] + 1}" if w["kind"] == "top" else
                    f"random window from activation quantile {numbers.quantile(w['kind'])} (1 = lowest)")
            out.append({"kind": kind, "domain": w["domain"], "start": w["start"], "end": w["start"] + len(toks),
                        "center": w["center"], "rows": rows})
        return out

    @view("/models", "models.html", table=lambda d: d["entities"])
    def models_page(variant: Variant = "delta-hidden") -> dict:
        """Model fingerprints (Delta Activations): similarity heatmap, 2-D map, silhouette, additivity."""
        fp = store.fingerprint_overview(variant)
        names = [e["entity"] for e in fp["entities"]]
        stats = fp["stats"] or {"pca_var1": 0.0, "pca_var2": 0.0}
        return {**fp, "variant": variant, "variants": store.VARIANTS, "edges": store.edges,
                "heatmap": figures.heatmap(names, fp["similarity"], f"Cosine similarity ({variant})"),
                "map_figure": figures.fingerprint_map([p for p in fp["map"] if p["method"] == "pca"],
                                                      (stats["pca_var1"], stats["pca_var2"])),
                "tsne_figure": figures.fingerprint_map([p for p in fp["map"] if p["method"] == "tsne"], None, "tsne")
                if any(p["method"] == "tsne" for p in fp["map"]) else None,
                "additivity_figure": figures.additivity_curves(fp["additivity"])}

    @view("/models/{model}", "model.html", table=lambda d: d["features_behind"])
    def model_page(model: str, variant: Variant = "delta-hidden") -> dict:
        """One model: how it was made, its nearest models and the features behind its fingerprint."""
        m = store.model(model)
        return {"m": m, "variant": variant, "parents": store.parents(model), "children": store.children(model),
                **store.model_fingerprint(model, variant)}

    @app.get("/api/schema", summary="The store's schema, documented")
    def schema() -> dict:
        from featureflow.store.schema import SCHEMA_VERSION, TABLES

        return {"version": SCHEMA_VERSION, "tables": {k: {"doc": d, "columns": " ".join(b.split())}
                                                      for k, (d, b) in TABLES.items()}}

    app.include_router(router)
    return app
