"""Sweep SAE recipes on a demo-shaped member: seed-replica agreement, noise floor and health per recipe.

    PYTHONPATH=. python scripts/sweep_sae.py [--config configs/demo.yaml] [--member babypython]
                                             [--recipes paper-demo,topk-k24,...] [--cache /tmp/ff_sweep]

For each recipe, two seed replicas train in one pass (`train_saes`) over the member's activations, which are
computed once by the LM (blocks drawn as the pipeline draws them, float16 on disk under --cache) and replayed
for every recipe; each replica shuffles them with its own seed. Printed per recipe:

    seconds  the one-pass training of both replicas (LM excluded: its activations are cached)
    PW-MCC   `matching.pw_mcc` of the two decoders (Hungarian on 1 - |cos|), with its chance level
    floor    share of replica 0's features whose best activation-Pearson match in replica 1 exceeds the
             threshold, on the run's shared sample (`matching.pearson_topk`, the floors stage's engine)
    EV, dead replica 0's explained variance and share of dead latents on the held-out windows
             (`sae_health` + `summarise`, the saes stage's figures; the mean over both replicas in brackets)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

# name -> changes to the config's `sae` section (what the sweep compares)
RECIPES: dict[str, dict] = {
    # the demo recipe before this sweep: ReLU + L1, 128 blocks per batch (169 steps)
    "paper-demo": dict(architecture="standard", expansion=4, l1_coefficient=0.0008, lr=0.003, tokens=520_000,
                       blocks_per_batch=128),
    # the TopK run: k 24, 32 blocks per batch (677 steps)
    "topk-k24-b32": dict(architecture="topk", k=24, expansion=4, lr=0.003, tokens=520_000, blocks_per_batch=32),
    # + data-based initialisation, warm-up and decay, lower lr
    "topk-k24-b32-data-sched": dict(architecture="topk", k=24, expansion=4, lr=0.001, tokens=520_000,
                                    blocks_per_batch=32, init="data", lr_warmup_steps=50, lr_decay_fraction=0.3),
    # + BatchTopK and a smaller dictionary (x2: 1,024 latents)
    "btopk-k24-x2-b32-data-sched": dict(architecture="batchtopk", k=24, expansion=2, lr=0.001, tokens=520_000,
                                        blocks_per_batch=32, init="data", lr_warmup_steps=50,
                                        lr_decay_fraction=0.3),
    "btopk-k16-x2-b16-data-sched": dict(architecture="batchtopk", k=16, expansion=2, lr=0.001, tokens=520_000,
                                        blocks_per_batch=16, init="data", lr_warmup_steps=100,
                                        lr_decay_fraction=0.3),
    "topk-k24-x2-b32-data-sched": dict(architecture="topk", k=24, expansion=2, lr=0.001, tokens=520_000,
                                       blocks_per_batch=32, init="data", lr_warmup_steps=50, lr_decay_fraction=0.3),
    # the same at the lr 0.003, and with k 32
    "topk-k24-x2-b32-data-sched-lr3e-3": dict(architecture="topk", k=24, expansion=2, lr=0.003, tokens=520_000,
                                              blocks_per_batch=32, init="data", lr_warmup_steps=50,
                                              lr_decay_fraction=0.3),
    "topk-k32-x2-b32-data-sched-lr3e-3": dict(architecture="topk", k=32, expansion=2, lr=0.003, tokens=520_000,
                                              blocks_per_batch=32, init="data", lr_warmup_steps=50,
                                              lr_decay_fraction=0.3),
    # + resampling of dead latents every 100 steps
    "topk-k24-x2-b32-data-sched-resample": dict(architecture="topk", k=24, expansion=2, lr=0.001, tokens=520_000,
                                                blocks_per_batch=32, init="data", lr_warmup_steps=50,
                                                lr_decay_fraction=0.3, resample_dead_every=100),
    "topk-k24-x2-b32-data-sched-resample-lr2e-3": dict(architecture="topk", k=24, expansion=2, lr=0.002,
                                                       tokens=520_000, blocks_per_batch=32, init="data",
                                                       lr_warmup_steps=50, lr_decay_fraction=0.3,
                                                       resample_dead_every=100),
    "topk-k24-x2-b16-data-sched-resample": dict(architecture="topk", k=24, expansion=2, lr=0.001, tokens=520_000,
                                                blocks_per_batch=16, init="data", lr_warmup_steps=100,
                                                lr_decay_fraction=0.3, resample_dead_every=200),
    "topk-k24-x4-b32-data-sched-resample": dict(architecture="topk", k=24, expansion=4, lr=0.001, tokens=520_000,
                                                blocks_per_batch=32, init="data", lr_warmup_steps=50,
                                                lr_decay_fraction=0.3, resample_dead_every=100),
    # random (Gaussian) initialisation: data init repeats frequent tokens' directions, which then compete
    "topk-k24-x2-b32-sched-resample-lr2e-3": dict(architecture="topk", k=24, expansion=2, lr=0.002,
                                                  tokens=520_000, blocks_per_batch=32, lr_warmup_steps=50,
                                                  lr_decay_fraction=0.3, resample_dead_every=100),
    "topk-k24-x2-b32-sched-resample-lr3e-3": dict(architecture="topk", k=24, expansion=2, lr=0.003,
                                                  tokens=520_000, blocks_per_batch=32, lr_warmup_steps=50,
                                                  lr_decay_fraction=0.3, resample_dead_every=100),
    "btopk-k24-x2-b16-data-sched": dict(architecture="batchtopk", k=24, expansion=2, lr=0.001, tokens=520_000,
                                        blocks_per_batch=16, init="data", lr_warmup_steps=100,
                                        lr_decay_fraction=0.3),
    "topk-k24-x2-b16-sched-resample-lr2e-3": dict(architecture="topk", k=24, expansion=2, lr=0.002,
                                                  tokens=520_000, blocks_per_batch=16, lr_warmup_steps=100,
                                                  lr_decay_fraction=0.3, resample_dead_every=200),
    "topk-k24-x1-b32-sched-resample-lr3e-3": dict(architecture="topk", k=24, expansion=1, lr=0.003,
                                                  tokens=520_000, blocks_per_batch=32, lr_warmup_steps=50,
                                                  lr_decay_fraction=0.3, resample_dead_every=100),
    "topk-k16-x2-b32-sched-resample-lr3e-3": dict(architecture="topk", k=16, expansion=2, lr=0.003,
                                                  tokens=520_000, blocks_per_batch=32, lr_warmup_steps=50,
                                                  lr_decay_fraction=0.3, resample_dead_every=100),
    "topk-k12-x2-b32-sched-resample-lr3e-3": dict(architecture="topk", k=12, expansion=2, lr=0.003,
                                                  tokens=520_000, blocks_per_batch=32, lr_warmup_steps=50,
                                                  lr_decay_fraction=0.3, resample_dead_every=100),
    "topk-k8-x2-b32-sched-resample-lr3e-3": dict(architecture="topk", k=8, expansion=2, lr=0.003,
                                                 tokens=520_000, blocks_per_batch=32, lr_warmup_steps=50,
                                                 lr_decay_fraction=0.3, resample_dead_every=100),
    "topk-k16-x2-b16-sched-resample-lr2e-3": dict(architecture="topk", k=16, expansion=2, lr=0.002,
                                                  tokens=520_000, blocks_per_batch=16, lr_warmup_steps=100,
                                                  lr_decay_fraction=0.3, resample_dead_every=200),
    "topk-k12-x2-b16-sched-resample-lr2e-3": dict(architecture="topk", k=12, expansion=2, lr=0.002,
                                                  tokens=520_000, blocks_per_batch=16, lr_warmup_steps=100,
                                                  lr_decay_fraction=0.3, resample_dead_every=100),
    "topk-k16-x2-b16-sched-resample-lr2e-3-700k": dict(architecture="topk", k=16, expansion=2, lr=0.002,
                                                       tokens=700_000, blocks_per_batch=16, lr_warmup_steps=100,
                                                       lr_decay_fraction=0.3, resample_dead_every=200),
}


def cached_activations(pl, member: str, sae_cfg, n_tokens: int, cache: Path) -> np.ndarray:
    """(n_tokens, d) float16 activations of the member's training mix at the SAE hook, computed once."""
    from featureflow.pipeline.family.model import load_model
    from featureflow.pipeline.sae import activation_chunks

    path = cache / f"{member}-{pl.member(member).name}-{sae_cfg.block_tokens}-{n_tokens}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    model = load_model(pl.member(member), "cpu")
    streams = {d: pl.stream(d, "train") for d in pl.cfg.member_domains(member)}
    out, n = [], 0
    t0 = time.time()
    with torch.no_grad():
        for chunk in activation_chunks(model, streams, sae_cfg, pl.sae_data_seed(member)):
            out.append(chunk.half().numpy())
            n += len(chunk)
            if n >= n_tokens:
                break
    arr = np.concatenate(out)[:n_tokens]
    print(f"# LM activations of {member}: {arr.shape} in {time.time() - t0:.1f} s", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    return np.load(path, mmap_mode="r")


def sample_activations(pl, member: str, cache: Path) -> np.ndarray:
    """(sample tokens, d) float16 activations of the member on the run's shared sample, computed once."""
    from featureflow.pipeline.family.model import load_model
    from featureflow.pipeline.sae import activations

    tokens = pl.sample_tokens()
    path = cache / f"{member}-{pl.member(member).name}-sample-{pl.sample().name}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    model = load_model(pl.member(member), "cpu")
    with torch.no_grad():
        parts = [activations(model, torch.from_numpy(tokens[i:i + 64].astype(np.int64)), pl.cfg.sae.hook)
                 .reshape(-1, pl.cfg.model.d_mlp).half().numpy() for i in range(0, len(tokens), 64)]
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, np.concatenate(parts))
    return np.load(path, mmap_mode="r")


def replay(arr: np.ndarray, mean_tokens: int, chunk: int):
    """The cached activations as `train_saes` chunks: the mean's first, then `chunk` rows at a time."""
    yield torch.from_numpy(np.asarray(arr[:mean_tokens], dtype=np.float32))
    i = mean_tokens
    while i + chunk <= len(arr):
        yield torch.from_numpy(np.asarray(arr[i:i + chunk], dtype=np.float32))
        i += chunk
    raise RuntimeError("the activation cache is too short for this recipe's tokens")


@torch.no_grad()
def encode(sae, acts: np.ndarray, batch: int = 8192):
    """Sparse (tokens, features) CSC activations of `sae` on cached hook activations."""
    import scipy.sparse as sp

    rows, cols, vals = [], [], []
    for i in range(0, len(acts), batch):
        f = sae.encode(torch.from_numpy(np.asarray(acts[i:i + batch], dtype=np.float32)))
        r, c = torch.nonzero(f, as_tuple=True)
        rows.append((r + i).numpy())
        cols.append(c.numpy())
        vals.append(f[r, c].numpy())
    return sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(len(acts), sae.d_sae)).tocsc()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--member", default="babypython")
    ap.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of: {', '.join(RECIPES)}")
    ap.add_argument("--cache", default="/tmp/ff_sweep")
    ap.add_argument("--tokens", type=int, default=None, help="train every recipe on this many tokens (smoke tests)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from featureflow.config import load_config
    from featureflow.pipeline.family.model import load_model
    from featureflow.pipeline.matching import pearson_topk, pw_mcc
    from featureflow.pipeline.runner import Pipeline
    from featureflow.pipeline.stages import hardware
    from featureflow.pipeline.sae import sae_health, summarise, train_saes

    names = [r.strip() for r in args.recipes.split(",") if r.strip()]
    recipes = {n: {**r, **({"tokens": args.tokens} if args.tokens else {})} for n, r in RECIPES.items()}
    unknown = [r for r in names if r not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe(s): {', '.join(unknown)} (known: {', '.join(RECIPES)})")
    cfg = load_config(args.config)
    pl = Pipeline(cfg, device="cpu")
    cache = Path(args.cache)
    seeds = [pl.sae_seed(args.member, r) for r in (0, 1)]
    mean_tokens = 50_000
    need = mean_tokens + max(recipes[r]["tokens"] for r in names) + 16 * 24 * 128  # + one buffer
    train = cached_activations(pl, args.member, cfg.sae, need, cache)
    sample = sample_activations(pl, args.member, cache)
    model = load_model(pl.member(args.member), "cpu")
    windows = pl.val_windows(cfg.member_domains(args.member), cfg.sae.eval_tokens)
    thr = cfg.matching.threshold
    hw = hardware("cpu")
    print(f"# {args.member} of {args.config}: {len(train):,} cached training tokens, shared sample "
          f"{len(sample):,} tokens; {hw['cpu']}, {hw['cores']} cores, {hw['torch_threads']} torch threads")
    print("| recipe | steps | seconds (2 SAEs, one pass) | PW-MCC (chance) | floor r > %.1f | EV | dead | L0 |" % thr)
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for name in names:
        sc = cfg.sae.model_copy(update=recipes[name])
        batch = sc.block_tokens * sc.blocks_per_batch
        t0 = time.time()
        trained = train_saes(None, {}, sc, seeds, data_seed=pl.sae_data_seed(args.member),
                             desc=name, chunks=replay(train, mean_tokens, sc.buffer_batches * batch))
        secs = time.time() - t0
        saes = [t.sae.eval() for t in trained]
        score, chance = pw_mcc(saes[0].W_dec.detach().numpy(), saes[1].W_dec.detach().numpy(), seed=cfg.seed)
        A, B = encode(saes[0], sample), encode(saes[1], sample)
        best = pearson_topk(A, B, 1, desc=None).p2c_r[:, 0]
        floor = float((np.nan_to_num(best, nan=-1.0) > thr).mean())
        health = [summarise([sae_health(model, s, w, cfg.sae.hook) for w in windows.values()]) for s in saes]
        ev = [h["explained_variance"] for h in health]
        dead = [h["dead_fraction"] for h in health]
        print(f"| {name} | {max(1, sc.tokens // batch)} | {secs:.0f} | {score:.3f} ({chance:.3f}) | {floor:.1%} "
              f"| {ev[0]:.3f} ({np.mean(ev):.3f}) | {dead[0]:.1%} ({np.mean(dead):.1%}) "
              f"| {health[0]['l0']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
