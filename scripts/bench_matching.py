"""Benchmark: exact sparse Pearson top-k (backend.matching) against a dense z-scored torch matmul.

Both compute the same top-k over the same synthetic activations (L0 about 30, exponential values);
prints seconds, peak extra memory estimate and the speed ratio measured in this run.

    python scripts/bench_matching.py --tokens 100000 --features 4096
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp
import torch

from backend.matching import pearson_topk


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=4096)
    ap.add_argument("--l0", type=float, default=30)
    ap.add_argument("--k", type=int, default=5)
    a = ap.parse_args()
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
