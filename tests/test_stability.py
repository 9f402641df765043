"""Issue 21: seed stability per feature, reproducible persistence with intervals and its floor, PW-MCC.

Oracles: statsmodels' `proportion_confint` (Wilson), a brute force over every one-to-one pairing and
scipy's `linear_sum_assignment` called directly (PW-MCC), and numpy / duckdb counts straight from the
store's tables and the pipeline's artefacts (never through featureflow's own SQL) for the report."""

from __future__ import annotations

import itertools
import re

import duckdb
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from statsmodels.stats.proportion import proportion_confint

from featureflow.pipeline.matching import pw_mcc
from featureflow.store.flows import wilson


# ------------------------------------------------------------------------------------------ Wilson
@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 7), (7, 7), (3, 10), (160, 319), (10, 1727), (268, 317)])
def test_wilson_interval_equals_statsmodels(k, n):
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    got = wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-12)
    assert got[0] <= k / n <= got[1]


def test_wilson_of_no_features_is_none():
    assert wilson(0, 0) is None


# ----------------------------------------------------------------------------------------- PW-MCC
def _brute_force(A: np.ndarray, B: np.ndarray) -> float:
    """Mean |cos| of the best one-to-one pairing, over every injective map of the smaller side."""
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    B = B / np.linalg.norm(B, axis=1, keepdims=True)
    cos = np.abs(A @ B.T)
    if cos.shape[0] > cos.shape[1]:
        cos = cos.T
    n, m = cos.shape
    return max(np.mean([cos[i, p[i]] for i in range(n)]) for p in itertools.permutations(range(m), n))


@pytest.mark.parametrize("fa,fb,d", [(5, 5, 3), (4, 6, 3), (6, 4, 5), (7, 7, 2)])
def test_pw_mcc_equals_brute_force_and_scipy(fa, fb, d):
    rng = np.random.default_rng(fa * 100 + fb * 10 + d)
    A, B = rng.normal(size=(fa, d)) * rng.uniform(0.1, 3, (fa, 1)), rng.normal(size=(fb, d))
    score, chance = pw_mcc(A, B)
    assert score == pytest.approx(_brute_force(A, B), abs=1e-12)
    # scipy's assignment on |cos| maximised directly (the other way round from pw_mcc's 1 - |cos|)
    cos = np.abs((A / np.linalg.norm(A, axis=1)[:, None]) @ (B / np.linalg.norm(B, axis=1)[:, None]).T)
    r, c = linear_sum_assignment(cos, maximize=True)
    assert score == pytest.approx(cos[r, c].mean(), abs=1e-12)
    assert 0 < chance < 1


def test_pw_mcc_is_one_for_a_decoder_against_a_permuted_sign_flipped_copy_and_chance_depends_on_shape_only():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(64, 16))
    perm = rng.permutation(64)
    B = A[perm] * rng.choice([-1.0, 1.0], size=(64, 1)) * 2.5
    score, chance = pw_mcc(A, B)
    assert score == pytest.approx(1.0, abs=1e-12)
    other_score, other_chance = pw_mcc(rng.normal(size=(64, 16)), rng.normal(size=(64, 16)))
    assert other_chance == chance  # random unit vectors of the same shapes, same seed
    assert other_score < 0.9
    # more dictionary than dimensions: random directions find close partners; the chance level says how close
    # (above the mean |cos| of two random unit vectors in 16 dimensions, about sqrt(2 / (pi d)) = 0.2)
    assert np.sqrt(2 / (np.pi * 16)) < chance < 1
    assert pw_mcc(A, B, seed=1)[1] != chance


def test_pw_mcc_refuses_decoders_of_different_widths():
    with pytest.raises(ValueError, match="different spaces"):
        pw_mcc(np.ones((3, 4)), np.ones((3, 5)))
