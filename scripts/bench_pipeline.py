"""Benchmark: the whole pipeline, stage by stage, with the hardware it ran on.

    python scripts/bench_pipeline.py --config configs/paper-gpu.yaml [--device cuda] [--data-dir DIR]
                                     [--until STAGE] [--json OUT.json]

Runs every stage of the config in order (what `featureflow run` does) and prints seconds per stage, the
total, and the hardware. `--data-dir` points the run at another artefact root (default: a fresh temporary
one, so nothing is found cached and every stage is timed from scratch); pass the config's own `data`
folder to time a resumed run instead. The same per-stage seconds go into the store's `runs.timings_json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from featureflow.config import load_config  # noqa: E402
from featureflow.pipeline.runner import Pipeline, setup_logging  # noqa: E402
from featureflow.pipeline.stages import STAGES, hardware  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    ap.add_argument("--data-dir", default=None, help="artefact root (default: a fresh temporary folder)")
    ap.add_argument("--until", default=None, choices=STAGES, help="stop after this stage")
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args()
    setup_logging()
    cfg = load_config(a.config)
    data_dir = a.data_dir or tempfile.mkdtemp(prefix="featureflow-bench-")
    cfg = cfg.model_copy(update={"data_dir": str(data_dir)})
    pl = Pipeline(cfg, device=a.device)
    t0 = time.time()
    pl.run(a.until)
    total = time.time() - t0
    hw = hardware(pl.device)
    print(f"\npipeline '{cfg.name}' in {data_dir} on {hw['device']} ({hw['gpu'] or hw['cpu']}, {hw['cores']} cores, "
          f"torch {hw['torch']})")
    for stage, sec in pl.stage_seconds.items():
        print(f"  {stage:13s} {sec:9.1f} s  {100 * sec / max(total, 1e-9):5.1f}%")
    print(f"  {'total':13s} {total:9.1f} s  ({total / 60:.1f} min)")
    if a.json:
        Path(a.json).write_text(json.dumps({"config": cfg.name, "data_dir": str(data_dir), "total_seconds": total,
                                            "stages": pl.stage_seconds, "hardware": hw}, indent=1))


if __name__ == "__main__":
    main()
