"""Benchmark: one config run from scratch by the local executor and by Ray, on the same machine, in turns.

    python scripts/bench_executors.py --config configs/zoo.yaml [--repeats 2] [--num-cpus 2] [--json OUT.json]

Each repeat runs `featureflow run` twice into fresh data folders, local first, then `--executor ray` with a local
Ray of `--num-cpus` CPUs (so 2 workers on 2 cores). For each run: wall seconds and the peak memory of the whole
run (the resident memory of every process in its session summed, sampled every 0.2 s: the driver, Ray's
processes and its workers), then the ratio Ray / local per repeat. From the finished local run's plan: the task
time summed and the critical path (the lower bound of wall time with unlimited workers, `featureflow plan`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def session_rss(sid: int) -> int:
    """Resident bytes of every process in session `sid`."""
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if os.getsid(int(d.name)) != sid:
                continue
            for line in (d / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ProcessLookupError, ValueError):
            continue
    return total


def timed_run(config: Path, executor: str, num_cpus: int, log: Path) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "featureflow.cli", "run", "--config", str(config), "--executor", executor]
    if executor == "ray":
        cmd += ["--num-cpus", str(num_cpus)]
    t0 = time.time()
    with open(log, "w") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        peak = 0
        while p.poll() is None:
            peak = max(peak, session_rss(p.pid))
            time.sleep(0.2)
    wall = time.time() - t0
    if p.returncode != 0:
        raise SystemExit(f"{executor} run failed (exit {p.returncode}); see {log}")
    return wall, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray (its workers)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from featureflow.config import load_config
    from featureflow.pipeline.plan import make_plan
    from featureflow.pipeline.stages import hardware

    work = Path(tempfile.mkdtemp(prefix="featureflow-bench-executors-"))
    raw = yaml.safe_load(Path(a.config).read_text())
    rows = []
    for rep in range(a.repeats):
        row = {}
        for ex in ("local", "ray"):
            cfg = work / f"{ex}-{rep}.yaml"
            cfg.write_text(yaml.safe_dump({**raw, "data_dir": str(work / f"{ex}-{rep}")}, sort_keys=False))
            wall, peak = timed_run(cfg, ex, a.num_cpus, work / f"{ex}-{rep}.log")
            row[ex] = {"wall_s": round(wall, 1), "peak_rss_mb": round(peak / 2**20)}
            print(f"repeat {rep + 1}: {ex:5s} {wall:7.1f} s wall, peak memory {peak / 2**20:7.0f} MB", flush=True)
        row["ratio"] = round(row["ray"]["wall_s"] / row["local"]["wall_s"], 3)
        rows.append(row)
    plan = make_plan(load_config(work / "local-0.yaml"))
    path, crit = plan.critical_path()
    task_total = sum(t.seconds for t in plan.tasks)
    hw = hardware("cpu")
    print(f"\n{raw['name']}: {len(plan.tasks)} tasks on {hw['cpu']} ({hw['cores']} cores), {a.repeats} repeats")
    for ex in ("local", "ray"):
        walls = [r[ex]["wall_s"] for r in rows]
        mems = [r[ex]["peak_rss_mb"] for r in rows]
        print(f"  {ex:5s} wall {statistics.median(walls):7.1f} s (range {min(walls):.1f}-{max(walls):.1f}), "
              f"peak memory {statistics.median(mems):6.0f} MB (range {min(mems)}-{max(mems)})")
    ratios = [r["ratio"] for r in rows]
    print(f"  ray / local wall: {statistics.median(ratios):.2f} (per repeat: {', '.join(f'{x:.2f}' for x in ratios)})")
    print(f"  task time summed (local run's DONE markers) {task_total:.1f} s; critical path {crit:.1f} s over "
          f"{len(path)} tasks: {' -> '.join(t.id for t in path)}")
    if a.json:
        Path(a.json).write_text(json.dumps({"config": raw["name"], "rows": rows, "tasks": len(plan.tasks),
                                            "task_seconds": task_total, "critical_path_seconds": crit,
                                            "critical_path": [t.id for t in path], "hardware": hw}, indent=1))


if __name__ == "__main__":
    main()
