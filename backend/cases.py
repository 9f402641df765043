"""Case studies found from the data, not typed in.

A token case (e.g. the assignment token "="): in the root model, among features that fire on the
token, the one with the highest log-likelihood ratio log P(s | feature) / P(s); then its best match in
every descendant (or only in `descendants`), hop by hop down the family tree, with r on each hop, the
LLR of every matched feature for the same token, and the mean cross-correlation over the hops.
A feature case starts from a named feature instead.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .autointerp import hypothesis_ids, llr_for_tokens, unigram
from .config import CaseConfig, parse_mode

if TYPE_CHECKING:
    from .pipeline import Pipeline


def token_coverage(acts, tokens_flat: np.ndarray, token_ids: list[int]) -> np.ndarray:
    """Per feature: the share of the token set's occurrences on which it fires."""
    mask = np.isin(tokens_flat, token_ids)
    sub = acts[mask]
    return np.diff(sub.tocsc().indptr) / max(1, int(mask.sum()))


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def follow(start_model: str, start_feature: int, children: dict[str, list[str]],
           best_child: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]], allowed: set[str] | None) -> list[dict]:
    """Breadth-first from a feature to its best match in each descendant; each model visited once, via
    the parent whose match correlates best."""
    hops: dict[str, dict] = {}
    frontier = [(start_model, start_feature)]
    while frontier:
        nxt = []
        for m, f in frontier:
            for c in children[m]:
                idx, r = best_child[(m, c)]
                cand = {"model": c, "feature": int(idx[f]), "parent_model": m, "parent_feature": f, "r": float(r[f])}
                if c not in hops or cand["r"] > hops[c]["r"]:
                    hops[c] = cand
                    nxt.append((c, cand["feature"]))
        frontier = nxt
    out = list(hops.values())
    if allowed is not None:
        out = [h for h in out if h["model"] in allowed]
    return out


def find_case(case: CaseConfig, order: list[str], children: dict[str, list[str]], best_child, acts: dict,
              tokens_flat: np.ndarray, vocab: list[str], threshold: float, root: str) -> dict:
    p_uni = unigram(tokens_flat, len(vocab))
    ids = hypothesis_ids(vocab, case.token) if case.token else []
    llrs = {}
    if ids:
        for m in order:
            llrs[m], _ = llr_for_tokens(acts[m], tokens_flat, ids, p_uni)
    out = {"slug": case.slug, "title": case.title, "description": case.description, "hypothesis": case.token,
           "token_ids": ids, "root_model": None, "root_feature": None, "hops": [], "mean_r": None,
           "persists_everywhere": None, "status": "ok", "reason": None}
    if case.token is not None:
        if not ids:
            return {**out, "status": "failed", "reason": f"no token of the vocabulary is '{case.token}'"}
        root = case.root or root
        llr, on_s = llr_for_tokens(acts[root], tokens_flat, ids, p_uni)
        coverage = token_coverage(acts[root], tokens_flat, ids)
        fires = np.isfinite(llr) & (on_s > 0) & (coverage >= case.min_coverage)
        if not fires.any():
            return {**out, "status": "failed", "reason": f"no feature of '{root}' fires on at least "
                    f"{100 * case.min_coverage:g}% of the occurrences of '{case.token}'"}
        cand = np.flatnonzero(fires)
        # highest LLR; ties (the LLR saturates at -log P(s)) go to the feature covering more occurrences
        start = int(cand[np.lexsort((-coverage[cand], -np.round(llr[cand], 9)))[0]])
        out["root_coverage"] = float(coverage[start])
    else:
        root, start = case.feature.model, case.feature.id
        if start >= acts[root].shape[1]:
            return {**out, "status": "failed", "reason": f"'{root}' has no feature {start}"}
    allowed = set(case.descendants) if case.descendants else None
    hops = follow(root, start, children, best_child, allowed)
    for h in hops:
        h["llr"] = _finite(llrs[h["model"]][h["feature"]]) if llrs else None
        h["persists"] = h["r"] > threshold
    rs = [h["r"] for h in hops]
    return {**out, "root_model": root, "root_feature": start,
            "root_llr": _finite(llrs[root][start]) if llrs else None, "hops": hops,
            "mean_r": float(np.mean(rs)) if rs else None, "persists_everywhere": bool(rs) and all(r > threshold for r in rs)}


def find_cases(pl: "Pipeline") -> list[dict]:
    from .tokenizer import token_strings

    cfg = pl.cfg
    order = cfg.topological_order()
    children = {n: [c for (p, c) in cfg.edges() if p == n] for n in order}
    best_child = {}
    sim = parse_mode(pl.default_mode)[0]
    for p, c in cfg.edges():  # the closest match under the default similarity, assigned or not
        best = pl.best_matches(pl.match(p, c, sim), "best")
        best_child[(p, c)] = (best["p2c_idx"], best["p2c_r"])
    acts = {n: pl.load_acts(n) for n in order}
    vocab = token_strings(pl.hf_tokenizer)
    flat = pl.sample_tokens().ravel()
    return [find_case(c, order, children, best_child, acts, flat, vocab, cfg.matching.threshold, cfg.roots()[0])
            for c in cfg.cases]
