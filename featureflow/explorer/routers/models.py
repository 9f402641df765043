"""The family's models: their fingerprints (Delta Activations: similarity heatmap, 2-D map, silhouette,
additivity), one model's page (how it was made, its nearest models, the features behind its fingerprint), and
the merge's SLERP sweeps."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter

from featureflow.explorer import figures
from featureflow.explorer.views import State, StoreDep, Variant, view

router = APIRouter()


@view(router, "/models", "models.html", table=lambda d: d["entities"])
def models_page(store: StoreDep, state: State, variant: Variant = "delta-hidden") -> dict:
    """Model fingerprints (Delta Activations): similarity heatmap, 2-D map, silhouette, additivity. The view state
    (threshold, mode) is carried into the links."""
    fp = store.fingerprint_overview(variant)
    names = [e["entity"] for e in fp["entities"]]
    stats = fp["stats"] or {"pca_var1": 0.0, "pca_var2": 0.0}
    return {**fp, "variant": variant, "variants": store.VARIANTS, "edges": store.edges, "state": state,
            "heatmap": figures.heatmap(names, fp["similarity"], f"Cosine similarity ({variant})"),
            "map_figure": figures.fingerprint_map([p for p in fp["map"] if p["method"] == "pca"],
                                                  (stats["pca_var1"], stats["pca_var2"])),
            "tsne_figure": figures.fingerprint_map([p for p in fp["map"] if p["method"] == "tsne"], None, "tsne")
            if any(p["method"] == "tsne" for p in fp["map"]) else None,
            "additivity_figure": figures.additivity_curves(fp["additivity"])}


@view(router, "/models/{model}", "model.html", table=lambda d: d["features_behind"])
def model_page(model: str, store: StoreDep, state: State, variant: Variant = "delta-hidden") -> dict:
    """One model: how it was made, its nearest models and the features behind its fingerprint. The view state
    (threshold, mode) is carried into the links."""
    m = store.model(model)
    return {"m": m, "variant": variant, "parents": store.parents(model), "children": store.children(model),
            "state": state,
            **store.model_fingerprint(model, variant)}


@view(router, "/merge", "merge.html",
      table=lambda d: [{"model": m["model"], **p} for m in d["merges"] for p in m["points"]])
def merge(store: StoreDep, state: State) -> dict:
    """SLERP sweeps: accuracy on each parent's domains against t, root baselines, the chosen t; under them each
    parent's features along the path (`survival`: the share of its reproducible features whose survival r
    exceeds the page's threshold at each t, with its interval) and where the two parents' shares cross."""
    labels = {m["model"]: m["label"] for m in store.models}
    merges = store.merges(state.threshold, state.mode)
    for m in merges:
        m["figure"] = figures.slerp_curves(m, labels)
        m["survival_figure"] = figures.survival_curves(m, labels, state.threshold) if m["survival"] else None
        # its features' list, of the population the counts are of (reproducible where the member has replicas)
        m["features_href"] = (f"/features?model={quote(m['model'])}&{state.query}"
                              + ("&stable=true" if m["model"] in store.replicated else ""))
        m["inheritance_figure"] = (figures.inheritance_sankey(m["inheritance"], labels, m["features_href"])
                                   if m.get("inheritance") else None)
    return {"merges": merges, "state": state, "replicated": store.replicated, **state.choices}
