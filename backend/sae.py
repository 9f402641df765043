"""Sparse autoencoders on `blocks.0.mlp.hook_post`, after the paper's appendix B (Bricken et al. 2023).

    x̄ = x − μ − b_d          μ: the dataset mean of the hook, fixed before training
    f = ReLU(W_e x̄ + b_e)
    x̂ = W_d f + b_d + μ       (the paper writes x̂ for the centred reconstruction; adding μ back
                               makes the SAE reconstruct x itself)
    loss = mean-over-elements MSE(x̂, x) + λ Σ_j |f_j|     decoder rows renormalised after every step

On disk an SAE is a SAELens folder (`cfg.json` + `sae_weights.safetensors`, architecture `standard`,
`apply_b_dec_to_input: true`) with `b_dec = b_d + μ`: SAELens computes ReLU(W_enc (x − b_dec) + b_enc)
and W_dec f + b_dec, which is exactly the function above. `featureflow.json` beside them records the
recipe, μ, the training curve and the health metrics.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .artifacts import read_json, write_json
from .config import SAEConfig


# --------------------------------------------------------------------------------- hook sites
_HOOK = re.compile(r"^blocks\.(\d+)\.(mlp\.hook_post|hook_resid_post|mlp\.hook_out)$")


def hook_module(model, hook: str):
    """The HF module and mode that expose a TransformerLens hook name.

    `blocks.L.mlp.hook_post` is the input of `mlp.down_proj` (act(gate(x)) * up(x)); the identity is
    proven against TransformerBridge in the tests.
    """
    m = _HOOK.match(hook)
    if not m:
        raise ValueError(f"unsupported hook '{hook}' (supported: blocks.L.mlp.hook_post, blocks.L.mlp.hook_out, "
                         "blocks.L.hook_resid_post)")
    layer, site = int(m.group(1)), m.group(2)
    layers = model.model.layers
    if layer >= len(layers):
        raise ValueError(f"hook '{hook}': the model has {len(layers)} layer(s)")
    if site == "mlp.hook_post":
        return layers[layer].mlp.down_proj, "input"
    if site == "mlp.hook_out":
        return layers[layer].mlp, "output"
    return layers[layer], "output"


@contextlib.contextmanager
def capture(model, hook: str) -> Iterator[dict]:
    """Record the hook's activation of the next forward pass into `store['act']`."""
    module, mode = hook_module(model, hook)
    store: dict = {}
    if mode == "input":
        h = module.register_forward_pre_hook(lambda mod, args: store.__setitem__("act", args[0]))
    else:
        h = module.register_forward_hook(
            lambda mod, args, out: store.__setitem__("act", out[0] if isinstance(out, tuple) else out))
    try:
        yield store
    finally:
        h.remove()


@contextlib.contextmanager
def splice(model, hook: str, fn):
    """Replace the hook's activation by `fn(act)` during forward passes (for loss recovered)."""
    module, mode = hook_module(model, hook)
    if mode == "input":
        h = module.register_forward_pre_hook(lambda mod, args: (fn(args[0]),) + tuple(args[1:]))
    else:
        def out_hook(mod, args, out):
            if isinstance(out, tuple):
                return (fn(out[0]),) + tuple(out[1:])
            return fn(out)
        h = module.register_forward_hook(out_hook)
    try:
        yield
    finally:
        h.remove()


@torch.no_grad()
def activations(model, tokens: torch.Tensor, hook: str) -> torch.Tensor:
    """(batch, pos) token ids -> (batch, pos, d) activations at `hook`.

    Runs the decoder stack only (`model.model`): the LM head is not needed for a hook inside it."""
    with capture(model, hook) as store:
        model.model(tokens.to(next(model.parameters()).device))
    return store["act"].float()


# --------------------------------------------------------------------------------------- model
class SparseAutoencoder(nn.Module):
    def __init__(self, d_in: int, d_sae: int, mean: torch.Tensor | None = None, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(d_sae, d_in, generator=g)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w)
        self.W_enc = nn.Parameter(w.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("mean", torch.zeros(d_in) if mean is None else mean.clone().float())

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x - self.mean - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec + self.mean

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encode(x)
        return self.decode(f), f

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))


def sae_loss(sae: SparseAutoencoder, x: torch.Tensor, l1: float, recipe: str = "paper-text"):
    """(total, mse, l1 term). paper-text: plain MSE over elements; paper-code: MSE / mean ‖x‖²."""
    x_hat, f = sae(x)
    mse = ((x_hat - x) ** 2).mean()
    if recipe == "paper-code":
        mse = mse / (x.pow(2).sum(-1).mean() / x.shape[-1]).clamp_min(1e-8)
    sparsity = f.abs().sum(-1).mean()
    return mse + l1 * sparsity, mse, sparsity


# ------------------------------------------------------------------------------- SAELens I/O
def save_sae(sae: SparseAutoencoder, folder: Path, hook: str, model_name: str, extra: dict) -> None:
    """Write a SAELens `standard` SAE (cfg.json + sae_weights.safetensors) and featureflow.json."""
    from sae_lens import StandardSAE, StandardSAEConfig

    cfg = StandardSAEConfig(d_in=sae.d_in, d_sae=sae.d_sae, dtype="float32", device="cpu",
                            apply_b_dec_to_input=True)
    cfg.metadata.hook_name = hook
    cfg.metadata.model_name = model_name
    out = StandardSAE(cfg)
    with torch.no_grad():
        out.W_enc.copy_(sae.W_enc)
        out.b_enc.copy_(sae.b_enc)
        out.W_dec.copy_(sae.W_dec)
        out.b_dec.copy_(sae.b_dec + sae.mean)  # fold the dataset mean into b_dec (see module docstring)
    out.save_model(str(folder))
    write_json(folder / "featureflow.json", {**extra, "mean": sae.mean.tolist()})


def load_sae(folder: str | Path) -> SparseAutoencoder:
    """Load any SAELens standard SAE folder (ours or someone else's) as a SparseAutoencoder."""
    from sae_lens import SAE

    folder = Path(folder)
    if not (folder / "cfg.json").exists():
        raise FileNotFoundError(f"'{folder}' is not a SAELens folder (no cfg.json)")
    s = SAE.load_from_disk(str(folder), device="cpu")
    if not getattr(s.cfg, "apply_b_dec_to_input", True):
        raise ValueError(f"SAE at '{folder}' does not subtract b_dec from its input; only that variant is supported")
    arch = s.cfg.architecture() if callable(getattr(s.cfg, "architecture", None)) else "standard"
    if arch != "standard":
        raise ValueError(f"SAE at '{folder}' has architecture '{arch}'; only 'standard' (ReLU) is supported")
    sae = SparseAutoencoder(s.W_enc.shape[0], s.W_enc.shape[1])
    with torch.no_grad():
        sae.W_enc.copy_(s.W_enc)
        sae.b_enc.copy_(s.b_enc)
        sae.W_dec.copy_(s.W_dec)
        sae.b_dec.copy_(s.b_dec)  # mean already folded in
    return sae.eval()


def sae_info(folder: Path) -> dict:
    p = Path(folder) / "featureflow.json"
    return read_json(p) if p.exists() else {}


# ------------------------------------------------------------------------------------ training
def block_batches(streams: dict[str, np.ndarray], block: int, n_blocks: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless batches of `n_blocks` random `block`-token windows, domains taken in turn."""
    rng = np.random.default_rng(seed)
    names = list(streams)
    i = 0
    while True:
        rows = []
        for _ in range(n_blocks):
            s = streams[names[i % len(names)]]
            i += 1
            start = int(rng.integers(0, len(s) - block))
            rows.append(s[start:start + block].astype(np.int64))
        yield torch.from_numpy(np.stack(rows))


@dataclass
class TrainedSAE:
    sae: SparseAutoencoder
    log: list[dict]


def train_sae(model, streams: dict[str, np.ndarray], cfg: SAEConfig, seed: int, desc: str = "sae") -> TrainedSAE:
    device = next(model.parameters()).device
    batches = block_batches(streams, cfg.block_tokens, cfg.blocks_per_batch, seed)
    # the dataset mean, from about 50k tokens
    acts = []
    n = 0
    while n < 50_000:
        a = activations(model, next(batches), cfg.hook)
        a = a.reshape(-1, a.shape[-1])
        acts.append(a.double().sum(0))
        n += a.shape[0]
    mean = (torch.stack(acts).sum(0) / n).float()
    d_in = mean.shape[0]
    sae = SparseAutoencoder(d_in, d_in * cfg.expansion, mean.cpu(), seed).to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas))
    steps = max(1, cfg.tokens // (cfg.block_tokens * cfg.blocks_per_batch))
    log: list[dict] = []
    bar = tqdm(range(steps), desc=desc, unit="step", dynamic_ncols=True)
    decay_from = int(steps * (1 - cfg.lr_decay_fraction))
    for step in bar:
        if step >= decay_from:  # linear decay to zero over the last lr_decay_fraction of training
            for g in opt.param_groups:
                g["lr"] = cfg.lr * (steps - step) / max(1, steps - decay_from)
        x = activations(model, next(batches), cfg.hook).reshape(-1, d_in)
        loss, mse, sp = sae_loss(sae, x, cfg.l1_coefficient, cfg.recipe)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sae.normalize_decoder()
        if step % 20 == 0 or step + 1 == steps:
            with torch.no_grad():
                l0 = (sae.encode(x) > 0).float().sum(-1).mean().item()
            log.append({"step": step, "tokens": (step + 1) * x.shape[0], "loss": loss.item(), "mse": mse.item(),
                        "l1": sp.item(), "l0": l0})
            bar.set_postfix(mse=f"{mse.item():.4f}", l0=f"{l0:.1f}")
    return TrainedSAE(sae.eval(), log)


# ------------------------------------------------------------------------------------- health
@torch.no_grad()
def sae_health(model, sae: SparseAutoencoder, windows: torch.Tensor, hook: str, batch_size: int = 32) -> dict:
    """Raw sums for L0, MSE, explained variance, dead features and loss recovered on held-out windows;
    `summarise` turns one or several of these (e.g. one per domain) into the figures."""
    device = next(model.parameters()).device
    sae = sae.to(device)
    fired = torch.zeros(sae.d_sae, dtype=torch.bool, device=device)
    sums = {"l0": 0.0, "sq_err": 0.0, "x_sum": None, "x_sq": 0.0, "ce_clean": 0.0, "ce_sae": 0.0, "ce_zero": 0.0,
            "n_tok": 0, "n_pred": 0}
    for i in range(0, len(windows), batch_size):
        x_tok = windows[i:i + batch_size].to(device)
        flat = activations(model, x_tok, hook).reshape(-1, sae.d_in)
        x_hat, f = sae(flat)
        fired |= (f > 0).any(0)
        sums["l0"] += (f > 0).float().sum().item()
        sums["sq_err"] += ((x_hat - flat) ** 2).double().sum().item()
        xs = flat.double().sum(0)
        sums["x_sum"] = xs if sums["x_sum"] is None else sums["x_sum"] + xs
        sums["x_sq"] += (flat.double() ** 2).sum().item()
        sums["n_tok"] += flat.shape[0]

        def ce(logits):
            return torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(), x_tok[:, 1:].reshape(-1), reduction="sum").item()

        sums["ce_clean"] += ce(model(x_tok).logits)
        with splice(model, hook, lambda a: sae(a.float())[0].to(a.dtype)):
            sums["ce_sae"] += ce(model(x_tok).logits)
        with splice(model, hook, torch.zeros_like):
            sums["ce_zero"] += ce(model(x_tok).logits)
        sums["n_pred"] += x_tok[:, 1:].numel()
    sums["fired"] = fired.cpu()
    sums["d_in"] = sae.d_in
    return sums


def summarise(parts: list[dict]) -> dict:
    """Figures from one or more `sae_health` sums, pooled over all their tokens.

    Explained variance = 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² with x̄ the pooled mean. Loss recovered =
    (CE_zero − CE_sae) / (CE_zero − CE_clean); undefined (None) where zero-ablating the hook does not
    hurt, as on a domain a fine-tuned model has forgotten."""
    n_tok = sum(p["n_tok"] for p in parts)
    n_pred = sum(p["n_pred"] for p in parts)
    d_in = parts[0]["d_in"]
    x_sum = sum(p["x_sum"] for p in parts)
    sq_tot = sum(p["x_sq"] for p in parts) - float((x_sum ** 2).sum()) / n_tok
    sq_err = sum(p["sq_err"] for p in parts)
    fired = torch.stack([p["fired"] for p in parts]).any(0)
    ce = {k: sum(p[k] for p in parts) / n_pred for k in ("ce_clean", "ce_sae", "ce_zero")}
    gap = ce["ce_zero"] - ce["ce_clean"]
    return {
        "l0": sum(p["l0"] for p in parts) / n_tok,
        "mse": sq_err / (n_tok * d_in),
        "explained_variance": 1 - sq_err / max(sq_tot, 1e-12),
        "dead_features": int((~fired).sum().item()),
        "dead_fraction": float((~fired).float().mean().item()),
        **ce,
        "loss_recovered": (ce["ce_zero"] - ce["ce_sae"]) / gap if gap > 1e-6 else None,
        "eval_tokens": n_tok,
    }
