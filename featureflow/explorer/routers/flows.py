"""Feature flows at the page's threshold and matching mode: the overview (the run, its models, lineage, SAE health
and the Sankey), one edge's features of one fate, the seed-control noise floors, and the method page (how right
the fate calls are on a planted family)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query

from featureflow.explorer import collapse, figures
from featureflow.explorer.views import (Mode, Page, PerPage, SankeyPopulation, Stable, State, StoreDep, TokenLevel,
                                        stable_flag, view)
from featureflow.evidence.split import RULE_TEXT as SPLIT_RULE
from featureflow.modes import mode_label, rule_of
from featureflow.store.flows import EDGE_FATES

router = APIRouter()


@view(router, "/", "overview.html", fragment="_flows.html", table=lambda d: d["flows"])
def overview(store: StoreDep, state: State, population: SankeyPopulation,
             expand: Annotated[str | None, Query(max_length=2000, pattern=r"^[A-Za-z0-9_.,\- ]*$",
                                                 description="a wide family's Sankey folds sibling groups (same "
                                                 "parents, recipe and domains) into one node each: 'all' draws "
                                                 "every member, else the groups named (by their first member), "
                                                 "comma-separated")] = None) -> dict:
    """The run: models, lineage, SAE health and the Sankey of feature flows at a threshold and matching
    mode (all features, or only reproducible ones: on by default where seed replicas exist), each edge's
    persistence beside its seed-control noise floor, its reproducible persistence with 95% intervals and
    reproducible floor, and its decoder PW-MCC beside chance."""
    t, mode = state.threshold, state.mode
    repro = population == "reproducible"
    flows = store.flows(t, mode)
    # links out of the reproducible Sankey list reproducible features, where every member can have them
    links = state.query + ("&stable=true" if repro and len(store.replicated) == len(store.models) else "")
    edges = [(e["parent"], e["child"]) for e in store.edges]
    opened = collapse.parse_expand(expand)
    folded = collapse.folded(store.models, edges, opened)
    groups = collapse.sibling_groups(store.models, edges) if len(store.models) > collapse.COLLAPSE_OVER else {}

    def expand_href(group: str | None) -> str:
        return f"/?{state.query}&population={population}&expand={collapse.expand_query(opened, group)}"
    return {"threshold": t, "mode": mode, "mode_label": state.mode_label, "rule": rule_of(mode), **state.choices,
            "models_overview": store.overview_models(), "flows": flows, "emerged": store.emerged_in(t, mode),
            "inheritance": store.inheritance(t, mode, repro), "origins": store.merge_origins(t, mode),
            "floors": store.floors(t, mode), "edges": store.edges, "timings": store.timings, "state": state,
            "population": population, "replicated": store.replicated,
            "colors": {"persist": figures.PERSIST, "lost": figures.LOST, "new": figures.NEW},
            "folded": folded, "groups": groups, "expand": "all" if opened == "all" else ",".join(sorted(opened)),
            "expand_all": expand_href(None) if folded else None,
            "expand_group": {g: expand_href(g) for g in folded},
            "sankey": figures.sankey(store.models, flows, store.node_flows(t, mode, repro), t, state.mode_label,
                                     links, reproducible=repro, replicated=store.replicated, folded=folded,
                                     expand_href=expand_href)}


@view(router, "/edges/{parent}/{child}", "edge.html", fragment="_edge_rows.html", table=lambda d: d["rows"])
def edge(parent: str, child: str, store: StoreDep, state: State,
         fate: Annotated[str, Query(pattern="^(" + "|".join(EDGE_FATES) + ")$",
                                    description="persisting / disappearing parent features, inherited / "
                                                "emerging child features; under a mode with doubt (e.g. "
                                                "pearson+transfer) uncertain parent and uncertain-origin child "
                                                "features")] = "persisting",
         sort: Annotated[str, Query(pattern="^(r|density|llr|sim_score|feature)$")] = "r",
         order: Annotated[str, Query(pattern="^(desc|asc)$")] = "desc",
         page: Page = 1, per_page: PerPage = 50, stable: Stable = None, token_level: TokenLevel = None) -> dict:
    """The features behind one flow of edge parent -> child at a threshold and mode: sortable both ways by
    r, density, top-token LLR and explanation score, paginated, each with its match, top context, seed
    stability (`stable` keeps reproducible or other features only) and match in the random-weights control
    (`token_level` keeps token-level or other features only); the edge on its scale (reproducible
    persistence beside its random-weights control and seed floor, with intervals) and its PW-MCC."""
    stable, token = stable_flag(stable), stable_flag(token_level)
    e = store.edge(parent, child)
    counts = next(f for f in store.flows(state.threshold, state.mode)
                  if f["parent"] == parent and f["child"] == child)
    res = store.edge_features(parent, child, fate, state.threshold, state.mode, sort, order == "desc",
                              page, per_page, stable, token)
    params = {"fate": fate, "threshold": state.threshold, "mode": state.mode, "sort": sort, "order": order,
              "per_page": per_page, **({} if stable is None else {"stable": str(stable).lower()}),
              **({} if token is None else {"token_level": str(token).lower()})}
    resort = {k: urlencode({**params, "sort": k, "order": "asc" if (k, order) == (sort, "desc") else "desc"})
              for k in ("r", "density", "llr", "sim_score")}
    return {**res, "edge": {**e, "parent_label": store.label(parent), "child_label": store.label(child)},
            "fate": fate, "counts": counts, "sort": sort, "order": order, "state": state, "stable": stable,
            "doubt": rule_of(state.mode).admits_doubt, "rule": rule_of(state.mode), "has_crosscoder": store.has_crosscoders,
            "token_level": token,
            "stable_query": ("" if stable is None else f"&stable={str(stable).lower()}") +
                            ("" if token is None else f"&token_level={str(token).lower()}"),
            "query": urlencode(params), "resort": resort, **state.choices}


@view(router, "/edges/{parent}/{child}/crosscoder", "crosscoder.html", table=lambda d: d["rows"])
def crosscoder(parent: str, child: str, store: StoreDep, state: State,
               call: Annotated[str | None, Query(pattern="^(shared|parent-only|child-only)$",
                                                 description="only the latents of one call")] = None,
               sort: Annotated[str, Query(pattern="^(rho|fire_rate|latent|nu_e)$")] = "rho",
               order: Annotated[str, Query(pattern="^(desc|asc)$")] = "asc",
               page: Page = 1, per_page: PerPage = 50) -> dict:
    """The edge's crosscoder (when the run trained one, `crosscoder:`): its health, the relative norms of its latents
    (0: parent-only, 1: child-only), its latents sorted (by relative norm: the most parent-only first), each with
    its decoder norms, Latent Scaling's ratios, top tokens and best-matching SAE feature in each model, and how
    many SAE fates at the page's threshold and mode it confirms."""
    e = store.edge(parent, child)
    cc = store.crosscoder(parent, child)
    base = {"edge": {**e, "parent_label": store.label(parent), "child_label": store.label(child)}, "crosscoder": cc,
            "state": state, "call": call, "sort": sort, "order": order, **state.choices}
    if cc is None:
        return {**base, "rows": [], "total": 0, "page": 1, "pages": 1, "per_page": per_page, "rho": None,
                "agreement": None, "rho_figure": None}
    res = store.crosscoder_latents(parent, child, call, sort, order == "desc", page, per_page)
    rho = store.crosscoder_rho(parent, child)
    params = {"threshold": state.threshold, "mode": state.mode, "sort": sort, "order": order, "per_page": per_page,
              **({"call": call} if call else {})}
    return {**base, **res, "rho": rho, "agreement": store.crosscoder_agreement(parent, child, state.threshold, state.mode),
            "rho_figure": figures.histogram(rho["edges"], rho["counts"], "Relative decoder norm of alive latents "
                                            "(0: parent-only, 1: child-only)", x="relative norm ρ", y="latents",
                                            log_y=False),
            "query": urlencode(params)}


@view(router, "/floors", "floors.html", table=lambda d: d["floors"])
def floors(store: StoreDep, state: State) -> dict:
    """The seed-control noise floor: per replicated member, how many features two SAEs of the same model
    that differ only in their seed match above the threshold, and the distribution of their match r."""
    fl = store.floors(state.threshold, state.mode)
    for f in fl:
        f["figure"] = figures.floor_histogram(f["histogram"], f["label"], state.threshold)
    return {"threshold": state.threshold, "mode": state.mode, "mode_label": state.mode_label, **state.choices,
            "rule": rule_of(state.mode), "floors": fl}


@view(router, "/method", "method.html")
def method(store: StoreDep, mode: Mode = None) -> dict:
    """How right the fate calls are: the planted-family scorecard (precision, recall and F1 of every mode's
    persisting / disappearing / inherited / emerging calls against planted truth, for all and for
    reproducible features), recall by drift angle, split detection and each SAE's MCC."""
    card = store.planted()
    mode = store.mode(mode)
    modes = sorted({s["mode"] for s in card["scores"]}) if card else []
    focus = mode if mode in modes else (modes[0] if modes else None)
    return {"planted": card, "mode": mode, "focus": focus, "modes": modes, "split_rule": SPLIT_RULE,
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
            "target": target, "needed_recall": 1 - D * (1 - target) / (target * S) if S else None,
            "doubt": rule_of(focus).admits_doubt}
