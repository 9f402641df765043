"""The LM's learning-rate schedule (transformers' cosine with warm-up and a floor) against the formula it
replaced, and the rates train_lm actually ran at."""

import math

import numpy as np
import pytest
import torch

from featureflow.config import TrainingConfig
from featureflow.pipeline.family.train import lr_schedule, train_lm


def _old_lr_at(step, total, warmup, peak, min_ratio):
    """The hand-written schedule train.py had before (the reference)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@pytest.mark.parametrize("total,warmup,min_ratio", [(100, 10, 0.1), (37, 7, 0.0), (5, 1, 0.2), (12, 0, 0.05)])
def test_schedule_keeps_the_warm_up_and_the_cosine_one_update_earlier(total, warmup, min_ratio):
    peak = 3e-3
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    sched = lr_schedule(opt, total, warmup, min_ratio)
    got = []
    for _ in range(total):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # warm-up: update k at peak (k + 1) / warmup, as before; then the old cosine's value one step later, so the
    # last update runs at exactly min_ratio * peak (the old one stopped a step short of it)
    want = [_old_lr_at(k if k < warmup else k + 1, total, warmup, peak, min_ratio) for k in range(total)]
    assert got == pytest.approx(want, rel=1e-12)
    assert got[-1] == pytest.approx(min_ratio * peak, rel=1e-12)
    assert max(got) == pytest.approx(peak, rel=1e-12) or warmup == 0  # without warm-up it starts one step into the decay


def test_train_lm_logs_the_rates_it_ran_at():
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    stream = np.random.default_rng(0).integers(0, 32, 4000).astype(np.int32)
    cfg = TrainingConfig(batch_size=2, eval_every=1, warmup_steps=3, min_lr_ratio=0.1)
    val = {"d": torch.from_numpy(stream[:64].astype(np.int64)).view(4, 16)}
    res = train_lm(model, {"d": stream}, val, tokens=2 * 16 * 20, context=16, cfg=cfg, lr=1e-3, seed=0)
    warmup = min(cfg.warmup_steps, res.steps // 5)
    lrs = [row["lr"] for row in res.log]
    want = [_old_lr_at(k if k < warmup else k + 1, res.steps, warmup, 1e-3, 0.1) for k in range(res.steps)]
    assert len(lrs) == res.steps == 20 and lrs == pytest.approx(want, rel=1e-12)
