import numpy as np
import scipy.sparse as sp

from backend.matching import classify, flow_counts, pearson_topk, token_type_means, trace_origins


def brute_pearson(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Dense NumPy correlation; constant columns get r = 0."""
    za = A - A.mean(0)
    zb = B - B.mean(0)
    sa, sb = np.sqrt((za ** 2).mean(0)), np.sqrt((zb ** 2).mean(0))
    cov = za.T @ zb / A.shape[0]
    den = np.outer(sa, sb)
    return np.divide(cov, den, out=np.zeros_like(cov), where=den > 0)


def random_acts(rng, n, f, density):
    m = sp.random(n, f, density=density, random_state=rng, format="csc", dtype=np.float64)
    m.data = rng.exponential(1.0, m.nnz)
    return m


def test_engine_equals_brute_force_including_dead_features():
    rng = np.random.default_rng(0)
    A = random_acts(rng, 4000, 60, 0.03).tolil()
    B = random_acts(rng, 4000, 90, 0.03).tolil()
    A[:, 5] = 0  # never fires
    B[:, 7] = 0
    B[:, :20] = A[:, :20] * 1.5  # some exact copies (r = 1)
    B[:, 20] = A[:, 21] + A[:, 22]  # a mixture
    A, B = A.tocsc(), B.tocsc()
    top = pearson_topk(A, B, k=4, block_size=32)
    R = brute_pearson(A.toarray(), B.toarray())
    assert not np.isnan(top.p2c_r).any() and not np.isnan(top.c2p_r).any()
    np.testing.assert_allclose(top.p2c_r, -np.sort(-R, axis=1)[:, :4], atol=1e-5)
    np.testing.assert_allclose(top.c2p_r, -np.sort(-R.T, axis=1)[:, :4], atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(R, top.p2c_idx, 1), top.p2c_r, atol=1e-5)
    copies = [i for i in range(20) if i != 5]  # B[:, 5] copies a dead feature: dead too, no best match
    assert (top.c2p_idx[copies, 0] == copies).all() and np.allclose(top.c2p_r[copies, 0], 1.0)
    assert set(top.c2p_idx[20, :2]) == {21, 22}
    assert np.allclose(top.p2c_r[5], 0.0)  # the dead feature: zeros, not NaN


def test_block_size_does_not_change_the_answer():
    rng = np.random.default_rng(3)
    A, B = random_acts(rng, 500, 40, 0.1), random_acts(rng, 500, 50, 0.1)
    a, b = pearson_topk(A, B, 3, block_size=7), pearson_topk(A, B, 3, block_size=1000)
    np.testing.assert_allclose(a.p2c_r, b.p2c_r, atol=1e-12)
    np.testing.assert_allclose(a.c2p_r, b.c2p_r, atol=1e-12)


def test_token_type_variant_matches_brute_force_on_means():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 30, 800)
    A, B = random_acts(rng, 800, 12, 0.2), random_acts(rng, 800, 14, 0.2)
    Am, Bm = token_type_means(A, ids, 30), token_type_means(B, ids, 30)
    present = np.unique(ids)
    dense = np.stack([A.toarray()[ids == t].mean(0) for t in present])
    np.testing.assert_allclose(Am.toarray(), dense, atol=1e-12)
    R = brute_pearson(dense, np.stack([B.toarray()[ids == t].mean(0) for t in present]))
    np.testing.assert_allclose(pearson_topk(Am, Bm, 2).p2c_r, -np.sort(-R, 1)[:, :2], atol=1e-5)


def test_threshold_classification():
    best = np.array([0.95, 0.81, 0.8, 0.2, 0.0])
    alive = np.array([True, True, True, True, False])
    assert list(classify(best, alive, 0.8)) == ["matched", "matched", "unmatched", "unmatched", "dead"]
    fc = flow_counts(best, alive, np.array([0.9, 0.1, 0.0]), np.array([True, True, False]), 0.8)
    assert fc == {"persisting": 2, "disappearing": 2, "inherited": 1, "emerging": 1, "parent_dead": 1,
                  "child_dead": 1, "parent_alive": 4, "child_alive": 2}


def test_lineage_trace_through_a_diamond():
    order = ["root", "a", "b", "merge"]
    parents = {"root": [], "a": ["root"], "b": ["root"], "merge": ["a", "b"]}
    alive = {m: np.ones(3, bool) for m in order}
    best = {
        ("root", "a"): (np.array([2, 0, 1]), np.array([0.9, 0.3, 0.95])),
        ("root", "b"): (np.array([0, 1, 2]), np.array([0.1, 0.2, 0.3])),
        ("a", "merge"): (np.array([0, 2, 1]), np.array([0.85, 0.99, 0.5])),
        ("b", "merge"): (np.array([1, 1, 1]), np.array([0.5, 0.6, 0.7])),
    }
    o = trace_origins(order, parents, best, alive, 0.8)
    # a#0 <- root#2 (0.9); a#2 <- root#1 (0.95); a#1 emerged in a
    assert list(o["a"]["origin_model"]) == [0, 1, 0] and list(o["a"]["origin_feature"]) == [2, 1, 1]
    # merge#0 <- a#0 <- root#2: depth 2; merge#1 <- a#2 <- root#1; merge#2: best parent b#1 at 0.7, emerged
    assert list(o["merge"]["origin_model"]) == [0, 0, 3]
    assert list(o["merge"]["origin_feature"]) == [2, 1, 2]
    assert list(o["merge"]["depth"]) == [2, 2, 0]
    assert o["merge"]["parent_model"][2] == 2 and np.isclose(o["merge"]["parent_r"][2], 0.7)
