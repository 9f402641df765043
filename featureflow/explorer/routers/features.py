"""Single features: a feature's page (statistics, matches and lineage at the page's threshold and mode) and its
examples (loaded after the page's first paint), two features compared on the same contexts (and the picker's
redirect), the feature search, and the header's jump to a feature."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query
from fastapi.responses import RedirectResponse

from featureflow.explorer import figures
from featureflow.modes import rule_of
from featureflow.explorer.queries import Ref
from featureflow.store.flows import FATE_FILTERS, INHERITANCE
from featureflow.explorer.rendering import COMPARE_B, HEAT
from featureflow.explorer.views import (Density, FeatureId, FeatureQuery, FeatureRef, Mode, Page, PerPage, Stable,
                                        State, StoreDep, Threshold, TokenLevel, resolve_state, stable_flag, view)

router = APIRouter()


@view(router, "/models/{model}/features/{feature}", "feature.html",
      table=lambda d: [{"side": side, **m} for side in ("parents", "children") for m in d["matches"][side]])
def feature(model: str, feature: FeatureId, store: StoreDep, state: State) -> dict:
    """One feature: statistics, histogram, top tokens, highlighted examples, and its matches and lineage
    at a threshold and matching mode."""
    t, mode = state.threshold, state.mode
    f = store.feature(model, feature)  # its explanation read with it
    matches = store.matches(model, feature, t, mode)
    stability = store.stability(model, feature, t, mode)
    lineage = store.lineage(model, feature, t, mode, row=f)
    return {"threshold": t, "state": state, "feature": f, "examples_url": examples_url(model, feature),
            "stability": stability, "min_events": rule_of(mode).min_events,
            "call_precision": store.call_precision(lineage["fate"], t, mode, stability),
            "control": store.control_match(model, feature, t, mode),
            "explanation": f.pop("explanation"), "matches": matches,
            "lineage": lineage, "events": store.feature_events(model, feature, t, mode),
            "survival": store.feature_survival(model, feature, t),
            "crosscoder": store.feature_crosscoder(model, feature) if store.has_crosscoders else [],
            "histogram": figures.histogram(f["histogram"]["edges"], f["histogram"]["counts"]),
            "parents": store.parents(model), "children": store.children(model),
            **({"evidence": store.feature_evidence(model, feature)} if store.evidence_kinds else {})}


def examples_url(model: str, feature: int) -> str:
    return f"/models/{quote(model, safe='')}/features/{feature}/examples"


@view(router, "/models/{model}/features/{feature}/examples", "feature_examples.html", fragment="_examples.html")
def feature_examples(model: str, feature: FeatureId, store: StoreDep) -> dict:
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


@view(router, "/compare", "compare.html")
def compare(store: StoreDep, a: FeatureRef = None, b: FeatureRef = None) -> dict:
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


@router.get("/compare/pick", include_in_schema=False)
def compare_pick(store: StoreDep, a_model: str, a_feature: FeatureQuery, b_model: str, b_feature: FeatureQuery,
                 threshold: Threshold = None, mode: Mode = None):
    """The compare picker's form: open /compare for the two features chosen (with the view state when the form
    carries one, checked after the features: a missing feature is a 404 first)."""
    store.feature_row(a_model, a_feature), store.feature_row(b_model, b_feature)
    q = urlencode({"a": f"{a_model}:{a_feature}", "b": f"{b_model}:{b_feature}"})
    state = "" if threshold is None and mode is None else "&" + resolve_state(store, threshold, mode).query
    return RedirectResponse(f"/compare?{q}{state}", status_code=303)


@view(router, "/features", "features.html", fragment="_feature_rows.html", table=lambda d: d["rows"])
def features(
    store: StoreDep,
    state: State,
    model: Annotated[str | None, Query(description="model name")] = None,
    fate: Annotated[str | None, Query(pattern="^(" + "|".join(FATE_FILTERS) + ")?$",
                                      description="at the threshold and mode (uncertain, uncertain-origin: under "
                                                  "a mode with doubt, e.g. pearson+transfer); empty: any")] = None,
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
    page: Page = 1,
    per_page: PerPage = 50,
    stable: Stable = None,
    token_level: TokenLevel = None,
    inherits: Annotated[str | None, Query(pattern="^(" + "|".join(INHERITANCE) + ")?$",
                                          description="a merged member's features it inherits so, at the threshold "
                                                      "and mode (both parents, first / second parent only, split, "
                                                      "uncertain, new); empty: any")] = None,
) -> dict:
    """Browse and search features by model, edge, fate (at a threshold and matching mode), what a merge inherits
    (`inherits`), seed stability (`stable`), token level (`token_level`: also found in a random-weights model),
    density, top token and explanation; sorted either way and paginated."""
    model = model or None
    stable, token_flag = stable_flag(stable), stable_flag(token_level)
    pair = tuple(edge.split(">")) if edge else None
    res = store.search(model, fate or None, min_density, max_density, token or None, sort, page, per_page,
                       text=q or None, threshold=state.threshold, mode=state.mode, edge=pair,
                       descending=None if not order else order == "desc", stable=stable, token_level=token_flag,
                       inherits=inherits or None)
    filters = {"model": model or "", "edge": edge or "", "fate": fate or "", "inherits": inherits or "",
               "stable": "" if stable is None else str(stable).lower(),
               "token_level": "" if token_flag is None else str(token_flag).lower(), "min_density": min_density,
               "max_density": max_density, "token": token or "", "q": q or "", "sort": sort,
               "order": order or "", "per_page": per_page, "threshold": state.threshold, "mode": state.mode}
    query = urlencode({k: v for k, v in filters.items() if v != ""})
    children = [e["child"] for e in store.edges]
    merged = any(children.count(c) == 2 for c in children)
    return {**res, "filters": filters, "query": query, "fates": store.fates(), "state": state,
            "inherit_classes": list(INHERITANCE) if merged or inherits else [],
            "edges": [{**e, "value": f"{e['parent']}>{e['child']}"} for e in store.edges],
            "sorts": list(store.SORTS)}


@router.get("/jump", include_in_schema=False)
def jump(store: StoreDep, model: str, feature: FeatureQuery, threshold: Threshold = None, mode: Mode = None):
    """The header's jump box: open a feature's page (with the view state when the form carries one, checked after
    the model: a missing model is a 404 first)."""
    store.model(model)
    state = "" if threshold is None and mode is None else "?" + resolve_state(store, threshold, mode).query
    return RedirectResponse(f"/models/{quote(model)}/features/{feature}{state}", status_code=303)
