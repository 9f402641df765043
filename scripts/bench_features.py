"""Benchmark: the per-feature tables of one model (histograms, top tokens, example windows, parquet).

    python scripts/bench_features.py [--tokens 3000000 --features 16384 --l0 30] [--baseline OLD_FEATURES_PY]

Times `write_feature_tables` on synthetic activations of the given size (paper size by default) and, with
--baseline (e.g. `git show 88e0e93:featureflow/features.py > /tmp/features_old.py`, the per-feature Python loop),
the old module on the same input in the same run, and prints both and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from featureflow.config import SampleConfig  # noqa: E402
from bench_matching import synthetic  # noqa: E402
from benchlib import load_baseline  # noqa: E402


def load(path: str):
    return load_baseline(path, "_features_baseline")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=3_000_000)
    ap.add_argument("--features", type=int, default=16_384)
    ap.add_argument("--l0", type=float, default=30)
    ap.add_argument("--baseline", default=None)
    a = ap.parse_args()
    import featureflow.pipeline.features as current

    cfg = SampleConfig(tokens=a.tokens, context=64, top_k_examples=20, quantile_bins=10, examples_per_bin=5,
                       window=32)
    n = a.tokens // cfg.context * cfg.context  # whole sample windows
    acts = synthetic(n, a.features, a.l0, 0)
    tokens = np.random.default_rng(0).integers(0, 32000, n).reshape(-1, cfg.context)
    print(f"{a.features} features over {a.tokens} tokens ({acts.nnz:,} non-zeros), paper sample settings")
    small = synthetic(2048, 64, 5, 1)  # compile (or load) the kernels outside the timing
    current.write_feature_tables(small, tokens.ravel()[:2048].reshape(-1, 64), cfg, 0, "warm-up",
                                 Path(tempfile.mkdtemp()))
    res = {}
    for name, mod in [("current", current)] + ([("baseline", load(a.baseline))] if a.baseline else []):
        out = Path(tempfile.mkdtemp())
        t0 = time.perf_counter()
        mod.write_feature_tables(acts, tokens, cfg, 0, name, out)
        res[name] = time.perf_counter() - t0
        print(f"{name:9s} {res[name]:8.2f} s  ({a.features / res[name]:,.0f} features/s)", flush=True)
    if "baseline" in res:
        print(f"speed-up: {res['baseline'] / res['current']:.1f}x")


if __name__ == "__main__":
    main()
