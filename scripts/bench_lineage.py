"""Benchmark: the feature page's and the search page's store reads with lineage read at query time (schema 7)
against a baseline in the same run that read the stored lineage columns (schema 6).

Takes a schema-6 store (e.g. main's demo store before this change), or with `--paper-scale F` builds one: 4 models
x F features with random top-10 matches (`scripts/bench_store.py`'s synthetic store, its lineage columns added
and filled with each feature as its own origin: the baseline only reads them). The baseline is the explorer's
`featureflow/explorer/queries.py` at `--baseline-rev` (default 47b1e43, the last commit whose store kept
`features.parent_*` / `origin_*`), taken with `git archive` into a temporary folder, reading that store as it is.
The new side is this tree's `queries.py` reading a copy of the same store with those six columns dropped and
the version set to this tree's: every other row identical. Each side runs in its own interpreter (the two
`featureflow` packages cannot share one), in-process (no HTTP): for `--features` random features (the same
ones on both sides, seeded) it times the calls the feature view makes (`feature`, `matches`, `stability`,
`lineage` with the row and matches it was handed), at the default threshold and at 0.6 (longer chains), and
`--pages` pages of search (50 rows each, its origin column included). Sides alternate, `--repeats` times; prints
the best repeat's mean / p50 / p95 per call and the new / baseline ratios.

    python scripts/bench_lineage.py /work/main/data/demo.duckdb
    python scripts/bench_lineage.py old.duckdb --baseline-rev main --features 200 --repeats 3
    python scripts/bench_lineage.py --paper-scale 16384
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINEAGE_COLUMNS = ("parent_model", "parent_feature", "parent_r", "best_child_r", "origin_model", "origin_feature")

# Run in a fresh interpreter with PYTHONPATH at one side's tree: times the store reads, prints JSON.
SIDE = r"""
import json, random, sys, time
from featureflow.explorer.queries import Store

db, n, pages, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
store = Store(db)
feats = store.q("SELECT model, feature FROM features WHERE alive ORDER BY model, feature")
random.Random(seed).shuffle(feats)
feats = feats[:n]
mode = store.default_mode
out = {}
for t in (store.run["default_threshold"], 0.6):
    times, depth = [], 0
    for f in feats:
        t0 = time.perf_counter()
        row = store.feature(f["model"], f["feature"])
        matches = store.matches(f["model"], f["feature"], t, mode)
        store.stability(f["model"], f["feature"], t, mode)
        lin = store.lineage(f["model"], f["feature"], t, mode, row=row, matches=matches)
        times.append(time.perf_counter() - t0)
        depth += len(lin["ancestors"])
    out[f"feature page, threshold {t}"] = {"times": times, "hops": depth}
    times = []
    for p in range(1, pages + 1):
        t0 = time.perf_counter()
        got = store.search(None, None, 0.0, 1.0, None, "density", p, 50, threshold=t, mode=mode)
        times.append(time.perf_counter() - t0)
        assert all("origin_model" in r for r in got["rows"])
    out[f"search page (50 rows), threshold {t}"] = {"times": times, "hops": 0}
print(json.dumps(out))
"""


def new_store(old: Path, folder: Path) -> Path:
    """A copy of the schema-6 store `old` without the stored lineage columns, at this tree's schema version."""
    import duckdb

    sys.path.insert(0, str(ROOT))
    from featureflow.store.schema import SCHEMA_VERSION

    out = folder / "new.duckdb"
    shutil.copy(old, out)
    con = duckdb.connect(str(out))
    have = {r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'features'").fetchall()}
    missing = [c for c in LINEAGE_COLUMNS if c not in have]
    if missing:
        sys.exit(f"bench_lineage: '{old}' lacks {', '.join(missing)}: give a store of schema 6 (it keeps the lineage)")
    for c in LINEAGE_COLUMNS:
        con.execute(f'ALTER TABLE features DROP COLUMN "{c}"')
    con.execute("UPDATE schema_version SET version = ?", [SCHEMA_VERSION])
    con.execute("CHECKPOINT")
    con.close()
    return out


def paper_scale_store(F: int, folder: Path) -> Path:
    """bench_store.py's synthetic store (4 x F features, top-10 random matches), as schema 6 kept it: with the
    lineage columns (each feature its own origin; the baseline reads them, never checks them)."""
    import duckdb

    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_store import build

    out = folder / "old.duckdb"
    build(out, F, 200_000, 4, 10, 50_000)
    con = duckdb.connect(str(out))
    for c, typ in zip(LINEAGE_COLUMNS, ("VARCHAR", "INTEGER", "DOUBLE", "DOUBLE", "VARCHAR", "INTEGER")):
        con.execute(f'ALTER TABLE features ADD COLUMN "{c}" {typ}')
    con.execute("UPDATE features SET origin_model = model, origin_feature = feature")
    con.execute("UPDATE schema_version SET version = 6")
    con.execute("CHECKPOINT")
    con.close()
    return out


def baseline_tree(rev: str, folder: Path) -> Path:
    tree = folder / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", rev, "featureflow"], cwd=ROOT, check=True, capture_output=True).stdout
    tar = folder / "baseline.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(tree, filter="data")
    return tree


def run_side(tree: Path, db: Path, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    got = subprocess.run([sys.executable, "-c", SIDE, str(db), str(args.features), str(args.pages), str(args.seed)],
                         env=env, capture_output=True, text=True, cwd=tree)
    if got.returncode:
        sys.exit(f"bench_lineage: the side at {tree} failed:\n{got.stderr[-3000:]}")
    return json.loads(got.stdout.strip().splitlines()[-1])


def summary(times: list[float]) -> dict:
    ms = sorted(1000 * t for t in times)
    return {"mean": statistics.fmean(ms), "p50": ms[len(ms) // 2], "p95": ms[min(len(ms) - 1, int(0.95 * len(ms)))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("db", type=Path, nargs="?", help="a store of schema 6 (with the stored lineage columns)")
    ap.add_argument("--paper-scale", type=int, metavar="F", help="instead, a synthetic store of 4 x F features")
    ap.add_argument("--baseline-rev", default="47b1e43")
    ap.add_argument("--features", type=int, default=200)
    ap.add_argument("--pages", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if (args.db is None) == (args.paper_scale is None):
        ap.error("give a schema-6 store or --paper-scale F (one of them)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.paper_scale:
            args.db = paper_scale_store(args.paper_scale, tmp)
        new_db, base = new_store(args.db, tmp), baseline_tree(args.baseline_rev, tmp)
        runs = {"baseline": [], "new": []}
        for _ in range(args.repeats):
            runs["baseline"].append(run_side(base, args.db, args))
            runs["new"].append(run_side(ROOT, new_db, args))
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; {args.features} features, "
          f"{args.pages} search pages, best of {args.repeats} repeats (by mean); ms per call")
    for what in runs["new"][0]:
        best = {side: min((summary(r[what]["times"]) for r in rs), key=lambda s: s["mean"])
                for side, rs in runs.items()}
        hops = {side: rs[0][what]["hops"] for side, rs in runs.items()}
        b, n = best["baseline"], best["new"]
        print(f"{what}:\n  baseline ({args.baseline_rev}, stored lineage): mean {b['mean']:.2f}  p50 {b['p50']:.2f}"
              f"  p95 {b['p95']:.2f}\n  new (query-time lineage):                mean {n['mean']:.2f}  "
              f"p50 {n['p50']:.2f}  p95 {n['p95']:.2f}\n  new / baseline: mean {n['mean'] / b['mean']:.2f}x, "
              f"p95 {n['p95'] / b['p95']:.2f}x" + (f"; ancestors listed {hops['baseline']} / {hops['new']}"
                                                  if hops["new"] or hops["baseline"] else ""))


if __name__ == "__main__":
    main()
