"""Case studies found from the data, not typed in.

A token case (e.g. the assignment token "="): in the root model, among features that fire on the
token, the one with the highest log-likelihood ratio log P(s | feature) / P(s). A feature case starts
from a named feature instead. The stage records the root feature and, for a token case, every feature's
LLR for the token in every model (`case_llrs.parquet`, finite values only). Its hops down the family tree
are not chosen here: the explorer reads them off the root feature's lineage (`featureflow/explorer/queries.py:
Store.lineage`) at the page's threshold and matching mode, so a case and its feature page never disagree.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featureflow.pipeline.artifacts import write_json
from featureflow.pipeline.autointerp import hypothesis_ids, llr_for_tokens, unigram
from featureflow.config import CaseConfig


def token_coverage(acts, tokens_flat: np.ndarray, token_ids: list[int]) -> np.ndarray:
    """Per feature: the share of the token set's occurrences on which it fires."""
    mask = np.isin(tokens_flat, token_ids)
    sub = acts[mask]
    return np.diff(sub.tocsc().indptr) / max(1, int(mask.sum()))


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def find_case(case: CaseConfig, order: list[str], acts: dict, tokens_flat: np.ndarray, vocab: list[str],
              root: str) -> dict:
    """The case's root feature, and under "llrs" per model the features with a finite LLR for its token
    (feature indices, LLRs); a feature left out never fires on the token."""
    p_uni = unigram(tokens_flat, len(vocab))
    ids = hypothesis_ids(vocab, case.token) if case.token else []
    llrs = {m: llr_for_tokens(acts[m], tokens_flat, ids, p_uni)[0] for m in order} if ids else {}
    out = {"slug": case.slug, "title": case.title, "description": case.description, "hypothesis": case.token,
           "token_ids": ids, "descendants": case.descendants, "root_model": None, "root_feature": None,
           "root_llr": None, "root_coverage": None, "status": "ok", "reason": None, "llrs": {}}
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
    finite = {m: np.flatnonzero(np.isfinite(v)) for m, v in llrs.items()}
    return {**out, "root_model": root, "root_feature": start,
            "root_llr": _finite(llrs[root][start]) if llrs else None,
            "llrs": {m: (finite[m], llrs[m][finite[m]]) for m in llrs}}


def write_cases(folder: Path, cases: list[dict]) -> None:
    """cases.json (one record per case) and case_llrs.parquet (slug, model, feature, llr)."""
    rows = [(c["slug"], m, f, v) for c in cases for m, (fs, vs) in c["llrs"].items() for f, v in zip(fs, vs)]
    pq.write_table(pa.table({"slug": pa.array([r[0] for r in rows], pa.string()),
                             "model": pa.array([r[1] for r in rows], pa.string()),
                             "feature": pa.array([int(r[2]) for r in rows], pa.int32()),
                             "llr": pa.array([float(r[3]) for r in rows], pa.float64())}),
                   folder / "case_llrs.parquet")
    write_json(folder / "cases.json", [{k: v for k, v in c.items() if k != "llrs"} for c in cases])


def find_cases(cases: list, order: list[str], acts: dict, sample_tokens: np.ndarray, vocab: list[str],
               root: str) -> list[dict]:
    """Every configured case (`cfg.cases`) found from the members' activations on the shared sample.

    `order`: members in topological order; `acts`: member -> its sparse SAE activations on the sample;
    `sample_tokens`: the sample's token ids (any shape, read flat); `vocab`: token id -> text; `root`: the root
    member whose features the cases start from."""
    flat = np.asarray(sample_tokens).ravel()
    return [find_case(c, order, acts, flat, vocab, root) for c in cases]
