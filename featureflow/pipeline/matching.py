"""Matching engines: every parent feature against every child feature, under one similarity and one rule.

A matching mode is a similarity and a rule, each registered in `featureflow/modes.py` (a similarity's file in
`featureflow/similarities/` names the engine below it runs); `match_pair` runs any registered similarity.

The built-in similarities, each producing the top-k matches in both directions (`TopK`):

- `pearson` (`pearson_topk`): exact Pearson correlation over token positions, from sparse statistics.
  For activations A (N x Fa) and B (N x Fb) over the same N tokens:

      r_ij = (S_ij / N − μ_i ν_j) / (σ_i τ_j),   S = Aᵀ B (a sparse product), μ, σ / ν, τ the column
      means and standard deviations (population), all in float64.

  It is exact, not approximated: only the co-occurrence sums are needed, and they come from the sparse
  product. The child side is processed in column blocks so memory stays at Fa x block. A feature that
  never fires has σ = 0; its correlations are defined as 0 (never NaN).
- `token-type` (`token_type_means` then `pearson_topk`): the released code's variant: rows are first
  averaged per token type, then the same engine correlates across token types.
- `decoder` (`decoder_topk`): cosine of decoder directions, data-free (as Neuronpedia and cross-layer
  feature flow match); a zero decoder row has cosine 0 with everything.

Agreement as the literature measures it: `pw_mcc` (Song et al. 2025), the mean |cos| of two decoders'
unit rows under the Hungarian one-to-one pairing, with its chance level for random unit vectors of the same
shapes; computed for every edge and every seed-replica pair.

Rules:

- `best`: each feature's top-1 of its top-k list (`best_of`); several parents may share a child.
- `1to1`: a one-to-one assignment of maximum total similarity (`assign`), exact over the candidate graph
  (the union of both directions' top-k pairs with similarity > 0).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from featureflow.progress import progress as tqdm  # a bar on a terminal, log lines elsewhere


@dataclass
class TopK:
    """Top-k matches in both directions: parent -> child (Fa x k) and child -> parent (Fb x k)."""

    p2c_idx: np.ndarray
    p2c_r: np.ndarray
    c2p_idx: np.ndarray
    c2p_r: np.ndarray


def column_moments(m: sp.spmatrix, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Column means and population standard deviations, summed in float64 whatever the input dtype
    (converted one block of columns at a time, so a float32 input never needs a whole float64 copy)."""
    m = sp.csc_matrix(m)
    n, F = m.shape
    s1, s2 = np.zeros(F), np.zeros(F)
    for j0 in range(0, F, block):
        b = m[:, j0:j0 + block].astype(np.float64)
        s1[j0:j0 + block] = np.asarray(b.sum(axis=0)).ravel()
        s2[j0:j0 + block] = np.asarray(b.multiply(b).sum(axis=0)).ravel()
    mu = s1 / max(n, 1)
    var = np.maximum(s2 / max(n, 1) - mu * mu, 0.0)
    return mu, np.sqrt(var)


def _top_k_rows(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest entries of every row, sorted descending."""
    k = min(k, block.shape[1])
    idx = np.argpartition(-block, k - 1, axis=1)[:, :k]
    val = np.take_along_axis(block, idx, axis=1)
    order = np.argsort(-val, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(val, order, axis=1)


def correlation_block(At: sp.csr_matrix, B: sp.csc_matrix, mu_a, sd_a, mu_b, sd_b) -> np.ndarray:
    """Dense Pearson block Fa x Fb_block from Aᵀ (CSR) and B sliced to the block's columns."""
    n = At.shape[1]
    S = (At @ B).toarray()
    cov = S / n - np.outer(mu_a, mu_b)
    denom = np.outer(sd_a, sd_b)
    return np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 0)


def _blockwise_topk(Fa: int, Fb: int, k: int, block_size: int,
                    block: Callable[[int, int], np.ndarray], desc: str | None = None) -> TopK:
    """Top-k both ways of an Fa x Fb similarity produced one child-column block at a time.

    `block(j0, j1)` returns the dense Fa x (j1 - j0) similarities to children j0..j1-1. Memory stays at a
    few Fa x block_size arrays; the answer does not depend on block_size (up to the order of ties)."""
    ka, kb = min(k, Fb), min(k, Fa)
    p_idx = np.zeros((Fa, 0), dtype=np.int64)
    p_val = np.zeros((Fa, 0))
    c_idx = np.zeros((Fb, kb), dtype=np.int64)
    c_val = np.zeros((Fb, kb))
    starts = range(0, Fb, block_size) if Fa and kb else range(0)
    it = tqdm(starts, desc=desc, unit="block", dynamic_ncols=True) if desc is not None else starts
    for j0 in it:
        j1 = min(Fb, j0 + block_size)
        r = block(j0, j1)
        ci, cv = _top_k_rows(r.T, kb)
        c_idx[j0:j1], c_val[j0:j1] = ci, cv
        pi, pv = _top_k_rows(r, min(ka, j1 - j0))
        # merge this block's best children into each parent's running top-k
        cand_idx = np.concatenate([p_idx, pi + j0], axis=1)
        cand_val = np.concatenate([p_val, pv], axis=1)
        sel, _ = _top_k_rows(cand_val, ka)
        p_idx = np.take_along_axis(cand_idx, sel, axis=1)
        p_val = np.take_along_axis(cand_val, sel, axis=1)
    if p_idx.shape[1] != ka:  # no child block was visited (Fa or Fb is 0)
        p_idx, p_val = np.zeros((Fa, ka), dtype=np.int64), np.zeros((Fa, ka))
    return TopK(p_idx, p_val, c_idx, c_val)


def pearson_topk(A: sp.spmatrix, B: sp.spmatrix, k: int, desc: str | None = "match", device: str = "cpu") -> TopK:
    """Exact Pearson top-k of every column of A against every column of B (rows = the same tokens).

    device 'cpu': `pearson_topk_cpu` (a compiled row kernel, both cores, no Fa x Fb matrix); 'cuda':
    `pearson_topk_torch` (sparse products on the GPU in token chunks). Both equal `pearson_topk_blockwise`
    (the SciPy sparse product), the reference, to float64 rounding; ties are ordered by ascending index."""
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"activations cover different token counts: {A.shape[0]} vs {B.shape[0]}")
    if str(device).startswith("cuda"):
        return pearson_topk_torch(A, B, k, device=device)
    return pearson_topk_cpu(A, B, k, desc=desc)


def pearson_topk_blockwise(A: sp.spmatrix, B: sp.spmatrix, k: int, block_size: int = 2048,
                           desc: str | None = "match") -> TopK:
    """The reference engine: S = Aᵀ B by SciPy's sparse product, one child-column block at a time, made
    dense, then r and top-k with NumPy. Simple and exact; single-threaded and slow at paper scale (about
    200 s per 16,384² edge over 3M tokens on 2 cores), which is why `pearson_topk_cpu` exists."""
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"activations cover different token counts: {A.shape[0]} vs {B.shape[0]}")
    A = sp.csc_matrix(A, dtype=np.float64)
    B = sp.csc_matrix(B, dtype=np.float64)
    mu_a, sd_a = column_moments(A)
    mu_b, sd_b = column_moments(B)
    At = A.T.tocsr()
    return _blockwise_topk(A.shape[1], B.shape[1], k, block_size,
                           lambda j0, j1: correlation_block(At, B[:, j0:j1], mu_a, sd_a, mu_b[j0:j1], sd_b[j0:j1]),
                           desc)


# ------------------------------------------------------------------ Pearson top-k: the CPU kernel
def pearson_topk_cpu(A: sp.spmatrix, B: sp.spmatrix, k: int, threads: int | None = None,
                     desc: str | None = None) -> TopK:
    """Exact Pearson top-k both ways without forming S = Aᵀ B: a compiled kernel (Numba) walks the parents
    one at a time, accumulates S_i = Σ_t a_ti B_t (t over the tokens where parent i fires) into a dense row
    of Fb float64 sums, turns it into r_i = (S_i / N − μ_i ν) / (σ_i τ) and keeps the row's top-k and each
    child's running top-k; then the row is cleared. Work: Σ_t nnz(A_t)·nnz(B_t) multiply-adds plus Fa·Fb
    cheap comparisons; memory: the inputs as CSR (int32 indices, float32 values for float32 input) plus O((Fa + Fb)·k).

    Parents are split into `threads` contiguous chunks run in parallel (Numba releases the GIL), each with
    its own accumulator and child top-k, merged in chunk order, so the result does not depend on the
    thread count. Values equal the reference to float64 rounding (the sums run in another order); ties
    are ordered by ascending index. A feature that never fires has σ = 0 and r = 0 with everything."""
    from concurrent.futures import ThreadPoolExecutor

    from featureflow.pipeline.kernels import interleave, pearson_rows

    n = A.shape[0]
    Fa, Fb = A.shape[1], B.shape[1]
    ka, kb = min(k, Fb), min(k, Fa)
    mu_a, sd_a = column_moments(A)
    mu_b, sd_b = column_moments(B)
    isd_a = np.divide(1.0, sd_a, out=np.zeros_like(sd_a), where=sd_a > 0)
    isd_b = np.divide(1.0, sd_b, out=np.zeros_like(sd_b), where=sd_b > 0)
    p_idx, p_val = np.zeros((Fa, ka), dtype=np.int64), np.full((Fa, ka), -np.inf)
    if Fa == 0 or Fb == 0:
        return TopK(p_idx, np.zeros((Fa, ka)), np.zeros((Fb, kb), dtype=np.int64), np.zeros((Fb, kb)))
    # values stay float32 when they come as float32 (SAE activations); products and sums are float64
    dtype = np.float64 if np.float64 in (A.dtype, B.dtype) else np.float32
    At = sp.csr_matrix(sp.csc_matrix(A, dtype=dtype).T)  # parents x tokens
    Br = sp.csr_matrix(B, dtype=dtype)                   # tokens x children
    b_ptr = Br.indptr.astype(np.int64)
    threads = max(1, min(threads or _cpu_threads(), Fa))
    bounds = np.linspace(0, Fa, threads + 1).astype(np.int64)
    chunks = [(int(bounds[c]), int(bounds[c + 1]), np.zeros((Fb, kb), dtype=np.int64), np.full((Fb, kb), -np.inf),
               np.zeros(Fb)) for c in range(threads)]
    b_feat, b_val = interleave(Br.indices, Br.data)
    del Br
    args = (At.indptr.astype(np.int64), At.indices.astype(np.int32), At.data, b_ptr, b_feat, b_val,
            1.0 / n, mu_a, isd_a, mu_b, isd_b, p_idx, p_val)
    bar = tqdm(total=Fa, desc=desc, unit="feat", dynamic_ncols=True) if desc is not None else None
    step = 256  # parents per kernel call: progress without measurable overhead

    def run(chunk):
        r0, r1, c_idx, c_val, acc = chunk
        for s0 in range(r0, r1, step):
            pearson_rows(s0, min(r1, s0 + step), *args, c_idx, c_val, acc)
            if bar is not None:
                bar.update(min(r1, s0 + step) - s0)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, chunks))
    if bar is not None:
        bar.close()
    c_idx, c_val = chunks[0][2], chunks[0][3]
    for _, _, ci, cv, _ in chunks[1:]:  # later chunks hold later parents: ties stay in ascending order
        c_idx, c_val = _merge_topk(c_idx, c_val, ci, cv)
    return TopK(p_idx, p_val, c_idx, c_val)


def _merge_topk(i1: np.ndarray, v1: np.ndarray, i2: np.ndarray, v2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of two descending top-k lists; among equal values the first list's entries come first."""
    k = v1.shape[1]
    v = np.concatenate([v1, v2], axis=1)
    ix = np.concatenate([i1, i2], axis=1)
    order = np.argsort(-v, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ix, order, axis=1), np.take_along_axis(v, order, axis=1)


def _cpu_threads() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------ Pearson top-k: torch / GPU
def pearson_topk_torch(A: sp.spmatrix, B: sp.spmatrix, k: int, device: str = "cuda",
                       chunk_tokens: int = 200_000) -> TopK:
    """Exact Pearson top-k on a torch device: S = Aᵀ B accumulated in float64 over token chunks of
    `chunk_tokens` (sparse CSR products; cuSPARSE cannot take all 3M paper tokens at once), then r and
    `torch.topk` both ways, Fa x Fb float64 on the device (2 GiB at 16,384²). Measured on one H100 (design
    notes): 1.4 s per paper-scale edge. Runs on the CPU too (the tests check it there against the
    reference); on a CPU `pearson_topk_cpu` is the faster choice."""
    import torch

    n = A.shape[0]
    Fa, Fb = A.shape[1], B.shape[1]
    ka, kb = min(k, Fb), min(k, Fa)
    A = sp.csr_matrix(A, dtype=np.float64)
    B = sp.csr_matrix(B, dtype=np.float64)
    mu_a, sd_a = column_moments(A)
    mu_b, sd_b = column_moments(B)

    def csr(m: sp.csr_matrix):
        m = m.tocsr()
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                       torch.from_numpy(m.indices.astype(np.int64)),
                                       torch.from_numpy(m.data), size=m.shape, device=device,
                                       check_invariants=False)

    S = torch.zeros(Fa, Fb, dtype=torch.float64, device=device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        for t0 in range(0, n, chunk_tokens):
            a, b = A[t0:t0 + chunk_tokens], B[t0:t0 + chunk_tokens]
            if a.nnz and b.nnz:
                S += (csr(a.T.tocsr()) @ csr(b)).to_dense()
    t = {k_: torch.from_numpy(v).to(device) for k_, v in
         {"mu_a": mu_a, "sd_a": sd_a, "mu_b": mu_b, "sd_b": sd_b}.items()}
    denom = torch.outer(t["sd_a"], t["sd_b"])
    r = (S / n - torch.outer(t["mu_a"], t["mu_b"]))
    r = torch.where(denom > 0, r / torch.where(denom > 0, denom, 1.0), torch.zeros_like(r))
    del S
    pv, pi = torch.topk(r, ka, dim=1) if ka else (r[:, :0], r[:, :0].long())
    cv, ci = torch.topk(r.T, kb, dim=1) if kb else (r.T[:, :0], r.T[:, :0].long())
    return TopK(pi.cpu().numpy().astype(np.int64), pv.cpu().numpy(), ci.cpu().numpy().astype(np.int64),
                cv.cpu().numpy())


def _as_float64_rows(W: Any) -> np.ndarray:
    """A 2-D float64 NumPy copy of a NumPy array or a torch tensor (any device or dtype)."""
    if hasattr(W, "detach"):  # torch, without importing it
        W = W.detach().cpu().double().numpy()
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"decoder weights must be 2-D (features x d), got shape {W.shape}")
    return W


def unit_rows(W: Any) -> np.ndarray:
    """Rows scaled to unit L2 norm in float64; a zero row stays zero (its cosines are then 0, never NaN)."""
    W = _as_float64_rows(W)
    norm = np.linalg.norm(W, axis=1, keepdims=True)
    return np.divide(W, norm, out=np.zeros_like(W), where=norm > 0)


def decoder_topk(W_a: Any, W_b: Any, k: int, block_size: int = 2048, desc: str | None = None) -> TopK:
    """Top-k decoder-cosine matches both ways: W_a (Fa x d) and W_b (Fb x d) hold one decoder direction per
    row (SAELens' `W_dec` layout), as NumPy arrays or torch tensors.

    cos_ij = <a_i, b_j> / (|a_i| |b_j|), in float64, Fa x block_size at a time; the TopK layout is that
    of `pearson_topk` (p2c: Fa x min(k, Fb), c2p: Fb x min(k, Fa), sorted descending). A zero-norm row
    has cosine 0 with every row of the other side."""
    A, B = unit_rows(W_a), unit_rows(W_b)
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"decoder directions live in different spaces: d = {A.shape[1]} vs {B.shape[1]}")
    return _blockwise_topk(A.shape[0], B.shape[0], k, block_size,
                           lambda j0, j1: np.clip(A @ B[j0:j1].T, -1.0, 1.0), desc)


def _hungarian_mean_abs_cos(A: np.ndarray, B: np.ndarray) -> float:
    """Mean |cos| over the one-to-one pairing of unit rows A and B that maximises the total |cos|."""
    from scipy.optimize import linear_sum_assignment

    cos = np.abs(A @ B.T)
    np.clip(cos, 0.0, 1.0, out=cos)
    rows, cols = linear_sum_assignment(1.0 - cos)
    return float(cos[rows, cols].mean()) if len(rows) else float("nan")


def pw_mcc(dec_a: Any, dec_b: Any, *, seed: int = 0) -> tuple[float, float]:
    """PW-MCC (Song et al. 2025) of two SAEs' decoders, and its chance level.

    dec_a (Fa x d) and dec_b (Fb x d) hold one decoder direction per row (SAELens' `W_dec`), NumPy or
    torch. Rows are scaled to unit length (a zero row stays zero), the one-to-one pairing that minimises
    the total 1 - |cos| is found by the Hungarian algorithm (`scipy.optimize.linear_sum_assignment`;
    min(Fa, Fb) pairs when the sides differ in size), and the score is the mean |cos| of the matched pairs.
    The chance level is the same score for random unit vectors of the same shapes (Gaussian rows drawn
    with `seed`, then normalised): what two unrelated dictionaries of this size reach. Returns
    (score, chance)."""
    A, B = unit_rows(dec_a), unit_rows(dec_b)
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"decoder directions live in different spaces: d = {A.shape[1]} vs {B.shape[1]}")
    return _hungarian_mean_abs_cos(A, B), pw_mcc_chance(A.shape, B.shape, seed)


@functools.lru_cache(maxsize=64)
def pw_mcc_chance(shape_a: tuple[int, int], shape_b: tuple[int, int], seed: int = 0) -> float:
    """PW-MCC of random unit vectors (Gaussian rows drawn with `seed`, normalised) of the given shapes: the
    chance level. Kept per shapes and seed, since every SAE pair of one run shares them."""
    rng = np.random.default_rng(seed)
    return _hungarian_mean_abs_cos(unit_rows(rng.standard_normal(shape_a)), unit_rows(rng.standard_normal(shape_b)))


# ------------------------------------------------------------------------------------------- rules
@dataclass
class Assignment:
    """A one-to-one matching of parent features (a) and child features (b).

    `a2b_idx[i]` is parent i's partner (-1 when it has none) and `a2b_r[i]` their similarity (NaN when it
    has none); `b2a_idx`, `b2a_r` the same from the child side. a2b and b2a are mutually inverse."""

    a2b_idx: np.ndarray
    a2b_r: np.ndarray
    b2a_idx: np.ndarray
    b2a_r: np.ndarray

    @property
    def total(self) -> float:
        """The total similarity of the assignment (the quantity `assign` maximises)."""
        return float(np.nansum(self.a2b_r))


def candidate_edges(top: TopK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidate graph of `assign`: (parent, child, similarity) of every pair in either direction's
    top-k with similarity > 0, each pair once (sorted by parent, then child)."""
    Fb = top.c2p_idx.shape[0]
    ka, kb = top.p2c_idx.shape[1], top.c2p_idx.shape[1]
    i = np.concatenate([np.repeat(np.arange(top.p2c_idx.shape[0]), ka), top.c2p_idx.ravel()]).astype(np.int64)
    j = np.concatenate([top.p2c_idx.ravel(), np.repeat(np.arange(Fb), kb)]).astype(np.int64)
    s = np.concatenate([top.p2c_r.ravel(), top.c2p_r.ravel()]).astype(np.float64)
    keep = (s > 0) & np.isfinite(s) & (i >= 0) & (j >= 0)
    i, j, s = i[keep], j[keep], s[keep]
    key = i * max(Fb, 1) + j
    order = np.argsort(key, kind="stable")
    key, i, j, s = key[order], i[order], j[order], s[order]
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, dtype=np.int64)
    # both directions see the same similarity; keep the larger should they ever differ in the last bit
    s = np.maximum.reduceat(s, first) if len(key) else s
    return i[first], j[first], s


def assign(top: TopK) -> Assignment:
    """A one-to-one assignment of parent to child features with maximum total similarity.

    The candidate graph holds every pair in either direction's top-k with similarity > 0 (`candidate_edges`);
    a feature may stay unassigned at zero gain, so a pair with similarity <= 0 is never worth taking. The
    result is the exact maximum-weight matching of that graph, not a greedy approximation. When k covers
    every feature (k >= max(Fa, Fb)) the candidate graph holds every positive pair and the result equals
    the dense optimum, `scipy.optimize.linear_sum_assignment(max(S, 0), maximize=True)` on the zero-padded
    square S with its zero-gain pairs dropped (the same pairs unless the optimum is tied). With a smaller
    k, a pair outside both top-k lists is never assigned, and a feature whose candidates all go to others
    stays unassigned.

    Algorithm: a maximum-weight (not necessarily perfect) matching, reduced to a full matching solved by
    `scipy.sparse.csgraph.min_weight_full_bipartite_matching` (LAPJVsp, sparse: the Fa x Fb matrix is
    never formed). Rows are the touched features of the side with fewer of them, columns the other side's
    touched features plus one "stay unassigned" column per row: row u - column v costs C − s_uv, row u -
    its own dummy costs C. A full matching covers every row, so it always exists (all dummies), columns
    may stay unmatched, and each full matching has exactly one edge per row: the constant C = 1 + max s
    (which keeps every weight non-zero, as LAPJVsp requires) shifts all of them by the same amount, and
    the minimum cost is the maximum total similarity. Measured on 2 cores (synthetic TopK, planted 60%
    permutation; `python scripts/bench_matching.py --assign`): Fa = Fb = 16,384, k = 10 (190k candidate
    pairs) in about 6-10 s; Fa = Fb = 2,048, k = 5 in about 0.1 s.
    """
    Fa, Fb = top.p2c_idx.shape[0], top.c2p_idx.shape[0]
    a2b_idx = np.full(Fa, -1, dtype=np.int64)
    a2b_r = np.full(Fa, np.nan)
    b2a_idx = np.full(Fb, -1, dtype=np.int64)
    b2a_r = np.full(Fb, np.nan)
    i, j, s = candidate_edges(top)
    if len(s) == 0:
        return Assignment(a2b_idx, a2b_r, b2a_idx, b2a_r)
    pa, ii = np.unique(i, return_inverse=True)  # only features with a candidate take part
    pb, jj = np.unique(j, return_inverse=True)
    flip = len(pb) < len(pa)  # rows = the smaller side: fewer dummies, a smaller problem
    (ru, rv, nu, nv) = (jj, ii, len(pb), len(pa)) if flip else (ii, jj, len(pa), len(pb))
    C = 1.0 + float(s.max())
    G = sp.csr_matrix((np.concatenate([C - s, np.full(nu, C)]),
                       (np.concatenate([ru, np.arange(nu)]), np.concatenate([rv, nv + np.arange(nu)]))),
                      shape=(nu, nv + nu))
    r, c = min_weight_full_bipartite_matching(G)
    real = c < nv
    u, v = r[real], c[real]
    ai, bj = (v, u) if flip else (u, v)
    # (ii, jj) is sorted by (parent, child), as `candidate_edges` returns it: look each matched pair up
    sim = s[np.searchsorted(ii * len(pb) + jj, ai * len(pb) + bj)]
    pi, cj = pa[ai], pb[bj]
    a2b_idx[pi], a2b_r[pi] = cj, sim
    b2a_idx[cj], b2a_r[cj] = pi, sim
    return Assignment(a2b_idx, a2b_r, b2a_idx, b2a_r)


def among_alive(match: Callable[[np.ndarray, np.ndarray], TopK], alive_a: np.ndarray, alive_b: np.ndarray,
                k: int) -> TopK:
    """Top-k both ways over the alive features only: `match(ia, ib)` matches parent features `ia` against
    child features `ib` (index arrays of the alive ones) and answers in their local indices; the result is
    laid out over every feature again, k = min(k, Fb) / min(k, Fa) wide as before. A feature that never fires
    on the sample has no match (index -1, r NaN: its activation correlation is undefined, and it takes no
    part in fates), and no alive feature is matched to one (a dead feature's r of 0 would otherwise fill the
    top-k of a feature with few positive partners and be read as a match)."""
    alive_a, alive_b = np.asarray(alive_a, dtype=bool), np.asarray(alive_b, dtype=bool)
    ia, ib = np.flatnonzero(alive_a), np.flatnonzero(alive_b)
    Fa, Fb = len(alive_a), len(alive_b)
    ka, kb = min(k, Fb), min(k, Fa)
    out = TopK(np.full((Fa, ka), -1, dtype=np.int64), np.full((Fa, ka), np.nan),
               np.full((Fb, kb), -1, dtype=np.int64), np.full((Fb, kb), np.nan))
    if len(ia) == 0 or len(ib) == 0:
        return out
    top = match(ia, ib)
    wa, wb = top.p2c_idx.shape[1], top.c2p_idx.shape[1]  # min(k, alive on the other side)
    out.p2c_idx[ia, :wa], out.p2c_r[ia, :wa] = ib[top.p2c_idx], top.p2c_r
    out.c2p_idx[ib, :wb], out.c2p_r[ib, :wb] = ia[top.c2p_idx], top.c2p_r
    return out


def best_of(top: TopK) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The `best` rule: each feature's top-1 both ways, (p_idx, p_r, c_idx, c_r), each 1-D. A side with no
    candidates at all (the other side is empty) gets index -1 and r NaN."""
    def first(idx: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if idx.shape[1] == 0:
            return np.full(idx.shape[0], -1, dtype=np.int64), np.full(idx.shape[0], np.nan)
        return idx[:, 0].astype(np.int64), r[:, 0].astype(np.float64)
    return (*first(top.p2c_idx, top.p2c_r), *first(top.c2p_idx, top.c2p_r))


def match_pair(A: Any, B: Any, similarity: str, top_k: int, block_size: int = 2048, device: str = "cpu",
               desc: str | None = None, alive_a: np.ndarray | None = None,
               alive_b: np.ndarray | None = None) -> tuple[TopK, Assignment]:
    """One pair of SAEs under one registered similarity (`featureflow.modes`): top-k both ways over the alive
    features (`among_alive`; every feature when a mask is None) and the one-to-one assignment. `A`, `B` are what
    the similarity compares (`Similarity.inputs`: sparse activations over the same rows for `pearson` and
    `token-type`, decoder directions for `decoder`). The edge stage, the floor stage, the controls stage and the
    planted family all call this."""
    from featureflow.modes import similarity as registered

    sim = registered(similarity)
    alive_a = np.ones(sim.width(A), dtype=bool) if alive_a is None else alive_a
    alive_b = np.ones(sim.width(B), dtype=bool) if alive_b is None else alive_b
    top = among_alive(lambda ia, ib: sim.topk(A, B, ia, ib, top_k, block_size, device, desc), alive_a, alive_b, top_k)
    return top, assign(top)


def read_rule_matches(folder, rule: str) -> dict[str, np.ndarray]:
    """Each feature's match on one side under a rule, read from a matching artefact (`topk.npz`,
    `assign.npz`): best (top-1) or 1to1 (its assigned partner; r is NaN where it has none). Keys p2c_idx,
    p2c_r, c2p_idx, c2p_r. The runner and the store build read an edge's (or a floor's) matches here."""
    from pathlib import Path

    from featureflow.modes import RULES

    folder = Path(folder)
    if RULES[rule].artefact == "assign":
        return dict(np.load(folder / "assign.npz"))
    top = np.load(folder / "topk.npz")
    return {k: top[k][:, 0] for k in ("p2c_idx", "p2c_r", "c2p_idx", "c2p_r")}


def rule_matches(top: TopK, one: Assignment, rule: str) -> dict[str, np.ndarray]:
    """Each feature's match under a rule, as the store keeps it: `best` (top-1 both ways) or `1to1` (its
    assigned partner, -1 / NaN where none). Keys p2c_idx, p2c_r, c2p_idx, c2p_r."""
    from featureflow.modes import RULES

    if RULES[rule].artefact == "assign":
        return {"p2c_idx": one.a2b_idx, "p2c_r": one.a2b_r, "c2p_idx": one.b2a_idx, "c2p_r": one.b2a_r}
    p_idx, p_r, c_idx, c_r = best_of(top)
    return {"p2c_idx": p_idx, "p2c_r": p_r, "c2p_idx": c_idx, "c2p_r": c_r}


def token_type_means(acts: sp.csc_matrix, token_ids: np.ndarray, vocab: int) -> sp.csc_matrix:
    """Rows = token types present in the sample, values = mean activation per type (the released code's input)."""
    present, inv = np.unique(token_ids, return_inverse=True)
    counts = np.bincount(inv).astype(np.float64)
    P = sp.csr_matrix((1.0 / counts[inv], (inv, np.arange(len(token_ids)))), shape=(len(present), len(token_ids)))
    return (P @ acts).tocsc()
