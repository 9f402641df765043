"""Case studies: the list, and one case followed down its root feature's lineage at the page's threshold and
matching mode, with cross-correlations and every feature's activations on the same windows."""

from __future__ import annotations

from fastapi import APIRouter

from featureflow.explorer import numbers
from featureflow.explorer.queries import Store
from featureflow.explorer.views import State, StoreDep, view

router = APIRouter()


@view(router, "/cases", "cases.html", table=lambda d: d["cases"])
def cases(store: StoreDep, state: State) -> dict:
    """The case studies this run found, each followed down its root feature's lineage at a threshold and
    matching mode."""
    return {"cases": store.cases(state.threshold, state.mode), "state": state, **state.choices}


@view(router, "/cases/{slug}", "case.html", table=lambda d: d["case"]["hops"])
def case(slug: str, store: StoreDep, state: State) -> dict:
    """One case study: its root feature's lineage at a threshold and matching mode (the feature page's), r
    and the token's LLR per hop, cross-correlations, and every feature's activations on the same contexts
    (the root feature's top windows and random windows from its activation quantiles)."""
    c = store.case(slug, state.threshold, state.mode)
    out = {"case": c, "features": [], "matrix": [], "contexts": [], "state": state, **state.choices}
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
        h["explanation"] = next(f["explanation"] for f in feats
                                if (f["model"], f["feature"]) == (h["model"], h["feature"]))
    matrix = store.correlations([(f["model"], f["feature"]) for f in feats])
    windows = case_windows(store.examples(c["root_model"], c["root_feature"]))
    return {**out, "features": feats, "matrix": matrix, "contexts": shared_contexts(store, windows, feats)}


def case_windows(examples: list[dict], top: int = 4, quantiles: int = 3) -> list[dict]:
    """Of a feature's `examples`, the first `top` top windows, then the first random window of `quantiles` of its
    activation quantiles spread from the highest to the lowest."""
    tops = [e for e in examples if e["kind"] == "top"][:top]
    by_q = {}
    for e in examples:
        if e["kind"] != "top":
            by_q.setdefault(e["kind"], e)
    qs = sorted(by_q, key=lambda k: -int(k[1:]))
    picks = sorted({round(i * (len(qs) - 1) / max(1, quantiles - 1)) for i in range(min(quantiles, len(qs)))})
    return tops + [by_q[qs[i]] for i in picks]


def shared_contexts(store: Store, windows: list[dict], feats: list[dict]) -> list[dict]:
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
