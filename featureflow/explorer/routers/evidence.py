"""Evidence: every evidence kind the run computed (`matching.evidence`, one registered kind per file in
`featureflow/evidence/`), summarised per edge; a feature's own values are on its page."""

from __future__ import annotations

from fastapi import APIRouter

from featureflow.explorer.views import StoreDep, view

router = APIRouter()


@view(router, "/evidence", "evidence.html", table=lambda d: d["summary"])
def evidence(store: StoreDep) -> dict:
    """Every evidence kind per edge: its measures' distribution over the features of its side (count, mean,
    10th, 50th and 90th percentiles), and how well each SAE reconstructs the other model it was run on."""
    return {"kinds": store.evidence_kinds, "summary": store.evidence_summary(), "cross_health": store.cross_health()}
