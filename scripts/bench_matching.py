"""Benchmark: exact sparse Pearson top-k (backend.matching) against a dense z-scored torch matmul.

Both compute the same top-k over the same synthetic activations (L0 about 30, exponential values);
prints seconds, peak extra memory estimate and the speed ratio measured in this run.

    python scripts/bench_matching.py --tokens 100000 --features 4096

`--assign` instead times the one-to-one rule (`backend.matching.assign`) on synthetic TopK arrays:
seconds and traced peak memory (tracemalloc, which sees NumPy's and SciPy's array allocations), against
a dense `scipy.optimize.linear_sum_assignment` on max(S, 0) where that fits (`--dense-max`).

    python scripts/bench_matching.py --assign --features 16384 --k 10
    python scripts/bench_matching.py --assign --features 2048 --k 5
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import scipy.sparse as sp
import torch

from backend.matching import TopK, assign, pearson_topk


def synthetic(n: int, f: int, l0: float, seed: int) -> sp.csc_matrix:
    rng = np.random.default_rng(seed)
    density = l0 / f
    m = sp.random(n, f, density=density, random_state=rng, format="csc", dtype=np.float32)
    m.data = rng.exponential(1.0, m.nnz).astype(np.float32)
    return m


def dense_topk(A: sp.csc_matrix, B: sp.csc_matrix, k: int, chunk: int = 20000):
    """Baseline: z-score dense columns and multiply, accumulating over token chunks (float64 sums)."""
    n = A.shape[0]
    Fa, Fb = A.shape[1], B.shape[1]
    mu_a = np.asarray(A.mean(0)).ravel(); mu_b = np.asarray(B.mean(0)).ravel()
    sd_a = np.sqrt(np.maximum(np.asarray(A.multiply(A).mean(0)).ravel() - mu_a ** 2, 0))
    sd_b = np.sqrt(np.maximum(np.asarray(B.multiply(B).mean(0)).ravel() - mu_b ** 2, 0))
    sa = torch.from_numpy(np.where(sd_a > 0, sd_a, np.inf)).float(); sb = torch.from_numpy(np.where(sd_b > 0, sd_b, np.inf)).float()
    acc = torch.zeros(Fa, Fb, dtype=torch.float32)
    Ar, Br = A.tocsr(), B.tocsr()
    for i in range(0, n, chunk):
        za = (torch.from_numpy(Ar[i:i + chunk].toarray()) - torch.from_numpy(mu_a).float()) / sa
        zb = (torch.from_numpy(Br[i:i + chunk].toarray()) - torch.from_numpy(mu_b).float()) / sb
        acc += za.T @ zb
    r = acc / n
    return torch.topk(r, k, dim=1).values.numpy(), torch.topk(r.T, k, dim=1).values.numpy()


def synthetic_topk(f: int, k: int, seed: int, planted: float = 0.6, per_row: int = 3) -> tuple[TopK, sp.csr_matrix]:
    """TopK arrays of a synthetic sparse similarity S (f x f): every parent has `per_row` * k random
    children with similarity U(0, 0.9), and a share `planted` of the parents also a planted partner (a
    random permutation) at U(0.7, 1.0), as a fine-tune that keeps most features. Both directions' top-k
    are read off the same S, as the engines produce them. Returns (top, S)."""
    rng = np.random.default_rng(seed)
    m = per_row * k
    rows = np.repeat(np.arange(f), m)
    cols = rng.integers(0, f, f * m)
    vals = rng.uniform(0.0, 0.9, f * m)
    n_pl = int(planted * f)
    perm = rng.permutation(f)
    rows = np.concatenate([rows, np.arange(n_pl)])
    cols = np.concatenate([cols, perm[:n_pl]])
    vals = np.concatenate([vals, rng.uniform(0.7, 1.0, n_pl)])
    key, first = np.unique(rows * f + cols, return_index=True)  # a repeated pair keeps its first value
    S = sp.csr_matrix((vals[first], (key // f, key % f)), shape=(f, f))

    def top_of(M: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        M = M.tocoo()
        order = np.lexsort((-M.data, M.row))
        r, c, v = M.row[order], M.col[order], M.data[order]
        start = np.searchsorted(r, np.arange(M.shape[0]))
        rank = np.arange(len(r)) - start[r]
        keep = rank < k
        idx = np.zeros((M.shape[0], k), dtype=np.int64)
        val = np.zeros((M.shape[0], k))  # missing entries: similarity 0 (never a candidate)
        idx[r[keep], rank[keep]], val[r[keep], rank[keep]] = c[keep], v[keep]
        return idx, val

    p_idx, p_r = top_of(S)
    c_idx, c_r = top_of(S.T.tocsr())
    return TopK(p_idx, p_r, c_idx, c_r), S


def bench_assign(f: int, k: int, dense_max: int, seed: int = 0) -> None:
    from scipy.optimize import linear_sum_assignment

    top, S = synthetic_topk(f, k, seed)
    tracemalloc.start()
    t0 = time.perf_counter()
    a = assign(top)
    t = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    n_pairs = int((a.a2b_idx >= 0).sum())
    print(f"assign (sparse LAPJVsp, candidate graph): {f} x {f}, k = {k}: {t:.2f} s, "
          f"peak traced memory {peak / 2**20:.0f} MiB, {n_pairs} pairs, total {a.total:.2f}")
    if f <= dense_max:
        tracemalloc.start()
        t0 = time.perf_counter()
        D = np.zeros((f, f))
        D[np.repeat(np.arange(f), top.p2c_idx.shape[1]), top.p2c_idx.ravel()] = top.p2c_r.ravel()
        D[top.c2p_idx.ravel(), np.repeat(np.arange(f), top.c2p_idx.shape[1])] = top.c2p_r.ravel()
        r, c = linear_sum_assignment(np.maximum(D, 0), maximize=True)
        t = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        total = float(np.maximum(D, 0)[r, c].sum())
        print(f"dense linear_sum_assignment on the same candidates: {t:.2f} s, peak traced memory "
              f"{peak / 2**20:.0f} MiB, total {total:.2f} (|difference| {abs(total - a.total):.1e})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=4096)
    ap.add_argument("--l0", type=float, default=30)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--assign", action="store_true", help="time the one-to-one rule instead")
    ap.add_argument("--dense-max", type=int, default=4096,
                    help="--assign: also run the dense linear_sum_assignment up to this many features")
    a = ap.parse_args()
    if a.assign:
        bench_assign(a.features, a.k, a.dense_max)
        return
    A = synthetic(a.tokens, a.features, a.l0, 0)
    B = synthetic(a.tokens, a.features, a.l0, 1)
    q = a.features // 4  # some exact matches, as after fine-tuning
    B = sp.hstack([A[:, :q] * 2, B[:, q:]], format="csc")

    t0 = time.perf_counter()
    top = pearson_topk(A, B, a.k)
    t_sparse = time.perf_counter() - t0
    t0 = time.perf_counter()
    p_dense, c_dense = dense_topk(A, B, a.k)
    t_dense = time.perf_counter() - t0
    err = max(np.abs(top.p2c_r - p_dense).max(), np.abs(top.c2p_r - c_dense).max())
    print(f"{a.features} x {a.features} features over {a.tokens} tokens (L0 {a.l0}), top-{a.k} both ways")
    print(f"sparse exact (backend.matching): {t_sparse:7.2f} s")
    print(f"dense z-scored torch baseline:   {t_dense:7.2f} s")
    print(f"speed-up vs baseline: {t_dense / t_sparse:.1f}x   max |r difference| {err:.2e} (float32 baseline)")


if __name__ == "__main__":
    main()
