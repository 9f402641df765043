"""Crosscoders scored on the planted family: the same truth the matching scorecard reads (`planted.edge_truth`).

Per planted edge a crosscoder (`pipeline/crosscoder.py`) trains on the parent's and the child's activations at
the same positions of the family's training pool and encodes the shared sample. Its latents are resolved to
planted features the way an SAE's are (`planted.latent_truth`: Hungarian on |cos|, at `truth_min_cos`): on the
parent side by their parent decoder direction (latents the rule calls shared or parent-only), on the child side
by their child direction (shared or child-only). A shared latent is a **persisting** call for its parent feature
and an **inherited** call for its child feature; a parent-only latent a **disappearing** call, a child-only one an
**emerging** call. Precision: of the latents so called (and resolved), the share whose feature has that fate in
truth. Recall: of the planted features with that fate, the share some latent calls so. (The matching scorecard
counts SAE latents on both sides; a crosscoder's latents are not an SAE's, so recall is over planted features.)

Modes: `crosscoder-batchtopk` and `crosscoder-l1` call by relative norm (`exclusive_below`), and
`crosscoder-batchtopk+ls` keeps an exclusive call only where Latent Scaling agrees that the other model does
not carry the latent's direction (nu_r and nu_e below `NU_MAX`), else calls it shared.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from featureflow.config import CrosscoderConfig
from featureflow.pipeline.crosscoder import (NU_MAX, call_latents, classify, decoder_cosine, encode_pairs, latent_scaling,
                                             relative_norm, train_crosscoder)

log = logging.getLogger("featureflow")
MODES = {"crosscoder-batchtopk": ("batchtopk", False), "crosscoder-batchtopk+ls": ("batchtopk", True),
         "crosscoder-l1": ("l1", False), "crosscoder-l1+ls": ("l1", True)}
CALLS = {"persisting": ("parent", "shared"), "disappearing": ("parent", "parent-only"),
         "inherited": ("child", "shared"), "emerging": ("child", "child-only")}


def paired_batches(fam, parent: str, child: str, pool, rows: int, seed: int):
    """Endless (parent, child) activation batches at the same `rows` positions of `pool` (order fixed by `seed`)."""
    rng = np.random.default_rng(seed)
    while True:
        pos = pool[rng.integers(0, pool.shape[0], rows)]
        yield fam.activations(parent, pos), fam.activations(child, pos)


def edge_crosscoder(fam, parent: str, child: str, pool, sample, cfg: CrosscoderConfig, seed: int) -> dict:
    """Train one edge's crosscoder and measure every latent on the shared sample: norms, relative norm, cosine,
    firing rate, Latent Scaling, and the class its relative norm gives."""
    d = fam.cfg.d
    cc, _ = train_crosscoder(paired_batches(fam, parent, child, pool, cfg.batch, seed), d, cfg, seed)
    xp, xc = fam.activations(parent, sample), fam.activations(child, sample)
    F = encode_pairs(cc, xp, xc)
    norms = cc.norms()
    rho = relative_norm(norms)
    fires = (F > 0).mean(0)
    alive = fires > 0
    rho = np.where(alive, rho, np.nan)  # a latent that never fires on the sample has no class
    ls = latent_scaling(cc, xp, xc, F)
    with torch.no_grad():
        recon = cc.decode(torch.from_numpy(F))
    return {"cc": cc, "F": F, "norms": norms, "rho": rho, "cos": decoder_cosine(cc), "fires": fires,
            "scaling": ls, "cls": classify(rho, cfg.exclusive_below),
            "mse": [float(((r - x) ** 2).sum(-1).mean()) for r, x in zip(recon, (xp, xc))],
            "l0": float((F > 0).sum(1).mean())}


def calls_of(m: dict, use_scaling: bool) -> np.ndarray:
    return call_latents(m["cls"], m["scaling"] if use_scaling else None)


def score_edge(m: dict, cls: np.ndarray, truth: dict, pm, cm, min_cos: float) -> dict:
    """Tallies [correct calls, calls, found, support] per fate of one edge under one mode."""
    from featureflow.pipeline.planted import latent_truth

    W = m["cc"].W_dec.detach().double().numpy()
    out = {}
    for side, dirs, labels, col in (("parent", pm.dirs, truth["parent"], 0), ("child", cm.dirs, truth["child"], 1)):
        own = "parent-only" if side == "parent" else "child-only"
        use = np.flatnonzero(np.isin(cls, ("shared", own)))
        row = np.full(len(cls), -1)
        if len(use):
            row[use] = latent_truth(W[use, col], dirs, min_cos)[0]
        for fate, (s, called) in CALLS.items():
            if s != side:
                continue
            hit = (cls == called) & (row >= 0)
            right = hit & (labels[np.maximum(row, 0)] == fate)
            out[fate] = [int(right.sum()), int(hit.sum()), len(set(row[right].tolist())), int((labels == fate).sum())]
    return out


def score_crosscoders(fam, pool, sample, base: CrosscoderConfig, min_cos: float, seed: int = 0) -> dict:
    """Every mode on every planted edge: precision / recall per fate (summed over edges), per edge, and what the
    latents look like (relative norms' histogram, exclusive share, Latent Scaling of exclusive latents by truth)."""
    from featureflow.pipeline.planted import edge_truth

    def prf(t):
        correct, calls, found, support = t
        p = correct / calls if calls else None
        r = found / support if support else None
        f1 = 2 * p * r / (p + r) if p and r else None
        return {"precision": p, "recall": r, "f1": f1, "calls": calls, "support": support}

    trained = {}
    out: dict = {"modes": {}, "per_edge": {}, "latents": {}, "config": base.model_dump(mode="json"), "nu_max": NU_MAX}
    for mode, (arch, scaling) in MODES.items():
        tot = {f: [0, 0, 0, 0] for f in CALLS}
        for i, (p, c) in enumerate(fam.edges):
            key = (arch, p, c)
            if key not in trained:
                trained[key] = edge_crosscoder(fam, p, c, pool, sample, base.model_copy(update={"architecture": arch}),
                                               seed * 1009 + i)
                m = trained[key]
                tr = edge_truth(fam.members[p], fam.members[c])
                m["truth"] = tr
                log.info("planted crosscoder %s %s->%s: L0 %.1f, MSE %.4f / %.4f, %d parent-only, %d child-only of %d",
                         arch, p, c, m["l0"], *m["mse"], int((m["cls"] == "parent-only").sum()),
                         int((m["cls"] == "child-only").sum()), int(np.isfinite(m["rho"]).sum()))
            m = trained[key]
            t = score_edge(m, calls_of(m, scaling), m["truth"], fam.members[p], fam.members[c], min_cos)
            for f, v in t.items():
                tot[f] = [a + b for a, b in zip(tot[f], v)]
            out["per_edge"].setdefault(mode, {})[f"{p}->{c}"] = {f: prf(v) for f, v in t.items()}
        out["modes"][mode] = {f: prf(v) for f, v in tot.items()}
    for (arch, p, c), m in trained.items():
        rho = m["rho"][np.isfinite(m["rho"])]
        hist, _ = np.histogram(rho, bins=10, range=(0, 1))
        out["latents"][f"{arch}:{p}->{c}"] = {
            "alive": int(len(rho)), "l0": m["l0"], "mse": m["mse"], "rho_hist": hist.tolist(),
            "parent_only": int((m["cls"] == "parent-only").sum()), "child_only": int((m["cls"] == "child-only").sum()),
            "median_nu_e_exclusive": _median(m["scaling"]["nu_e"][np.isin(m["cls"], ("parent-only", "child-only"))])}
    return out


def _median(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else None


def format_crosscoders(card: dict, matching: dict | None = None) -> str:
    """The crosscoder modes' precision / recall per fate, beside the matching modes' (same truth) when given."""
    lines = ["crosscoders (precision / recall; recall over planted features):"]
    rows = dict(card["modes"])
    for mode, fates in (matching or {}).items():
        rows[mode] = fates
    lines.append(f"  {'mode':<26}" + "".join(f"{f:>22}" for f in CALLS))
    for mode, fates in rows.items():
        cells = []
        for f in CALLS:
            v = fates.get(f, {})
            p, r = v.get("precision"), v.get("recall")
            cells.append(f"{'-' if p is None else f'{p:.3f}':>10} / {'-' if r is None else f'{r:.3f}':<9}")
        lines.append(f"  {mode:<26}" + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


__all__ = ["MODES", "edge_crosscoder", "format_crosscoders", "score_crosscoders"]
