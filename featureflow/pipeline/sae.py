"""Sparse autoencoders on `blocks.0.mlp.hook_post`, after the paper's appendix B (Bricken et al. 2023).

    x̄ = x − μ − b_d          μ: the dataset mean of the hook, fixed before training
    f = ReLU(W_e x̄ + b_e)
    x̂ = W_d f + b_d + μ       (the paper writes x̂ for the centred reconstruction; adding μ back
                               makes the SAE reconstruct x itself)
    loss = mean-over-elements MSE(x̂, x) + λ Σ_j |f_j|     decoder rows renormalised after every step

With `target_l0`, λ is steered during training (`L0Controller`) and frozen for the last tenth.
That is the `standard` architecture. Every architecture is a registered object in `featureflow/saes/`
(its activation, its loss terms, its k, how it is saved, how resampling scales it): `topk` replaces the ReLU
by f = TopK_k(ReLU(W_e x̄ + b_e)) per token and drops the L1 term (loss = MSE); `batchtopk` trains with the
k × batch largest activations of each batch (BatchTopK) and is used, like topk, with k per token.

On disk an SAE is a SAELens folder (`cfg.json` + `sae_weights.safetensors`, of the architecture's SAELens
architecture, `standard` or `topk` for the built-in ones, `apply_b_dec_to_input: true`) with
`b_dec = b_d + μ`: SAELens computes act(W_enc (x − b_dec) + b_enc) and W_dec f + b_dec, which is exactly the
function above. `featureflow.json` beside them records the
recipe, μ, the training curve and the health metrics.

Every SAE the later stages use is loaded back with `load_sae`, through SAELens (`LensSAE`): ours and
pretrained ones of any SAELens architecture (standard, topk, jumprelu, gated, ...) are encoded by SAELens
itself. Hooks are TransformerLens names on any architecture TransformerLens boots (`featureflow/hooks.py`).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn
from featureflow.progress import progress as tqdm  # a bar on a terminal, log lines elsewhere

from featureflow.pipeline.artifacts import write_json
from featureflow.config import SAEConfig
from featureflow import saes
from featureflow.pipeline.hooks import hooked
from featureflow.saes import SAEArchitecture

logger = logging.getLogger("featureflow")
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


# --------------------------------------------------------------------------------- hook sites
# Hooks are TransformerLens names, read and edited through TransformerLens's TransformerBridge for any
# architecture it boots (featureflow/hooks.py); `model` may be an HF model or a HookedLM.
def activations(model, tokens: torch.Tensor, hook: str) -> torch.Tensor:
    """(batch, pos) token ids -> (batch, pos, d) float32 activations at `hook` (the pass stops there)."""
    return hooked(model).activations(tokens, hook)


# --------------------------------------------------------------------------------------- model
class SparseAutoencoder(nn.Module):
    """One SAE of a registered architecture (`featureflow/saes/`): f = arch.activation(pre, k),
    pre = W_e x̄ + b_e. Without `architecture`, k None is `standard` (f = ReLU(pre)) and a k is `topk`."""

    def __init__(self, d_in: int, d_sae: int, mean: torch.Tensor | None = None, seed: int = 0,
                 k: int | None = None, architecture: "str | SAEArchitecture | None" = None):
        super().__init__()
        arch = saes.get(architecture if architecture is not None else "standard" if k is None else "topk")
        if arch.uses_k and (k is None or not 0 < k <= d_sae):
            raise ValueError(f"k must be in 1..d_sae ({d_sae}), got {k}")
        if not arch.uses_k and k is not None:
            raise ValueError(f"SAE architecture '{arch.name}' takes no k (got {k})")
        self.arch = arch
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(d_sae, d_in, generator=g)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w)
        self.W_enc = nn.Parameter(w.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("mean", torch.zeros(d_in) if mean is None else mean.clone().float())
        self.k = k

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    @property
    def architecture(self) -> str:
        """The SAELens architecture it is saved as ('standard' or 'topk' for the built-in ones)."""
        return self.arch.saved_as

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean - self.b_dec) @ self.W_enc + self.b_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return self.arch.activation(pre, self.k)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.pre_activations(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec + self.mean

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encode(x)
        return self.decode(f), f

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))


def sae_loss(sae: SparseAutoencoder, x: torch.Tensor, l1: float | torch.Tensor, recipe: str = "paper-text",
             return_acts: bool = False):
    """(total, mse, l1 term) [+ (f, pre) with return_acts], f from the architecture's training activation
    (BatchTopK over the batch for a batchtopk SAE). paper-text: plain MSE over elements; paper-code:
    MSE / mean ‖x‖². l1 = 0 (an architecture without the L1 term) leaves the MSE."""
    pre = sae.pre_activations(x)
    f = sae.arch.train_activation(pre, sae.k)
    x_hat = sae.decode(f)
    mse = ((x_hat - x) ** 2).mean()
    if recipe == "paper-code":
        mse = mse / (x.pow(2).sum(-1).mean() / x.shape[-1]).clamp_min(1e-8)
    sparsity = f.abs().sum(-1).mean()
    total = mse if (not torch.is_tensor(l1) and l1 == 0) else mse + l1 * sparsity
    return (total, mse, sparsity, f, pre) if return_acts else (total, mse, sparsity)


class _SparseLoss(torch.autograd.Function):
    """`sae_loss`'s total with its gradient written out so that everything after the encoder touches only
    the active latents.

    Forward: the encoder product is dense; f goes to CSR and the decoder is a sparse product. Backward,
    with r = x̂ − x and g = ∂L/∂x̂ = 2 · scale · r / (B·d):
        ∂L/∂W_dec = fᵀ g                        (sparse)
        ∂L/∂f     = g W_decᵀ + λ/B  at active   (sampled: only the entries where f > 0)
        ∂L/∂W_enc = x̄ᵀ ∂L/∂pre                  (sparse; ∂L/∂pre = ∂L/∂f where f > 0, else 0)
        ∂L/∂b_enc = Σ_rows ∂L/∂pre,  ∂L/∂b_dec = Σ_rows g − ∂L/∂b_enc W_encᵀ
    The same function and gradient as autograd through `sae_loss` (a test checks it to float rounding) for
    ReLU, TopK and BatchTopK alike: each is f = pre on a selected set of positive entries, 0 elsewhere, which
    is what an architecture's training activation must be for this pass to hold."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, mean, l1: float, scale: float, k, arch: SAEArchitecture):
        xc = x - mean - b_dec
        pre = torch.addmm(b_enc, xc, W_enc)
        f = arch.train_activation(pre, k, inplace=True)  # pre is not needed after this
        fs = f.to_sparse_csr()
        del pre, f
        r = torch.addmm(b_dec + mean, fs, W_dec).sub_(x)
        B = x.shape[0]
        mse = r.pow(2).mean() * scale
        sparsity = fs.values().sum() / B
        ctx.save_for_backward(xc, W_enc, W_dec, r, fs)
        ctx.l1, ctx.scale = l1, scale
        l0 = torch.tensor(fs.values().numel() / B)
        ctx.mark_non_differentiable(mse, sparsity, l0)
        return mse + l1 * sparsity, mse, sparsity, l0

    @staticmethod
    def backward(ctx, grad, _gm, _gs, _gl):
        xc, W_enc, W_dec, r, fs = ctx.saved_tensors
        B, d = r.shape
        g = r.mul(grad * 2 * ctx.scale / (B * d))
        gW_dec = fs.t() @ g
        gf = torch.sparse.sampled_addmm(fs, g, W_dec.t(), beta=0.0)  # g W_decᵀ at f's non-zeros
        vals = gf.values() + grad * ctx.l1 / B
        gpre = torch.sparse_csr_tensor(fs.crow_indices(), fs.col_indices(), vals, fs.shape, check_invariants=False)
        gW_enc = (gpre.t() @ xc).t()
        gb_enc = torch.zeros(W_enc.shape[1], dtype=vals.dtype).index_add_(0, fs.col_indices(), vals)
        gb_dec = g.sum(0) - W_enc @ gb_enc
        return None, gW_enc, gb_enc, gW_dec, gb_dec, None, None, None, None, None


def sparse_sae_loss(sae: SparseAutoencoder, x: torch.Tensor, l1: float, recipe: str = "paper-text"):
    """`sae_loss` for training on a CPU once the SAE is sparse: (total, mse, l1 term, L0), with the backward
    pass of `_SparseLoss`. About 3x faster per step than dense autograd at 2% active latents (demo shape,
    2 cores; `scripts/bench_sae.py throughput`); slower when half the latents fire, as a fresh SAE does,
    so `train_sae` switches to it only below `SPARSE_BELOW` active."""
    scale = 1.0
    if recipe == "paper-code":
        scale = 1.0 / float((x.pow(2).sum(-1).mean() / x.shape[-1]).clamp_min(1e-8))
    return _SparseLoss.apply(x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, sae.mean, float(l1), scale,
                             sae.k, sae.arch)


SPARSE_BELOW = 0.06  # share of active latents under which CPU training uses `sparse_sae_loss`
RESAMPLE_UNTIL = 0.6  # share of training after which dead latents are no longer resampled
MEAN_TOKENS = 50_000  # tokens of the dataset mean's estimate, drawn before training


# ------------------------------------------------------------------------------- SAELens I/O
def save_sae(sae: "SparseAutoencoder | LensSAE", folder: Path, hook: str, model_name: str, extra: dict) -> None:
    """Write a SAELens SAE (cfg.json + sae_weights.safetensors) and featureflow.json.

    An SAE is written as its architecture's SAELens architecture (`arch.saved_as`, built from SAELens's own
    registry: standard SAEs as `standard`, TopK and BatchTopK ones as `topk` with their k per token at
    inference), with `apply_b_dec_to_input: true` and b_dec = b_d + μ. A loaded (pretrained) `LensSAE` is
    written by SAELens as it is, whatever its architecture."""
    from sae_lens.saes.sae import SAEMetadata

    if isinstance(sae, LensSAE):
        sae.lens.save_model(str(folder))
        write_json(folder / "featureflow.json", {**extra, "sae_lens_architecture": sae.architecture})
        return

    meta = SAEMetadata(hook_name=hook, model_name=model_name)
    common = dict(d_in=sae.d_in, d_sae=sae.d_sae, dtype="float32", device="cpu", apply_b_dec_to_input=True,
                  metadata=meta)
    lens_sae, lens_cfg = saes.saelens_classes(sae.arch)
    out = lens_sae(lens_cfg(**common, **sae.arch.saelens_config(sae.k)))
    with torch.no_grad():
        out.W_enc.copy_(sae.W_enc)
        out.b_enc.copy_(sae.b_enc)
        out.W_dec.copy_(sae.W_dec)
        out.b_dec.copy_(sae.b_dec + sae.mean)  # fold the dataset mean into b_dec (see module docstring)
    out.save_model(str(folder))
    write_json(folder / "featureflow.json", {**extra, "mean": sae.mean.tolist()})


class LensSAE(nn.Module):
    """A SAELens SAE of any architecture (standard with or without b_dec on its input, topk, jumprelu, gated,
    ...) behind the interface the pipeline uses: `encode`, `decode`, `forward` -> (x̂, f), `W_dec`, `d_in`,
    `d_sae`, `k`. Encoding and decoding are SAELens's own, so input normalisation and every architecture's
    activation are exactly what SAELens computes."""

    def __init__(self, lens):
        super().__init__()
        self.lens = lens

    @property
    def cfg(self):
        return self.lens.cfg

    @property
    def architecture(self) -> str:
        return self.lens.cfg.architecture()

    @property
    def hook_name(self) -> str | None:
        return getattr(self.lens.cfg.metadata, "hook_name", None) or None

    @property
    def d_in(self) -> int:
        return int(self.lens.cfg.d_in)

    @property
    def d_sae(self) -> int:
        return int(self.lens.cfg.d_sae)

    @property
    def k(self) -> int | None:
        k = getattr(self.lens.cfg, "k", None)
        return None if k is None else int(k)

    @property
    def W_dec(self) -> torch.Tensor:
        return self.lens.W_dec

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        f = self.lens.encode(x.to(self.lens.dtype))
        return (f.to_dense() if f.is_sparse else f).float()

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return self.lens.decode(f.to(self.lens.dtype)).float()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encode(x)
        return self.decode(f), f


def load_sae(folder: str | Path, hook: str | None = None, d_in: int | None = None) -> LensSAE:
    """Load a SAELens SAE folder (ours or anyone's, any architecture) with `SAE.load_from_disk`.

    With `hook` and `d_in`, the SAE must have been trained on that hook (its `metadata.hook_name`, where it
    records one) and read activations of that width. SAEs that reshape their input (hook_z SAEs over
    attention heads) are refused: featureflow hooks carry one vector per token."""
    from sae_lens import SAE

    saes.ensure_saelens_registered()  # an architecture of ours that SAELens lacks, registered with SAELens
    folder = Path(folder)
    if not (folder / "cfg.json").exists():
        raise FileNotFoundError(f"'{folder}' is not a SAELens folder (no cfg.json)")
    try:
        s = SAE.load_from_disk(str(folder), device="cpu")
    except Exception as e:  # SAELens raises KeyError / ValueError / TypeError for configs it cannot read
        raise ValueError(f"SAELens cannot load the SAE at '{folder}': {type(e).__name__}: {e}") from None
    if getattr(s.cfg, "reshape_activations", "none") != "none":
        raise ValueError(f"SAE at '{folder}' reshapes its input ('{s.cfg.reshape_activations}'); featureflow hooks "
                         "carry one vector per token")
    sae = LensSAE(s).eval()
    if hook is not None and sae.hook_name is not None and sae.hook_name != hook:
        raise ValueError(f"SAE at '{folder}' was trained on hook '{sae.hook_name}', but sae.hook is '{hook}'")
    if d_in is not None and sae.d_in != d_in:
        raise ValueError(f"SAE at '{folder}' reads d_in = {sae.d_in} but the model's '{hook}' has width {d_in}")
    return sae


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


class L0Controller:
    """Steers the L1 coefficient λ of a standard SAE so that its L0 ends near `target`.

    PI control on the log scale: with e = clamp(log L0_ema − log target, ±1), where L0_ema is an exponential
    average of the training batches' L0, every step I += gain · e and log λ = I + KP · e (the proportional
    term damps the overshoot that the SAE's lag in answering a new λ causes under integral control alone).

    λ stays at its start for the first WARMUP_FRACTION of training: a fresh SAE fires on half its latents
    whatever λ is, then collapses for a few dozen steps, and reacting to that transient sends λ the wrong
    way (measured: λ doubled in 20 steps and killed 94% of the latents for good). Control then runs until
    CONTROL_FRACTION of training and λ is frozen for the rest, so the final SAE is trained at one fixed λ.
    gain = GAIN / (steps under control): with the error clamped, the integral moves by at most e^GAIN over
    the run, whatever its length. Everything stays on the device (no host syncs).

    Measured: demo shape (512 -> 2048, 211 steps), targets 10 / 30 / 80 end at −5% / −2% / +5%. An SAE keeps
    getting sparser at a fixed λ, which integral control tracks with a lag and which goes on after the
    freeze, so L0 tends to end low: −7% to −11% on the tiny test shape (64 -> 256, 234 steps)."""

    WARMUP_FRACTION = 0.25
    CONTROL_FRACTION = 0.9
    GAIN = 8.0
    KP = 1.0
    EMA_FRACTION = 0.05  # the EMA's time constant, as a share of the steps under control
    MIN_SPAN = 50        # shorter runs get the gain of 50 steps under control (and a warning)

    def __init__(self, l1_start: float, target: float, steps: int, device):
        if l1_start <= 0:
            raise ValueError("target_l0 needs a positive l1_coefficient as the starting value")
        self.start = int(steps * self.WARMUP_FRACTION)
        self.until = max(self.start + 1, int(steps * self.CONTROL_FRACTION))
        span = self.until - self.start
        if span < 100:
            logger.warning("target_l0: only %d steps under control (of %d); the final L0 may miss the target. "
                           "Give the SAE more tokens (a few hundred steps at least)", span, steps)
        self.gain = self.GAIN / max(span, self.MIN_SPAN)
        self.beta = 1 - 1 / max(1.0, self.EMA_FRACTION * span)
        self.log_target = float(np.log(target))
        self.integral = torch.tensor(float(np.log(l1_start)), device=device)
        self.log_l1 = self.integral.clone()
        self.ema: torch.Tensor | None = None

    @property
    def l1(self) -> torch.Tensor:
        return self.log_l1.exp()

    @torch.no_grad()
    def update(self, step: int, l0: torch.Tensor) -> None:
        if step < self.start or step >= self.until:
            return
        self.ema = l0 if self.ema is None else self.beta * self.ema + (1 - self.beta) * l0
        e = (self.ema.clamp_min(1e-3).log() - self.log_target).clamp(-1, 1)
        self.integral += self.gain * e
        self.log_l1 = self.integral + self.KP * e


@dataclass
class TrainedSAE:
    sae: SparseAutoencoder
    log: list[dict]
    l1_coefficient: float | None = None  # the λ the SAE ended at (frozen if target_l0); None: no L1 term
    architecture: str = "standard"       # as trained: a registered name (standard, topk, batchtopk, ...)


def sae_k(cfg: SAEConfig) -> int | None:
    """Latents per token of a topk / batchtopk SAE: `k`, else round(target_l0), else 32; None for standard
    (the architecture's `sae_k`)."""
    return saes.get(cfg.architecture).sae_k(cfg)


def train_sae(model, streams: dict[str, np.ndarray], cfg: SAEConfig, seed: int, desc: str = "sae") -> TrainedSAE:
    """Train one SAE on `cfg.hook`. `seed` fixes the initialisation, the tokens drawn and their order:
    `train_saes` with one seed, whose data seed is that seed."""
    return train_saes(model, streams, cfg, [seed], data_seed=seed, desc=desc)[0]


def activation_chunks(model, streams: dict[str, np.ndarray], cfg: SAEConfig, data_seed: int,
                      first: int = 0) -> Iterator[torch.Tensor]:
    """Endless (buffer_batches x batch, d) float32 chunks of `cfg.hook` activations, each one LM pass over
    `buffer_batches` batches of random blocks drawn with `data_seed` (the blocks' rows stacked: a block is
    its own sequence, so the pass gives each row what a pass over its batch alone gives, and the fixed cost
    of a hooked forward is paid once a chunk, not once a batch). With `first` > 0 the first chunk holds about
    that many tokens instead (the dataset mean's estimate), read in passes of the same size."""
    batches = block_batches(streams, cfg.block_tokens, cfg.blocks_per_batch, data_seed)
    per_batch = cfg.block_tokens * cfg.blocks_per_batch
    want = first
    while True:
        n, parts = 0, []
        goal = want or cfg.buffer_batches * per_batch
        while n < goal:
            take = min(cfg.buffer_batches, -(-(goal - n) // per_batch))  # batches still needed, at most a buffer
            a = activations(model, torch.cat([next(batches) for _ in range(take)]), cfg.hook)
            parts.append(a.reshape(-1, a.shape[-1]))
            n += parts[-1].shape[0]
        want = 0
        yield torch.cat(parts)


class _Replica:
    """One SAE being trained inside `train_saes`: its model, optimiser, λ controller, log and generator."""

    def __init__(self, cfg: SAEConfig, seed: int, mean: torch.Tensor, init_rows: torch.Tensor, steps: int, device):
        self.cfg, self.steps = cfg, steps
        d_in = mean.shape[0]
        self.gen = torch.Generator().manual_seed(seed)  # this replica's batch order
        self.arch = arch = saes.get(cfg.architecture)
        self.sae = SparseAutoencoder(d_in, d_in * cfg.expansion, mean.cpu(), seed, k=arch.sae_k(cfg), architecture=arch)
        if cfg.init == "data":  # decoder rows: centred activations of tokens this seed picks; W_enc = W_decᵀ
            g = torch.Generator().manual_seed(seed + 1)
            pick = torch.randint(0, init_rows.shape[0], (self.sae.d_sae,), generator=g)
            w = init_rows[pick].cpu() - mean.cpu()
            w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-8)
            with torch.no_grad():
                self.sae.W_dec.copy_(w)
                self.sae.W_enc.copy_(w.T)
        self.sae = self.sae.to(device)
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas))
        self.ctrl = L0Controller(cfg.l1_coefficient, cfg.target_l0, steps, device) \
            if arch.l1_penalty and cfg.target_l0 is not None else None
        self.l1: float | torch.Tensor = (cfg.l1_coefficient if self.ctrl is None else self.ctrl.l1) \
            if arch.l1_penalty else 0.0
        self.log: list[dict] = []
        # on a CPU, steps run through `sparse_sae_loss` while the last step's L0 is below SPARSE_BELOW · d_sae
        self.sparse = device.type == "cpu" and cfg.sparse_backward
        self.l0: torch.Tensor | None = None
        self.decay_from = int(steps * (1 - cfg.lr_decay_fraction))
        self.fired = torch.zeros(self.sae.d_sae, dtype=torch.bool, device=device)  # since the last resampling
        self.resampled = 0

    def lr_at(self, step: int) -> float:
        """Linear warm-up over the first lr_warmup_steps, constant, then linear decay to zero over the last
        lr_decay_fraction of training."""
        cfg, steps = self.cfg, self.steps
        lr = cfg.lr * min(1.0, (step + 1) / cfg.lr_warmup_steps) if cfg.lr_warmup_steps else cfg.lr
        if step >= self.decay_from:
            lr = min(lr, cfg.lr * (steps - step) / max(1, steps - self.decay_from))
        return lr

    def step(self, step: int, x: torch.Tensor) -> None:
        cfg, sae = self.cfg, self.sae
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(step)
        if self.sparse and self.l0 is not None and float(self.l0) < SPARSE_BELOW * sae.d_sae:
            loss, mse, sp, self.l0 = sparse_sae_loss(sae, x, float(self.l1), cfg.recipe)
        else:
            loss, mse, sp, f, _ = sae_loss(sae, x, self.l1, cfg.recipe, return_acts=True)
            self.l0 = torch.count_nonzero(f.detach()) / f.shape[0]  # f >= 0: non-zero is active
        loss.backward()
        self.fired |= sae.b_enc.grad != 0  # a latent's b_enc has a gradient exactly when it was active
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        sae.normalize_decoder()
        every = cfg.resample_dead_every
        if every and step and step % every == 0 and step <= RESAMPLE_UNTIL * self.steps:
            self.resample(x)
        if step % 20 == 0 or step + 1 == self.steps:
            self.log.append({"step": step, "tokens": (step + 1) * x.shape[0], "loss": loss.item(), "mse": mse.item(),
                             "l1": sp.item(), "l0": self.l0.item(),
                             "l1_coefficient": float(self.l1) if self.arch.l1_penalty else None})  # the λ this step used
        if self.ctrl is not None:
            self.ctrl.update(step, self.l0)
            self.l1 = self.ctrl.l1

    @torch.no_grad()
    def resample(self, x: torch.Tensor) -> None:
        """Bricken et al. 2023's resampling: every latent silent since the last resampling restarts at the
        unit-normalised residual x − x̂ of a token of this batch drawn with probability ∝ ‖x − x̂‖², its encoder
        column at that direction times the architecture's `resample_scale` × the mean norm of the live encoder
        columns (0.2 for standard; 1 for TopK, whose latents must win a place among the k largest), b_enc 0, and
        its Adam moments zeroed."""
        sae, dead = self.sae, (~self.fired).nonzero().squeeze(1)
        self.fired.zero_()
        if len(dead) == 0:
            return
        r = x - sae(x)[0]
        w = r.pow(2).sum(1).double().cpu()
        pick = torch.multinomial(w / w.sum(), len(dead), replacement=True, generator=self.gen).to(x.device)
        d = r[pick] / r[pick].norm(dim=1, keepdim=True).clamp_min(1e-8)
        live = torch.ones(sae.d_sae, dtype=torch.bool, device=x.device)
        live[dead] = False
        scale = sae.arch.resample_scale * (sae.W_enc[:, live].norm(dim=0).mean() if live.any() else 1.0)
        sae.W_dec[dead] = d
        sae.W_enc[:, dead] = d.T * scale
        sae.b_enc[dead] = 0
        for p, idx in ((sae.W_dec, (dead,)), (sae.W_enc, (slice(None), dead)), (sae.b_enc, (dead,))):
            st = self.opt.state.get(p)
            if st:
                st["exp_avg"][idx] = 0
                st["exp_avg_sq"][idx] = 0
        self.resampled += len(dead)

    def result(self) -> TrainedSAE:
        return TrainedSAE(self.sae.eval(), self.log, float(self.l1) if self.arch.l1_penalty else None,
                          self.cfg.architecture)


def train_saes(model, streams: dict[str, np.ndarray], cfg: SAEConfig, seeds: list[int], data_seed: int | list[int],
               desc: str = "sae", chunks: Iterator[torch.Tensor] | None = None) -> list[TrainedSAE]:
    """Train one SAE per seed on `cfg.hook` in one pass over the member's activations (the way EleutherAI's
    sparsify trains several seeds per hook): the LM runs once per chunk of `buffer_batches` batches, on
    blocks drawn with `data_seed`, and every SAE trains on that chunk in its own random order. A list of data
    seeds (one per SAE) gives each SAE blocks of its own, drawn with its own seed (the LM then runs on each
    SAE's blocks in the same pass): two such SAEs share no token draw, like two SAEs of a parent and its child,
    which is what makes a member's seed floor comparable to an edge.

    Each SAE's seed fixes its initialisation and the order it sees the chunk's tokens in; nothing else is
    shared, so an SAE trained here equals the one `train_saes` trains for its seed alone (a test checks
    it). The dataset mean μ comes from about 50k tokens drawn first (data, not initialisation). `chunks`
    replaces the LM (cached activations: `scripts/sweep_sae.py`); its first chunk is the mean's.

    The architecture (`cfg.architecture`, registered in `featureflow/saes/`) gives the activation and
    the loss. standard: MSE + λ Σ|f|, λ = l1_coefficient, or steered to `target_l0` by `L0Controller`.
    topk: MSE, f = TopK_k(ReLU(pre)) per token. batchtopk: MSE, the k x batch largest ReLU(pre) of each batch;
    saved as a SAELens topk SAE (k per token). Decoder rows renormalised after every step in all of them.
    `init: data`: decoder rows start as unit-normalised centred activations of random tokens (chosen per
    seed), the encoder as their transpose. `resample_dead_every`: latents silent for that many steps restart
    at poorly reconstructed tokens (`_Replica.resample`), until RESAMPLE_UNTIL of training.

    No AuxK term: measured on the demo model (512 -> 8192, k 30, 650k tokens), AuxK (α 1/32, k_aux 256,
    dead = silent for 10% of the steps) took dead latents from 6.0% to 4.0% at the same explained variance
    (0.929) and made each step about 3x slower on this shared CPU; at 512 -> 2048 TopK had 0.5% dead, BatchTopK 0.05%."""
    device = next(model.parameters()).device if model is not None else torch.device("cpu")
    if isinstance(data_seed, int) or chunks is not None or len(set(data_seed)) == 1:
        ds = data_seed if isinstance(data_seed, int) else data_seed[0]
        shared = chunks if chunks is not None else activation_chunks(model, streams, cfg, ds, first=MEAN_TOKENS)
        sources = [shared]  # one token draw, every SAE in its own order
    else:
        if len(data_seed) != len(seeds):
            raise ValueError(f"{len(data_seed)} data seeds for {len(seeds)} SAEs")
        sources = [activation_chunks(model, streams, cfg, ds, first=MEAN_TOKENS) for ds in data_seed]
    firsts = [next(src).to(device) for src in sources]
    means = [(f.double().sum(0) / f.shape[0]).float() for f in firsts]
    batch = cfg.block_tokens * cfg.blocks_per_batch
    steps = max(1, cfg.tokens // batch)
    owner = [0] * len(seeds) if len(sources) == 1 else list(range(len(seeds)))  # each SAE's token source
    reps = [_Replica(cfg, s, means[o], firsts[o], steps, device) for s, o in zip(seeds, owner)]
    bar = tqdm(total=steps * len(reps), desc=desc, unit="step", dynamic_ncols=True, disable=desc is None)
    step = 0
    while step < steps:
        chunks_now = [next(src).to(device) for src in sources]
        n = min(min(c.shape[0] for c in chunks_now) // batch, steps - step)
        for r, o in zip(reps, owner):
            chunk = chunks_now[o]
            order = torch.randperm(chunk.shape[0], generator=r.gen)
            for j in range(n):
                r.step(step + j, chunk[order[j * batch:(j + 1) * batch]])
            bar.update(n)
        step += n
    bar.close()
    return [r.result() for r in reps]


def train_sae_on(batches: Iterator[torch.Tensor], cfg: SAEConfig, seed: int, desc: str | None = "sae") -> TrainedSAE:
    """Train one SAE on an endless iterator of (rows, d_in) activation batches, in the iterator's order: what
    the planted family (`featureflow/pipeline/planted.py`) feeds with synthetic activations. The dataset
    mean comes from the first ~MEAN_TOKENS rows; then one optimiser step per batch,
    `cfg.tokens // (cfg.block_tokens * cfg.blocks_per_batch)` steps, each one `_Replica.step` as in
    `train_saes`. `seed` fixes the initialisation."""
    acts, n = [], 0
    while n < MEAN_TOKENS:
        acts.append(next(batches))
        n += acts[-1].shape[0]
    first = torch.cat(acts)
    device = first.device
    mean = (first.double().sum(0) / n).float()
    steps = max(1, cfg.tokens // (cfg.block_tokens * cfg.blocks_per_batch))
    rep = _Replica(cfg, seed, mean, first, steps, device)
    for step in tqdm(range(steps), desc=desc, unit="step", dynamic_ncols=True, disable=desc is None):
        rep.step(step, next(batches).reshape(-1, mean.shape[0]))
    return rep.result()


# ------------------------------------------------------------------------------------- health
@torch.no_grad()
def sae_health(model, sae: "SparseAutoencoder | LensSAE", windows: torch.Tensor, hook: str, batch_size: int = 32) -> dict:
    """Raw sums for L0, MSE, explained variance, dead features and loss recovered on held-out windows;
    `summarise` turns one or several of these (e.g. one per domain) into the figures."""
    lm = hooked(model)
    device = lm.device
    sae = sae.to(device)
    fired = torch.zeros(sae.d_sae, dtype=torch.bool, device=device)
    sums = {"l0": 0.0, "sq_err": 0.0, "x_sum": None, "x_sq": 0.0, "ce_clean": 0.0, "ce_sae": 0.0, "ce_zero": 0.0,
            "n_tok": 0, "n_pred": 0}
    for i in range(0, len(windows), batch_size):
        x_tok = windows[i:i + batch_size].to(device)
        clean_logits, got = lm.run(x_tok, [hook])
        flat = got[hook].float().reshape(-1, sae.d_in)
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

        sums["ce_clean"] += ce(clean_logits)
        with lm.splice(hook, lambda a: sae(a.float())[0].to(a.dtype)):
            sums["ce_sae"] += ce(lm.logits(x_tok))
        with lm.splice(hook, torch.zeros_like):
            sums["ce_zero"] += ce(lm.logits(x_tok))
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
