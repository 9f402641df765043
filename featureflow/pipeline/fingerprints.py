"""Delta Activations: a model as the shift of its internal state against a base on fixed probes.

    h(x)      = the final hidden state after the final norm, at the last token of probe x
    delta(f)  = mean_i h_f(x_i) − mean_i h_b(x_i)          ("delta-hidden", the paper's embedding)

Variants stored beside it: "delta-mlp", the mean shift of `blocks.0.mlp.hook_post` over all probe
tokens, and "delta-logits", the mean shift of next-token log-probabilities over all probe tokens.
One batched forward pass per model over the probes (right padding; causal attention keeps every
probe's real tokens untouched by the padding).

Analyses: cosine similarity and nearest neighbours, silhouette on cosine distance (1 − cos) with
domain labels, a 2-D PCA map, additivity of merges along the SLERP sweep, and the base-SAE features
whose mean activation changes most between base and child.
"""

from __future__ import annotations

import numpy as np
import torch

from featureflow.pipeline.hooks import hooked

NEUTRAL_PROBES = [
    "The",
    "It is",
    "Here is a short example.",
    "This is the first line.",
    "Once",
    "We can see that",
    "1, 2, 3,",
    "The next part is",
    "Note:",
    "In this section we",
    "A",
    "Then",
    "# ",
    "It was a",
    "First, we",
    "Here",
]

# Instruction-style templates in the manner of the Delta Activations paper (our models are not
# instruction-tuned, so the neutral probes are the default).
INSTRUCTION_PROBES = [
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n\n### Response:",
    "Instruction: Answer the question.\nAnswer:",
    "Complete the following text.\n",
    "Task: continue the example below.\nExample:",
    "Question:\nAnswer:",
]

VARIANTS = ("delta-hidden", "delta-mlp", "delta-logits")


def probe_texts(probes: list[str] | None, probe_set: str) -> list[str]:
    if probes:
        return list(probes)
    return INSTRUCTION_PROBES if probe_set == "instruction" else NEUTRAL_PROBES


def encode_probes(tokenizer, probes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) right-padded; each probe keeps at least one token."""
    rows = [tokenizer(p, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id] for p in probes]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.eos_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


@torch.no_grad()
def probe_states(model, ids: torch.Tensor, mask: torch.Tensor, hook: str = "blocks.0.mlp.hook_post") -> dict:
    """Per-model means over the probes: last-token final hidden state, hook activations, log-probs."""
    lm = hooked(model)
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    final = "ln_final.hook_out"  # the final hidden state after the final norm (TransformerLens's name)
    logits, acts = lm.run(ids, [hook, final], attention_mask=mask)  # the one forward pass
    hidden = acts[final]
    last = mask.sum(1) - 1
    h_last = hidden[torch.arange(len(ids)), last].double()
    m = mask.unsqueeze(-1).double()
    mlp = (acts[hook].double() * m).sum((0, 1)) / m.sum()
    logp = torch.log_softmax(logits.double(), -1)
    logits = (logp * m).sum((0, 1)) / m.sum()
    return {"delta-hidden": h_last.mean(0).cpu().numpy(), "delta-mlp": mlp.cpu().numpy(),
            "delta-logits": logits.cpu().numpy(), "per_probe_hidden": h_last.cpu().numpy()}


def delta(child: dict, base: dict) -> dict[str, np.ndarray]:
    return {v: child[v] - base[v] for v in VARIANTS}


# ------------------------------------------------------------------------------------- analyses
def cosine_matrix(X: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(X, axis=1, keepdims=True)
    U = np.divide(X, n, out=np.zeros_like(X, dtype=float), where=n > 0)
    return U @ U.T


def silhouette_cosine(X: np.ndarray, labels: list[str]) -> float | None:
    """Mean silhouette with cosine distance d = 1 − cos (`sklearn.metrics.silhouette_score`: a sample alone in
    its cluster scores 0). None when there are fewer than 2 or as many clusters as samples."""
    from sklearn.metrics import silhouette_score

    if not 2 <= len(set(labels)) < len(labels):
        return None
    return float(silhouette_score(np.asarray(X, float), list(labels), metric="cosine"))


def pca_2d(X: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Coordinates on the first two principal components (`sklearn.decomposition.PCA`, its sign convention) and
    their explained-variance ratios; zeros where there is no variance to explain."""
    from sklearn.decomposition import PCA

    X = np.asarray(X, float)
    if len(X) < 2 or not np.any(X - X.mean(0)):
        return np.zeros((len(X), 2)), [0.0, 0.0]
    k = min(2, *X.shape)
    pca = PCA(n_components=k, svd_solver="full")
    coords = pca.fit_transform(X)
    ratio = pca.explained_variance_ratio_.tolist()
    return np.pad(coords, ((0, 0), (0, 2 - k))), ratio + [0.0] * (2 - k)


TSNE_MIN = 20  # fewer fingerprints than this: PCA only (t-SNE needs a neighbourhood to mean anything)


def tsne_2d(X: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """A 2-D t-SNE map on cosine distance, or None when there are fewer than TSNE_MIN points."""
    if len(X) < TSNE_MIN:
        return None
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(X) - 1) / 3)
    return TSNE(2, perplexity=perplexity, metric="cosine", init="random", random_state=seed).fit_transform(
        np.asarray(X, dtype=np.float64))


def nearest(names: list[str], C: np.ndarray, k: int = 3) -> dict[str, list[tuple[str, float]]]:
    out = {}
    for i, n in enumerate(names):
        order = [j for j in np.argsort(-C[i]) if j != i][:k]
        out[n] = [(names[j], float(C[i, j])) for j in order]
    return out


def additivity(d_merge: np.ndarray, d0: np.ndarray, d1: np.ndarray, t: float) -> dict[str, float | None]:
    """Compare delta(merge at t) with the interpolation (1 − t) d0 + t d1 and with the sum d0 + d1:
    cosine, and relative norm ||delta(merge)|| / ||prediction||."""
    out = {}
    for name, pred in (("interp", (1 - t) * d0 + t * d1), ("sum", d0 + d1)):
        nm, npred = np.linalg.norm(d_merge), np.linalg.norm(pred)
        out[f"cos_{name}"] = float(d_merge @ pred / (nm * npred)) if nm > 0 and npred > 0 else None
        out[f"rel_norm_{name}"] = float(nm / npred) if npred > 0 else None
    return out


def feature_shift(base_acts, child_acts) -> dict[str, np.ndarray]:
    """Per base-SAE feature: mean activation and firing rate on the sample, base vs child."""
    n = base_acts.shape[0]
    b_mean = np.asarray(base_acts.sum(0)).ravel() / n
    c_mean = np.asarray(child_acts.sum(0)).ravel() / n
    b_rate = np.diff(base_acts.tocsc().indptr) / n
    c_rate = np.diff(child_acts.tocsc().indptr) / n
    return {"base_mean": b_mean, "child_mean": c_mean, "delta_mean": c_mean - b_mean,
            "base_rate": b_rate, "child_rate": c_rate, "delta_rate": c_rate - b_rate}


# ------------------------------------------------------------------------------------ the stage
def fingerprint_run(cfg, members: dict, load_acts, cross_acts, tokenizer, device: str, pool: list[dict],
                    merge_inputs, out) -> None:
    """Compute everything the store's fingerprint tables hold; write fingerprints.json + vectors.npz.

    `members`: member -> its model folder; `load_acts(member)`: its sparse SAE activations on the shared sample;
    `cross_acts(sae_of, data_of)`: one member's SAE on another's activations over the same sample (the runner's
    `load_cross_acts`, one encode shared with transfer evidence); `tokenizer`: the family tokenizer; `pool`: extra
    fine-tunes [{name, domain, path}]; `merge_inputs`: what re-merging a merge member along its t sweep reads
    (`family.build.MemberInputs`)."""
    import time

    from featureflow.progress import progress as tqdm

    from featureflow.pipeline.artifacts import read_json, write_json
    from featureflow.pipeline.family.build import merge_recipe
    from featureflow.pipeline.family.model import load_model

    t0 = time.time()
    fcfg = cfg.fingerprints
    order = cfg.topological_order()
    root = cfg.roots()[0]
    probes = probe_texts(fcfg.probes, fcfg.probe_set)
    ids, mask = encode_probes(tokenizer, probes)
    hook = cfg.sae.hook
    states = {}
    for n in tqdm(order, desc="fingerprint members", unit="model", dynamic_ncols=True):
        states[n] = probe_states(load_model(members[n], device), ids, mask, hook)
    base_of = {n: fcfg.base.get(n, root) for n in order}
    entities = []  # (entity, kind, model, t, base, label, vectors)

    def label(n: str) -> str:
        return "+".join(cfg.own_domains(n))

    for n in order:
        if n != base_of[n]:
            entities.append({"entity": n, "kind": "member", "model": n, "t": None, "base": base_of[n],
                             "label": label(n), "vec": delta(states[n], states[base_of[n]]),
                             "per_probe": states[n]["per_probe_hidden"] - states[base_of[n]]["per_probe_hidden"]})
    for p in tqdm(pool, desc="fingerprint pool", unit="model", dynamic_ncols=True, disable=not pool):
        st = probe_states(load_model(p["path"], device), ids, mask, hook)
        entities.append({"entity": p["name"], "kind": "pool", "model": p["name"], "t": None, "base": root,
                         "label": p["domain"], "vec": delta(st, states[root]),
                         "per_probe": st["per_probe_hidden"] - states[root]["per_probe_hidden"]})
    additivity_rows = []
    for n in order:
        m = cfg.member(n)
        if m.make != "merge":
            continue
        curve = read_json(members[n] / "merge_curve.json")
        p0, p1 = m.parents
        recipe = merge_recipe(merge_inputs, m)  # the member's own mergekit merge, t left open
        m0 = load_model(members[p0])
        b = base_of[n]
        d0, d1 = delta(states[p0], states[b]), delta(states[p1], states[b])
        for t in tqdm(sorted({pt["t"] for pt in curve["points"]}), desc=f"fingerprint sweep {n}", unit="t",
                      dynamic_ncols=True):
            m0.load_state_dict(recipe.state_dict(t))
            st = probe_states(m0.to(device), ids, mask, hook)
            dv = delta(st, states[b])
            entities.append({"entity": f"{n}@t={t:.4f}", "kind": "sweep", "model": n, "t": t, "base": b,
                             "label": label(n), "vec": dv, "per_probe": None})
            for v in VARIANTS:
                additivity_rows.append({"model": n, "t": t, "variant": v, **additivity(dv[v], d0[v], d1[v], t)})

    # analyses over members + pool (the sweep points are a curve, not a population)
    pop = [e for e in entities if e["kind"] in ("member", "pool")]
    names = [e["entity"] for e in pop]
    labels = [e["label"] for e in pop]
    stats, sims, maps, probe_counts, neighbours = [], [], [], [], []
    for v in VARIANTS:
        X = np.stack([e["vec"][v] for e in pop]) if pop else np.zeros((0, 1))
        C = cosine_matrix(X) if len(pop) else np.zeros((0, 0))
        coords, ratio = pca_2d(X) if len(pop) else (np.zeros((0, 2)), [0.0, 0.0])
        stats.append({"variant": v, "silhouette": silhouette_cosine(X, labels) if len(pop) > 2 else None,
                      "n": len(pop), "n_labels": len(set(labels)), "pca_var1": ratio[0], "pca_var2": ratio[1],
                      "convention": "cosine distance = 1 - cos; silhouette mean over members and pool"})
        sims += [{"variant": v, "a": a, "b": b, "cos": float(C[i, j])} for i, a in enumerate(names)
                 for j, b in enumerate(names)]
        maps += [{"variant": v, "method": "pca", "entity": n, "x": float(coords[i, 0]), "y": float(coords[i, 1])}
                 for i, n in enumerate(names)]
        tsne = tsne_2d(X, cfg.seed) if len(pop) else None
        if tsne is not None:
            maps += [{"variant": v, "method": "tsne", "entity": n, "x": float(tsne[i, 0]), "y": float(tsne[i, 1])}
                     for i, n in enumerate(names)]
        neighbours += [{"variant": v, "entity": n, "rank": r, "other": o, "cos": c}
                       for n, lst in nearest(names, C).items() for r, (o, c) in enumerate(lst)]
    n_probes = len(probes)
    full = np.stack([e["per_probe"].mean(0) for e in pop]) if pop else None
    for k in sorted({1, 2, 4, n_probes}):
        if k > n_probes or not pop:
            continue
        Xk = np.stack([e["per_probe"][:k].mean(0) for e in pop])
        cos_to_full = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) if np.linalg.norm(a) * np.linalg.norm(b) > 0
                       else None for a, b in zip(Xk, full)]
        valid = [c for c in cos_to_full if c is not None]
        probe_counts.append({"variant": "delta-hidden", "k": k,
                             "silhouette": silhouette_cosine(Xk, labels) if len(pop) > 2 else None,
                             "mean_cos_to_all": float(np.mean(valid)) if valid else None})

    # features behind each member's fingerprint, through its base's SAE
    behind = []
    base_acts: dict = {}  # each base's activations are read once, however many children it has
    for n in order:
        b = base_of[n]
        if n == b:
            continue
        child_acts = cross_acts(b, n)  # its base's SAE on its activations
        if b not in base_acts:
            base_acts[b] = load_acts(b)
        sh = feature_shift(base_acts[b], child_acts)
        for by, col in (("mean", "delta_mean"), ("rate", "delta_rate")):
            top = np.argsort(-np.abs(sh[col]), kind="stable")[: fcfg.top_features]
            behind += [{"model": n, "base": b, "rank_by": by, "rank": r, "feature": int(f),
                        **{k: float(sh[k][f]) for k in sh}} for r, f in enumerate(top)]

    np.savez(out / "vectors.npz", **{f"{e['entity']}|{v}": e["vec"][v] for e in entities for v in VARIANTS})
    write_json(out / "fingerprints.json", {
        "probes": probes, "probe_set": fcfg.probe_set if not fcfg.probes else "custom",
        "entities": [{k: e[k] for k in ("entity", "kind", "model", "t", "base", "label")} |
                     {"norms": {v: float(np.linalg.norm(e["vec"][v])) for v in VARIANTS}} for e in entities],
        "stats": stats, "similarity": sims, "map": maps, "neighbours": neighbours, "probe_counts": probe_counts,
        "additivity": additivity_rows, "features_behind": behind, "seconds": round(time.time() - t0, 2)})
