"""SAE training measurements: throughput of the training loop, and how close `target_l0` lands.

    python scripts/bench_sae.py throughput [--baseline OLD_SAE_PY] [--repeats 3] [--steps 12]
        Tokens/s of `train_sae`'s training loop (the mean estimate excluded) on the demo shape: a one-layer
        Mistral hidden 128 / d_mlp 512 (x4 -> 2048 latents), blocks of 24 x 128 tokens. With --baseline
        (e.g. `git show HEAD:featureflow/sae.py > /tmp/sae_head.py`) the old and the current module run
        interleaved, so a shared machine's load falls on both alike.
    python scripts/bench_sae.py draws --config configs/demo.yaml --member babypython [--tokens 150000 --repeats 2]
        What giving each seed replica its own token draw costs: `train_saes` for every SAE of a member (the
        config's SAE recipe, fewer tokens) with one shared draw (one data seed) and with a draw per replica (one
        data seed each), interleaved, on the member's trained model and streams from an existing run folder;
        prints seconds and the ratio (own draws / shared).
    python scripts/bench_sae.py member --baseline OLD_SAE_PY --config configs/demo.yaml --member lua [--tokens 150000]
        What the pipeline's saes stage pays per member, LM passes included: `train_saes` for every SAE of a
        member (its own token draw each, as `Pipeline.sae` trains them) with the old and the current module,
        interleaved; prints seconds of each and the ratio (old / current).
    python scripts/bench_sae.py calibrate --model DIR --streams DIR [--target 30 --expansion 4 ...]
        Train standard SAEs with target_l0 (and topk / batchtopk SAEs) on a trained model and its token
        streams (<domain>.train.npy); print final L0 against the target, λ, wall time, dead latents.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import load_baseline  # noqa: E402
from featureflow.config import ModelShape, SAEConfig  # noqa: E402


def load_impl(path: str | None):
    if path is None:
        import featureflow.pipeline.sae as mod
        return mod
    return load_baseline(path, "_sae_baseline")


class LoopTimer:
    """Stands in for tqdm inside the module: times the training loop from its first to its last step."""
    t_first = t_end = None

    def __init__(self, it, **kw):
        self.it = it

    def __iter__(self):
        LoopTimer.t_first = time.perf_counter()
        yield from self.it
        LoopTimer.t_end = time.perf_counter()

    def set_postfix(self, **kw):
        pass


def throughput(args) -> None:
    from featureflow.pipeline.family.model import new_model

    torch.set_num_threads(args.threads)
    model = new_model(ModelShape(hidden=128, d_mlp=512, heads=4, context=128), 4096, 0, seed=0).eval()
    rng = np.random.default_rng(0)
    streams = {"a": rng.integers(0, 4096, 400_000).astype(np.uint16),
               "b": rng.integers(0, 4096, 400_000).astype(np.uint16)}
    per_step = 24 * 128
    cfg = SAEConfig(expansion=4, l1_coefficient=8e-4, lr=3e-3, tokens=per_step * args.steps, block_tokens=24,
                    blocks_per_batch=128)
    impls = {"current": load_impl(None)}
    if args.baseline:
        impls = {"baseline": load_impl(args.baseline), **impls}
    variants = [(name, mod, cfg) for name, mod in impls.items()]
    if args.target:
        variants.append(("current+target_l0", impls["current"], cfg.model_copy(update={"target_l0": 30.0})))
    for arch in args.archs.split(",") if args.archs else []:
        variants.append((f"current {arch}", impls["current"], cfg.model_copy(update={"architecture": arch, "k": 32})))
    res: dict[str, list[float]] = {v[0]: [] for v in variants}
    for r in range(args.repeats):
        for name, mod, c in variants:
            mod.tqdm = LoopTimer
            mod.train_sae(model, streams, c, seed=r)
            tps = per_step * (args.steps - 1) / (LoopTimer.t_end - LoopTimer.t_first)  # first step: warm-up
            res[name].append(tps)
            print(f"repeat {r}  {name:18s} {tps:8.0f} tok/s", flush=True)
    for name, v in res.items():
        print(f"{name:18s} median {np.median(v):8.0f}  min {min(v):8.0f}  max {max(v):8.0f} tok/s "
              f"({len(v)} runs)")


def calibrate(args) -> None:
    from featureflow.pipeline.family.model import load_model
    from featureflow.pipeline.sae import train_sae

    from featureflow.pipeline.sae import L0Controller

    for kv in args.ctrl or []:
        key, val = kv.split("=")
        setattr(L0Controller, key, float(val))
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(args.model, device)
    streams = {p.name.split(".")[0]: np.load(p, mmap_mode="r") for p in sorted(Path(args.streams).glob("*.train.npy"))}
    if args.domains:
        streams = {d: streams[d] for d in args.domains.split(",")}
    base = dict(expansion=args.expansion, lr=args.lr, tokens=args.tokens, block_tokens=args.block,
                blocks_per_batch=args.blocks, l1_coefficient=args.l1, lr_decay_fraction=args.decay)
    out = []
    for arch in args.arch.split(","):
        for target in [None if t == "none" else float(t) for t in args.target.split(",")]:
            for seed in range(args.seeds):
                cfg = SAEConfig(**base, architecture=arch, target_l0=target)
                t = time.time()
                tr = train_sae(model, streams, cfg, seed=seed, desc=f"{arch} {target}")
                secs = time.time() - t
                # final L0 / dead / EV on fresh batches of the training shape (other windows, same streams)
                from featureflow.pipeline.sae import activations, block_batches
                fired = torch.zeros(tr.sae.d_sae, dtype=torch.bool, device=device)
                l0s, ev_num, ev_den = [], 0.0, 0.0
                with torch.no_grad():
                    fresh = block_batches(streams, args.block, args.blocks, 10_000 + seed)
                    for _, b in zip(range(args.eval_batches), fresh):
                        x = activations(model, b, cfg.hook).reshape(-1, tr.sae.d_in)
                        x_hat, f = tr.sae(x)
                        l0s.append((f > 0).sum(-1).float().mean().item())
                        fired |= (f > 0).any(0)
                        ev_num += ((x_hat - x) ** 2).sum().item()
                        ev_den += ((x - x.mean(0)) ** 2).sum().item()
                row = {"arch": arch, "target": target, "seed": seed, "l0": float(np.mean(l0s)),
                       "l1_final": tr.l1_coefficient, "seconds": round(secs, 1),
                       "dead": int((~fired).sum().item()), "d_sae": tr.sae.d_sae,
                       "ev": 1 - ev_num / ev_den,
                       "traj": [(r["step"], round(r["l0"], 1), r["l1_coefficient"]) for r in tr.log]}
                out.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "traj"}), flush=True)
                if args.traj:
                    print("   ", row["traj"], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


def paper(args) -> None:
    """On a GPU: a paper-shape LM (hidden 512, d_mlp 1024, 16 heads, context 256) trained briefly on the given
    streams, then the paper's SAE recipe (x16, lr 1e-4, Adam (0.9, 0.9999), 128 blocks of 24, 15M tokens)."""
    from featureflow.config import TrainingConfig
    from featureflow.pipeline.family.model import new_model
    from featureflow.pipeline.family.train import train_lm, validation_windows
    from featureflow.pipeline.sae import activations, block_batches, sae_health, summarise, train_sae

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    streams = {p.name.split(".")[0]: np.load(p) for p in sorted(Path(args.streams).glob("*.train.npy"))}
    vals = {p.name.split(".")[0]: np.load(p) for p in sorted(Path(args.streams).glob("*.val.npy"))}
    vocab = int(max(s.max() for s in streams.values())) + 1
    vocab = max(vocab, 4096)
    model = new_model(ModelShape(hidden=512, d_mlp=1024, heads=16, context=256), vocab, 0, seed=0).to(device)
    t = time.time()
    windows = {d: validation_windows(v, 256, args.eval_tokens) for d, v in vals.items()}
    train_lm(model, streams, {d: w[:8] for d, w in windows.items()}, args.lm_tokens, 256,
             TrainingConfig(batch_size=64, lr=1e-3, warmup_steps=200, eval_every=10 ** 9, eval_tokens=2048),
             lr=1e-3, seed=0, desc="lm")
    model.eval()
    print(f"LM {args.lm_tokens} tokens in {time.time() - t:.0f} s", flush=True)
    rows = []
    for spec in args.runs.split(";"):
        kw = dict(kv.split("=") for kv in spec.split(","))
        kw = {k: (v if k == "architecture" else float(v)) for k, v in kw.items()}
        if "k" in kw:
            kw["k"] = int(kw["k"])
        cfg = SAEConfig(expansion=16, l1_coefficient=3e-4, lr=1e-4, adam_betas=(0.9, 0.9999), block_tokens=24,
                        blocks_per_batch=128, tokens=args.sae_tokens, **kw)
        sync()
        t = time.time()
        tr = train_sae(model, streams, cfg, seed=0, desc=spec)
        sync()
        secs = time.time() - t
        h = summarise([sae_health(model, tr.sae, w, cfg.hook) for w in windows.values()])
        # held-out blocks shaped like the training ones (24 tokens), from the validation streams
        l0s = []
        fired = torch.zeros(tr.sae.d_sae, dtype=torch.bool, device=device)
        with torch.no_grad():
            for _, b in zip(range(20), block_batches(vals, 24, 128, 123)):
                f = tr.sae.encode(activations(model, b, cfg.hook).reshape(-1, tr.sae.d_in))
                l0s.append((f > 0).sum(-1).float().mean().item())
                fired |= (f > 0).any(0)
        row = {"run": spec, "seconds": round(secs, 1), "l1_final": tr.l1_coefficient,
               "l0_blocks24": float(np.mean(l0s)), "dead_blocks24": int((~fired).sum()),
               **{k: h[k] for k in ("l0", "mse", "explained_variance", "dead_features", "loss_recovered")},
               "traj": [(r["step"], round(r["l0"], 1), r["l1_coefficient"]) for r in tr.log[::10]]}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "traj"}), flush=True)
        (out / "paper_runs.json").write_text(json.dumps(rows, indent=1))


def member_saes(args):
    """(member, its SAE config at `args.tokens`, model, training streams, SAE seeds, data seeds) of an existing run
    folder: every SAE `Pipeline.sae` trains for the member, each replica with its own token draw."""
    from featureflow.config import load_config
    from featureflow.pipeline.family.model import load_model
    from featureflow.pipeline.runner import Pipeline

    torch.set_num_threads(args.threads)
    pl = Pipeline(load_config(args.config), device="cpu")
    name = args.member
    cfg = pl.cfg.sae.model_copy(update={"tokens": args.tokens})
    model = load_model(pl.member(name))
    streams = {d: pl.stream(d, "train") for d in pl.cfg.member_domains(name)}
    reps = pl.replicas(name)
    return (name, cfg, model, streams, [pl.sae_seed(name, r) for r in reps],
            [pl.sae_data_seed(name, r) for r in reps])


def draws(args) -> None:
    from featureflow.pipeline.sae import train_saes

    name, cfg, model, streams, seeds, own = member_saes(args)
    times = {"shared": [], "own": []}
    for _ in range(args.repeats):
        for kind, data in (("shared", own[0]), ("own", own)):
            t0 = time.perf_counter()
            train_saes(model, streams, cfg, seeds, data, desc=None)
            times[kind].append(time.perf_counter() - t0)
            print(json.dumps({"draw": kind, "saes": len(seeds), "tokens": args.tokens,
                              "seconds": round(times[kind][-1], 2)}), flush=True)
    best = {k: min(v) for k, v in times.items()}
    print(f"{name}: {len(seeds)} SAEs x {args.tokens:,} tokens: one shared draw {best['shared']:.1f} s, a draw per "
          f"replica {best['own']:.1f} s (best of {args.repeats}): ratio {best['own'] / best['shared']:.2f}")


def member(args) -> None:
    name, cfg, model, streams, seeds, own = member_saes(args)
    impls = {"baseline": load_impl(args.baseline), "current": load_impl(None)}
    times = {k: [] for k in impls}
    for _ in range(args.repeats):
        for kind, mod in impls.items():
            t0 = time.perf_counter()
            mod.train_saes(model, streams, cfg, seeds, own, desc=None)
            times[kind].append(time.perf_counter() - t0)
            print(json.dumps({"impl": kind, "saes": len(seeds), "tokens": args.tokens,
                              "seconds": round(times[kind][-1], 2)}), flush=True)
    best = {k: min(v) for k, v in times.items()}
    print(f"{name}: {len(seeds)} SAEs x {args.tokens:,} tokens: baseline {best['baseline']:.1f} s "
          f"({', '.join(f'{t:.1f}' for t in times['baseline'])}), current {best['current']:.1f} s "
          f"({', '.join(f'{t:.1f}' for t in times['current'])}), best of {args.repeats}: "
          f"{best['baseline'] / best['current']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--baseline")
    t.add_argument("--repeats", type=int, default=3)
    t.add_argument("--steps", type=int, default=12)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--target", action="store_true", help="also time a standard SAE with target_l0 30")
    t.add_argument("--archs", help="also time these architectures (k 32), e.g. topk,batchtopk")
    d = sub.add_parser("draws")
    d.add_argument("--config", default="configs/demo.yaml")
    d.add_argument("--member", default="babypython")
    d.add_argument("--tokens", type=int, default=150_000)
    d.add_argument("--repeats", type=int, default=2)
    d.add_argument("--threads", type=int, default=2)
    b = sub.add_parser("member")
    b.add_argument("--baseline", required=True)
    b.add_argument("--config", default="configs/demo.yaml")
    b.add_argument("--member", default="lua")
    b.add_argument("--tokens", type=int, default=150_000)
    b.add_argument("--repeats", type=int, default=2)
    b.add_argument("--threads", type=int, default=2)
    c = sub.add_parser("calibrate")
    c.add_argument("--model", required=True)
    c.add_argument("--streams", required=True)
    c.add_argument("--domains")
    c.add_argument("--arch", default="standard")
    c.add_argument("--target", default="30")
    c.add_argument("--seeds", type=int, default=1)
    c.add_argument("--expansion", type=int, default=4)
    c.add_argument("--lr", type=float, default=3e-3)
    c.add_argument("--l1", type=float, default=8e-4)
    c.add_argument("--decay", type=float, default=0.0)
    c.add_argument("--tokens", type=int, default=650_000)
    c.add_argument("--block", type=int, default=24)
    c.add_argument("--blocks", type=int, default=128)
    c.add_argument("--eval-batches", type=int, default=10)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--traj", action="store_true")
    c.add_argument("--out")
    c.add_argument("--ctrl", nargs="*", help="L0Controller constants to override, e.g. GAIN=3")
    g = sub.add_parser("paper")
    g.add_argument("--streams", required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--lm-tokens", type=int, default=30_000_000)
    g.add_argument("--sae-tokens", type=int, default=15_000_000)
    g.add_argument("--eval-tokens", type=int, default=16_384)
    g.add_argument("--runs", default="target_l0=30")
    args = ap.parse_args()
    {"throughput": throughput, "calibrate": calibrate, "paper": paper, "draws": draws, "member": member}[args.cmd](args)


if __name__ == "__main__":
    main()
