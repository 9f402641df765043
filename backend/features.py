"""The shared token sample, sparse feature activations over it, and per-feature statistics.

Every model sees the same sample: `tokens` of shape (windows, context), windows drawn in equal
numbers from every domain of the run. A model's SAE activations over it are kept sparse, as a
SciPy CSC matrix of shape (windows * context, d_sae): token index t = window * context + position.
A dense tokens x features matrix is never built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from .config import SampleConfig
from .sae import SparseAutoencoder, activations


# --------------------------------------------------------------------------------- the sample
def draw_sample(streams: dict[str, np.ndarray], cfg: SampleConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens (W, C) int32, domain index per window (W,) int16): non-overlapping windows, equal per domain."""
    per_domain = max(1, cfg.tokens // cfg.context // len(streams))
    rng = np.random.default_rng(seed)
    rows, doms = [], []
    for d_i, (name, s) in enumerate(streams.items()):
        n_chunks = len(s) // cfg.context
        if n_chunks < 1:
            raise ValueError(f"domain '{name}' has {len(s)} tokens, fewer than one sample window of {cfg.context}")
        take = np.sort(rng.choice(n_chunks, size=min(per_domain, n_chunks), replace=False))
        for c in take:
            rows.append(np.asarray(s[c * cfg.context:(c + 1) * cfg.context], dtype=np.int32))
        doms += [d_i] * len(take)
    return np.stack(rows), np.asarray(doms, dtype=np.int16)


@torch.no_grad()
def encode_sample(model, sae: SparseAutoencoder, tokens: np.ndarray, hook: str, batch_size: int = 64,
                  desc: str = "encode") -> sp.csc_matrix:
    """Run model + SAE over the sample; return sparse activations (tokens, features) as float32 CSC."""
    device = next(model.parameters()).device
    sae = sae.to(device)
    W, C = tokens.shape
    rows, cols, vals = [], [], []
    for i in tqdm(range(0, W, batch_size), desc=desc, unit="batch", dynamic_ncols=True):
        x = activations(model, torch.from_numpy(tokens[i:i + batch_size].astype(np.int64)), hook)
        f = sae.encode(x.reshape(-1, x.shape[-1]))
        r, c = torch.nonzero(f, as_tuple=True)
        rows.append((r + i * C).cpu().numpy().astype(np.int64))
        cols.append(c.cpu().numpy().astype(np.int32))
        vals.append(f[r, c].cpu().numpy().astype(np.float32))
    m = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(W * C, sae.d_sae))
    return m.tocsc()


# -------------------------------------------------------------------------------- statistics
@dataclass
class FeatureStats:
    density: np.ndarray    # (F,) share of sample tokens where the feature fires
    max_act: np.ndarray    # (F,)
    mean_act: np.ndarray   # (F,) mean over all sample tokens (zeros included)
    mean_when_active: np.ndarray
    n_active: np.ndarray


def feature_stats(acts: sp.csc_matrix) -> FeatureStats:
    N, F = acts.shape
    nnz = np.diff(acts.indptr)
    sums = np.asarray(acts.sum(axis=0)).ravel()
    mx = acts.max(axis=0).toarray().ravel() if acts.nnz else np.zeros(F)
    return FeatureStats(
        density=nnz / N, max_act=mx.astype(np.float64), mean_act=sums / N,
        mean_when_active=np.divide(sums, nnz, out=np.zeros(F), where=nnz > 0), n_active=nnz,
    )


def histogram(values: np.ndarray, bins: int, top: float) -> tuple[list[float], list[int]]:
    """Equal-width histogram of a feature's non-zero activations on [0, max]."""
    if top <= 0 or len(values) == 0:
        return [], []
    counts, edges = np.histogram(values, bins=bins, range=(0.0, float(top)))
    return edges.tolist(), counts.tolist()


def quantile_groups(order_values: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """Split indices of ascending-sorted values into `n_bins` groups of equal count (true quantiles)."""
    return [g for g in np.array_split(np.arange(len(order_values)), n_bins) if len(g)]


def top_tokens(token_ids: np.ndarray, values: np.ndarray, k: int = 10) -> list[dict]:
    """The token types the feature fires on, by total activation: id, count, mean and total activation."""
    if len(values) == 0:
        return []
    uniq, inv = np.unique(token_ids, return_inverse=True)
    total = np.bincount(inv, weights=values)
    count = np.bincount(inv)
    order = np.argsort(-total)[:k]
    return [{"token_id": int(uniq[o]), "count": int(count[o]), "mean": float(total[o] / count[o]),
             "total": float(total[o])} for o in order]


def example_windows(acts_col_rows: np.ndarray, acts_col_vals: np.ndarray, centers: np.ndarray, context: int,
                    window: int) -> list[dict]:
    """Token windows around `centers`, clipped to their sample window, with the feature's value on
    every token (zero where it does not fire)."""
    out = []
    half = window // 2
    for c in centers:
        w0 = (c // context) * context
        start = max(w0, c - half)
        end = min(w0 + context, start + window)
        start = max(w0, end - window)
        lo, hi = np.searchsorted(acts_col_rows, [start, end])
        vals = np.zeros(end - start, dtype=np.float32)
        vals[acts_col_rows[lo:hi] - start] = acts_col_vals[lo:hi]
        out.append({"center": int(c), "start": int(start), "end": int(end), "acts": vals.tolist()})
    return out


def feature_examples(acts: sp.csc_matrix, tokens_flat: np.ndarray, cfg: SampleConfig, context: int, seed: int,
                     desc: str = "examples"):
    """Per feature: histogram, top tokens, top-k examples and examples from equal-count quantiles.

    Yields (feature, hist_edges, hist_counts, top_tokens, examples) with examples as dicts carrying
    `kind` ('top' or 'q<i>' for the i-th quantile from the bottom) and `rank`.
    """
    rng = np.random.default_rng(seed)
    F = acts.shape[1]
    for j in tqdm(range(F), desc=desc, unit="feat", dynamic_ncols=True, mininterval=1.0):
        a, b = acts.indptr[j], acts.indptr[j + 1]
        rows = acts.indices[a:b]
        vals = acts.data[a:b]
        if len(rows) == 0:
            yield j, [], [], [], []
            continue
        order = np.argsort(rows)  # CSC rows are sorted already; keep this cheap guard
        rows, vals = rows[order], vals[order]
        edges, counts = histogram(vals, cfg.histogram_bins, float(vals.max()))
        toks = top_tokens(tokens_flat[rows], vals)
        by_val = np.argsort(-vals, kind="stable")
        examples = []
        for rank, e in enumerate(example_windows(rows, vals, rows[by_val[: cfg.top_k_examples]], context, cfg.window)):
            examples.append({**e, "kind": "top", "rank": rank})
        if cfg.examples_per_bin:
            asc = by_val[::-1]
            for qi, group in enumerate(quantile_groups(vals[asc], cfg.quantile_bins)):
                pick = rng.choice(group, size=min(cfg.examples_per_bin, len(group)), replace=False)
                centers = rows[asc[np.sort(pick)]]
                for rank, e in enumerate(example_windows(rows, vals, centers, context, cfg.window)):
                    examples.append({**e, "kind": f"q{qi}", "rank": rank})
        yield j, edges, counts, toks, examples


def write_feature_tables(acts: sp.csc_matrix, tokens: np.ndarray, cfg: SampleConfig, seed: int, model: str,
                         out) -> None:
    """Per-model parquet files the store loads as they are: features, histograms, top tokens, examples."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = tokens.ravel()
    st = feature_stats(acts)
    hist = {"feature": [], "edges": [], "counts": []}
    tops = {"feature": [], "rank": [], "token_id": [], "count": [], "mean_act": [], "total_act": []}
    ex = {"feature": [], "kind": [], "rank": [], "center": [], "start": [], "end": [], "acts": []}
    top_id = np.full(acts.shape[1], -1)
    top_share = np.zeros(acts.shape[1])
    for j, edges, counts, toks, examples in feature_examples(acts, flat, cfg, tokens.shape[1], seed,
                                                             desc=f"examples {model}"):
        if edges:
            hist["feature"].append(j), hist["edges"].append(edges), hist["counts"].append(counts)
        for r, t in enumerate(toks):
            for k, v in (("feature", j), ("rank", r), ("token_id", t["token_id"]), ("count", t["count"]),
                         ("mean_act", t["mean"]), ("total_act", t["total"])):
                tops[k].append(v)
        if toks:
            top_id[j] = toks[0]["token_id"]
            top_share[j] = toks[0]["total"] / max(st.mean_act[j] * acts.shape[0], 1e-12)
        for e in examples:
            for k in ex:
                ex[k].append(j if k == "feature" else e[k])
    pq.write_table(pa.table({
        "feature": np.arange(acts.shape[1], dtype=np.int32), "density": st.density, "n_active": st.n_active,
        "max_act": st.max_act, "mean_act": st.mean_act, "mean_when_active": st.mean_when_active,
        "alive": st.n_active > 0, "top_token_id": top_id.astype(np.int32), "top_token_share": top_share,
    }), out / "features.parquet")
    pq.write_table(pa.table(hist, schema=pa.schema([("feature", pa.int32()), ("edges", pa.list_(pa.float64())),
                                                    ("counts", pa.list_(pa.int32()))])), out / "histograms.parquet")
    pq.write_table(pa.table(tops, schema=pa.schema([("feature", pa.int32()), ("rank", pa.int32()),
                                                    ("token_id", pa.int32()), ("count", pa.int32()),
                                                    ("mean_act", pa.float64()), ("total_act", pa.float64())])),
                   out / "top_tokens.parquet")
    pq.write_table(pa.table(ex, schema=pa.schema([("feature", pa.int32()), ("kind", pa.string()), ("rank", pa.int32()),
                                                  ("center", pa.int64()), ("start", pa.int64()), ("end", pa.int64()),
                                                  ("acts", pa.list_(pa.float32()))])), out / "examples.parquet")


@torch.no_grad()
def logit_effects(model, sae: SparseAutoencoder, k: int = 10) -> dict[str, np.ndarray]:
    """Each feature's direct effect on the logits: W_U · (g ⊙ W_down · W_dec[f]), with g the final
    RMSNorm's gain (the usual approximation: the norm's 1/rms scale is left out). Returns the top-k
    promoted and suppressed token ids and values per feature."""
    mlp = model.model.layers[-1].mlp
    direction = sae.W_dec.detach().float() @ mlp.down_proj.weight.detach().float().T  # (F, hidden)
    direction = direction * model.model.norm.weight.detach().float()
    logits = direction @ model.lm_head.weight.detach().float().T                        # (F, vocab)
    top = torch.topk(logits, k, dim=1)
    bottom = torch.topk(-logits, k, dim=1)
    return {"pos_ids": top.indices.numpy(), "pos_vals": top.values.numpy(),
            "neg_ids": bottom.indices.numpy(), "neg_vals": -bottom.values.numpy()}


def write_logit_table(effects: dict[str, np.ndarray], out) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    F, k = effects["pos_ids"].shape
    rows = {"feature": [], "sign": [], "rank": [], "token_id": [], "value": []}
    for sign, ids, vals in (("+", effects["pos_ids"], effects["pos_vals"]), ("-", effects["neg_ids"], effects["neg_vals"])):
        rows["feature"].append(np.repeat(np.arange(F, dtype=np.int32), k))
        rows["sign"].append(np.full(F * k, sign, dtype=object))
        rows["rank"].append(np.tile(np.arange(k, dtype=np.int32), F))
        rows["token_id"].append(ids.ravel().astype(np.int32))
        rows["value"].append(vals.ravel().astype(np.float64))
    pq.write_table(pa.table({c: np.concatenate(v) for c, v in rows.items()}), out / "logits.parquet")
