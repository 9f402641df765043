"""Autointerp: explanation scores per model, persisting features against the rest at the page's threshold and
matching mode (the paper's Figure 6), and what explaining them cost."""

from __future__ import annotations

from fastapi import APIRouter

from featureflow.explorer import figures
from featureflow.explorer.views import State, StoreDep, view

router = APIRouter()


@view(router, "/autointerp", "autointerp.html", table=lambda d: d["scores"])
def autointerp(store: StoreDep, state: State) -> dict:
    """Explanation scores per model, persisting vs not at a threshold and matching mode (the paper's
    Figure 6), and what it cost."""
    rows = store.score_distributions(state.threshold, state.mode)
    labels = [(m["model"], m["label"]) for m in store.models]
    return {"summary": store.autointerp_summary(), "sim_figure": figures.score_histograms(rows, labels),
            "det_figure": figures.score_histograms(rows, labels, "detection_score"),
            "scores": rows, "state": state, **state.choices}
