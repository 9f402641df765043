"""Training and fine-tuning: AdamW, linear warm-up then cosine decay, per-domain evaluation.

Batches mix the member's domains evenly: each row of a batch is a random window from one domain,
domains taken in turn, so a two-domain model sees equal token counts of each.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from featureflow.progress import progress as tqdm  # a bar on a terminal, log lines elsewhere

from featureflow.config import TrainingConfig


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast(device: str):
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def validation_windows(stream: np.ndarray, context: int, n_tokens: int) -> torch.Tensor:
    """Deterministic, non-overlapping windows from the start of a validation stream."""
    n = max(1, min(n_tokens // context, (len(stream) - 1) // context))
    usable = stream[: n * context].astype(np.int64)
    if len(usable) < n * context:
        raise ValueError(f"validation stream of {len(stream)} tokens is shorter than one window of {context}")
    return torch.from_numpy(usable.reshape(n, context))


@torch.no_grad()
def evaluate(model, windows: dict[str, torch.Tensor], batch_size: int = 32) -> dict[str, dict[str, float]]:
    """Per domain: mean next-token cross-entropy and accuracy over the given windows."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = {}
    for domain, w in windows.items():
        loss_sum, correct, count = 0.0, 0, 0
        for i in range(0, len(w), batch_size):
            x = w[i:i + batch_size].to(device)
            with autocast(device.type):
                logits = model(x).logits[:, :-1].float()
            y = x[:, 1:]
            loss_sum += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            correct += (logits.argmax(-1) == y).sum().item()
            count += y.numel()
        out[domain] = {"loss": loss_sum / count, "accuracy": correct / count}
    model.train(was_training)
    return out


def lr_schedule(opt: torch.optim.Optimizer, total: int, warmup: int, min_ratio: float):
    """transformers' linear warm-up then cosine decay to `min_ratio` of the peak, advanced once before the first
    update: update k (0-based) runs at peak * (k + 1) / warmup during warm-up, then decays to exactly
    min_ratio * peak at the last update (call `.step()` after each optimizer step)."""
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

    sched = get_cosine_with_min_lr_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=total,
                                                        min_lr_rate=min_ratio)
    with warnings.catch_warnings():  # stepping before the first optimizer step is what we mean here
        warnings.simplefilter("ignore", UserWarning)
        sched.step()
    return sched


@dataclass
class TrainResult:
    steps: int
    tokens: int
    log: list[dict]  # one row per evaluation: step, tokens, lr, train_loss, and per-domain loss/accuracy


def train_lm(
    model,
    train_streams: dict[str, np.ndarray],
    val_windows: dict[str, torch.Tensor],
    tokens: int,
    context: int,
    cfg: TrainingConfig,
    lr: float,
    seed: int,
    desc: str = "train",
    on_eval: Callable[[dict], None] | None = None,
) -> TrainResult:
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)
    domains = list(train_streams)
    for d, s in train_streams.items():
        if len(s) <= context + 1:
            raise ValueError(f"domain '{d}' has {len(s)} training tokens, fewer than one window of {context}")
    steps = max(1, tokens // (cfg.batch_size * context))
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95),
    )
    sched = lr_schedule(opt, steps, min(cfg.warmup_steps, steps // 5), cfg.min_lr_ratio)
    log: list[dict] = []
    model.train()
    bar = tqdm(range(steps), desc=desc, unit="step", dynamic_ncols=True)
    ema = None
    for step in bar:
        rows = []
        for b in range(cfg.batch_size):
            s = train_streams[domains[(step * cfg.batch_size + b) % len(domains)]]
            i = int(rng.integers(0, len(s) - context))
            rows.append(s[i:i + context].astype(np.int64))
        x = torch.from_numpy(np.stack(rows)).to(device)
        cur_lr = opt.param_groups[0]["lr"]
        with autocast(device.type):
            loss = model(x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if (step + 1) % cfg.eval_every == 0 or step + 1 == steps:
            ev = evaluate(model, val_windows)
            row = {"step": step + 1, "tokens": (step + 1) * cfg.batch_size * context, "lr": cur_lr,
                   "train_loss": ema, "val": ev}
            log.append(row)
            if on_eval:
                on_eval(row)
            bar.set_postfix(loss=f"{ema:.3f}", **{f"acc_{d}": f"{v['accuracy']:.3f}" for d, v in ev.items()})
        elif step % 10 == 0:
            bar.set_postfix(loss=f"{ema:.3f}")
    model.eval()
    return TrainResult(steps=steps, tokens=steps * cfg.batch_size * context, log=log)
