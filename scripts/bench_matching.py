"""Benchmark: exact Pearson top-k matching of one edge, the fast engine against the naive sparse product.

`pearson_topk_cpu` (the compiled row kernel, every core) and, with CUDA, `pearson_topk_torch`, against
`pearson_topk_blockwise` (SciPy's sparse product S = Aᵀ B in child-column blocks, then dense NumPy), all
measured in this run on the same synthetic activations (L0 about 30, exponential values, a quarter of the
child's features copies of the parent's). Prints seconds, the ratio, the largest |r| difference, and the
process's peak resident memory after each engine (ru_maxrss: a high-water mark, so it only grows).

    python scripts/bench_matching.py --tokens 3000000 --features 16384
    python scripts/bench_matching.py --tokens 300000 --features 16384 --no-reference

`--assign` instead times the one-to-one rule (`featureflow.pipeline.matching.assign`) on synthetic TopK arrays:
seconds and traced peak memory (tracemalloc, which sees NumPy's and SciPy's array allocations), against
a dense `scipy.optimize.linear_sum_assignment` on max(S, 0) where that fits (`--dense-max`).

    python scripts/bench_matching.py --assign --features 16384 --k 10
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import scipy.sparse as sp
import torch

from featureflow.pipeline.matching import TopK, assign, pearson_topk_blockwise, pearson_topk_cpu, pearson_topk_torch


def synthetic(n: int, f: int, l0: float, seed: int) -> sp.csc_matrix:
    """n tokens x f features, about l0 active per token at uniformly random features, exponential values
    (float32). Built from random coordinates in O(nnz): a repeated coordinate is summed once."""
    rng = np.random.default_rng(seed)
    nnz = int(n * l0)
    rows = rng.integers(0, n, nnz, dtype=np.int64)
    cols = rng.integers(0, f, nnz, dtype=np.int32)
    vals = rng.exponential(1.0, nnz).astype(np.float32)
    m = sp.csc_matrix((vals, (rows, cols)), shape=(n, f))
    m.sum_duplicates()
    return m


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
    ap.add_argument("--no-reference", action="store_true", help="skip the slow naive engine")
    ap.add_argument("--dense-max", type=int, default=4096,
                    help="--assign: also run the dense linear_sum_assignment up to this many features")
    a = ap.parse_args()
    if a.assign:
        bench_assign(a.features, a.k, a.dense_max)
        return
    import resource

    def peak_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    t0 = time.perf_counter()
    A = synthetic(a.tokens, a.features, a.l0, 0)
    B = synthetic(a.tokens, a.features, a.l0, 1)
    q = a.features // 4  # some exact matches, as after fine-tuning
    B = sp.hstack([A[:, :q] * 2, B[:, q:]], format="csc")
    print(f"{a.features} x {a.features} features over {a.tokens} tokens (L0 {a.l0}, {A.nnz + B.nnz:,} non-zeros), "
          f"top-{a.k} both ways, {torch.get_num_threads()} threads; inputs built in {time.perf_counter() - t0:.1f} s, "
          f"peak RSS {peak_mib():,.0f} MiB", flush=True)
    pearson_topk_cpu(A[:1000, :64], B[:1000, :64], a.k)  # compile (or load the cached kernel) outside the timing
    t0 = time.perf_counter()
    fast = pearson_topk_cpu(A, B, a.k, desc="cpu kernel")
    t_fast = time.perf_counter() - t0
    print(f"cpu kernel (pearson_topk_cpu):          {t_fast:8.2f} s   peak RSS {peak_mib():,.0f} MiB", flush=True)
    if torch.cuda.is_available():
        t0 = time.perf_counter()
        gpu = pearson_topk_torch(A, B, a.k, device="cuda")
        t_gpu = time.perf_counter() - t0
        err = max(np.abs(gpu.p2c_r - fast.p2c_r).max(), np.abs(gpu.c2p_r - fast.c2p_r).max())
        print(f"cuda (pearson_topk_torch):              {t_gpu:8.2f} s   max |r difference| vs cpu {err:.1e}")
    if a.no_reference:
        return
    t0 = time.perf_counter()
    ref = pearson_topk_blockwise(A, B, a.k, desc="reference")
    t_ref = time.perf_counter() - t0
    err = max(np.abs(ref.p2c_r - fast.p2c_r).max(), np.abs(ref.c2p_r - fast.c2p_r).max())
    same = (ref.p2c_idx == fast.p2c_idx).mean()
    print(f"naive sparse product (blockwise SciPy): {t_ref:8.2f} s   peak RSS {peak_mib():,.0f} MiB")
    print(f"speed-up vs the naive sparse product: {t_ref / t_fast:.1f}x   max |r difference| {err:.1e}, "
          f"same top-k indices {100 * same:.2f}%")


if __name__ == "__main__":
    main()
