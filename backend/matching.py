"""Exact Pearson correlation of every parent feature with every child feature, from sparse statistics.

For activations A (N x Fa) and B (N x Fb) over the same N tokens:

    r_ij = (S_ij / N − μ_i ν_j) / (σ_i τ_j),   S = Aᵀ B (a sparse product), μ, σ / ν, τ the column
    means and standard deviations (population), all in float64.

It is exact, not approximated: only the co-occurrence sums are needed, and they come from the sparse
product. The child side is processed in column blocks so memory stays at Fa x block. A feature that
never fires has σ = 0; its correlations are defined as 0 (never NaN).

`method="token-type"` reproduces the released code's variant: rows are first averaged per token type,
then the same engine correlates across token types.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm


@dataclass
class TopK:
    """Top-k matches in both directions: parent -> child (Fa x k) and child -> parent (Fb x k)."""

    p2c_idx: np.ndarray
    p2c_r: np.ndarray
    c2p_idx: np.ndarray
    c2p_r: np.ndarray


def column_moments(m: sp.csc_matrix) -> tuple[np.ndarray, np.ndarray]:
    n = m.shape[0]
    s1 = np.asarray(m.sum(axis=0), dtype=np.float64).ravel()
    s2 = np.asarray(m.multiply(m).sum(axis=0), dtype=np.float64).ravel()
    mu = s1 / n
    var = np.maximum(s2 / n - mu * mu, 0.0)
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


def pearson_topk(A: sp.spmatrix, B: sp.spmatrix, k: int, block_size: int = 2048, desc: str = "match") -> TopK:
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"activations cover different token counts: {A.shape[0]} vs {B.shape[0]}")
    A = sp.csc_matrix(A, dtype=np.float64)
    B = sp.csc_matrix(B, dtype=np.float64)
    Fa, Fb = A.shape[1], B.shape[1]
    mu_a, sd_a = column_moments(A)
    mu_b, sd_b = column_moments(B)
    At = A.T.tocsr()
    ka, kb = min(k, Fb), min(k, Fa)
    p_idx = np.zeros((Fa, 0), dtype=np.int64)
    p_val = np.zeros((Fa, 0))
    c_idx = np.empty((Fb, kb), dtype=np.int64)
    c_val = np.empty((Fb, kb))
    for j0 in tqdm(range(0, Fb, block_size), desc=desc, unit="block", dynamic_ncols=True):
        j1 = min(Fb, j0 + block_size)
        r = correlation_block(At, B[:, j0:j1], mu_a, sd_a, mu_b[j0:j1], sd_b[j0:j1])
        ci, cv = _top_k_rows(r.T, kb)
        c_idx[j0:j1], c_val[j0:j1] = ci, cv
        pi, pv = _top_k_rows(r, min(ka, j1 - j0))
        # merge this block's best children into each parent's running top-k
        cand_idx = np.concatenate([p_idx, pi + j0], axis=1)
        cand_val = np.concatenate([p_val, pv], axis=1)
        sel, _ = _top_k_rows(cand_val, ka)
        p_idx = np.take_along_axis(cand_idx, sel, axis=1)
        p_val = np.take_along_axis(cand_val, sel, axis=1)
    return TopK(p_idx, p_val, c_idx, c_val)


def token_type_means(acts: sp.csc_matrix, token_ids: np.ndarray, vocab: int) -> sp.csc_matrix:
    """Rows = token types present in the sample, values = mean activation per type (the released code's input)."""
    present, inv = np.unique(token_ids, return_inverse=True)
    counts = np.bincount(inv).astype(np.float64)
    P = sp.csr_matrix((1.0 / counts[inv], (inv, np.arange(len(token_ids)))), shape=(len(present), len(token_ids)))
    return (P @ acts).tocsc()


# ------------------------------------------------------------------------------- fates & lineage
def classify(best_r: np.ndarray, alive: np.ndarray, threshold: float) -> np.ndarray:
    """Per feature: 'matched' when its best match exceeds the threshold, else 'unmatched'; 'dead' when it
    never fires in the sample (a dead feature is neither persisting, emerging nor disappearing)."""
    out = np.where(best_r > threshold, "matched", "unmatched").astype(object)
    out[~alive] = "dead"
    return out


def flow_counts(parent_best: np.ndarray, parent_alive: np.ndarray, child_best: np.ndarray,
                child_alive: np.ndarray, threshold: float) -> dict[str, int]:
    """One edge's flows: parent features persisting / disappearing, child features inherited / emerging."""
    p = classify(parent_best, parent_alive, threshold)
    c = classify(child_best, child_alive, threshold)
    return {
        "persisting": int((p == "matched").sum()),
        "disappearing": int((p == "unmatched").sum()),
        "inherited": int((c == "matched").sum()),
        "emerging": int((c == "unmatched").sum()),
        "parent_dead": int((p == "dead").sum()),
        "child_dead": int((c == "dead").sum()),
        "parent_alive": int(parent_alive.sum()),
        "child_alive": int(child_alive.sum()),
    }


def trace_origins(order: list[str], parents: dict[str, list[str]], best_parent: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
                  alive: dict[str, np.ndarray], threshold: float) -> dict[str, dict[str, np.ndarray]]:
    """For every feature of every model, follow its best persisting parent match upward.

    `best_parent[(parent, child)] = (idx, r)`: each child feature's best parent feature on that edge.
    Returns per model: `origin_model` (index into `order`), `origin_feature`, `depth` (hops to the
    origin), `parent_model` / `parent_feature` / `parent_r` of the first hop (-1 when none).
    A feature's origin is the model where its chain of persisting matches starts: the root for a
    feature carried all the way, or the model where it emerged.
    """
    res: dict[str, dict[str, np.ndarray]] = {}
    for mi, m in enumerate(order):
        F = len(alive[m])
        o_model = np.full(F, mi)
        o_feat = np.arange(F)
        depth = np.zeros(F, dtype=np.int64)
        pm = np.full(F, -1)
        pf = np.full(F, -1)
        pr = np.full(F, np.nan)
        # best over all parents of the hop
        best_val = np.full(F, -np.inf)
        for p in parents[m]:
            idx, r = best_parent[(p, m)]
            better = r > best_val
            best_val = np.where(better, r, best_val)
            pm = np.where(better, order.index(p), pm)
            pf = np.where(better, idx, pf)
        if parents[m]:
            pr = best_val
            link = (best_val > threshold) & alive[m]
            for pi in np.unique(pm[link]):
                sel = link & (pm == pi)
                up = res[order[pi]]
                o_model[sel] = up["origin_model"][pf[sel]]
                o_feat[sel] = up["origin_feature"][pf[sel]]
                depth[sel] = up["depth"][pf[sel]] + 1
        res[m] = {"origin_model": o_model, "origin_feature": o_feat, "depth": depth,
                  "parent_model": pm, "parent_feature": pf, "parent_r": pr}
    return res
