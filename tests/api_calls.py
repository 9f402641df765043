"""Every GET route under /api with its parameters filled from a store: what two stores are compared on (an export
round trip, a Ray run against a local one)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient


def api_calls(client: TestClient, con) -> list[tuple[str, dict]]:
    """Every GET route under /api from the app's OpenAPI with its path parameters filled from the store
    (every model, edge, case), each with its defaults; the first also with every threshold / mode it takes."""
    modes = list(con.execute("SELECT modes FROM runs").fetchone()[0])
    models = [r[0] for r in con.execute("SELECT model FROM models ORDER BY idx").fetchall()]
    feats = dict(con.execute("""SELECT model, min(feature) FROM features f WHERE alive AND
                                EXISTS (SELECT 1 FROM examples e WHERE e.model = f.model AND e.feature = f.feature)
                                GROUP BY model""").fetchall())
    slugs = [r[0] for r in con.execute("SELECT slug FROM cases ORDER BY slug").fetchall()]
    refs = [f"{m}:{feats[m]}" for m in models]
    fills = {frozenset(): [{}], frozenset({"model"}): [{"model": m} for m in models],
             frozenset({"model", "feature"}): [{"model": m, "feature": feats[m]} for m in models],
             frozenset({"slug"}): [{"slug": s} for s in slugs],
             frozenset({"parent", "child"}): [{"parent": p, "child": c} for p, c in con.execute(
                 "SELECT parent, child FROM model_edges ORDER BY parent, child").fetchall()]}
    calls = []
    for path, ops in client.app.openapi()["paths"].items():
        if not path.startswith("/api") or "get" not in ops:
            continue
        params = ops["get"].get("parameters", [])
        names = {p["name"] for p in params if p["in"] == "query"}
        required = {p["name"] for p in params if p["in"] == "query" and p.get("required")}
        assert required <= {"a", "b"}, f"{path}: fill the required query parameters {required} in this test"
        base = {"a": refs[1], "b": refs[-1]} if required else {}
        variants = [base] + [{**base, "threshold": 0.3}] * ("threshold" in names) + \
            [{**base, "mode": mo} for mo in modes if "mode" in names]
        names_in_path = frozenset(re.findall(r"{(\w+)}", path))
        assert names_in_path in fills, f"{path}: fill its path parameters {set(names_in_path)} in this test"
        urls = [re.sub(r"{(\w+)}", lambda x: str(f[x[1]]), path) for f in fills[names_in_path]]
        calls += [(u, v) for u in urls[:1] for v in variants] + [(u, base) for u in urls[1:]]
    return calls
