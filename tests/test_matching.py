import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment

from oracles import same_index_share
from featureflow.pipeline.matching import (TopK, assign, best_of, decoder_topk, pearson_topk, pearson_topk_blockwise,
                              pearson_topk_cpu, pearson_topk_torch, token_type_means)

ENGINES = {
    "blockwise": lambda A, B, k: pearson_topk_blockwise(A, B, k, block_size=32, desc=None),
    "cpu-kernel-1-thread": lambda A, B, k: pearson_topk_cpu(A, B, k, threads=1),
    "cpu-kernel-3-threads": lambda A, B, k: pearson_topk_cpu(A, B, k, threads=3),
    "torch-cpu": lambda A, B, k: pearson_topk_torch(A, B, k, device="cpu", chunk_tokens=1500),
    "torch-cuda": lambda A, B, k: pearson_topk_torch(A, B, k, device="cuda", chunk_tokens=1500),
}


def engine(name):
    if name == "torch-cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return ENGINES[name]


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


@pytest.mark.parametrize("name", list(ENGINES))
def test_engine_equals_brute_force_including_dead_features(name):
    rng = np.random.default_rng(0)
    A = random_acts(rng, 4000, 60, 0.03).tolil()
    B = random_acts(rng, 4000, 90, 0.03).tolil()
    A[:, 5] = 0  # never fires
    B[:, 7] = 0
    B[:, :20] = A[:, :20] * 1.5  # some exact copies (r = 1)
    B[:, 20] = A[:, 21] + A[:, 22]  # a mixture
    A, B = A.tocsc(), B.tocsc()
    top = engine(name)(A, B, 4)
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
    a, b = pearson_topk_blockwise(A, B, 3, block_size=7), pearson_topk_blockwise(A, B, 3, block_size=1000)
    np.testing.assert_allclose(a.p2c_r, b.p2c_r, atol=1e-12)
    np.testing.assert_allclose(a.c2p_r, b.c2p_r, atol=1e-12)


@pytest.mark.parametrize("name", [n for n in ENGINES if n != "blockwise"])
def test_fast_engines_equal_the_float64_reference_exactly(name):
    """float32 SAE activations, sparse like an SAE's (L0 ~ 3 of 200): every engine returns the reference's
    values to float64 rounding and the same indices (no ties in continuous random data)."""
    rng = np.random.default_rng(7)
    A = random_acts(rng, 6000, 200, 0.015).astype(np.float32)
    B = sp.hstack([A[:, :50] * 3, random_acts(rng, 6000, 150, 0.015).astype(np.float32)], format="csc")
    ref = pearson_topk_blockwise(A, B, 6, desc=None)
    R = brute_pearson(A.toarray().astype(np.float64), B.toarray().astype(np.float64))
    np.testing.assert_allclose(ref.p2c_r, -np.sort(-R, 1)[:, :6], atol=1e-12)
    top = engine(name)(A, B, 6)
    for field in ("p2c_r", "c2p_r"):
        np.testing.assert_allclose(getattr(top, field), getattr(ref, field), rtol=0, atol=1e-12)
    for field in ("p2c_idx", "c2p_idx"):
        np.testing.assert_array_equal(getattr(top, field), getattr(ref, field))


@pytest.mark.parametrize("k", [2, 4])
def test_cpu_kernel_orders_ties_by_index_whatever_the_thread_count(k):
    """Exact ties (duplicated columns, r bit-identical by construction): the engine's top-k, with 1, 2, 3, 5 or 7
    threads (chunk borders falling between and inside groups of tied parents), equals numpy's stable sort of the
    brute-force r, so the lower index comes first among equal values, also where k cuts a group of ties."""
    rng = np.random.default_rng(11)
    base = random_acts(rng, 3000, 10, 0.05)
    A = sp.hstack([base, base, base], format="csc")  # parents i, i+10, i+20 identical
    B = sp.hstack([base[:, ::-1], base], format="csc")  # children j and 19 - j identical
    a_col, b_col = np.arange(30) % 10, np.r_[np.arange(9, -1, -1), np.arange(10)]  # the base column of each
    R = brute_pearson(base.toarray(), base.toarray())[np.ix_(a_col, b_col)]  # equal columns: equal bits
    want_p = np.argsort(-R, axis=1, kind="stable")[:, :k]
    want_c = np.argsort(-R.T, axis=1, kind="stable")[:, :k]
    assert (R[0, 9] == R[0, 10]) and (R.T[10, 0] == R.T[10, 10] == R.T[10, 20])  # the oracle has the ties
    for threads in (1, 2, 3, 5, 7):
        top = pearson_topk_cpu(A, B, k, threads=threads)
        np.testing.assert_array_equal(top.p2c_idx, want_p, err_msg=f"{threads} threads")
        np.testing.assert_array_equal(top.c2p_idx, want_c, err_msg=f"{threads} threads")
        np.testing.assert_allclose(top.p2c_r, np.take_along_axis(R, want_p, 1), rtol=0, atol=1e-12)
        np.testing.assert_allclose(top.c2p_r, np.take_along_axis(R.T, want_c, 1), rtol=0, atol=1e-12)


def test_pearson_topk_dispatches_cpu_to_the_kernel(monkeypatch):
    import featureflow.pipeline.matching as m

    called = []
    monkeypatch.setattr(m, "pearson_topk_cpu", lambda *a, **kw: called.append("cpu") or "cpu")
    monkeypatch.setattr(m, "pearson_topk_torch", lambda *a, **kw: called.append("torch") or "torch")
    A = sp.csc_matrix(np.ones((4, 2)))
    assert m.pearson_topk(A, A, 1) == "cpu" and m.pearson_topk(A, A, 1, device="cuda") == "torch"
    with pytest.raises(ValueError, match="different token counts"):
        m.pearson_topk(A, sp.csc_matrix(np.ones((5, 2))), 1)


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


# ------------------------------------------------------------------------ token-type, decoder, rules
def dense_topk(S: np.ndarray, k: int) -> TopK:
    """Brute-force top-k both ways of a dense similarity (a full sort per row)."""
    def rows(M):
        idx = np.argsort(-M, axis=1, kind="stable")[:, :k]
        return idx, np.take_along_axis(M, idx, 1)
    return TopK(*rows(S), *rows(S.T))


def dense_optimum(S: np.ndarray) -> tuple[set[tuple[int, int]], float]:
    """The dense reference of the 1to1 rule: linear_sum_assignment on max(S, 0) padded to a square; a
    pair of zero gain is no pair."""
    n = max(S.shape)
    P = np.zeros((n, n))
    P[: S.shape[0], : S.shape[1]] = np.maximum(S, 0)
    r, c = linear_sum_assignment(P, maximize=True)
    return {(int(i), int(j)) for i, j in zip(r, c) if P[i, j] > 0}, float(P[r, c].sum())


def pairs_of(a) -> set[tuple[int, int]]:
    return {(int(i), int(j)) for i, j in enumerate(a.a2b_idx) if j >= 0}


def check_consistent(a, S: np.ndarray) -> None:
    """a2b and b2a are inverse, r is the pair's similarity, unassigned features carry -1 / NaN."""
    on_a, on_b = a.a2b_idx >= 0, a.b2a_idx >= 0
    assert len(set(a.a2b_idx[on_a])) == on_a.sum()  # no child twice
    np.testing.assert_array_equal(a.b2a_idx[a.a2b_idx[on_a]], np.flatnonzero(on_a))
    assert on_b.sum() == on_a.sum()
    np.testing.assert_allclose(a.a2b_r[on_a], S[on_a, a.a2b_idx[on_a]], atol=1e-12)
    np.testing.assert_allclose(a.b2a_r[on_b], S[a.b2a_idx[on_b], on_b], atol=1e-12)
    assert np.isnan(a.a2b_r[~on_a]).all() and np.isnan(a.b2a_r[~on_b]).all()
    assert (a.a2b_r[on_a] > 0).all()


def test_token_type_mode_equals_brute_force_means_and_corrcoef():
    rng = np.random.default_rng(11)
    n, vocab = 600, 25
    ids = rng.integers(3, vocab, n)  # token types 0-2 never occur: no row for them
    A, B = random_acts(rng, n, 9, 0.25), random_acts(rng, n, 13, 0.25)
    Ad, Bd = A.toarray(), B.toarray()
    present = sorted(set(ids.tolist()))
    sums_a, sums_b = {t: np.zeros(9) for t in present}, {t: np.zeros(13) for t in present}
    counts = {t: 0 for t in present}
    for pos, t in enumerate(ids):  # per-token-type means, one position at a time
        sums_a[t] += Ad[pos]
        sums_b[t] += Bd[pos]
        counts[t] += 1
    Ma = np.stack([sums_a[t] / counts[t] for t in present])
    Mb = np.stack([sums_b[t] / counts[t] for t in present])
    R = np.corrcoef(Ma.T, Mb.T)[:9, 9:]
    top = pearson_topk(token_type_means(A, ids, vocab), token_type_means(B, ids, vocab), k=3)
    ref = dense_topk(R, 3)
    np.testing.assert_allclose(top.p2c_r, ref.p2c_r, atol=1e-10)
    np.testing.assert_allclose(top.c2p_r, ref.c2p_r, atol=1e-10)
    np.testing.assert_array_equal(top.p2c_idx, ref.p2c_idx)
    np.testing.assert_array_equal(top.c2p_idx, ref.c2p_idx)


def test_decoder_cosine_equals_dense_numpy_with_zero_rows_and_torch_input():
    rng = np.random.default_rng(5)
    Wa = rng.normal(size=(37, 16))
    Wb = rng.normal(size=(53, 16))
    Wb[:10] = 3.0 * Wa[[4, 0, 7, 1, 9, 2, 30, 3, 8, 5]] + 0.01 * rng.normal(size=(10, 16))
    Wa[6] = 0  # a dead decoder row on each side
    Wb[40] = 0
    na, nb = np.linalg.norm(Wa, axis=1), np.linalg.norm(Wb, axis=1)
    S = (Wa @ Wb.T) / np.where(np.outer(na, nb) > 0, np.outer(na, nb), 1.0)
    ref = dense_topk(S, 4)
    for top in (decoder_topk(Wa, Wb, 4, block_size=7), decoder_topk(torch.tensor(Wa, dtype=torch.float32),
                                                                     torch.tensor(Wb, dtype=torch.float32), 4)):
        assert top.p2c_idx.shape == (37, 4) and top.c2p_idx.shape == (53, 4)
        assert not np.isnan(top.p2c_r).any() and not np.isnan(top.c2p_r).any()
        np.testing.assert_allclose(top.p2c_r, ref.p2c_r, atol=1e-6)
        np.testing.assert_allclose(top.c2p_r, ref.c2p_r, atol=1e-6)
        np.testing.assert_allclose(np.take_along_axis(S, top.p2c_idx, 1), top.p2c_r, atol=1e-6)
        np.testing.assert_allclose(np.take_along_axis(S.T, top.c2p_idx, 1), top.c2p_r, atol=1e-6)
    top = decoder_topk(Wa, Wb, 4, block_size=7)
    np.testing.assert_array_equal(top.p2c_idx, ref.p2c_idx)  # float64: the very same order
    np.testing.assert_array_equal(top.c2p_idx[:10, 0], [4, 0, 7, 1, 9, 2, 30, 3, 8, 5])
    assert (top.c2p_r[:10, 0] > 0.99).all()
    np.testing.assert_array_equal(top.p2c_r[6], 0.0)  # zero norm: cosine 0, not NaN
    np.testing.assert_array_equal(top.c2p_r[40], 0.0)
    wide = decoder_topk(Wa, Wb, 100)  # k beyond the other side: clipped to it
    assert wide.p2c_idx.shape == (37, 53) and wide.c2p_idx.shape == (53, 37)
    with pytest.raises(ValueError, match="different spaces"):
        decoder_topk(Wa, Wb[:, :8], 2)


@pytest.mark.parametrize("shape", [(23, 31), (31, 17), (20, 20)])
def test_assign_equals_dense_linear_sum_assignment_when_k_covers_every_feature(shape):
    rng = np.random.default_rng(sum(shape))
    S = rng.normal(0.0, 0.5, size=shape)  # about half the pairs have S <= 0
    a = assign(dense_topk(S, max(shape)))
    pairs, total = dense_optimum(S)
    assert pairs_of(a) == pairs
    assert a.total == pytest.approx(total, abs=1e-9)
    check_consistent(a, S)


def test_assign_is_exact_over_the_candidate_graph_for_small_k():
    rng = np.random.default_rng(8)
    S = rng.uniform(-0.2, 1.0, size=(40, 55))
    S[3] = -0.5  # every similarity of parent 3 is negative: it stays unassigned
    top = dense_topk(S, 2)
    cand = np.zeros(S.shape, bool)
    np.put_along_axis(cand, top.p2c_idx, True, 1)
    np.put_along_axis(cand.T, top.c2p_idx, True, 1)
    pairs, total = dense_optimum(np.where(cand, S, 0.0))
    a = assign(top)
    assert pairs_of(a) == pairs and a.total == pytest.approx(total, abs=1e-9)
    assert all(cand[i, j] for i, j in pairs_of(a))
    assert a.a2b_idx[3] == -1 and np.isnan(a.a2b_r[3])
    check_consistent(a, S)
    # the full graph can only do better
    assert dense_optimum(S)[1] >= a.total - 1e-12


def test_assign_recovers_a_planted_permutation_of_decoders():
    rng = np.random.default_rng(2)
    Wa = rng.normal(size=(300, 32))
    perm = rng.permutation(340)[:300]  # parent i lives at child perm[i]; 40 children are new
    Wb = rng.normal(size=(340, 32))
    Wb[perm] = Wa + 0.3 * rng.normal(size=Wa.shape)
    top = decoder_topk(Wa, Wb, 3, block_size=64)
    a = assign(top)
    np.testing.assert_array_equal(a.a2b_idx, perm)
    new = np.setdiff1d(np.arange(340), perm)
    assert (a.b2a_idx[new] == -1).all() and np.isnan(a.b2a_r[new]).all()
    np.testing.assert_array_equal(a.b2a_idx[perm], np.arange(300))


def test_best_match_and_one_to_one_differ_when_two_parents_share_a_best_child():
    # child 0 is the best match of both parents; parent 0 also fits child 1 well, parent 1 fits nothing else
    S = np.array([[0.90, 0.80, 0.05],
                  [0.85, 0.10, -0.3]])
    top = dense_topk(S, 3)
    p_idx, p_r, c_idx, c_r = best_of(top)
    np.testing.assert_array_equal(p_idx, [0, 0])  # best: both parents claim child 0
    np.testing.assert_allclose(p_r, [0.90, 0.85])
    np.testing.assert_array_equal(c_idx, [0, 0, 0])
    np.testing.assert_allclose(c_r, [0.90, 0.80, 0.05])
    a = assign(top)  # 0.80 + 0.85 = 1.65 beats 0.90 + 0.10 = 1.00
    np.testing.assert_array_equal(a.a2b_idx, [1, 0])
    np.testing.assert_allclose(a.a2b_r, [0.80, 0.85])
    np.testing.assert_array_equal(a.b2a_idx, [1, 0, -1])
    np.testing.assert_allclose(a.b2a_r, [0.85, 0.80, np.nan])
    assert a.total == pytest.approx(1.65)


def test_assign_with_no_positive_candidate_or_an_empty_side():
    a = assign(dense_topk(-np.ones((3, 4)), 2))
    assert (a.a2b_idx == -1).all() and (a.b2a_idx == -1).all() and np.isnan(a.a2b_r).all()
    top = decoder_topk(np.ones((3, 4)), np.ones((0, 4)), 5)
    assert top.p2c_idx.shape == (3, 0) and top.c2p_idx.shape == (0, 3)
    a = assign(top)
    assert a.a2b_idx.tolist() == [-1, -1, -1] and a.b2a_idx.shape == (0,)
    p_idx, p_r, c_idx, _ = best_of(top)
    assert p_idx.tolist() == [-1, -1, -1] and np.isnan(p_r).all() and c_idx.shape == (0,)


def test_same_index_share_counts_identical_indices_among_persisting_matches():
    p_idx = np.array([0, 5, 2, 3, -1, 5])
    p_r = np.array([0.9, 0.95, 0.5, 0.85, np.nan, 0.81])
    # persisting (> 0.8): parents 0, 1, 3, 5; of those, 0, 3 and 5 keep their index
    assert same_index_share(p_idx, p_r, 0.8) == (3, 4)
    assert same_index_share(p_idx, p_r, 0.9) == (0, 1)
    # one initialisation: a child SAE whose decoder is the parent's, slightly moved, keeps every index
    rng = np.random.default_rng(4)
    W = rng.normal(size=(50, 12))
    a = assign(decoder_topk(W, W + 0.05 * rng.normal(size=W.shape), 3))
    assert same_index_share(a.a2b_idx, a.a2b_r, 0.8) == (50, 50)
    perm = rng.permutation(50)
    a = assign(decoder_topk(W, W[perm], 3))  # the same features, shuffled: persisting, not same-index
    n_same, n_pers = same_index_share(a.a2b_idx, a.a2b_r, 0.8)
    assert n_pers == 50 and n_same == int((perm == np.arange(50)).sum())


def test_pw_mcc_equals_the_best_permutation_by_brute_force():
    """PW-MCC (the sweep's agreement measure) against every one-to-one pairing of a tiny case, and its chance
    level against the same brute force on random unit rows of the same shapes."""
    import itertools

    from featureflow.pipeline.matching import pw_mcc

    rng = np.random.default_rng(3)
    A, B = rng.normal(size=(5, 4)), rng.normal(size=(6, 4))
    unit = lambda M: M / np.linalg.norm(M, axis=1, keepdims=True)  # noqa: E731
    cos = np.abs(unit(A) @ unit(B).T)
    brute = max(np.mean([cos[i, p[i]] for i in range(5)]) for p in itertools.permutations(range(6), 5))
    score, chance = pw_mcc(A, -3 * B)  # sign and scale of a direction do not matter
    assert score == pytest.approx(brute, abs=1e-12)
    r = np.random.default_rng(0)
    RA, RB = unit(r.standard_normal(A.shape)), unit(r.standard_normal(B.shape))
    rc = np.abs(RA @ RB.T)
    assert chance == pytest.approx(max(np.mean([rc[i, p[i]] for i in range(5)])
                                       for p in itertools.permutations(range(6), 5)), abs=1e-12)
