"""Benchmark: encoding a sample with an SAE and measuring its reconstruction health (`features.sparse_codes` with a
`health` dict: what every cross encode of the evidence stage runs).

    python scripts/bench_encode.py --baseline OLD_FEATURES_PY [--rows 200000 --d-in 512 --d-sae 1024 --k 16]

Builds a SAELens TopK SAE of the demo's shape (random weights, its own entry point `TopKSAE`), encodes `rows`
random activations in batches of 4,096 with the current module and with the baseline (e.g. `git show
HEAD~1:featureflow/pipeline/features.py > /tmp/features_old.py`), interleaved, and prints seconds of each (best of
`--repeats`, every repeat listed) and the ratio; the codes must be equal and the health equal to float32 rounding.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import load_baseline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--d-sae", type=int, default=1024)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from sae_lens import TopKSAE, TopKSAEConfig

    import featureflow.pipeline.features as current
    from featureflow.pipeline.sae import LensSAE

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sae = LensSAE(TopKSAE(TopKSAEConfig(d_in=args.d_in, d_sae=args.d_sae, k=args.k)).eval())
    xs = [torch.relu(torch.randn(4096, args.d_in)) * 0.2 for _ in range(args.rows // 4096)]
    mods = {"baseline": load_baseline(args.baseline, "_features_baseline"), "current": current}
    times: dict[str, list[float]] = {k: [] for k in mods}
    out = {}
    for _ in range(args.repeats):
        for name, mod in mods.items():
            health: dict = {}
            t0 = time.perf_counter()
            codes = mod.sparse_codes(sae, iter(xs), health)
            times[name].append(time.perf_counter() - t0)
            out[name] = (codes, health)
    (a, ha), (b, hb) = out["baseline"], out["current"]
    assert (a != b).nnz == 0, "the codes differ"
    assert abs(ha["explained_variance"] - hb["explained_variance"]) <= 1e-6 * max(1.0, abs(ha["explained_variance"]))
    best = {k: min(v) for k, v in times.items()}
    print(f"{len(xs) * 4096:,} rows, {args.d_in} -> {args.d_sae} TopK k {args.k}, with health: baseline "
          f"{best['baseline']:.2f} s ({', '.join(f'{t:.2f}' for t in times['baseline'])}), current "
          f"{best['current']:.2f} s ({', '.join(f'{t:.2f}' for t in times['current'])}), best of {args.repeats}: "
          f"{best['baseline'] / best['current']:.2f}x; EV {hb['explained_variance']:.6f} against "
          f"{ha['explained_variance']:.6f}")


if __name__ == "__main__":
    main()
