"""Compare the explorer of this tree with the explorer at an earlier commit, answer by answer, on one store.

    python scripts/compare_explorer.py data/demo.duckdb --baseline-rev e5a36eb
    python scripts/compare_explorer.py /tmp/syn.duckdb --baseline-rev main --show 3

The commit is checked out into a temporary git worktree (removed afterwards; this checkout is not touched; the
worktree borrows this checkout's `featureflow/explorer/node_modules` when it has none). Each explorer runs in a
process of its own with PYTHONPATH pointing at its tree, builds its app with `create_app(STORE)` and answers a
fixed crawl through fastapi.testclient.TestClient (no server, no network): every page with its `/api` twin and
its `/csv` twin where it has one, each page again as an htmx request (`HX-Request: true`: its fragment where
it has one), the redirects, /docs, /redoc, /openapi.json, /api/schema, and error answers (404s and 422s).

The crawl (`crawl`) is derived from the store (its models, edges, modes, cases, a few features of each model,
a best-matching pair) and from this tree's route table: every GET route of the app gets a URL, and
tests/test_explorer_fast.py checks that, so a route added without a URL here fails the fast tier.

Prints each URL whose status, content type, Location (redirects) or body bytes differ (noting a JSON body that
holds the same data in another order), with `--show N` the first lines of a diff of N of them, and exits 1 when
any differ.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
HX = {"HX-Request": "true"}


def crawl(app) -> list[tuple[str, dict]]:
    """(URL, request headers) for every GET route of `app`, filled from its store (`app.state.store`)."""
    store = app.state.store
    models = [m["model"] for m in store.models]
    edges = [(e["parent"], e["child"]) for e in store.edges]
    modes = list(store.modes)
    feats = {m: sample_features(store, m) for m in models}
    slugs = [r["slug"] for r in store.q("SELECT slug FROM cases ORDER BY slug")]
    pair = best_pair(store, edges) or (f"{models[0]}:{feats[models[0]][0]}", f"{models[-1]}:{feats[models[-1]][0]}")
    states = [{}, {"threshold": 0.5, "mode": modes[-1]}]

    def q(path: str, **params) -> str:
        params = {k: v for k, v in params.items() if v is not None}
        return path + ("?" + urlencode(params) if params else "")

    pages = [q("/", **s) for s in states]
    pages += [q("/", mode=m, population=p) for m in modes for p in ("all", "reproducible")]
    pages += [q("/floors", **s) for s in states] + [q("/method", mode=m) for m in modes]
    for parent, child in edges:
        base = f"/edges/{parent}/{child}"
        pages += [q(base, fate=f) for f in ("persisting", "disappearing", "inherited", "emerging")]
        pages += [q(base, fate="persisting", sort="density", order="asc", per_page=5, page=2, **states[1]),
                  q(base, stable="true", token_level="false"), q(base, token_level="true", sort="llr")]
        pages += [q(f"{base}/crosscoder"), q(f"{base}/crosscoder", call="shared", sort="fire_rate", order="desc",
                                              **states[1])]
    for m in models:
        pages += [q(f"/models/{m}"), q(f"/models/{m}", variant="delta-logits")]
        for f in feats[m]:
            pages += [q(f"/models/{m}/features/{f}"), q(f"/models/{m}/features/{f}", **states[1]),
                      q(f"/models/{m}/features/{f}/examples")]
    pages += [q("/models"), q("/models", variant="delta-mlp"), q("/merge"), q("/autointerp"),
              q("/autointerp", **states[1]), q("/cases"), q("/cases", **states[1]), q("/evidence")]
    pages += [q(f"/cases/{s}", **st) for s in slugs for st in states]
    pages += [q("/compare"), q("/compare", a=pair[0]), q("/compare", a=pair[0], b=pair[1]),
              q("/compare", a=pair[0], b=pair[1], **states[1])]
    pages += [q("/features"), q("/features", **states[1]), q("/features", fate="persisting", model=models[0]),
              q("/features", edge=f"{edges[0][0]}>{edges[0][1]}" if edges else None, fate="emerging", sort="llr",
                order="asc"),
              q("/features", sort="feature", order="desc", page=2, per_page=10, stable="true"),
              q("/features", token=" ", q="a", token_level="false", min_density=0.001, max_density=0.5),
              q("/features", token="%_", sort="max_act")]
    csv = {r.path for r in app_routes(app) if (getattr(r, "name", None) or "").startswith("csv_")}
    out: list[tuple[str, dict]] = []
    for url in pages:
        path = url.split("?")[0]
        tail = url[len(path):]
        out += [(url, {}), (url, HX), ("/api" + path + tail, {})]
        if any(route_matches(r, "/csv" + path) for r in csv):
            out.append(("/csv" + path + tail, {}))
    m0, f0 = models[0], feats[models[0]][0]
    out += [(u, {}) for u in (
        q("/jump", model=m0, feature=f0), q("/jump", model=m0, feature=f0, **states[1]),
        q("/compare/pick", a_model=m0, a_feature=f0, b_model=models[-1], b_feature=feats[models[-1]][0]),
        q("/compare/pick", a_model=m0, a_feature=f0, b_model=m0, b_feature=f0, **states[1]),
        "/docs", "/redoc", "/openapi.json", "/api/schema", "/favicon.ico", "/vendor/htmx.min.js",
        # 404s: an unknown URL, model, feature, edge and case, a missing vendor file
        "/no-such-page", "/models/no-such-model", "/api/models/no-such-model", f"/models/{m0}/features/{2**31 - 1}",
        f"/api/edges/{m0}/no-such-model", "/cases/no-such-case", "/csv/cases/no-such-case",
        q("/jump", model="no-such-model", feature=0), "/vendor/no-such-file.js",
        # 422s: declared and carried view state, a mode the store lacks, bounds, patterns, /compare's references
        q("/", threshold=5), q("/api/", threshold="nan"), q("/floors", threshold=-1), q("/merge", threshold="abc"),
        q("/models", mode="no-such-mode"), q("/features", mode="no-such-mode"), q("/api/features", per_page=0),
        q(f"/edges/{edges[0][0]}/{edges[0][1]}" if edges else "/edges/a/b", fate="dead"),
        q("/csv/features", sort="nope"), f"/models/{m0}/features/-1", q("/compare", a="nope"),
        q("/compare", a=f"{m0}:x1"), q("/models", variant="delta-x"), q("/", population="some"),
        q("/jump", model=m0, feature=f0, threshold=2), q("/compare/pick", a_model=m0, a_feature=-1,
                                                        b_model=m0, b_feature=f0))]
    out += [(u, HX) for u in (q("/", threshold=5), "/models/no-such-model")]  # error pages asked for by htmx
    return out


def app_routes(app) -> list:
    """Every route of `app`, through the routers it includes (FastAPI keeps an included router as one route that
    holds it, `original_router`; the explorer includes them without a prefix)."""
    def walk(routes):
        for r in routes:
            if hasattr(r, "original_router"):
                yield from walk(r.original_router.routes)
            else:
                yield r

    return list(walk(app.routes))


def sample_features(store, model: str) -> list[int]:
    """A few features of `model`: its densest, its first alive and first dead, and a case's root feature."""
    rows = store.q("SELECT feature, alive, density FROM features WHERE model = ? ORDER BY feature", [model])
    picks = [max(rows, key=lambda r: r["density"] or 0)["feature"] if rows else 0]
    picks += [next((r["feature"] for r in rows if r["alive"] == alive), None) for alive in (True, False)]
    picks += [r["root_feature"] for r in store.q("SELECT root_feature FROM cases WHERE root_model = ? AND "
                                                 "root_feature IS NOT NULL ORDER BY slug LIMIT 1", [model])]
    return list(dict.fromkeys(p for p in picks if p is not None))


def best_pair(store, edges: list[tuple[str, str]]) -> tuple[str, str] | None:
    """`model:feature` of the best rank-0 parent -> child match on the first edge."""
    if not edges:
        return None
    row = store.q1("SELECT src, dst FROM matches WHERE parent = ? AND child = ? AND direction = 'p2c' AND rank = 0 "
                   "ORDER BY r DESC, src LIMIT 1", list(edges[0]))
    return row and (f"{edges[0][0]}:{row['src']}", f"{edges[0][1]}:{row['dst']}")


def route_matches(route_path: str, url_path: str) -> bool:
    """Whether `url_path` fills the route template `route_path` (each {param} one path segment)."""
    a, b = route_path.strip("/").split("/"), url_path.strip("/").split("/")
    return len(a) == len(b) and all(x == y or (x.startswith("{") and x.endswith("}")) for x, y in zip(a, b))


def answers(store: str, urls: list[tuple[str, dict]] | None) -> dict:
    """Build the app of the featureflow on sys.path over `store` and answer `urls` (default: its own crawl)."""
    from fastapi.testclient import TestClient

    import featureflow
    from featureflow.explorer.app import create_app

    app = create_app(store)
    urls = crawl(app) if urls is None else urls
    client = TestClient(app, raise_server_exceptions=False)
    out = []
    for url, headers in urls:
        r = client.get(url, headers=headers, follow_redirects=False)
        out.append({"status": r.status_code, "type": r.headers.get("content-type"),
                    "location": r.headers.get("location"), "body": r.content})
    return {"featureflow": featureflow.__file__, "urls": urls, "answers": out}


def run_tree(tree: Path, store: str, urls: list | None) -> dict:
    """`answers` in a fresh interpreter importing featureflow from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--answer", store],
                          input=pickle.dumps(urls), capture_output=True, env=env, cwd=tree)
    if proc.returncode:
        sys.exit(f"the explorer of {tree} failed:\n{proc.stderr.decode()[-3000:]}")
    got = pickle.loads(proc.stdout)
    if not Path(got["featureflow"]).resolve().is_relative_to(tree.resolve()):
        sys.exit(f"featureflow was imported from {got['featureflow']}, not from {tree}")
    return got


def describe(url: str, headers: dict) -> str:
    return url + (" [HX-Request]" if headers else "")


def order_only(a: dict, b: dict) -> bool:
    """Whether two JSON bodies hold the same data in another order: equal once object keys are sorted and lists
    of named objects (OpenAPI's parameters) are sorted by name."""
    def canonical(x):
        if isinstance(x, dict):
            return {k: canonical(v) for k, v in sorted(x.items())}
        if isinstance(x, list):
            items = [canonical(v) for v in x]
            named = all(isinstance(v, dict) and "name" in v for v in items)
            return sorted(items, key=lambda v: json.dumps(v, sort_keys=True)) if named and items else items
        return x

    try:
        return canonical(json.loads(a["body"])) == canonical(json.loads(b["body"]))
    except ValueError:
        return False


def body_lines(answer: dict) -> list[str]:
    text = answer["body"].decode("utf-8", "replace")
    if (answer["type"] or "").startswith("application/json"):
        try:
            return json.dumps(json.loads(text), indent=1, ensure_ascii=False).splitlines()
        except ValueError:
            pass
    return text.replace(">", ">\n").splitlines()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", help="the DuckDB store both explorers open (read-only)")
    ap.add_argument("--baseline-rev", help="the commit to compare against, e.g. e5a36eb or main (required)")
    ap.add_argument("--show", type=int, default=0, metavar="N", help="print a short diff of the first N differences")
    ap.add_argument("--answer", action="store_true", help=argparse.SUPPRESS)  # internal: one tree's answers
    args = ap.parse_args(argv)
    store = str(Path(args.store).resolve())
    if args.answer:
        sys.stdout.buffer.write(pickle.dumps(answers(store, pickle.loads(sys.stdin.buffer.read()))))
        sys.stdout.flush()
        # no interpreter teardown (an app never shut down, DuckDB's threads): it once died with SIGABRT on busy
        # cores after the answers were out (tests/test_package.py does the same)
        os._exit(0)
    if not args.baseline_rev:
        ap.error("--baseline-rev is required")
    new = run_tree(ROOT, store, None)
    with tempfile.TemporaryDirectory(prefix="compare-explorer-") as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree),
                        args.baseline_rev], check=True)
        try:
            npm = tree / "featureflow" / "explorer" / "node_modules"
            if not npm.exists():
                npm.symlink_to((ROOT / "featureflow" / "explorer" / "node_modules").resolve())
            old = run_tree(tree, store, new["urls"])
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)
    differ = []
    for (url, headers), a, b in zip(new["urls"], old["answers"], new["answers"]):
        fields = [k for k in ("status", "type", "location", "body") if a[k] != b[k]]
        if fields:
            differ.append((describe(url, headers), fields, a, b))
    statuses = {}
    for a in new["answers"]:
        statuses[a["status"]] = statuses.get(a["status"], 0) + 1
    print(f"{len(new['urls'])} requests ({', '.join(f'{n} x {s}' for s, n in sorted(statuses.items()))}) "
          f"against {args.baseline_rev}: {len(differ)} differ")
    for i, (url, fields, a, b) in enumerate(differ):
        print(f"  {url}: {', '.join(fields)}" + (f" ({a['status']} -> {b['status']})" if "status" in fields else "")
              + (" (the same JSON in another order)" if fields == ["body"] and order_only(a, b) else ""))
        if i < args.show:
            diff = difflib.unified_diff(body_lines(a), body_lines(b), args.baseline_rev, "this tree", n=1, lineterm="")
            for line in list(diff)[:40]:
                print("      " + line[:300])
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
