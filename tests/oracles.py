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
