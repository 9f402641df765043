"""Transfer evidence (Kissane et al. 2024, "SAEs (usually) transfer between base and chat models"): the parent's
SAE encodes the child's activations on the shared sample; a parent feature's **transfer r** is the Pearson r,
over the sample's tokens, between its activations on the parent and its activations on the child. It does not
depend on the child's SAE having learnt the feature: a feature the child's own SAE missed but the child still
computes keeps a high transfer r, one the child lost does not."""

from __future__ import annotations

import numpy as np

from featureflow.evidence import Evidence, Measure, register_evidence
from featureflow.modes import rule_with_doubt


def column_pearson(A, B) -> np.ndarray:
    """Pearson r of each column of A with the same column of B (sparse or dense, same shape); NaN where either
    column never varies."""
    import scipy.sparse as sp

    n = A.shape[0]

    def colsum(X):
        return np.asarray(X.sum(axis=0), dtype=np.float64).ravel()

    mul = (lambda X, Y: X.multiply(Y)) if sp.issparse(A) else (lambda X, Y: np.multiply(X, Y))
    A = A.astype(np.float64)
    B = B.astype(np.float64)
    ma, mb = colsum(A) / n, colsum(B) / n
    cov = colsum(mul(A, B)) / n - ma * mb
    va, vb = colsum(mul(A, A)) / n - ma ** 2, colsum(mul(B, B)) / n - mb ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(va * vb)
    r[(va <= 1e-12 * np.maximum(ma ** 2, 1)) | (vb <= 1e-12 * np.maximum(mb ** 2, 1))] = np.nan
    return np.clip(r, -1.0, 1.0)


def _compute(edge) -> dict:
    return {"r": column_pearson(edge.acts(edge.parent), edge.cross_acts(edge.parent, edge.child))}


def separation(r: np.ndarray, truth, kept: str, gone: str) -> dict:
    """How well r separates latents whose planted truth is `kept` (positive) from `gone`: ROC AUC (scikit-learn)
    over the latents of either truth with an r, and the median r and count of each."""
    from sklearn.metrics import roc_auc_score

    truth = np.asarray(truth)
    ok = np.isfinite(r) & np.isin(truth, (kept, gone))
    pos, neg = ok & (truth == kept), ok & (truth == gone)
    auc = float(roc_auc_score(pos[ok], r[ok])) if pos.any() and neg.any() else None
    return {"auc": auc, f"median_{kept}": float(np.median(r[pos])) if pos.any() else None,
            f"median_{gone}": float(np.median(r[neg])) if neg.any() else None,
            f"n_{kept}": int(pos.sum()), f"n_{gone}": int(neg.sum())}


def _score(values: dict, truth) -> dict:
    """Planted persisting against disappearing parent features (`separation`)."""
    return separation(values["r"], truth, "persisting", "disappearing")


TRANSFER = register_evidence(Evidence(
    name="transfer", label="transfer r (the parent's SAE on the child)", side="parent",
    measures=(Measure("r", "transfer r", "Pearson r of the feature's activations from the parent's SAE on the "
                                          "parent and on the child, over the shared sample"),),
    reads=("activations", "cross_activations"), compute=_compute, score=_score,
    doc="the parent's SAE applied to the child's activations (Kissane et al. 2024)"))


# Modes `<similarity>+transfer` and `<similarity>-1to1+transfer`: the base rule's matches, with transfer as evidence
# that can disagree. A parent feature persists where it matches a child feature above the threshold, or where the
# parent's SAE still finds it in the child (transfer r > KEEP); it disappears only where transfer agrees that it is
# gone (r <= TAU, or NaN: it never fires on the child); between the two, or where it fires fewer than MIN_EVENTS
# times on the shared sample (too rare to judge), it is *uncertain*. A child feature likewise: inherited, emerging,
# uncertain origin, by the child's SAE on the parent (reverse transfer). Chosen on the planted scorecard of three
# shapes, checked on two more (`python scripts/sweep_transfer_tau.py`, README "Planted truth"): TAU 0.3 has the best
# disappearing and emerging precision at full recall (0.2 loses emerging recall, 0.4 and above disappearing
# precision); KEEP 0.5 lifts persisting recall from 0.74-0.91 to 0.97-0.99 at precision 0.997 or more (0.6 leaves
# 6% uncertain on one shape, 0.4 costs inherited precision); MIN_EVENTS 10 leaves uncertain the near-dead latents
# (1-2 firings in 20,000) whose transfer r is 0 by chance, the misses that held one shape's disappearing precision
# at 0.83.
TAU = 0.3
KEEP = 0.5
MIN_EVENTS = 10
for _base in ("best", "1to1"):
    rule_with_doubt(_base, {"p2c": "transfer", "c2p": "reverse-transfer"}, TAU, "transfer",
                    "with transfer evidence",
                    "a feature persists where it matches above the threshold or the other model's activations carry "
                    "it strongly (transfer r), disappears / emerges only where they do not carry it at all, and is "
                    "uncertain between (or where it fires too rarely to judge)",
                    keep_tau=KEEP, min_events=MIN_EVENTS)
