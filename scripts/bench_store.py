"""Benchmark: explorer latency on a paper-scale store, against loading the tables into Python.

Builds a synthetic store with the real schema (`featureflow/store/schema.py`) at paper scale by default
(4 models x 16,384 features, top-10 matches both ways per edge, 20 examples per feature over a
3M-token sample) and times the explorer's JSON views through FastAPI's TestClient. The baseline,
measured in the same run, answers the feature view the way the issue forbids: whole tables into
pandas, filtered in Python.

    python scripts/bench_store.py                       # paper scale (a few minutes, ~2 GB RAM)
    python scripts/bench_store.py --features 2048 --tokens 200000    # quick
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from featureflow.store.schema import SCHEMA_VERSION, create_tables
from featureflow.store.writers import insert, insert_row

MODELS = ["root", "a", "b", "merge"]
EDGES = [("root", "a"), ("root", "b"), ("a", "merge"), ("b", "merge")]


def build(path: Path, F: int, N: int, n_examples: int, k: int, act_tokens: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    con = duckdb.connect(str(path))
    create_tables(con)
    insert_row(con, "schema_version", {"version": SCHEMA_VERSION, "created_at": datetime.now(timezone.utc)})
    insert_row(con, "runs", {"name": "bench", "description": "synthetic paper-scale store", "config_json": "{}",
                             "device": "cpu", "timings_json": "{}", "default_threshold": 0.8, "top_k": k,
                             "modes": ["pearson"], "default_mode": "pearson", "shared_init": False,
                             "sample_tokens": N, "sample_context": 64, "hook": "blocks.0.mlp.hook_post",
                             "inputs_key": "x"})
    for i, m in enumerate(MODELS):
        insert_row(con, "models", {"model": m, "label": m.upper(), "idx": i, "make": "train", "domains": ["d"],
                                   "d_sae": F})
        insert_row(con, "sae_metrics", {"model": m, "l0": 30, "mse": 0.01, "explained_variance": 0.8,
                                        "dead_features": 0, "d_sae": F, "loss_recovered": 0.9,
                                        "loss_recovered_scope": "own"})
    for p, c in EDGES:
        insert_row(con, "model_edges", {"parent": p, "child": c, "make": "finetune"})
    vocab = 32000
    insert(con, "vocab", {"token_id": np.arange(vocab, dtype=np.int32), "text": [f"t{i}" for i in range(vocab)]})
    insert(con, "sample_tokens", {"token_index": np.arange(N, dtype=np.int64),
                                  "window_idx": (np.arange(N) // 64).astype(np.int32),
                                  "position": (np.arange(N) % 64).astype(np.int32),
                                  "domain": np.full(N, "d", dtype=object),
                                  "token_id": rng.integers(0, vocab, N).astype(np.int32)})
    for m in MODELS:
        insert(con, "features", {
            "model": np.full(F, m, dtype=object), "feature": np.arange(F, dtype=np.int32),
            "density": rng.random(F) * 0.01, "n_active": rng.integers(1, 10000, F), "max_act": rng.random(F) * 5,
            "mean_act": rng.random(F) * 0.01, "mean_when_active": rng.random(F), "alive": np.ones(F, bool),
            "top_token_id": rng.integers(0, vocab, F).astype(np.int32), "top_token_share": rng.random(F)})
        centers = rng.integers(32, N - 32, F * n_examples)
        insert(con, "examples", {
            "model": np.full(F * n_examples, m, dtype=object), "feature": np.repeat(np.arange(F, dtype=np.int32), n_examples),
            "kind": np.tile(np.array(["top"] * (n_examples // 2) + ["q0"] * (n_examples - n_examples // 2), dtype=object), F),
            "rank": np.tile(np.arange(n_examples, dtype=np.int32), F), "center": centers, "start": centers - 16,
            "end": centers + 16, "acts": pa.array(list(rng.random((F * n_examples, 32), dtype=np.float32)),
                                                  pa.list_(pa.float32()))})
        per = max(1, act_tokens * 30 // F)  # L0 30 over act_tokens tokens
        # one value per (feature, token), as the pipeline stores them: drawn keys, duplicates dropped
        keys = np.unique(np.repeat(np.arange(F, dtype=np.int64), per) * N + rng.integers(0, N, F * per))
        insert(con, "activation_values", {
            "model": np.full(len(keys), m, dtype=object), "feature": (keys // N).astype(np.int32),
            "token_index": keys % N, "act": rng.random(len(keys), dtype=np.float32)})
    for p, c in EDGES:
        for direction in ("p2c", "c2p"):
            insert(con, "matches", {
                "similarity": np.full(F * k, "pearson", dtype=object), "parent": np.full(F * k, p, dtype=object), "child": np.full(F * k, c, dtype=object),
                "direction": np.full(F * k, direction, dtype=object),
                "src": np.repeat(np.arange(F, dtype=np.int32), k), "rank": np.tile(np.arange(k, dtype=np.int32), F),
                "dst": rng.integers(0, F, F * k).astype(np.int32), "r": rng.random(F * k)})
    con.execute("CHECKPOINT")
    con.close()


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", type=int, default=16384)
    ap.add_argument("--tokens", type=int, default=3_000_000)
    ap.add_argument("--examples", type=int, default=20)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--act-tokens", type=int, default=300_000, help="tokens whose activations are stored")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()

    from fastapi.testclient import TestClient

    from featureflow.explorer.app import create_app

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.duckdb"
        t0 = time.perf_counter()
        build(path, a.features, a.tokens, a.examples, a.top_k, a.act_tokens)
        print(f"built a {path.stat().st_size / 1e6:.0f} MB store ({len(MODELS)} models x {a.features} features, "
              f"{a.tokens} sample tokens) in {time.perf_counter() - t0:.0f} s")
        client = TestClient(create_app(path))
        f = a.features // 2
        # Every timed call is a first view: a URL not asked before in the run (a new feature, or a new threshold
        # for the overview), sent with an If-None-Match no answer has, so neither the response cache nor a memo
        # answers it. Call `i` of a view asks `views[name](i)`; call 0 (untimed) warms what a server keeps for its
        # lifetime (the vocabulary, the default threshold's partner index).
        views = {
            "overview, a new threshold": lambda i: f"/api/?threshold={0.7 + i / 1000:.3f}",
            "feature page, a new feature": lambda i: f"/api/models/a/features/{f + i}",
            # the first page at a threshold builds that threshold's partner / fate / stability indexes
            "feature page, new threshold": lambda i: f"/api/models/a/features/{f + i}?threshold={0.5 + i / 1000:.3f}",
            "search, sorted, page 3": lambda i: f"/api/features?sort=max_act&page=3&min_density={i / 1e9:.9f}",
            "search by top token": lambda i: f"/api/features?token=t12&model=b&min_density={i / 1e9:.9f}",
            "compare (exact r)": lambda i: f"/api/compare?a=a:{f + i}&b=merge:{f + 1 + i}",
        }
        calls = iter(range(1, 1 << 30))

        def first_view(url_of) -> None:
            i = next(calls)
            assert client.get(url_of(i), headers={"If-None-Match": f'"bench-{i}"'}).status_code == 200

        for name, url_of in views.items():
            assert client.get(url_of(0)).status_code == 200, url_of(0)
            print(f"{name:28s} {1000 * timed(lambda: first_view(url_of), a.repeat):8.1f} ms")

        def naive_feature_page() -> None:
            """The baseline: whole tables into pandas, filtered in Python."""
            con = duckdb.connect(str(path), read_only=True)
            ex = con.execute("SELECT * FROM examples").df()
            ex = ex[(ex["model"] == "a") & (ex["feature"] == f)]
            toks = con.execute("SELECT * FROM sample_tokens").df().set_index("token_index")
            for _, e in ex.iterrows():
                toks.loc[e["start"]:e["end"] - 1, "token_id"].tolist()
            feats = con.execute("SELECT * FROM features").df()
            feats[(feats["model"] == "a") & (feats["feature"] == f)]
            con.close()

        ours = timed(lambda: first_view(views["feature page, a new feature"]), a.repeat)
        base = timed(naive_feature_page, max(1, a.repeat // 2))
        print(f"feature page, naive whole-table baseline: {1000 * base:8.1f} ms  ->  explorer is {base / ours:.1f}x faster")


if __name__ == "__main__":
    main()
