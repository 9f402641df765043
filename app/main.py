"""The featureflow explorer: FastAPI + Jinja2 + htmx + Plotly over one run's DuckDB store (read-only).

Every view is one function returning a dict. `view()` registers it twice: as a page at `path`
(rendered by a Jinja2 template) and as its JSON twin at `/api<path>`, so anything a page shows can be
fetched as data. The app never imports torch and never runs a model.
"""

from __future__ import annotations

import functools
import inspect
import math
from pathlib import Path
from typing import Annotated, Callable
from urllib.parse import quote, urlencode

import plotly
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from . import figures
from backend.store.flows import mode_label

from .queries import NotFound, Ref, Store

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"
VENDOR = {
    "htmx.min.js": FRONTEND / "node_modules" / "htmx.org" / "dist" / "htmx.min.js",
    "plotly.min.js": Path(plotly.__file__).parent / "package_data" / "plotly.min.js",
}

Threshold = Annotated[float | None, Query(gt=-1, lt=1, description="similarity above which a match persists")]
Mode = Annotated[str | None, Query(max_length=40, description="matching mode, e.g. pearson, pearson-1to1, decoder "
                                   "(default: the run's first)")]
Variant = Annotated[str, Query(pattern="^delta-(hidden|mlp|logits)$", description="fingerprint variant")]


# ------------------------------------------------------------------------------------ rendering
_WS = {" ": ("ws-space", "·"), "\t": ("ws-tab", "→"), "\n": ("ws-nl", "↵")}


def show_ws(text: str) -> Markup:
    """Escape a token and make its whitespace visible (· space, → tab, ↵ newline then a real break)."""
    out = []
    for ch in text:
        if ch in _WS:
            cls, sym = _WS[ch]
            out.append(f'<span class="{cls}">{sym}</span>' + ("<br>" if ch == "\n" else ""))
        else:
            out.append(str(escape(ch)))
    return Markup("".join(out))


def heat(act: float, top: float) -> str:
    """Background colour for a token: darker orange = higher activation relative to `top`."""
    if act <= 0 or top <= 0:
        return "transparent"
    return f"rgba(230, 126, 34, {min(1.0, 0.12 + 0.88 * act / top):.3f})"


def fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def pct(x, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


# ------------------------------------------------------------------------------------ the app
def create_app(db_path: str | Path) -> FastAPI:
    store = Store(db_path)
    app = FastAPI(title="featureflow explorer",
                  description=f"Features of run '{store.run['name']}' through fine-tuning and merging. "
                              "Every page has a JSON twin under /api.")
    app.state.store = store
    templates = Jinja2Templates(directory=str(FRONTEND / "templates"))
    templates.env.filters.update(show_ws=show_ws, heat=heat, fmt=fmt, pct=pct)
    templates.env.globals.update(run=store.run, models=store.models)
    app.mount("/static", StaticFiles(directory=str(FRONTEND / "static")), name="static")

    @app.get("/vendor/{name}", include_in_schema=False)
    def vendor(name: str):
        path = VENDOR.get(name)
        if path is None or not path.exists():
            hint = " (run `npm --prefix frontend ci`)" if name == "htmx.min.js" else ""
            return Response(f"vendor file '{name}' is not installed{hint}", status_code=404, media_type="text/plain")
        return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})

    def error(request: Request, status: int, detail: str | list[str]):
        """The same error as JSON under /api, as a page elsewhere."""
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": detail}, status_code=status)
        message = "; ".join(detail) if isinstance(detail, list) else detail
        title = "Not found" if status == 404 else "Bad request"
        return templates.TemplateResponse(request, "error.html", {"status": status, "title": title,
                                                                  "message": message}, status_code=status)

    @app.exception_handler(NotFound)
    def not_found(request: Request, exc: NotFound):
        return error(request, 404, str(exc))

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError):
        return error(request, 422, [f"{'.'.join(str(x) for x in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                                    for e in exc.errors()])

    @app.exception_handler(ValueError)
    def bad_value(request: Request, exc: ValueError):
        return error(request, 422, str(exc))

    router = APIRouter()

    def view(path: str, template: str, fragment: str | None = None):
        """Register `fn` as the page `path` and its JSON twin `/api<path>`."""

        def deco(fn: Callable[..., dict]):
            router.add_api_route("/api" + path, fn, methods=["GET"], name=f"api_{fn.__name__}",
                                 summary=(fn.__doc__ or "").strip().split("\n")[0])
            sig = inspect.signature(fn)

            @functools.wraps(fn)
            def page(request: Request, **kwargs):
                ctx = fn(**kwargs)
                name = fragment if fragment and request.headers.get("HX-Request") else template
                return templates.TemplateResponse(request, name, ctx)

            page.__signature__ = sig.replace(parameters=[
                inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
                *sig.parameters.values()])
            router.add_api_route(path, page, methods=["GET"], response_class=HTMLResponse, include_in_schema=False,
                                 name=fn.__name__)
            return fn

        return deco

    def thr(t: float | None) -> float:
        return store.run["default_threshold"] if t is None else t

    # -- views ---------------------------------------------------------------------------------
    @view("/", "overview.html", fragment="_flows.html")
    def overview(threshold: Threshold = None, mode: Mode = None) -> dict:
        """The run: models, lineage, SAE health and the Sankey of feature flows at a threshold and matching
        mode, each edge's persistence beside its seed-control noise floor."""
        t, mode = thr(threshold), store.mode(mode)
        models = store.overview_models()
        flows = store.flows(t, mode)
        emerged = store.emerged_in(t, mode)
        return {"threshold": t, "mode": mode, "mode_label": mode_label(mode), "modes": store.modes,
                "mode_labels": {m: mode_label(m) for m in store.modes}, "models_overview": models, "flows": flows,
                "emerged": emerged, "floors": store.floors(t, mode), "edges": store.edges,
                "sankey": figures.sankey(store.models, flows, emerged, t, mode_label(mode))}

    @view("/floors", "floors.html")
    def floors(threshold: Threshold = None, mode: Mode = None) -> dict:
        """The seed-control noise floor: per replicated member, how many features two SAEs of the same model
        that differ only in their seed match above the threshold, and the distribution of their match r."""
        t, mode = thr(threshold), store.mode(mode)
        fl = store.floors(t, mode)
        for f in fl:
            f["figure"] = figures.floor_histogram(f["histogram"], f["label"], t)
        return {"threshold": t, "mode": mode, "mode_label": mode_label(mode), "modes": store.modes,
                "mode_labels": {m: mode_label(m) for m in store.modes}, "floors": fl}

    @view("/models/{model}/features/{feature}", "feature.html")
    def feature(model: str, feature: int, threshold: Threshold = None) -> dict:
        """One feature: statistics, histogram, top tokens, highlighted examples, matches and lineage."""
        t = thr(threshold)
        f = store.feature(model, feature)
        return {"threshold": t, "feature": f, "examples": store.examples(model, feature),
                "explanation": store.explanation(model, feature),
                "matches": store.matches(model, feature, t), "lineage": store.lineage(model, feature, t),
                "histogram": figures.histogram(f["histogram"]["edges"], f["histogram"]["counts"]),
                "parents": store.parents(model), "children": store.children(model)}

    @view("/compare", "compare.html")
    def compare(a: Annotated[str, Query(description="model:feature, e.g. lua:12")],
                b: Annotated[str, Query(description="model:feature")]) -> dict:
        """Two features side by side on the same contexts, with their exact correlation over the sample."""
        ra, rb = Ref.parse(a), Ref.parse(b)
        fa, fb = store.feature_row(ra.model, ra.feature), store.feature_row(rb.model, rb.feature)
        contexts = []
        for src, other in ((ra, rb), (rb, ra)):
            for ex in store.examples(src.model, src.feature, kinds="top")[:5]:
                other_acts = store.activations_at(other.model, other.feature, ex["start"], ex["end"])
                contexts.append({"from": f"{src.model}:{src.feature}", "domain": ex["domain"], "tokens": [
                    {**tok, "act_a": tok["act"] if src == ra else oa, "act_b": oa if src == ra else tok["act"]}
                    for tok, oa in zip(ex["tokens"], other_acts)]})
        return {"a": {**fa, "label": store.label(ra.model)}, "b": {**fb, "label": store.label(rb.model)},
                "r": store.correlation(ra.model, ra.feature, rb.model, rb.feature), "contexts": contexts}

    @view("/merge", "merge.html")
    def merge() -> dict:
        """SLERP sweeps: accuracy on each parent's domains against t, root baselines, the chosen t."""
        labels = {m["model"]: m["label"] for m in store.models}
        merges = store.merges()
        for m in merges:
            m["figure"] = figures.slerp_curves(m, labels)
        return {"merges": merges}

    @view("/features", "features.html", fragment="_feature_rows.html")
    def features(
        model: Annotated[str | None, Query(description="model name")] = None,
        fate: Annotated[str | None, Query(pattern="^(persisting|disappearing|leaf|dead)?$", description="empty: any")] = None,
        min_density: Annotated[float, Query(ge=0, le=1)] = 0.0,
        max_density: Annotated[float, Query(ge=0, le=1)] = 1.0,
        token: Annotated[str | None, Query(max_length=100, description="text in the top token")] = None,
        q: Annotated[str | None, Query(max_length=200, description="text in the explanation")] = None,
        sort: Annotated[str, Query(pattern="^(density|max_act|feature|parent_r|best_child_r|sim_score|llr)$")] = "density",
        page: Annotated[int, Query(ge=1)] = 1,
        per_page: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict:
        """Browse and search features by model, fate, density and top token; sorted and paginated."""
        model = model or None
        res = store.search(model, fate or None, min_density, max_density, token or None, sort, page, per_page,
                           text=q or None)
        filters = {"model": model or "", "fate": fate or "", "min_density": min_density, "max_density": max_density,
                   "token": token or "", "q": q or "", "sort": sort, "per_page": per_page}
        query = urlencode({k: v for k, v in filters.items() if v != ""})
        return {**res, "filters": filters, "query": query, "fates": store.fates()}

    @app.get("/jump", include_in_schema=False)
    def jump(model: str, feature: int):
        store.model(model)
        return RedirectResponse(f"/models/{quote(model)}/features/{feature}", status_code=303)

    @view("/autointerp", "autointerp.html")
    def autointerp() -> dict:
        """Explanation scores per model, persisting vs not (the paper's Figure 6), and what it cost."""
        rows = store.score_distributions()
        labels = [(m["model"], m["label"]) for m in store.models]
        return {"summary": store.autointerp_summary(), "sim_figure": figures.score_histograms(rows, labels),
                "det_figure": figures.score_histograms(rows, labels, "detection_score"),
                "scores": rows}

    @view("/cases", "cases.html")
    def cases() -> dict:
        """The case studies this run found."""
        return {"cases": store.cases()}

    @view("/cases/{slug}", "case.html")
    def case(slug: str) -> dict:
        """One case study: its features down the tree, their cross-correlations, LLRs and examples."""
        c = store.case(slug)
        if c["status"] != "ok":
            return {"case": c, "features": [], "matrix": []}
        feats = [{"model": c["root_model"], "feature": c["root_feature"], "llr": c["root_llr"], "r": None}]
        feats += [{"model": h["model"], "feature": h["feature"], "llr": h["llr"], "r": h["r"],
                   "parent_model": h["parent_model"], "parent_feature": h["parent_feature"]} for h in c["hops"]]
        for f in feats:
            f["label"] = store.label(f["model"])
            f["explanation"] = store.explanation(f["model"], f["feature"])
            f["examples"] = store.examples(f["model"], f["feature"], kinds="top")[:3]
            f["max_act"] = store.feature_row(f["model"], f["feature"])["max_act"]
        matrix = [[store.correlation(a["model"], a["feature"], b["model"], b["feature"]) for b in feats]
                  for a in feats]
        return {"case": c, "features": feats, "matrix": matrix}

    @view("/models", "models.html")
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

    @view("/models/{model}", "model.html")
    def model_page(model: str, variant: Variant = "delta-hidden") -> dict:
        """One model: how it was made, its nearest models and the features behind its fingerprint."""
        m = store.model(model)
        return {"m": m, "variant": variant, "parents": store.parents(model), "children": store.children(model),
                **store.model_fingerprint(model, variant)}

    @app.get("/api/schema", summary="The store's schema, documented")
    def schema() -> dict:
        from backend.store.schema import SCHEMA_VERSION, TABLES

        return {"version": SCHEMA_VERSION, "tables": {k: {"doc": d, "columns": " ".join(b.split())}
                                                      for k, (d, b) in TABLES.items()}}

    app.include_router(router)
    return app
