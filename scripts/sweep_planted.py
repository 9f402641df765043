"""Sweep what a user controls on the planted family and print where the fate calls become reliable.

    python scripts/sweep_planted.py [--config configs/planted.yaml] [--out sweep.json]
        [--arch topk:4 topk:2 standard:0.01] [--expansion 4 8] [--tokens 128000 256000]
        [--thresholds 0.5 0.6 0.7 0.8 0.9] [--replicas 1]

Each SAE setting (architecture / k or λ, expansion, training positions and so steps) trains the family once
(`featureflow.pipeline.planted.train_family`); every threshold and every mode is then scored on the same SAEs
(`score_family`, cheap). One row per (setting, threshold, mode): precision / recall of persisting and
disappearing calls for all and for reproducible latents, the root's MCC and the wall time of the setting.
Kept small on purpose (2 shared cores): the defaults are 2 x 2 x 2 settings.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from featureflow.config import load_planted  # noqa: E402
from featureflow.pipeline.planted import resolve, score_family, train_family  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/planted.yaml")
    ap.add_argument("--out", default=None)
    ap.add_argument("--arch", nargs="+", default=["topk:4", "topk:2"],
                    help="architecture:k for topk / batchtopk, standard:λ for standard")
    ap.add_argument("--expansion", nargs="+", type=int, default=[4, 8])
    ap.add_argument("--tokens", nargs="+", type=int, default=[128_000, 256_000], help="training positions per SAE")
    ap.add_argument("--thresholds", nargs="+", type=float, default=[0.5, 0.6, 0.7, 0.8, 0.9])
    ap.add_argument("--replicas", type=int, default=None)
    args = ap.parse_args()

    planted, sae, matching = load_planted(args.config)
    if args.replicas is not None:
        planted = planted.model_copy(update={"replicas": args.replicas})
    base_sae, base_m = resolve(planted, sae, matching)
    rows = []
    torch.set_num_threads(1)  # as run_planted: these shapes are too small for intra-op threads
    print(f"{'arch':<14} {'exp':>3} {'tokens':>7} {'steps':>5} {'MCC':>5} {'thr':>4} {'mode':<13} "
          f"{'P pers':>6} {'R pers':>6} {'P disp':>6} {'R disp':>6} | {'P pers':>6} {'R pers':>6} {'P disp':>6} "
          f"{'R disp':>6} (all | reproducible)  {'s':>4}")
    for arch, exp, tokens in itertools.product(args.arch, args.expansion, args.tokens):
        kind, val = arch.split(":")
        upd = {"architecture": kind, "expansion": exp, "tokens": tokens}
        upd.update({"l1_coefficient": float(val), "k": None} if kind == "standard" else {"k": int(val)})
        s_cfg = base_sae.model_copy(update=upd)
        t0 = time.time()
        tf = train_family(planted, s_cfg)
        secs = time.time() - t0
        steps = tokens // (s_cfg.block_tokens * s_cfg.blocks_per_batch)
        for thr in args.thresholds:
            card = score_family(planted, tf, base_m.model_copy(update={"threshold": thr}))
            for mode in card["modes"]:
                a, r = card["modes"][mode], card["reproducible"][mode]
                row = {"arch": arch, "expansion": exp, "tokens": tokens, "steps": steps, "threshold": thr,
                       "mode": mode, "mcc_root": card["mcc"]["root"]["0"], "seconds": secs,
                       "all": {f: a[f] for f in ("persisting", "disappearing")},
                       "reproducible": {f: r[f] for f in ("persisting", "disappearing")}}
                rows.append(row)

                def f(x):
                    return "   -  " if x is None else f"{x:6.3f}"

                print(f"{arch:<14} {exp:>3} {tokens:>7} {steps:>5} {row['mcc_root']:5.3f} {thr:4.2f} {mode:<13} "
                      f"{f(a['persisting']['precision'])} {f(a['persisting']['recall'])} "
                      f"{f(a['disappearing']['precision'])} {f(a['disappearing']['recall'])} | "
                      f"{f(r['persisting']['precision'])} {f(r['persisting']['recall'])} "
                      f"{f(r['disappearing']['precision'])} {f(r['disappearing']['recall'])}  {secs:4.0f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
