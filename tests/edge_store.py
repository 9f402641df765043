"""A constructed store of one edge p -> c for the fate rule's tests (tests/test_uncertain.py, tests/test_split.py):
two members of `n` features each, about a tenth dead, each alive one firing 4 or 50 times, and each feature's best
match on the other side with an r drawn from given values; the caller adds the evidence it tests."""

from __future__ import annotations

import duckdb
import numpy as np

from featureflow.store.schema import create_tables
from featureflow.store.writers import insert, insert_row


def one_edge(rng: np.random.Generator, n: int, r_values: list[float]):
    """(connection, alive {member: mask}, r {direction: each feature's match r}) of an in-memory store holding the
    edge p -> c, its features and its `pearson` best matches (rank 0, partners a random permutation)."""
    con = duckdb.connect()
    create_tables(con)
    for i, m in enumerate(("p", "c")):
        insert_row(con, "models", {"model": m, "label": m.upper(), "idx": i, "make": "train", "d_sae": n})
    insert_row(con, "model_edges", {"parent": "p", "child": "c", "make": "train"})
    alive = {m: rng.random(n) > 0.1 for m in ("p", "c")}
    # firings on the sample: some alive features too rare for a rule's `min_events` (drawn apart from `rng`)
    events = np.random.default_rng(n).choice([4, 50], (2, n))
    for i, m in enumerate(("p", "c")):
        insert(con, "features", {"model": np.full(n, m, dtype=object), "feature": np.arange(n, dtype=np.int32),
                                 "alive": alive[m], "n_active": alive[m].astype(np.int64) * events[i],
                                 "density": alive[m] * 0.01})
    r = {d: rng.choice(r_values, n) for d in ("p2c", "c2p")}
    for d in ("p2c", "c2p"):
        insert(con, "matches", {"similarity": np.full(n, "pearson", dtype=object),
                                "parent": np.full(n, "p", dtype=object), "child": np.full(n, "c", dtype=object),
                                "direction": np.full(n, d, dtype=object), "src": np.arange(n, dtype=np.int32),
                                "rank": np.zeros(n, dtype=np.int32), "dst": rng.permutation(n).astype(np.int32),
                                "r": r[d]})
    return con, alive, r


def firings(con, model: str) -> np.ndarray:
    """Each feature's firing count on the sample (`features.n_active`), in feature order: what `min_events` reads."""
    return con.execute("SELECT n_active FROM features WHERE model = ? ORDER BY feature", [model]).fetchnumpy()["n_active"]
