"""Benchmark: the explorer served over loopback under bounded concurrent load, against a baseline in the same run.

Starts two servers on 127.0.0.1 over the same store (opened read-only, never rebuilt):

- new: `featureflow serve --workers N` from this tree (gzip, ETag, examples loaded on demand, caches);
- baseline: the explorer at `--baseline-rev` (default fc1f310: main just before the serving work was merged, the
  first commit that reads store schema 3, so both servers read the same file), served as
  it was, one uvicorn process with no gzip and the examples inline in the feature page; its files are taken
  with `git archive` into a temporary folder (this checkout is not touched).

Then drives each with an async httpx client, alternating between the two, `--repeats` times:
the first view of a feature (random alive features, none asked for twice in the run: no cache helps) at 8
connections (the target: p95 <= 60 ms) and at 64, the overview at 32
connections (the same URL: after the first, the new server answers from its response cache), the overview at
a new threshold every request (nothing cached anywhere), and for the new server the examples fragments and
overview revalidations (If-None-Match -> 304).
Each load is bounded by a request count and a time cap. Prints p50 / p95 latency, pages/s, bytes per answer
on the wire and errors per load, the best and the spread over repeats, and new-vs-baseline ratios of the best
runs. The client shares the machine's cores with the servers: figures are for the whole box.

    python scripts/bench_serve.py data/demo.duckdb
    python scripts/bench_serve.py /work/main/data/demo.duckdb --repeats 3 --port 8111
    python scripts/bench_serve.py data/demo.duckdb --baseline-rev main   # this branch against main's explorer
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import duckdb
import httpx

ROOT = Path(__file__).resolve().parent.parent
# The first view of a feature: every request a feature page never asked for before in the run (a new model /
# feature id), so neither the response cache nor any per-request memo can help; the target is its p95.
FIRST_VIEW = "new feature page each request, 8 conns"
FIRST_VIEW_P95_MS = 60.0


def machine() -> str:
    model = platform.processor() or "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), load average {os.getloadavg()[0]:.2f} at start"


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by the server `pid` and its worker processes (from /proc): the
    cost of the answers themselves, which other work on shared cores does not inflate as it does latency."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def baseline_tree(rev: str, into: Path) -> Path:
    """The files of commit `rev` (its packages: `featureflow/`, or `app/`, `backend/`, `frontend/` before the
    move into one package) in `into`, with this checkout's npm packages."""
    archive = into / "tree.tar"
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", rev], capture_output=True, text=True,
                            check=True).stdout.split()
    parts = [p for p in ("featureflow", "app", "backend", "frontend") if p in listed]
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, *parts], check=True)
    with tarfile.open(archive) as t:
        t.extractall(into / "tree", filter="data")
    npm_home = "featureflow/explorer" if "featureflow" in parts else "frontend"
    nm = into / "tree" / npm_home / "node_modules"
    if not nm.exists():
        nm.symlink_to((ROOT / "featureflow" / "explorer" / "node_modules").resolve())
    return into / "tree"


def start(cwd: Path, db: str, port: int, extra: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    cli = "featureflow.cli" if (cwd / "featureflow").is_dir() else "backend.cli"
    proc = subprocess.Popen([sys.executable, "-m", cli, "serve", "--db", db, "--host", "127.0.0.1",
                             "--port", str(port), *extra], cwd=cwd, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"server on port {port} exited: see {log}\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/schema", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"server on port {port} did not start in 60 s: see {log}")


async def load(base: str, urls: list[str], conns: int, cap_s: float, headers: dict | None = None) -> dict:
    """GET each of `urls` once over `conns` keep-alive connections (at most `cap_s` seconds); bodies are read
    raw (not decompressed) so the client spends as little CPU as it can."""
    lat, sizes, errors = [], [], 0
    queue = iter(urls)
    deadline = time.perf_counter() + cap_s
    limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30, headers=headers) as client:
        async def worker():
            nonlocal errors
            for url in queue:
                if time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    async with client.stream("GET", url) as r:
                        size = sum([len(b) async for b in r.aiter_raw()])
                        ok = r.status_code in (200, 304)
                except httpx.HTTPError:
                    ok, size = False, 0
                lat.append(time.perf_counter() - t0)
                sizes.append(size)
                errors += not ok

        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(conns)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else lat * 99
    return {"n": len(lat), "p50": 1e3 * q[49], "p95": 1e3 * q[94], "rate": len(lat) / wall,
            "kb": statistics.mean(sizes) / 1e3, "errors": errors, "client_ms": 1e3 * cpu / max(1, len(lat))}


def row(name: str, r: dict) -> str:
    return (f"  {name:<34} {r['n']:>5} req  p50 {r['p50']:7.1f} ms  p95 {r['p95']:7.1f} ms  "
            f"{r['rate']:7.1f} /s  {r['kb']:6.1f} kB  errors {r['errors']}  server CPU {r.get('server_ms', 0):.1f} ms/req "
            f"(client CPU {r['client_ms']:.1f} ms/req)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("db", nargs="?", default="data/demo.duckdb")
    ap.add_argument("--port", type=int, default=8111, help="the new server's port; the baseline's is the next")
    ap.add_argument("--workers", type=int, default=None, help="the new server's workers (default: its default)")
    ap.add_argument("--baseline-rev", default="fc1f310", help="the commit served as the baseline")
    ap.add_argument("--feature-requests", type=int, default=600)
    ap.add_argument("--overview-requests", type=int, default=3000)
    ap.add_argument("--fresh-requests", type=int, default=300)
    ap.add_argument("--cap", type=float, default=20.0, help="seconds at most per load")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    db = str(Path(args.db).resolve())
    con = duckdb.connect(db, read_only=True)
    alive = con.execute("SELECT model, feature FROM features WHERE alive ORDER BY model, feature").fetchall()
    con.close()
    rng = random.Random(args.seed)
    unseen = rng.sample(alive, len(alive))  # features are drawn from here: none is asked for twice in a run
    thresholds = rng.sample(range(50000, 99999), 40000)  # and thresholds (x 1e-5) from here
    print(f"bench_serve: {db}, {len(alive)} alive features; {machine()}; python {platform.python_version()}")

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    servers = {}
    try:
        old = baseline_tree(args.baseline_rev, tmp)
        extra = [] if args.workers is None else ["--workers", str(args.workers)]
        servers["new"] = start(ROOT, db, args.port, extra, tmp / "new.log")
        servers["baseline"] = start(old, db, args.port + 1, [], tmp / "baseline.log")
        bases = {"new": f"http://127.0.0.1:{args.port}", "baseline": f"http://127.0.0.1:{args.port + 1}"}
        tag = httpx.get(bases["new"] + "/").headers["etag"]
        loads = {  # name: (connections, requests, headers, what is asked)
            FIRST_VIEW: (8, args.feature_requests, None, "feature"),
            "new feature page each request, 64 conns": (64, args.feature_requests, None, "feature"),
            "overview, 32 conns": (32, args.overview_requests, None, "overview"),
            "overview, a new threshold each, 32 conns": (32, args.fresh_requests, None, "fresh"),
        }
        extra_new = {
            "examples fragment, 8 conns": (8, args.feature_requests, {"HX-Request": "true"}, "examples"),
            "overview revalidated (304), 32 conns": (32, args.overview_requests, {"If-None-Match": tag}, "overview"),
        }
        # a baseline that already loads examples on demand is measured on the fragment too (the same features)
        m0, f0 = unseen.pop()  # asked here, so never again in the run
        if httpx.get(f"{bases['baseline']}/models/{m0}/features/{f0}/examples").status_code == 200:
            loads["examples fragment, 8 conns"] = extra_new.pop("examples fragment, 8 conns")

        def urls(kind: str, n: int) -> list[str]:
            if kind == "overview":
                return ["/"] * n
            if kind == "fresh":  # nothing cached: every request computes and draws the flows anew
                return [f"/?threshold={thresholds.pop() / 1e5:.5f}" for _ in range(n)]
            if n > len(unseen):
                raise SystemExit(f"only {len(unseen)} features left unasked: lower --feature-requests or --repeats")
            picks = [unseen.pop() for _ in range(n)]
            tail = "/examples" if kind == "examples" else ""
            return [f"/models/{m}/features/{f}{tail}" for m, f in picks]

        for name, base in bases.items():  # warm up: first queries, per-worker caches, template compilation
            asyncio.run(load(base, urls("overview", 64) + urls("feature", 64), 8, 30))
        results: dict[tuple[str, str], list[dict]] = {}
        for rep in range(args.repeats):
            print(f"repeat {rep + 1}/{args.repeats}")
            every = {**loads, **extra_new}
            picked = {name: urls(kind, n) for name, (_, n, _, kind) in every.items()}  # the same for both
            for which in ("baseline", "new"):
                for name in loads if which == "baseline" else every:
                    conns, _, headers, _ = every[name]
                    cpu0 = server_cpu(servers[which].pid)
                    r = asyncio.run(load(bases[which], picked[name], conns, args.cap, headers))
                    r["server_ms"] = 1e3 * (server_cpu(servers[which].pid) - cpu0) / max(1, r["n"])
                    results.setdefault((which, name), []).append(r)
                    print(row(f"{which}: {name}", r))
    finally:
        for proc in servers.values():
            proc.terminate()
        for proc in servers.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nbest of {args.repeats} (spread: min-max over repeats); baseline = the explorer at {args.baseline_rev}")
    for (which, name), rs in results.items():
        p95s, rates = [r["p95"] for r in rs], [r["rate"] for r in rs]
        print(f"  {which + ': ' + name:<46} p95 {min(p95s):7.1f} ms ({min(p95s):.1f}-{max(p95s):.1f})  "
              f"{max(rates):7.1f} /s ({min(rates):.1f}-{max(rates):.1f})  {rs[0]['kb']:.1f} kB  "
              f"server CPU {min(r['server_ms'] for r in rs):.1f} ms/req  errors {sum(r['errors'] for r in rs)}")
    for name in loads:
        new, old = results[("new", name)], results[("baseline", name)]
        print(f"  ratio {name}: p95 {min(r['p95'] for r in old) / min(r['p95'] for r in new):.1f}x lower, "
              f"pages/s {max(r['rate'] for r in new) / max(r['rate'] for r in old):.1f}x, server CPU per answer "
              f"{min(r['server_ms'] for r in old) / max(1e-9, min(r['server_ms'] for r in new)):.1f}x lower")
    best = min(r["p95"] for r in results[("new", FIRST_VIEW)])
    print(f"first view ({FIRST_VIEW}): p95 {best:.1f} ms, target <= {FIRST_VIEW_P95_MS:.0f} ms: "
          f"{'met' if best <= FIRST_VIEW_P95_MS else 'NOT met'} (best of {args.repeats}; {machine()})")
    errors = sum(r["errors"] for (which, _), rs in results.items() if which == "new" for r in rs)
    print(f"errors on the new server: {errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
