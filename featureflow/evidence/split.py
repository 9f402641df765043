"""Split and absorption evidence: is a feature reproduced by several features of the other model together?

A parent feature that fine-tuning splits into two narrower ones (each firing on part of its contexts) matches
neither part above the threshold: on half of its events each, a part's Pearson r with it is about 0.7 at best
(1/sqrt(2)), and less for three parts. Matching one feature to one feature reads that as "disappearing". This kind
fits the feature's activations, over the shared sample, with a non-negative least-squares combination of its
`CANDIDATES` most correlated features on the other side (scipy's `nnls` on the covariance, so only sums of
products over the sparse activations are formed) and writes, per feature:

- `fit_r`: Pearson r between the feature and the fit (>= `single_r`: the best candidate alone is a feasible fit);
- `single_r`: its best single candidate's Pearson r (its best match under activation Pearson);
- `parts`: how many candidates carry at least `PART_SHARE` of the fit (their weighted covariance with the feature);
- `part_1` ... `part_3`: those parts, largest share first (NaN where fewer);
- `overlap`: how often the first two parts fire together, as a share of the rarer one's firing. A split's parts
  fire in different contexts; two latents the other model's SAE learnt for one feature (a duplicate pair) fire
  together, so an event needs `overlap` at most `MAX_OVERLAP`.

The store's fate rule (`store/flows.py`, `EVENT`) calls a parent feature **split** on an edge where it has two or
more parts that rarely fire together and either
- its fit exceeds the page's threshold and no single part does (the first rule), or exceeds it by `GAIN` more than
  its best part does (a part above the threshold that leaves a tenth of the fit to the others: the halves of a
  split that a merge interpolated close together, where one child latent still catches much of both), or
- its fit exceeds the threshold less `SLACK` and its best part carries at most `BALANCE` of the fit's r (two
  balanced parts: equal halves put the best at 1/sqrt(2) = 0.71 of the fit, whatever the noise in the child's SAE
  that lowers both).
A split is the feature's fate even where one part alone matches it above the threshold (`flows.FATE`); the parts
are the child features it split into. `GAIN`, `SLACK` and `BALANCE` were chosen on planted shapes A-E and checked
on three more (README, "Planted truth"). The reverse, a child feature reproduced by several parent features
together, is an **absorption** (kind `absorption`, the child's side), read by the same rule. Both are read from
activations whatever the matching mode.
"""

from __future__ import annotations

import numpy as np

from featureflow.evidence import Evidence, Measure, register_evidence

CANDIDATES = 5     # the other side's most correlated features a fit may combine
PART_SHARE = 0.15  # a part carries at least this share of the fit's covariance with the feature
MAX_PARTS = 3      # parts listed per feature (`part_1` ...)
MAX_OVERLAP = 0.5  # a split's (absorption's) first two parts fire together at most this often (`overlap`)
GAIN = 0.1         # a fit above the threshold is a split where it beats its best single part by this
SLACK = 0.1        # a fit of balanced parts (`BALANCE`) is a split where it reaches the threshold less this
BALANCE = 0.78     # ... balanced: the best single part's r at most this share of the fit's r
BLOCK = 1024       # features per block of the cross-covariance
# the rule `flows.EVENT` applies, in words (the explorer's /method and the report print it)
RULE_TEXT = (f"several features of the other model together reproduce it (a non-negative least-squares fit), two or "
             f"more carrying a share of the fit and rarely firing together, and either the fit exceeds the threshold "
             f"while no single one does or beats the best one by {GAIN}, or the parts are balanced (the best one's r "
             f"at most {BALANCE} of the fit's) and the fit is within {SLACK} of the threshold")


def _moments(A) -> tuple[np.ndarray, np.ndarray]:
    """Column means and variances of a sparse (tokens x features) matrix."""
    n = A.shape[0]
    mean = np.asarray(A.sum(axis=0), dtype=np.float64).ravel() / n
    sq = np.asarray(A.multiply(A).sum(axis=0), dtype=np.float64).ravel() / n
    return mean, np.maximum(sq - mean ** 2, 0.0)


def reproduced_by_several(A, B) -> dict[str, np.ndarray]:
    """For each column of A (tokens x features, sparse), the NNLS fit of it by its `CANDIDATES` most correlated
    columns of B over the same rows: {fit_r, single_r, parts, part_1 .. part_MAX_PARTS}, NaN for a column that
    never varies or has no correlated candidate."""
    import scipy.sparse as sp
    from scipy.optimize import nnls

    A = sp.csc_matrix(A, dtype=np.float64)
    B = sp.csc_matrix(B, dtype=np.float64)
    n, fa = A.shape
    ma, va = _moments(A)
    mb, vb = _moments(B)
    out = {k: np.full(fa, np.nan) for k in ("fit_r", "single_r", "parts", "overlap",
                                            *(f"part_{i + 1}" for i in range(MAX_PARTS)))}
    fires = (B != 0).astype(np.float64).tocsc()
    sb = np.sqrt(vb)
    BT = B.T.tocsr()
    for a0 in range(0, fa, BLOCK):
        a1 = min(fa, a0 + BLOCK)
        # covariance of this block of A's columns with every column of B: (block x fb)
        cov = np.asarray((BT @ A[:, a0:a1]).T.todense()) / n - np.outer(ma[a0:a1], mb)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = cov / (np.sqrt(va[a0:a1])[:, None] * sb[None, :])
        r[:, vb <= 1e-12] = -np.inf
        k = min(CANDIDATES, r.shape[1])
        top = np.argpartition(-r, k - 1, axis=1)[:, :k] if k else np.zeros((a1 - a0, 0), dtype=int)
        for i in range(a1 - a0):
            f = a0 + i
            if va[f] <= 1e-12:
                continue
            cand = top[i][np.isfinite(r[i, top[i]]) & (r[i, top[i]] > 0)]
            if not len(cand):
                continue
            cand = cand[np.argsort(-r[i, cand])]
            Bc = B[:, cand]
            G = np.asarray((Bc.T @ Bc).todense()) / n - np.outer(mb[cand], mb[cand])  # candidates' covariance
            h = cov[i, cand]
            # min_w>=0 |a - Bc w|^2 (centred) = w'Gw - 2h'w + const = |L'w - L^-1 h|^2 + const, G = LL'
            L = np.linalg.cholesky(G + 1e-9 * np.trace(G) / len(cand) * np.eye(len(cand)))
            w, _ = nnls(L.T, np.linalg.solve(L, h))
            fit_var = float(w @ G @ w)
            share = w * h
            out["single_r"][f] = float(r[i, cand[0]])
            out["fit_r"][f] = float(share.sum() / np.sqrt(va[f] * fit_var)) if fit_var > 0 else float(r[i, cand[0]])
            total = share.sum()
            idx = np.flatnonzero((share >= PART_SHARE * total) & (w > 0)) if total > 0 else np.zeros(0, dtype=int)
            parts = cand[idx[np.argsort(-share[idx])]]
            out["parts"][f] = len(parts)
            for j, p in enumerate(parts[:MAX_PARTS]):
                out[f"part_{j + 1}"][f] = p
            if len(parts) >= 2:
                x, y = fires[:, parts[0]], fires[:, parts[1]]
                out["overlap"][f] = float(x.multiply(y).sum()) / max(1.0, min(float(x.sum()), float(y.sum())))
    out["fit_r"] = np.clip(np.maximum(out["fit_r"], out["single_r"]), -1.0, 1.0)
    return out


def _split(edge) -> dict:
    return reproduced_by_several(edge.acts(edge.parent), edge.acts(edge.child))


def _absorption(edge) -> dict:
    return reproduced_by_several(edge.acts(edge.child), edge.acts(edge.parent))


def _scorer(positive: str):
    def score(values: dict, truth) -> dict:
        """How well the fit's gain over the best single match separates planted `positive` latents from the
        rest (ROC AUC, scikit-learn), and their median fit r and part counts."""
        from sklearn.metrics import roc_auc_score

        truth = np.asarray(truth)
        gain = values["fit_r"] - values["single_r"]
        ok = np.isfinite(gain) & (truth != "unresolved")
        pos = ok & (truth == positive)
        auc = float(roc_auc_score(pos[ok], gain[ok])) if pos.any() and (ok & ~pos).any() else None
        return {"auc_gain": auc, f"n_{positive}": int(pos.sum()),
                f"median_fit_r_{positive}": float(np.median(values["fit_r"][pos])) if pos.any() else None,
                f"median_parts_{positive}": float(np.median(values["parts"][pos])) if pos.any() else None}
    return score


def _measures(side: str, other: str) -> tuple[Measure, ...]:
    return (Measure("fit_r", "fit r", f"Pearson r of the feature with the non-negative least-squares fit of it by its "
                                      f"{CANDIDATES} most correlated {other} features"),
            Measure("single_r", "best single r", f"Pearson r with its most correlated {other} feature"),
            Measure("parts", "parts", f"{other} features carrying at least {PART_SHARE:.0%} of the fit (the first "
                                      f"{MAX_PARTS} are listed)", count=True),
            Measure("overlap", "parts' overlap", "how often its first two parts fire together, as a share of the "
                                                 "rarer one's firing"),
            *(Measure(f"part_{i + 1}", f"part {i + 1}", f"the {other} feature carrying the fit's "
                                                        f"{['largest', 'second', 'third'][i]} share", feature=True)
              for i in range(MAX_PARTS)))


SPLIT = register_evidence(Evidence(
    name="split", label="split (a fit by several child features)", side="parent",
    measures=_measures("parent", "child"), reads=("activations",), compute=_split, score=_scorer("split"),
    doc="a parent feature reproduced by several child features together: a non-negative least-squares fit over "
        "its most correlated child features"))

ABSORPTION = register_evidence(Evidence(
    name="absorption", label="absorption (a fit by several parent features)", side="child",
    measures=_measures("child", "parent"), reads=("activations",), compute=_absorption,
    score=_scorer("absorption"),
    doc="a child feature reproduced by several parent features together: split's reverse"))
