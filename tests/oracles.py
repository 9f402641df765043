"""Counts made another way than the project's own SQL, for tests to compare against."""

from __future__ import annotations

import numpy as np


def same_index_share(p_idx: np.ndarray, p_r: np.ndarray, threshold: float) -> tuple[int, int]:
    """(n_same, n_persisting): of the parent features whose match exceeds `threshold` (n_persisting; NaN, an
    unassigned feature, never does), how many are matched to the child feature with the same index.

    SAEs trained from one initialisation (and batch order) keep many features at their index, so a high
    share says the matches were partly manufactured by shared initialisation; independent seeds give
    about 1 / F by chance."""
    p_idx, p_r = np.asarray(p_idx), np.asarray(p_r, dtype=np.float64)
    persisting = np.nan_to_num(p_r, nan=-np.inf) > threshold
    same = persisting & (p_idx == np.arange(len(p_idx)))
    return int(same.sum()), int(persisting.sum())


def lineage_chains(parent_rows: list[tuple], family_order: list[str], threshold: float) -> dict[tuple[str, int], list]:
    """Every feature's chain of best persisting parent matches, by brute force in Python: `parent_rows` are
    the stored match rows of the child side (parent, child, src = child feature, dst = parent feature, r),
    one per edge and child feature (rank 0 of `matches`, or `assignments` for the one-to-one rule). A
    feature's best parent match is its row of largest r over its parents (None r counts as below any,
    ties: the parent first in `family_order`); walk it up while r > threshold. Returns (model, feature) ->
    [(ancestor model, ancestor feature, r of the hop below it), ...] from the feature's parent up to its
    origin (empty: the feature is its own origin)."""
    best: dict[tuple[str, int], tuple] = {}
    for parent, child, src, dst, r in parent_rows:
        if dst is None:  # unassigned under the one-to-one rule: no partner
            continue
        key = (-np.inf if r is None else r, -family_order.index(parent))
        have = best.get((child, src))
        if have is None or key > have[0]:
            best[(child, src)] = (key, parent, dst, r)
    chains: dict[tuple[str, int], list] = {}

    def chain(model: str, feature: int) -> list:
        hop = best.get((model, feature))
        if hop is None or hop[3] is None or not hop[3] > threshold:
            return []
        _, pm, pf, r = hop
        return [(pm, pf, r)] + chain(pm, pf)

    for (model, feature) in {(c, s) for _, c, s, _, _ in parent_rows}:
        chains[(model, feature)] = chain(model, feature)
    return chains
