"""Activation records for autointerp, and the statistics that score an explanation.

A record is a window of about 32 tokens from the shared sample with the feature's activation on every
token, quantised to integers 0-10 as floor(10 * a / max_a), max_a the feature's maximum over the whole
sample (the convention is stored with every explanation).

Explain set: the top-activating windows at even ranks, plus windows from true (equal-count) activation
quantiles. Score set, held out: the top windows at odd ranks and as many random windows. The two sets
never share a sample window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

QUANTISATION = "floor(10 * a / max_a), max_a over the shared sample; 0-10"


@dataclass
class Record:
    window: int          # index of the sample window it comes from
    start: int           # token index of its first token
    token_ids: list[int]
    acts: list[float]    # raw activations
    levels: list[int]    # quantised 0-10
    kind: str            # top / quantile / random

    @property
    def fires(self) -> bool:
        return any(a > 0 for a in self.acts)


@dataclass
class FeatureRecords:
    feature: int
    max_act: float
    explain: list[Record] = field(default_factory=list)
    score: list[Record] = field(default_factory=list)


def quantise(acts: np.ndarray, max_act: float) -> np.ndarray:
    if max_act <= 0:
        return np.zeros(len(acts), dtype=np.int64)
    return np.clip(np.floor(10 * np.asarray(acts) / max_act), 0, 10).astype(np.int64)


def _record(rows: np.ndarray, vals: np.ndarray, tokens: np.ndarray, center: int, length: int, max_act: float,
            kind: str) -> Record:
    C = tokens.shape[1]
    w = center // C
    pos = center % C
    s = min(max(0, pos - length // 2), max(0, C - length))
    e = min(C, s + length)
    start = w * C + s
    lo, hi = np.searchsorted(rows, [start, w * C + e])
    acts = np.zeros(e - s, dtype=np.float64)
    acts[rows[lo:hi] - start] = vals[lo:hi]
    return Record(w, int(start), tokens[w, s:e].astype(int).tolist(), acts.tolist(),
                  quantise(acts, max_act).tolist(), kind)


def build_records(rows: np.ndarray, vals: np.ndarray, tokens: np.ndarray, feature: int, n_top: int = 20,
                  n_quantiles: int = 5, per_quantile: int = 2, length: int = 32, seed: int = 0) -> FeatureRecords:
    """`rows` / `vals`: the feature's firing token indices (ascending) and activations on the sample."""
    rng = np.random.default_rng([seed, feature])
    C = tokens.shape[1]
    max_act = float(vals.max()) if len(vals) else 0.0
    out = FeatureRecords(feature, max_act)
    if len(rows) == 0:
        return out
    used: set[int] = set()
    top: list[int] = []
    for i in np.argsort(-vals, kind="stable"):  # distinct windows, highest first
        w = int(rows[i]) // C
        if w not in used:
            used.add(w)
            top.append(int(rows[i]))
        if len(top) >= n_top:
            break
    for rank, center in enumerate(top):
        rec = _record(rows, vals, tokens, center, length, max_act, "top")
        (out.explain if rank % 2 == 0 else out.score).append(rec)
    # quantile windows for the explainer, from windows not used yet
    order = np.argsort(vals, kind="stable")
    for group in np.array_split(order, n_quantiles):
        g = rows[group]
        cand = g[~np.isin(g // C, np.fromiter(used, dtype=np.int64, count=len(used)))].astype(np.int64)
        for center in rng.permutation(cand)[:per_quantile] if len(cand) else []:
            if int(center) // C in used:
                continue
            used.add(int(center) // C)
            out.explain.append(_record(rows, vals, tokens, int(center), length, max_act, "quantile"))
    # random held-out windows, as many as held-out top windows
    n_random = len(out.score)
    free = np.setdiff1d(np.arange(tokens.shape[0]), np.fromiter(used, dtype=np.int64, count=len(used)))
    for w in rng.permutation(free)[:n_random]:
        center = int(w) * C + int(rng.integers(0, C))
        out.score.append(_record(rows, vals, tokens, center, length, max_act, "random"))
    return out


# ------------------------------------------------------------------------------------- scoring
def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def simulation_score(records: list[Record], predictions: list[list[float]]) -> float | None:
    """Pearson r between true levels and predicted levels over all held-out tokens pooled."""
    true = np.concatenate([r.levels for r in records]) if records else np.array([])
    pred = np.concatenate([np.asarray(p, float) for p in predictions]) if predictions else np.array([])
    if len(true) != len(pred):
        raise ValueError(f"{len(pred)} predictions for {len(true)} held-out tokens")
    return pearson(true, pred)


def balanced_accuracy(truth: list[bool], said: list[bool]) -> float | None:
    t, s = np.asarray(truth, bool), np.asarray(said, bool)
    if t.all() or (~t).all():
        return None
    tpr = (s & t).sum() / t.sum()
    tnr = (~s & ~t).sum() / (~t).sum()
    return float((tpr + tnr) / 2)
