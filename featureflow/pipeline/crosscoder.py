"""A crosscoder of one edge: one dictionary read from and written to both models' activations at once.

featureflow matches two independently trained SAEs; the field's other way to diff a base and its fine-tune is a
crosscoder (Lindsey et al. 2024, "Sparse Crosscoders for Cross-Layer Features and Model Diffing"): one encoder
reads the parent's and the child's activations at the same token, each latent has a decoder direction in each
model, and a latent whose decoder norm is near zero in one model is exclusive to the other. Minder, Dumas et al.
2025 ("Overcoming Sparsity Artifacts in Crosscoders to Interpret Chat-Tuning") train it with BatchTopK instead of
the L1 penalty, whose shrinkage makes shared latents look exclusive, and check exclusivity with Latent Scaling.

No crosscoder library on the registries is maintained (`dictionary-learning` 0.1.0 on PyPI has none; SAELens
trains single-model SAEs), so the model and its loop are here, kept close to the published formulation:

    f   = act(x_p W_enc[0] + x_c W_enc[1] + b_enc)        one latent vector for both models
    x̂_m = f W_dec[:, m] + b_dec[m]                         m in (parent, child)
    loss = sum_m ||x_m - x̂_m||^2  (+ lam * sum_i f_i sum_m ||W_dec[i, m]||  for `l1`)

`batchtopk` keeps the k * batch largest pre-activations of a batch (Bussmann et al. 2024) and, at inference, every
pre-activation above the mean of the smallest kept value over the last training steps; `l1` is ReLU with
Lindsey's decoder-norm-weighted L1. Per latent: its decoder norm in each model, the **relative norm**
rho = ||d_child|| / (||d_parent|| + ||d_child||) (0: parent-only, 1: child-only), the cosine between its two
directions, and Latent Scaling's ratios nu (`latent_scaling`).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from featureflow.config import CrosscoderConfig

ARCHITECTURES = ("batchtopk", "l1")


class Crosscoder(torch.nn.Module):
    def __init__(self, d: int, n_latents: int, architecture: str = "batchtopk", k: int = 8, seed: int = 0):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown crosscoder architecture '{architecture}' (known: {', '.join(ARCHITECTURES)})")
        g = torch.Generator().manual_seed(seed)
        dec = torch.randn(n_latents, 2, d, generator=g)
        dec = dec / dec.norm(dim=-1, keepdim=True) * 0.1  # each direction of norm 0.1 in each model (Lindsey)
        self.W_dec = torch.nn.Parameter(dec)
        self.W_enc = torch.nn.Parameter(dec.permute(1, 2, 0).clone())  # (2, d, L): the decoder's transpose
        self.b_enc = torch.nn.Parameter(torch.zeros(n_latents))
        self.b_dec = torch.nn.Parameter(torch.zeros(2, d))
        self.architecture, self.k = architecture, k
        self.register_buffer("threshold", torch.tensor(0.0))  # batchtopk at inference

    def pre(self, xp: torch.Tensor, xc: torch.Tensor) -> torch.Tensor:
        return xp @ self.W_enc[0] + xc @ self.W_enc[1] + self.b_enc

    def encode(self, xp: torch.Tensor, xc: torch.Tensor, train: bool = False) -> torch.Tensor:
        h = torch.relu(self.pre(xp, xc))
        if self.architecture == "l1":
            return h
        if train:  # the k * batch largest values of the batch
            keep = min(h.numel(), self.k * h.shape[0])
            top = torch.topk(h.flatten(), keep)
            f = torch.zeros_like(h.flatten()).scatter(0, top.indices, top.values).view_as(h)
            return f
        return h * (h > self.threshold)

    def decode(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return f @ self.W_dec[:, 0] + self.b_dec[0], f @ self.W_dec[:, 1] + self.b_dec[1]

    def norms(self) -> np.ndarray:
        """(L, 2): each latent's decoder norm in the parent and in the child."""
        return self.W_dec.detach().norm(dim=-1).cpu().numpy()


def train_crosscoder(batches: Iterator[tuple[torch.Tensor, torch.Tensor]], d: int, cfg: CrosscoderConfig,
                     seed: int, log_every: int = 0) -> tuple[Crosscoder, list[dict]]:
    """Train on paired batches (the parent's and the child's activations at the same positions), seeded by
    `seed` (its initialisation; the batches carry their own order): Adam, lr warm-up over the first 5% of steps, decoder gradients as they come (the L1 term and
    BatchTopK's selection both read the decoder norms, so they are not normalised away)."""
    torch.manual_seed(seed)
    cc = Crosscoder(d, max(1, int(round(cfg.expansion * d))), cfg.architecture, cfg.k, seed)
    opt = torch.optim.Adam(cc.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    mins: list[float] = []
    log = []
    idle = torch.zeros(cc.b_enc.shape[0], dtype=torch.long)  # steps since each latent last fired
    for step in range(cfg.steps):
        xp, xc = next(batches)
        f = cc.encode(xp, xc, train=True)
        rp, rc = cc.decode(f)
        mse = ((rp - xp) ** 2).sum(-1).mean() + ((rc - xc) ** 2).sum(-1).mean()
        loss = mse
        if cfg.architecture == "l1":
            loss = loss + cfg.l1_coefficient * (f * cc.W_dec.norm(dim=-1).sum(-1)).sum(-1).mean()
        idle = torch.where((f > 0).any(0), torch.zeros_like(idle), idle + 1)
        dead = idle > cfg.dead_after
        if cfg.architecture == "batchtopk" and cfg.aux_k and dead.any():
            # AuxK (Gao et al. 2024): the latents dead for `dead_after` steps, their `aux_k` largest pre-activations
            # per row, reconstruct what the live ones left over, in both models; weight `aux_coefficient`
            pre = torch.relu(cc.pre(xp, xc)).masked_fill(~dead, 0.0)
            top = torch.topk(pre, min(cfg.aux_k, int(dead.sum())), dim=-1)
            fa = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
            ap, ac = fa @ cc.W_dec[:, 0], fa @ cc.W_dec[:, 1]
            ep, ec = (xp - rp).detach(), (xc - rc).detach()
            aux = ((ap - ep) ** 2).sum(-1).mean() + ((ac - ec) ** 2).sum(-1).mean()
            scale = (ep ** 2).sum(-1).mean() + (ec ** 2).sum(-1).mean()
            loss = loss + cfg.aux_coefficient * aux / scale.clamp_min(1e-12)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if cfg.architecture == "batchtopk" and step >= cfg.steps - max(50, cfg.steps // 10):
            kept = f[f > 0]
            if kept.numel():
                mins.append(float(kept.detach().min()))
        if log_every and (step % log_every == 0 or step == cfg.steps - 1):
            log.append({"step": step, "mse": float(mse.detach()), "l0": float((f > 0).float().sum(-1).mean())})
    if mins:
        cc.threshold.fill_(float(np.mean(mins)))
    return cc.eval(), log


@torch.no_grad()
def encode_pairs(cc: Crosscoder, xp: torch.Tensor, xc: torch.Tensor, chunk: int = 8192) -> np.ndarray:
    """Latent activations (rows, L) of paired rows, float32, dense."""
    return torch.cat([cc.encode(xp[i:i + chunk], xc[i:i + chunk]) for i in range(0, len(xp), chunk)]).numpy()


def relative_norm(norms: np.ndarray) -> np.ndarray:
    """rho = ||d_child|| / (||d_parent|| + ||d_child||) per latent (Lindsey et al.); NaN where both are zero."""
    tot = norms[:, 0] + norms[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, norms[:, 1] / tot, np.nan)


def decoder_cosine(cc: Crosscoder) -> np.ndarray:
    W = cc.W_dec.detach().double().numpy()
    n = np.linalg.norm(W, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("ld,ld->l", W[:, 0], W[:, 1]) / (n[:, 0] * n[:, 1])


@torch.no_grad()
def latent_scaling(cc: Crosscoder, xp: torch.Tensor, xc: torch.Tensor, F: np.ndarray) -> dict[str, np.ndarray]:
    """Latent Scaling (Minder et al. 2025): for each latent j, with its decoder direction d_j in the model where it
    is stronger, the least-squares scale beta of f_j d_j that best explains, in each model m, the reconstruction
    x̂_m (`beta_r_m`) and the error with the latent's own contribution put back, x_m - x̂_m + f_j W_dec[j, m]
    (`beta_e_m`). `nu_r` and `nu_e`: the weaker model's beta over the stronger one's. A truly exclusive latent has
    nu near 0 (the other model does not carry its direction); a latent made exclusive by the training objective
    (complete shrinkage, latent decoupling) has nu well above 0."""
    W = cc.W_dec.detach().double().numpy()                      # (L, 2, d)
    norms = np.linalg.norm(W, axis=-1)
    strong = (norms[:, 1] > norms[:, 0]).astype(int)            # 1: the child's direction
    D = W[np.arange(len(W)), strong]                            # (L, d)
    Fd = F.astype(np.float64)
    f = torch.from_numpy(F)
    rp, rc = (r.double().numpy() for r in cc.decode(f))
    X = [xp.double().numpy(), xc.double().numpy()]
    R = [rp, rc]
    den = (Fd ** 2).sum(0) * (D ** 2).sum(1)                    # ||f_j d_j||^2 over rows
    out = {}
    for m, name in ((0, "parent"), (1, "child")):
        proj_r = R[m] @ D.T                                     # (n, L): <x̂_m, d_j>
        proj_e = (X[m] - R[m]) @ D.T
        own = np.einsum("ld,ld->l", W[:, m], D)                 # <W_dec[j, m], d_j>
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"beta_r_{name}"] = (Fd * proj_r).sum(0) / den
            out[f"beta_e_{name}"] = ((Fd * proj_e).sum(0) + (Fd ** 2).sum(0) * own) / den
    weak = 1 - strong
    idx = np.arange(len(W))
    with np.errstate(invalid="ignore", divide="ignore"):
        for kind in ("r", "e"):
            b = np.stack([out[f"beta_{kind}_parent"], out[f"beta_{kind}_child"]], axis=1)
            out[f"nu_{kind}"] = b[idx, weak] / b[idx, strong]
    out["strong"] = strong
    return out


def classify(rho: np.ndarray, exclusive_below: float) -> np.ndarray:
    """'parent-only' (rho < exclusive_below), 'child-only' (rho > 1 - exclusive_below), else 'shared'; 'dead'
    where rho is NaN."""
    out = np.full(len(rho), "shared", dtype=object)
    out[rho < exclusive_below] = "parent-only"
    out[rho > 1 - exclusive_below] = "child-only"
    out[~np.isfinite(rho)] = "dead"
    return out


NU_MAX = 0.5  # Latent Scaling: an exclusive latent's direction explains under half as much in the other model


def call_latents(cls: np.ndarray, scaling: dict | None) -> np.ndarray:
    """Each latent's call: its relative-norm class, or, with Latent Scaling's ratios (`latent_scaling`), an
    exclusive latent whose direction the other model carries (nu_r or nu_e at least NU_MAX, or undefined) called
    shared instead."""
    cls = cls.copy()
    if scaling is not None:
        nu = np.maximum(np.nan_to_num(scaling["nu_r"], nan=np.inf), np.nan_to_num(scaling["nu_e"], nan=np.inf))
        cls[np.isin(cls, ("parent-only", "child-only")) & ~(np.abs(nu) < NU_MAX)] = "shared"
    return cls


def chance_exclusive(n_latents: int, d: int, exclusive_below: float, draws: int = 200, seed: int = 0) -> float:
    """The share of latents a rule calls exclusive when both decoder norms are independent draws of the same
    law (the norms of Gaussian rows of width d, as a model paired with itself would give if its two halves were
    unrelated): the rate expected by chance."""
    rng = np.random.default_rng(seed)
    a = np.linalg.norm(rng.standard_normal((draws, n_latents, d)), axis=-1)
    b = np.linalg.norm(rng.standard_normal((draws, n_latents, d)), axis=-1)
    rho = b / (a + b)
    return float(((rho < exclusive_below) | (rho > 1 - exclusive_below)).mean())


# ------------------------------------------------------------------------------------ an edge of an LM family
def lm_batches(parent, child, streams: list[np.ndarray], context: int, rows: int, hook: str, seed: int):
    """Endless paired batches of two language models' hook activations on the same tokens: windows of `context`
    tokens drawn (order fixed by `seed`) from `streams` (the two members' training domains), about `rows` tokens."""
    from featureflow.pipeline.sae import activations

    rng = np.random.default_rng(seed)
    n = max(1, rows // context)
    while True:
        wins = []
        for _ in range(n):
            s = streams[int(rng.integers(len(streams)))]
            i = int(rng.integers(0, len(s) - context))
            wins.append(np.asarray(s[i:i + context], dtype=np.int64))
        t = torch.from_numpy(np.stack(wins))
        with torch.no_grad():
            xp, xc = activations(parent, t, hook), activations(child, t, hook)
        yield xp.reshape(-1, xp.shape[-1]).float().cpu(), xc.reshape(-1, xc.shape[-1]).float().cpu()


def edge_run(parent, child, streams: list[np.ndarray], sample: np.ndarray, parent_acts, child_acts, hook: str,
             cfg: CrosscoderConfig, seed: int, out) -> dict:
    """One edge of an LM family: train on both members' training domains, then measure every latent on the first
    `cfg.sample_tokens` tokens of the shared sample (`sample`: windows x context): decoder norms, relative norm,
    cosine, firing rate and largest activation, Latent Scaling, the call, its top tokens (flat indices into the
    sample) and its best-matching SAE feature in each model (activation Pearson against `parent_acts` /
    `child_acts`, the members' own SAE activations over the same tokens). Writes latents.npz, crosscoder.json and
    the weights (crosscoder.safetensors) into `out`; returns crosscoder.json's content."""
    import time

    import scipy.sparse as sps
    from safetensors.torch import save_file

    from featureflow.pipeline.matching import pearson_topk
    from featureflow.pipeline.sae import activations

    from featureflow.pipeline.hooks import hooked

    t0 = time.time()
    context = sample.shape[1]
    d = hooked(parent).check(hook)  # the activations' width at the hook
    cc, log = train_crosscoder(lm_batches(parent, child, streams, context, cfg.batch, hook, seed), d, cfg, seed,
                               log_every=max(1, cfg.steps // 20))
    windows = sample[: max(1, -(-cfg.sample_tokens // context))]
    xs = [[], []]
    with torch.no_grad():
        for i in range(0, len(windows), 64):
            t = torch.from_numpy(np.asarray(windows[i:i + 64], dtype=np.int64))
            for j, model in enumerate((parent, child)):
                a = activations(model, t, hook)
                xs[j].append(a.reshape(-1, a.shape[-1]).float().cpu())
    xp, xc = torch.cat(xs[0]), torch.cat(xs[1])
    F = encode_pairs(cc, xp, xc)
    n = F.shape[0]
    norms = cc.norms()
    fires = (F > 0).mean(0)
    rho = np.where(fires > 0, relative_norm(norms), np.nan)
    ls = latent_scaling(cc, xp, xc, F)
    cls = call_latents(classify(rho, cfg.exclusive_below), ls if cfg.scaling else None)
    with torch.no_grad():
        rp, rc = cc.decode(torch.from_numpy(F))
    health = {}
    for name, x, r in (("parent", xp, rp), ("child", xc, rc)):
        err = float(((r - x) ** 2).sum())
        tot = float(((x - x.mean(0)) ** 2).sum())
        health[name] = {"mse": err / x.numel(), "explained_variance": 1 - err / max(tot, 1e-12)}
    Fs = sps.csc_matrix(F)
    best = {}
    for name, acts in (("parent", parent_acts), ("child", child_acts)):
        top = pearson_topk(Fs, acts[:n].tocsc(), 1, desc=None)
        best[name] = (top.p2c_idx[:, 0].astype(np.int64), top.p2c_r[:, 0].astype(np.float64))
    top_tokens = np.argsort(-F, axis=0, kind="stable")[:5].T.astype(np.int64)  # (L, 5)
    top_tokens[np.take_along_axis(F.T, top_tokens, axis=1) <= 0] = -1
    np.savez(out / "latents.npz", norm_parent=norms[:, 0], norm_child=norms[:, 1], rho=rho, cos=decoder_cosine(cc),
             fire_rate=fires, max_act=F.max(0), nu_r=ls["nu_r"], nu_e=ls["nu_e"], call=cls.astype(str),
             parent_feature=best["parent"][0], parent_r=best["parent"][1], child_feature=best["child"][0],
             child_r=best["child"][1], top_tokens=top_tokens)
    save_file({k: v.detach().cpu().contiguous() for k, v in cc.state_dict().items()}, str(out / "crosscoder.safetensors"))
    info = {"architecture": cfg.architecture, "latents": int(F.shape[1]), "d_in": int(d), "tokens": int(n),
            "l0": float((F > 0).sum(1).mean()), "threshold": float(cc.threshold), "seed": seed,
            "health": health, "log": log, "config": cfg.model_dump(mode="json"),
            "calls": {k: int((cls == k).sum()) for k in ("shared", "parent-only", "child-only", "dead")},
            "seconds": round(time.time() - t0, 2)}
    import json

    (out / "crosscoder.json").write_text(json.dumps(info, indent=1))
    return info


__all__ = ["ARCHITECTURES", "Crosscoder", "call_latents", "chance_exclusive", "classify", "decoder_cosine",
           "edge_run", "encode_pairs", "latent_scaling", "lm_batches", "relative_norm", "train_crosscoder"]
