"""The shared token sample, sparse feature activations over it, and per-feature statistics.

Every model sees the same sample: `tokens` of shape (windows, context), windows drawn in equal
numbers from every domain of the run. A model's SAE activations over it are kept sparse, as a
SciPy CSC matrix of shape (windows * context, d_sae): token index t = window * context + position.
A dense tokens x features matrix is never built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import scipy.sparse as sp
import torch
from featureflow.progress import progress as tqdm  # a bar on a terminal, log lines elsewhere

from featureflow.config import SampleConfig
from featureflow.pipeline.sae import SparseAutoencoder, activations


# --------------------------------------------------------------------------------- the sample
def load_acts(folder) -> sp.csc_matrix:
    """A member's (or a replica's) sparse SAE activations on the shared sample, from its activations artefact
    (`acts.npz`), as CSC (one column per feature)."""
    from pathlib import Path

    return sp.load_npz(Path(folder) / "acts.npz").tocsc()


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
                  desc: str = "encode", health: dict | None = None) -> sp.csc_matrix:
    """Run model + SAE over the sample; return sparse activations (tokens, features) as float32 CSC. With a
    `health` dict, also how well the SAE reconstructs these activations (`sparse_codes`)."""
    device = next(model.parameters()).device
    W, _ = tokens.shape
    xs = (activations(model, torch.from_numpy(tokens[i:i + batch_size].astype(np.int64)), hook)
          for i in tqdm(range(0, W, batch_size), desc=desc, unit="batch", dynamic_ncols=True))
    return sparse_codes(sae.to(device), xs, health)


def _decode(sae, f: torch.Tensor) -> torch.Tensor:
    """`sae.decode` of sparse codes: SAELens's decoders (and ours) multiply them by W_dec as a sparse product, half
    the dense product's time at L0 16 of 1,024 latents; a decoder that cannot take a sparse tensor gets it dense."""
    try:
        return sae.decode(f)
    except (RuntimeError, NotImplementedError, TypeError):
        return sae.decode(f.to_dense())


@torch.no_grad()
def sparse_codes(sae: SparseAutoencoder, xs: Iterable[torch.Tensor], health: dict | None = None) -> sp.csc_matrix:
    """Encode batches of hook activations (any leading shape, d_in last) in order with `sae.encode`; the
    rows of the result follow the rows of the batches. Sparse float32 CSC (rows, d_sae): what
    `encode_sample` returns for an LM and what the planted family encodes its synthetic sample with.

    With a `health` dict, fills it with how well `sae` reconstructs these activations (`sae.decode` of the codes),
    over every row: `explained_variance` (1 - squared error / total variance about the mean, summed over
    dimensions, in float64), `mse` (per element) and `l0` (latents firing per row)."""
    rows, cols, vals = [], [], []
    n = 0
    sse, sx, sxx = 0.0, 0.0, 0.0
    for x in xs:
        x = x.reshape(-1, x.shape[-1])
        f = sae.encode(x).to_sparse()  # COO, coalesced: its non-zeros row by row
        if health is not None:  # sums in float64 over float32 terms
            sse += float((_decode(sae, f) - x).pow(2).sum(dtype=torch.float64))
            sx = sx + x.sum(0, dtype=torch.float64)
            sxx = sxx + x.pow(2).sum(0, dtype=torch.float64)
        r, c = f.indices()
        rows.append((r + n).cpu().numpy().astype(np.int64))
        cols.append(c.cpu().numpy().astype(np.int32))
        vals.append(f.values().cpu().numpy().astype(np.float32))
        n += f.shape[0]
    if not rows:
        return sp.csc_matrix((0, sae.d_sae), dtype=np.float32)
    m = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, sae.d_sae))
    if health is not None:
        total = float((sxx - sx ** 2 / n).sum())
        health.update(explained_variance=1.0 - sse / total if total > 0 else None, mse=sse / (n * len(sx)),
                      l0=m.nnz / n, rows=n)
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


def feature_tables(acts: sp.csc_matrix, tokens_flat: np.ndarray, cfg: SampleConfig, seed: int,
                   n_top_tokens: int = 10, threads: int | None = None, desc: str | None = None) -> dict:
    """Per feature, all features at once (the compiled `kernels.feature_tables`, parallel over features):

    - `h_counts` (F x bins): histogram of its non-zero activations on [0, max] (numpy.histogram's bins);
    - `t_ids`, `t_counts`, `t_totals` (F x n_top_tokens, `t_n` valid): the token types it fires on, by total
      activation (ties: lower token id first);
    - `c_rows`, `c_kind`, `c_rank` (F x slots, `c_n` valid): centres of its example windows: the
      `top_k_examples` largest activations whose windows do not overlap (kind 0, largest first, equal values in
      token order; a centre closer than `window` tokens to an earlier one in its sample window is skipped), then
      `examples_per_bin` random ones from each of `quantile_bins` equal-count groups of its ascending
      activations (kind 1 + i for the i-th non-empty group from the bottom; ascending within a group).
      Feature j's random picks come from seed + j, whatever the thread count."""
    from concurrent.futures import ThreadPoolExecutor

    from featureflow.pipeline.kernels import feature_tables as kernel

    acts = sp.csc_matrix(acts)
    acts.sort_indices()
    F = acts.shape[1]
    slots = cfg.top_k_examples + cfg.quantile_bins * cfg.examples_per_bin
    out = {"h_counts": np.zeros((F, cfg.histogram_bins), dtype=np.int64),
           "t_ids": np.full((F, n_top_tokens), -1, dtype=np.int64), "t_counts": np.zeros((F, n_top_tokens), np.int64),
           "t_totals": np.zeros((F, n_top_tokens)), "t_n": np.zeros(F, dtype=np.int64),
           "c_rows": np.full((F, slots), -1, dtype=np.int64), "c_kind": np.zeros((F, slots), dtype=np.int64),
           "c_rank": np.zeros((F, slots), dtype=np.int64), "c_n": np.zeros(F, dtype=np.int64)}
    indptr, rows = acts.indptr.astype(np.int64), acts.indices.astype(np.int64)
    vals, toks = acts.data.astype(np.float32), np.ascontiguousarray(tokens_flat, dtype=np.int64)
    n_vocab = int(toks.max()) + 1 if len(toks) else 1  # the kernel's per-token-type scratch size
    threads = max(1, threads or torch.get_num_threads())
    step = 512
    bar = tqdm(total=F, desc=desc, unit="feat", dynamic_ncols=True, mininterval=1.0) if desc else None

    def run(j0: int) -> None:
        kernel(j0, min(F, j0 + step), indptr, rows, vals, toks, n_vocab, cfg.histogram_bins, cfg.top_k_examples,
               cfg.quantile_bins, cfg.examples_per_bin, int(seed), cfg.context, cfg.window, *out.values())
        if bar is not None:
            bar.update(min(F, j0 + step) - j0)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, range(0, F, step)))
    if bar is not None:
        bar.close()
    out["max_act"] = feature_stats(acts).max_act
    return out


def histogram_edges(top: np.ndarray, bins: int) -> np.ndarray:
    """numpy.histogram's edges on [0, top] for each top (float32 values): (len(top), bins + 1)."""
    edges = (np.arange(bins + 1)[None, :] * (np.asarray(top, np.float64)[:, None] / bins)).astype(np.float32)
    edges[:, -1] = np.asarray(top, np.float32)
    return edges.astype(np.float64)


def example_windows(acts: sp.csc_matrix, feat: np.ndarray, centers: np.ndarray, context: int, window: int,
                    threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(start, end, offsets, values): `window`-token spans around each centre, clipped to the centre's
    sample window of `context` tokens, and feature feat[i]'s activation on every token of span i as one
    flat float32 array (span i is values[offsets[i]:offsets[i + 1]]; 0 where the feature does not fire)."""
    from concurrent.futures import ThreadPoolExecutor

    from featureflow.pipeline.kernels import window_values

    acts = sp.csc_matrix(acts)
    acts.sort_indices()
    centers = np.asarray(centers, dtype=np.int64)
    w0 = (centers // context) * context
    start = np.maximum(w0, centers - window // 2)
    end = np.minimum(w0 + context, start + window)
    start = np.maximum(w0, end - window)
    offsets = np.zeros(len(centers) + 1, dtype=np.int64)
    np.cumsum(end - start, out=offsets[1:])
    values = np.zeros(offsets[-1], dtype=np.float32)
    indptr, rows, data = acts.indptr.astype(np.int64), acts.indices.astype(np.int64), acts.data.astype(np.float32)
    feat = np.asarray(feat, dtype=np.int64)
    step = 65536
    with ThreadPoolExecutor(max(1, threads or torch.get_num_threads())) as pool:
        list(pool.map(lambda i: window_values(i, min(len(centers), i + step), feat, start, end, indptr, rows, data,
                                              offsets, values), range(0, len(centers), step)))
    return start, end, offsets, values


def write_feature_tables(acts: sp.csc_matrix, tokens: np.ndarray, cfg: SampleConfig, seed: int, model: str,
                         out) -> None:
    """Per-model parquet files the store loads as they are: features, histograms, top tokens, examples."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    F = acts.shape[1]
    st = feature_stats(acts)
    t = feature_tables(acts, tokens.ravel(), cfg, seed, desc=f"examples {model}")
    alive = st.n_active > 0
    top_id = np.where(t["t_n"] > 0, t["t_ids"][:, 0], -1)
    top_share = np.where(t["t_n"] > 0, t["t_totals"][:, 0] / np.maximum(st.mean_act * acts.shape[0], 1e-12), 0.0)
    pq.write_table(pa.table({
        "feature": np.arange(F, dtype=np.int32), "density": st.density, "n_active": st.n_active,
        "max_act": st.max_act, "mean_act": st.mean_act, "mean_when_active": st.mean_when_active,
        "alive": alive, "top_token_id": top_id.astype(np.int32), "top_token_share": top_share,
    }), out / "features.parquet")

    def lists(m: np.ndarray, typ) -> pa.ListArray:  # one fixed-length list per row of m
        return pa.ListArray.from_arrays(pa.array(np.arange(0, m.size + 1, m.shape[1], dtype=np.int32)),
                                        pa.array(m.ravel(), type=typ))

    live = np.flatnonzero(alive)
    pq.write_table(pa.table({"feature": pa.array(live, pa.int32()),
                             "edges": lists(histogram_edges(st.max_act[live], cfg.histogram_bins), pa.float64()),
                             "counts": lists(t["h_counts"][live], pa.int32())}), out / "histograms.parquet")
    mask = np.arange(t["t_ids"].shape[1])[None, :] < t["t_n"][:, None]
    f_idx, rank = np.nonzero(mask)
    counts = t["t_counts"][mask]
    pq.write_table(pa.table({"feature": pa.array(f_idx, pa.int32()), "rank": pa.array(rank, pa.int32()),
                             "token_id": pa.array(t["t_ids"][mask], pa.int32()), "count": pa.array(counts, pa.int32()),
                             "mean_act": t["t_totals"][mask] / counts, "total_act": t["t_totals"][mask]}),
                   out / "top_tokens.parquet")
    mask = np.arange(t["c_rows"].shape[1])[None, :] < t["c_n"][:, None]
    f_idx, _ = np.nonzero(mask)
    centers = t["c_rows"][mask]
    start, end, offsets, values = example_windows(acts, f_idx, centers, tokens.shape[1], cfg.window)
    kinds = np.array(["top"] + [f"q{i}" for i in range(cfg.quantile_bins)], dtype=object)
    pq.write_table(pa.table({
        "feature": pa.array(f_idx, pa.int32()), "kind": pa.array(kinds[t["c_kind"][mask]], pa.string()),
        "rank": pa.array(t["c_rank"][mask], pa.int32()), "center": pa.array(centers, pa.int64()),
        "start": pa.array(start, pa.int64()), "end": pa.array(end, pa.int64()),
        "acts": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, pa.float32()))}),
        out / "examples.parquet")


@torch.no_grad()
def logit_effects(model, sae: SparseAutoencoder, k: int = 10, hook: str | None = None) -> dict[str, np.ndarray]:
    """Each feature's direct effect on the logits: its decoder direction written into the residual stream
    (through the MLP's output projection for `mlp.hook_post`), then the final norm's gain and the unembedding
    (`HookedLM.direct_logits`: the usual approximation, the norm's 1/scale left out). `hook` defaults to the
    SAE's own. Returns the top-k promoted and suppressed token ids and values per feature (k = 0 columns
    where the hook is not a linear map into the residual stream)."""
    from featureflow.pipeline.hooks import hooked

    lm = hooked(model)
    hook = hook or getattr(sae, "hook_name", None) or "blocks.0.mlp.hook_post"
    resid = lm.residual_write(hook, sae.W_dec.detach().float())
    if resid is None:
        F = sae.W_dec.shape[0]
        empty_i, empty_v = np.zeros((F, 0), dtype=np.int64), np.zeros((F, 0), dtype=np.float32)
        return {"pos_ids": empty_i, "pos_vals": empty_v, "neg_ids": empty_i, "neg_vals": empty_v}
    logits = lm.direct_logits(resid).cpu()                                               # (F, vocab)
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
