"""Per-feature tables (histograms, top tokens, example windows) against plain per-feature NumPy."""

import numpy as np
import pytest
import scipy.sparse as sp

from featureflow.config import SampleConfig
from featureflow.pipeline.features import example_windows, feature_tables, histogram_edges


def acts_and_tokens(seed=0, n=3000, f=40, vocab=25):
    rng = np.random.default_rng(seed)
    m = sp.random(n, f, density=0.04, random_state=rng, format="csc", dtype=np.float32)
    m.data = rng.exponential(1.0, m.nnz).astype(np.float32)
    m = m.tolil()
    m[:, 3] = 0                                   # never fires
    m[:5, 4] = 1.0                                # fires 5 times, all equal (ties, fewer than the bins)
    m[np.arange(0, n, 7), 5] = 2.0                # many equal values
    m = m.tocsc().astype(np.float32)
    return m, rng.integers(0, vocab, n)


CFG = SampleConfig(tokens=3000, context=50, top_k_examples=6, quantile_bins=4, examples_per_bin=3, window=9,
                   histogram_bins=7)


def test_tables_equal_plain_numpy_per_feature():
    acts, toks = acts_and_tokens()
    t = feature_tables(acts, toks, CFG, seed=5, threads=1)
    for j in range(acts.shape[1]):
        rows, v = acts.indices[acts.indptr[j]:acts.indptr[j + 1]], acts.data[acts.indptr[j]:acts.indptr[j + 1]]
        if len(v) == 0:
            assert t["t_n"][j] == 0 and t["c_n"][j] == 0 and t["h_counts"][j].sum() == 0
            continue
        counts, edges = np.histogram(v, bins=CFG.histogram_bins, range=(0.0, float(v.max())))
        np.testing.assert_array_equal(t["h_counts"][j], counts)
        np.testing.assert_array_equal(histogram_edges(np.array([v.max()]), CFG.histogram_bins)[0], edges)
        # top tokens by total activation, ties by lower id
        uniq, inv = np.unique(toks[rows], return_inverse=True)
        total = np.bincount(inv, weights=v.astype(np.float64))
        order = np.lexsort((uniq, -total))[:10]
        assert t["t_n"][j] == len(order)
        np.testing.assert_array_equal(t["t_ids"][j, :len(order)], uniq[order])
        np.testing.assert_array_equal(t["t_counts"][j, :len(order)], np.bincount(inv)[order])
        np.testing.assert_allclose(t["t_totals"][j, :len(order)], total[order], rtol=1e-12)
        # top examples: largest first, equal values in token order, no two windows overlapping
        kinds, centers = t["c_kind"][j, :t["c_n"][j]], t["c_rows"][j, :t["c_n"][j]]
        want = []
        for c in rows[np.argsort(-v, kind="stable")]:
            if len(want) < CFG.top_k_examples and not any(
                    o // CFG.context == c // CFG.context and abs(o - c) < CFG.window for o in want):
                want.append(c)
        np.testing.assert_array_equal(centers[kinds == 0], want)
        # quantile examples: from the right equal-count group of ascending values, no repeats, token order
        asc = np.argsort(-v, kind="stable")[::-1]
        groups = [g for g in np.array_split(np.arange(len(v)), CFG.quantile_bins) if len(g)]
        for qi, g in enumerate(groups):
            picked = centers[kinds == 1 + qi]
            assert len(picked) == min(CFG.examples_per_bin, len(g))
            assert set(picked) <= set(rows[asc[g]]) and len(set(picked)) == len(picked)
            pos = [np.flatnonzero(rows[asc] == c)[0] for c in picked]
            assert (np.diff(pos) > 0).all()  # in ascending activation order
        assert not (kinds > len(groups)).any()


def test_tables_do_not_depend_on_the_thread_split_and_follow_the_seed():
    acts, toks = acts_and_tokens(seed=1, f=1100)  # more features than one kernel call takes
    a = feature_tables(acts, toks, CFG, seed=9, threads=1)
    b = feature_tables(acts, toks, CFG, seed=9, threads=3)
    c = feature_tables(acts, toks, CFG, seed=10, threads=1)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["c_rows"], c["c_rows"])  # other quantile picks
    np.testing.assert_array_equal(a["c_rows"][a["c_kind"] == 0], c["c_rows"][c["c_kind"] == 0])


@pytest.mark.parametrize("window", [9, 10, 50])
def test_example_windows_hold_the_dense_column(window):
    acts, _ = acts_and_tokens(seed=2)
    dense = acts.toarray()
    rng = np.random.default_rng(0)
    feat = rng.integers(0, acts.shape[1], 300)
    centers = rng.integers(0, acts.shape[0], 300)
    centers[:3] = [0, 49, 2999]  # at the edges of sample windows
    start, end, offsets, values = example_windows(acts, feat, centers, 50, window, threads=2)
    for i in range(len(centers)):
        w0 = centers[i] // 50 * 50
        assert w0 <= start[i] <= centers[i] < end[i] <= w0 + 50 and end[i] - start[i] == min(window, 50)
        np.testing.assert_array_equal(values[offsets[i]:offsets[i + 1]], dense[start[i]:end[i], feat[i]])


def test_radix_argsort_is_numpys_stable_descending_argsort():
    from featureflow.pipeline.kernels import _argsort_desc_stable

    rng = np.random.default_rng(3)
    cases = [np.zeros(0, np.float32), np.array([1.0], np.float32), np.array([0.0, -0.0, 0.0, -0.0], np.float32),
             rng.exponential(1.0, 20_000).astype(np.float32),                 # every bucket of all three passes
             (rng.integers(-30, 30, 5_000) / 7).astype(np.float32),           # negatives and many ties
             (rng.standard_normal(3_000) * 1e30).astype(np.float32),
             np.array([np.inf, 3.0, -np.inf, 3.0, 0.0], np.float32)]
    for v in cases:
        np.testing.assert_array_equal(_argsort_desc_stable(v), np.argsort(-v, kind="stable"))
