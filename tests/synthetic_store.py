"""A small store built from synthetic rows through the schema's own DDL: no pipeline, no torch, well under a
second. The explorer's fast tests run on it; `SyntheticRun` keeps the arrays it was made from, so a test can count
what a page should show from them (numpy, not the store's SQL).

The family is a diamond: `base` (root) -> `left`, `right` (fine-tunes) -> `merged` (their merge), 4 edges.
Each model has `F` features over a sample of `W` windows of `C` tokens. A child feature is either a noisy copy of
a parent feature (under a permutation, so matches rarely pair equal indices) or new; the last feature of every
model never fires (dead). Matches are the exact Pearson r of the dense activations (and the cosine of synthetic
decoder directions), top-k in both directions; the one-to-one rule is scipy's assignment over them. `base` has a
seed replica for the noise floor. Token texts include markup, whitespace and hidden characters.

Run as a script to write a store: `python tests/synthetic_store.py out.duckdb`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from featureflow.store.schema import SCHEMA_VERSION, create_tables
from featureflow.store.writers import insert

F, W, C, V, TOP_K = 12, 12, 16, 28, 3
N = W * C
THRESHOLD = 0.8
MODELS = [  # name, make, parents, domains
    ("base", "train", [], ["code", "prose"]),
    ("left", "finetune", ["base"], ["code"]),
    ("right", "finetune", ["base"], ["prose"]),
    ("merged", "merge", ["left", "right"], ["code", "prose"]),
]
SIMILARITIES = ("pearson", "decoder")
MODES = ["pearson", "pearson-1to1", "decoder"]
TEXTS = ["=", " the", "<b>", "&amp;", "\n", "  ", "\t", "end", "local", "def", "\u200b", "e\u0301", "\u202e",
         "'", '"', "x", "(", ")", ":", " cat", " dog", "1", "2", "..", "~=", "\ufffd", "<script>", "ok"]
VARIANTS = ("delta-hidden", "delta-mlp", "delta-logits")
# Every page of the explorer on this store (each also has its JSON twin under /api), and the API docs.
PAGES = ["/", "/?mode=decoder&threshold=0.5", "/?mode=pearson-1to1", "/floors", "/edges/base/left?fate=persisting",
         "/edges/left/merged?fate=emerging", "/models/base/features/1", "/models/merged/features/3/examples",
         "/models/base/features/11", "/compare?a=base:1&b=left:2", "/merge", "/models", "/models/left",
         "/autointerp", "/cases", "/cases/equals", "/cases/missing", "/features",
         "/features?fate=persisting&model=base", "/evidence"]
DOCS = ["/docs", "/redoc", "/openapi.json", "/api/schema"]


@dataclass
class SyntheticRun:
    path: Path
    acts: dict[str, np.ndarray] = field(default_factory=dict)        # model -> (N, F) activations
    decoders: dict[str, np.ndarray] = field(default_factory=dict)    # model -> (F, 8) unit decoder rows
    sim: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)  # (sim, parent, child) -> (F, F)
    assign: dict[tuple[str, str, str], dict[str, dict[int, tuple[int, float] | None]]] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    floor_r: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (sim, rule) -> base's replica r (nan: none)
    tokens: np.ndarray | None = None
    evidence: dict[tuple[str, str, int], float] = field(default_factory=dict)  # (parent, child, feature) -> its 'colr' r
    split: tuple[int, int, int] | None = None  # (base feature, left feature, left feature): the planted split
    split_ev: dict[tuple[str, str, str], dict] = field(default_factory=dict)  # (kind, parent, child) -> measures

    def events(self, threshold: float, mode: str, parent: str, child: str) -> dict[str, np.ndarray]:
        """Split / absorbed parent features and absorbing / split-part child features of one edge, counted here from
        the split evidence as the store's rule reads it (`flows.EVENT`, `flows.FATE`, written out in
        `oracles.split_event`): an event whatever its match; a part of the other side's event when it is no event
        itself and does not persist into a feature other than one it is a part of."""
        from oracles import split_event, split_owners

        out = {}
        for d, kind, other, names in (("p2c", "split", "absorption", ("split", "absorbed")),
                                      ("c2p", "absorption", "split", ("absorbing", "split_part"))):
            mine = split_event(self.split_ev[(kind, parent, child)], threshold)
            owners = split_owners(self.split_ev[(other, parent, child)], threshold)
            in_other = np.isin(np.arange(F), list(owners))
            out[names[0]] = mine
            out[names[1]] = ~self.persists(threshold, mode, parent, child, d) & ~mine & in_other
        return out

    def persists(self, threshold: float, mode: str, parent: str, child: str, direction: str) -> np.ndarray:
        """Per source feature: its match persists on one edge (`flows.PERSISTS`): r above `threshold`, the feature no
        event of its side's split evidence, and its partner no feature it is a part of (`flows.FATE`)."""
        from oracles import split_event, split_owners

        kind, other = ("split", "absorption") if direction == "p2c" else ("absorption", "split")
        r = self.partner_r(mode, parent, child, direction)
        if (kind, parent, child) not in self.split_ev:
            return r > threshold
        owners = split_owners(self.split_ev[(other, parent, child)], threshold)
        partner = self.partner(mode, parent, child, direction)
        own = np.array([partner[i] in owners.get(i, ()) for i in range(F)])
        return (r > threshold) & ~split_event(self.split_ev[(kind, parent, child)], threshold) & ~own

    def alive(self, model: str) -> np.ndarray:
        return (self.acts[model] > 0).any(axis=0)

    def partner_r(self, mode: str, parent: str, child: str, direction: str) -> np.ndarray:
        """Per source feature: its match r under `mode` on one edge (-inf where unassigned)."""
        return self.partners(mode, parent, child, direction)[1]

    def partner(self, mode: str, parent: str, child: str, direction: str) -> np.ndarray:
        """Per source feature: its partner on the other side under `mode` (-1 where unassigned)."""
        return self.partners(mode, parent, child, direction)[0]

    def partners(self, mode: str, parent: str, child: str, direction: str) -> tuple[np.ndarray, np.ndarray]:
        """Per source feature on one edge under `mode`: its partner (-1 where unassigned) and their r (-inf)."""
        sim, rule = (mode[:-5], "1to1") if mode.endswith("-1to1") else (mode, "best")
        if rule == "best":
            s = self.sim[(sim, parent, child)]
            s = s if direction == "p2c" else s.T
            return s.argmax(axis=1), s.max(axis=1)
        got = self.assign[(sim, parent, child)][direction]
        return (np.array([-1 if got[i] is None else got[i][0] for i in range(F)]),
                np.array([-np.inf if got[i] is None else got[i][1] for i in range(F)]))

    def expected_floor(self, threshold: float, mode: str) -> float:
        """The noise floor of `base` (the one replicated member): share of its alive features matched above
        `threshold` in its seed replica."""
        sim, rule = (mode[:-5], "1to1") if mode.endswith("-1to1") else (mode, "best")
        r = np.nan_to_num(self.floor_r[(sim, rule)], nan=-np.inf)
        return float((r[self.alive("base")] > threshold).mean())

    def expected_flows(self, threshold: float, mode: str) -> dict[tuple[str, str], dict[str, int]]:
        """Persisting / disappearing / inherited / emerging per edge, counted here in numpy (disappearing and
        emerging leave out the features the split evidence calls split, absorbed, absorbing or split parts)."""
        out = {}
        for p, c in self.edges:
            ap, ac = self.alive(p), self.alive(c)
            ev = self.events(threshold, mode, p, c)
            down, up = self.persists(threshold, mode, p, c, "p2c"), self.persists(threshold, mode, p, c, "c2p")
            out[(p, c)] = {"persisting": int((ap & down).sum()),
                           "disappearing": int((ap & ~down & ~ev["split"] & ~ev["absorbed"]).sum()),
                           "inherited": int((ac & up).sum()),
                           "emerging": int((ac & ~up & ~ev["absorbing"] & ~ev["split_part"]).sum())}
        return out


def _pearson_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact Pearson r between every column of a and every column of b (0 where either never varies)."""
    a, b = a - a.mean(0), b - b.mean(0)
    na, nb = np.sqrt((a * a).sum(0)), np.sqrt((b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a.T @ b) / np.outer(na, nb)
    return np.nan_to_num(np.clip(r, -1, 1))


def _assignment(s: np.ndarray) -> dict[str, dict[int, tuple[int, float] | None]]:
    """One-to-one assignment of maximum total similarity over the top-k candidates of both directions."""
    from scipy.optimize import linear_sum_assignment

    cand = np.zeros_like(s, dtype=bool)
    top_p = np.argsort(-s, axis=1)[:, :TOP_K]
    top_c = np.argsort(-s, axis=0)[:TOP_K, :]
    cand[np.arange(F)[:, None], top_p] = True
    cand[top_c, np.arange(F)[None, :]] = True
    cost = np.where(cand, -s, 1e6)
    rows, cols = linear_sum_assignment(cost)
    p2c: dict[int, tuple[int, float] | None] = {i: None for i in range(F)}
    c2p: dict[int, tuple[int, float] | None] = {i: None for i in range(F)}
    for i, j in zip(rows, cols):
        if cand[i, j]:
            p2c[int(i)], c2p[int(j)] = (int(j), float(s[i, j])), (int(i), float(s[i, j]))
    return {"p2c": p2c, "c2p": c2p}


def _sparse(rng: np.random.Generator, rate: float = 0.15) -> np.ndarray:
    return np.where(rng.random(N) < rate, rng.gamma(2.0, 1.0, N), 0.0)


def synthesize(seed: int = 0) -> tuple[SyntheticRun, dict[str, list[dict]]]:
    """The arrays and every table's rows (table -> list of dicts; columns a table lacks are dropped on insert)."""
    rng = np.random.default_rng(seed)
    run = SyntheticRun(path=Path())
    tokens = rng.integers(0, V, N)
    run.tokens = tokens
    names = [m[0] for m in MODELS]
    run.edges = [(p, name) for name, _, parents, _ in MODELS for p in parents]
    for name, make, parents, _ in MODELS:
        a = np.zeros((N, F))
        dec = rng.normal(size=(F, 8))
        if not parents:
            for f in range(F - 1):
                a[:, f] = _sparse(rng)
        else:
            perm = rng.permutation(F - 1)
            keep = rng.random(F - 1) < 0.6  # copied from a parent feature, else new
            for f in range(F - 1):
                p = parents[f % len(parents)]
                if keep[f]:
                    noise = rng.normal(0, 0.05 + 0.4 * rng.random(), N)
                    a[:, f] = np.maximum(run.acts[p][:, perm[f]] * (1 + noise), 0)
                    dec[f] = run.decoders[p][perm[f]] + rng.normal(0, 0.2, 8)
                else:
                    a[:, f] = _sparse(rng)
        run.acts[name] = a
        run.decoders[name] = dec / np.linalg.norm(dec, axis=1, keepdims=True)
    # one planted split on base -> left: a base feature no left feature copies, split over two new left features by
    # token parity (no random draw, so every other array is as before); the `split` evidence below finds it
    r_bl = _pearson_matrix(run.acts["base"], run.acts["left"])
    fp = int(np.flatnonzero(np.nan_to_num(r_bl, nan=0).max(axis=1)[:F - 1] < 0.3)[0])
    j1, j2 = (int(j) for j in np.flatnonzero(np.nan_to_num(r_bl, nan=0).max(axis=0)[:F - 1] < 0.3)[:2])
    even = np.arange(N) % 2 == 0
    run.acts["left"][:, j1] = np.where(even, run.acts["base"][:, fp], 0)
    run.acts["left"][:, j2] = np.where(~even, run.acts["base"][:, fp], 0)
    run.split = (fp, j1, j2)
    replica = np.maximum(run.acts["base"] * (1 + rng.normal(0, 0.5, (N, F))), 0)
    for f in np.flatnonzero(rng.random(F - 1) < 0.5):  # half the seed replica's features are other features
        replica[:, f] = _sparse(rng)
    for p, c in run.edges:
        run.sim[("pearson", p, c)] = _pearson_matrix(run.acts[p], run.acts[c])
        run.sim[("decoder", p, c)] = np.clip(run.decoders[p] @ run.decoders[c].T, -1, 1)
        for s in SIMILARITIES:
            run.assign[(s, p, c)] = _assignment(run.sim[(s, p, c)])

    t: dict[str, list[dict]] = {}
    t["schema_version"] = [{"version": SCHEMA_VERSION, "created_at": "2026-12-01 12:00:00"}]
    stages = {"corpora": 0.4, "tokenizer": 0.3, "models": 5.1, "saes": 3.2, "sample": 0.2, "activations": 0.9,
              "matching": 0.5, "floors": 0.3, "autointerp": 0.4, "cases": 0.1, "fingerprints": 1.2}
    t["runs"] = [{"name": "synthetic", "description": "synthetic rows for the explorer's tests",
                  "config_json": json.dumps({"name": "synthetic"}), "device": "cpu",
                  "timings_json": json.dumps({"stages": stages, "calls": stages,
                                              "hardware": {"cpu": "synthetic", "cores": 2, "gpu": None,
                                                           "python": "3.11", "torch": None, "device": "cpu"}}),
                  "default_threshold": THRESHOLD, "top_k": TOP_K, "modes": MODES, "default_mode": MODES[0],
                  "shared_init": False, "sample_tokens": N, "sample_context": C, "hook": "blocks.0.mlp.hook_post",
                  "inputs_key": "synthetic"}]
    domains = ["code" if w % 2 == 0 else "prose" for w in range(W)]
    t["domains"] = [{"domain": d, "source": "generated", "train_docs": 10, "val_docs": 2, "train_tokens": 1000,
                     "val_tokens": 200, "sample_windows": domains.count(d)} for d in ("code", "prose")]
    t["models"] = [{"model": n, "label": n.capitalize(), "idx": i, "make": make, "domains": doms, "seed": i,
                    "train_tokens": 1000 * (i + 1), "train_steps": 10, "merge_t": 0.5 if make == "merge" else None,
                    "seconds": 1.0 + i, "hidden": 8, "d_mlp": 32, "heads": 2, "vocab": V, "d_sae": F}
                   for i, (n, make, _, doms) in enumerate(MODELS)]
    t["model_edges"] = [{"parent": p, "child": c, "make": dict((m[0], m[1]) for m in MODELS)[c]} for p, c in run.edges]
    t["model_eval"] = [{"model": n, "domain": d, "loss": float(2 + rng.random()), "accuracy": float(rng.random())}
                       for n in names for d in ("code", "prose")]
    t["training_curves"] = [{"model": n, "step": s, "tokens": 100 * s, "lr": 1e-3, "train_loss": 3.0 - 0.1 * s,
                             "domain": d, "val_loss": 3.1 - 0.1 * s, "val_accuracy": 0.05 * s}
                            for n, make, _, _ in MODELS if make != "merge" for s in range(1, 6) for d in ("code", "prose")]
    grid = [0.0, 0.25, 0.5, 0.75, 1.0]
    t["slerp_meta"] = [{"model": "merged", "parent0": "left", "parent1": "right", "t": 0.5, "t_mode": "auto",
                        "t_star": 0.5, "crossed": True, "t_grid_interpolated": 0.5, "grid_step": 0.25,
                        "tolerance": 0.005, "t_direction": "t = 0 is Left, t = 1 is Right",
                        "curve_domains_json": json.dumps({"left": ["code"], "right": ["prose"]})}]
    t["slerp_curve"] = [{"model": "merged", "t": x, "source": "grid", "domain": d,
                         "loss": 2 + (x if d == "code" else 1 - x), "accuracy": (1 - x if d == "code" else x) * 0.5}
                        for x in grid for d in ("code", "prose")]
    t["slerp_baselines"] = [{"model": "merged", "root": "base", "domain": d, "loss": 2.5, "accuracy": 0.3}
                            for d in ("code", "prose")]
    alive = {n: run.alive(n) for n in names}
    t["sae_metrics"] = [{"model": n, "hook": "blocks.0.mlp.hook_post", "d_in": 32, "d_sae": F, "recipe": "paper-text",
                         "architecture": "standard", "k": None, "target_l0": None, "seed": 100 + i,
                         "replicas": 1 if n == "base" else 0, "l1_coefficient": 1e-3, "training_tokens": 5000,
                         "l0": float((run.acts[n] > 0).sum(1).mean()), "mse": 0.01, "explained_variance": 0.8,
                         "dead_features": int((~alive[n]).sum()), "dead_fraction": float((~alive[n]).mean()),
                         "ce_clean": 2.0, "ce_sae": 2.2, "ce_zero": 3.0, "loss_recovered": 0.8,
                         "loss_recovered_scope": "own domains", "loss_recovered_all": 0.75, "eval_tokens": 500,
                         "seconds": 1.0} for i, n in enumerate(names)]
    t["sae_replicas"] = [{"model": "base", "replica": r, "seed": 100 + 7 * r, "l1_coefficient": 1e-3, "l0": 2.0,
                          "mse": 0.01, "explained_variance": 0.8, "dead_features": 1, "loss_recovered": 0.8}
                         for r in (0, 1)]
    t["sae_health_domains"] = [{"model": n, "domain": d, "l0": 2.0, "mse": 0.01, "explained_variance": 0.8,
                                "ce_clean": 2.0, "ce_sae": 2.2, "ce_zero": 3.0, "loss_recovered": 0.8}
                               for n in names for d in ("code", "prose")]
    t["sae_training"] = [{"model": n, "step": s, "tokens": 100 * s, "loss": 1.0 / s, "mse": 0.5 / s, "l1": 0.5 / s,
                          "l0": 10.0 / s} for n in names for s in range(1, 6)]
    t["vocab"] = [{"token_id": i, "text": TEXTS[i]} for i in range(V)]
    t["sample_tokens"] = [{"token_index": i, "window_idx": i // C, "position": i % C, "domain": domains[i // C],
                           "token_id": int(tokens[i])} for i in range(N)]

    # features and their tables
    t["features"], t["feature_histograms"], t["feature_top_tokens"], t["feature_logits"] = [], [], [], []
    t["examples"], t["activation_values"], t["explanations"] = [], [], []
    for n in names:
        a = run.acts[n]
        for f in range(F):
            x = a[:, f]
            on = x > 0
            totals = np.bincount(tokens, weights=x, minlength=V)
            counts = np.bincount(tokens[on], minlength=V)
            top = int(totals.argmax()) if on.any() else None
            t["features"].append({
                "model": n, "feature": f, "density": float(on.mean()), "n_active": int(on.sum()),
                "max_act": float(x.max()), "mean_act": float(x.mean()),
                "mean_when_active": float(x[on].mean()) if on.any() else 0.0, "alive": bool(on.any()),
                "top_token_id": top, "top_token_share": float(totals[top] / x.sum()) if on.any() else None,
                "top_token_llr": float(rng.normal(2, 1)) if on.any() else None})
            if not on.any():
                continue
            edges, hcounts = np.histogram(x[on], bins=6)
            t["feature_histograms"].append({"model": n, "feature": f, "edges": edges.tolist(),
                                            "counts": hcounts.tolist()})
            for rank, tok in enumerate(np.argsort(-totals)[:4]):
                if totals[tok] > 0:
                    t["feature_top_tokens"].append({"model": n, "feature": f, "rank": rank, "token_id": int(tok),
                                                    "count": int(counts[tok]),
                                                    "mean_act": float(totals[tok] / max(counts[tok], 1)),
                                                    "total_act": float(totals[tok])})
            for sign in ("+", "-"):
                for rank in range(3):
                    t["feature_logits"].append({"model": n, "feature": f, "sign": sign, "rank": rank,
                                                "token_id": int(rng.integers(V)),
                                                "value": float((3 - rank) * (1 if sign == "+" else -1))})
            windows = x.reshape(W, C)
            order = np.argsort(-windows.max(1), kind="stable")
            for rank, w in enumerate(order[:3]):
                if windows[w].max() > 0:
                    t["examples"].append(_example(n, f, "top", rank, w, windows[w]))
            fired = [w for w in range(W) if windows[w].max() > 0]
            for q, w in enumerate(sorted(fired, key=lambda w: windows[w].max())[:2]):
                t["examples"].append(_example(n, f, f"q{q}", 0, w, windows[w]))
            t["activation_values"] += [{"model": n, "feature": f, "token_index": int(i), "act": float(x[i])}
                                       for i in np.flatnonzero(on)]
            ok = f != 0
            t["explanations"].append({
                "model": n, "feature": f, "explainer": "offline-top-tokens", "simulator": "offline-token-lookup",
                "explanation": f"fires on {TEXTS[top]!r} <em>tokens</em>" if ok else None,
                "explanation_json": json.dumps({"top": TEXTS[top]}), "sim_score": float(rng.random()) if ok else None,
                "detection_score": float(rng.random()) if ok else None, "sim_scale": "pearson r",
                "detection_scale": "balanced accuracy", "quantisation": "none", "n_explain": 3, "n_score": 4,
                "status": "ok" if ok else "failed", "reason": None if ok else "no examples to explain"})
    t["autointerp_spend"] = [{"model": n, "mode": "offline", "llm_model": None, "calls": 0, "cached_calls": 0,
                              "prompt_tokens": 0, "completion_tokens": 0, "usd": 0.0} for n in names]

    # noise floor: base replica 0 against replica 1
    t["noise_floor"] = []
    rep_dec = run.decoders["base"] + rng.normal(0, 0.5, run.decoders["base"].shape)
    rep_dec /= np.linalg.norm(rep_dec, axis=1, keepdims=True)
    rep_sim = {"pearson": _pearson_matrix(run.acts["base"], replica), "decoder": run.decoders["base"] @ rep_dec.T}
    for s, m in rep_sim.items():
        assign = _assignment(m)["p2c"]
        run.floor_r[(s, "best")] = m.max(axis=1)
        run.floor_r[(s, "1to1")] = np.array([np.nan if assign[f] is None else assign[f][1] for f in range(F)])
        for f in range(F):
            for rule, r in (("best", float(m[f].max())),
                            ("1to1", None if assign[f] is None else assign[f][1])):
                t["noise_floor"].append({"model": "base", "replica": 1, "similarity": s, "rule": rule, "feature": f,
                                         "alive": bool(alive["base"][f]), "r": r})

    # matches and assignments
    t["matches"], t["assignments"] = [], []
    for (s, p, c), m in run.sim.items():
        for direction, mat in (("p2c", m), ("c2p", m.T)):
            for src in range(F):
                for rank, dst in enumerate(np.argsort(-mat[src], kind="stable")[:TOP_K]):
                    t["matches"].append({"similarity": s, "parent": p, "child": c, "direction": direction,
                                         "src": src, "rank": rank, "dst": int(dst), "r": float(mat[src, dst])})
            for src, got in run.assign[(s, p, c)][direction].items():
                t["assignments"].append({"similarity": s, "parent": p, "child": c, "direction": direction,
                                         "src": src, "dst": None if got is None else got[0],
                                         "r": None if got is None else got[1]})

    # a case: the token '=' and the base feature with the most activation on it
    eq = TEXTS.index("=")
    on_eq = tokens == eq
    root = int(np.argmax([run.acts["base"][on_eq, f].sum() for f in range(F)]))
    t["cases"] = [{"slug": "equals", "title": "The '=' feature", "description": "assignment <b>tokens</b>",
                   "hypothesis": "=", "root_model": "base", "root_feature": root, "root_llr": 2.5,
                   "root_coverage": float((run.acts["base"][on_eq, root] > 0).mean()), "descendants": None,
                   "status": "ok", "reason": None},
                  {"slug": "missing", "title": "A token nobody fires on", "description": "none",
                   "hypothesis": "zzz", "root_model": None, "root_feature": None, "root_llr": None,
                   "root_coverage": None, "descendants": None, "status": "failed",
                   "reason": "token 'zzz' is not in the vocabulary"}]
    t["case_llrs"] = [{"slug": "equals", "model": n, "feature": f, "llr": float(rng.normal(1, 1))}
                      for n in names for f in range(F) if (run.acts[n][on_eq, f] > 0).any()]

    # fingerprints
    ents = [("left", "member", "left", None), ("right", "member", "right", None), ("merged", "member", "merged", None),
            ("pool-code-0", "pool", None, None), ("pool-prose-0", "pool", None, None),
            ("merged@0.25", "sweep", "merged", 0.25), ("merged@0.75", "sweep", "merged", 0.75)]
    vecs = {e[0]: rng.normal(size=6) for e in ents}
    t["fingerprints"] = [{"entity": e, "kind": k, "model": m, "t": tt, "base": "base", "label": e, "variant": v,
                          "norm": float(np.linalg.norm(vecs[e])), "vector": vecs[e].tolist()}
                         for e, k, m, tt in ents for v in VARIANTS]
    fp = [e for e, k, _, _ in ents if k in ("member", "pool")]
    cos = {(a, b): float(vecs[a] @ vecs[b] / np.linalg.norm(vecs[a]) / np.linalg.norm(vecs[b])) for a in fp for b in fp}
    t["fingerprint_similarity"] = [{"variant": v, "a": a, "b": b, "cos": c} for v in VARIANTS for (a, b), c in cos.items()]
    t["fingerprint_neighbours"] = [{"variant": v, "entity": a, "rank": r, "other": b, "cos": cos[(a, b)]}
                                   for v in VARIANTS for a in fp
                                   for r, b in enumerate(sorted((b for b in fp if b != a), key=lambda b: -cos[(a, b)]))]
    t["fingerprint_map"] = [{"variant": v, "method": "pca", "entity": e, "x": float(vecs[e][0]), "y": float(vecs[e][1])}
                            for v in VARIANTS for e in fp]
    t["fingerprint_stats"] = [{"variant": v, "silhouette": 0.1, "n": len(fp), "n_labels": 2, "pca_var1": 0.4,
                               "pca_var2": 0.3, "convention": "cosine distance"} for v in VARIANTS]
    t["fingerprint_probe_counts"] = [{"variant": v, "k": k, "silhouette": 0.05 * k, "mean_cos_to_all": 0.2 * k}
                                     for v in VARIANTS for k in (1, 2, 4)]
    t["fingerprint_additivity"] = [{"model": "merged", "t": x, "variant": v, "cos_interp": 0.9, "rel_norm_interp": 0.2,
                                    "cos_sum": 0.8, "rel_norm_sum": 0.5} for v in VARIANTS for x in (0.25, 0.75)]
    t["fingerprint_features"] = [{"model": n, "base": "base", "rank_by": by, "rank": r, "feature": r, "base_mean": 0.1,
                                  "child_mean": 0.2 + r, "delta_mean": 0.1 + r, "base_rate": 0.1, "child_rate": 0.2,
                                  "delta_rate": 0.1} for n in names[1:] for by in ("mean", "rate") for r in range(3)]

    # evidence: one kind, parent side, on every edge: the column Pearson of the parent's activations with the child's
    # (a stand-in with real numbers; NaN, left out of the store, where either never varies)
    import json as _json

    t["evidence_kinds"] = [{"kind": "colr", "label": "column r", "side": "parent", "reads": ["activations"],
                            "doc": "synthetic <b>evidence</b>",
                            "measures_json": _json.dumps([{"name": "r", "label": "column r", "doc": "same column"}])}]
    t["evidence"] = []
    for p, c in run.edges:
        a, b = run.acts[p], run.acts[c]
        for f in range(F):
            if a[:, f].std() > 0 and b[:, f].std() > 0:
                r = float(np.corrcoef(a[:, f], b[:, f])[0, 1])
                run.evidence[(p, c, f)] = r
                t["evidence"].append({"kind": "colr", "parent": p, "child": c, "feature": f, "measure": "r", "value": r})
    # the split evidence (featureflow/evidence/split.py) on every edge, as the pipeline's evidence stage writes it
    import scipy.sparse as _sp

    from featureflow.evidence.split import ABSORPTION, SPLIT, reproduced_by_several

    for kind in (SPLIT, ABSORPTION):
        t["evidence_kinds"].append({"kind": kind.name, "label": kind.label, "side": kind.side, "reads": list(kind.reads),
                                    "doc": kind.doc, "measures_json": _json.dumps(
                                        [{"name": m.name, "label": m.label, "doc": m.doc, "feature": m.feature}
                                         for m in kind.measures])})
        for p, c in run.edges:
            a, b = (run.acts[p], run.acts[c]) if kind.side == "parent" else (run.acts[c], run.acts[p])
            values = run.split_ev[(kind.name, p, c)] = reproduced_by_several(_sp.csc_matrix(a), _sp.csc_matrix(b))
            for name, v in values.items():
                t["evidence"] += [{"kind": kind.name, "parent": p, "child": c, "feature": f, "measure": name,
                                   "value": float(x)} for f, x in enumerate(v) if np.isfinite(x)]

    return run, t


def _example(model: str, f: int, kind: str, rank: int, w: int, acts: np.ndarray) -> dict:
    start = w * C
    return {"model": model, "feature": f, "kind": kind, "rank": rank, "center": start + int(acts.argmax()),
            "start": start, "end": start + C, "acts": acts.astype(np.float32).tolist()}


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def build(path: str | Path, seed: int = 0) -> SyntheticRun:
    """Write the synthetic store to `path` through the schema's DDL and the store's own writer (by column name: a
    column the schema lacks is an error, not a silent drop); returns the arrays it came from."""
    path = Path(path)
    run, tables = synthesize(seed)
    run.path = path
    con = duckdb.connect(str(path))
    try:
        create_tables(con)
        for table, rows in tables.items():
            if rows:
                insert(con, table, pa.Table.from_pylist([{c: _py(v) for c, v in r.items()} for r in rows]))
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return run


if __name__ == "__main__":
    build(sys.argv[1])
    print(sys.argv[1])
