"""`featureflow report`: the paper's Figure 2 in text, read from a store."""

from __future__ import annotations

import duckdb


def flow_table(con: duckdb.DuckDBPyConnection, threshold: float | None = None) -> list[dict]:
    """Flow counts per edge at `threshold` (default: the run's), recomputed from the stored top-1 matches."""
    if threshold is None:
        threshold = con.execute("SELECT default_threshold FROM runs").fetchone()[0]
    rows = con.execute("""
        SELECT e.parent, e.child,
          count(*) FILTER (WHERE m.direction = 'p2c' AND fp.alive AND m.r > $t) AS persisting,
          count(*) FILTER (WHERE m.direction = 'p2c' AND fp.alive AND m.r <= $t) AS disappearing,
          count(*) FILTER (WHERE m.direction = 'c2p' AND fc.alive AND m.r > $t) AS inherited,
          count(*) FILTER (WHERE m.direction = 'c2p' AND fc.alive AND m.r <= $t) AS emerging,
          count(*) FILTER (WHERE m.direction = 'p2c' AND fp.alive) AS parent_alive
        FROM model_edges e
        JOIN matches m ON m.parent = e.parent AND m.child = e.child AND m.rank = 0
        LEFT JOIN features fp ON m.direction = 'p2c' AND fp.model = e.parent AND fp.feature = m.src
        LEFT JOIN features fc ON m.direction = 'c2p' AND fc.model = e.child AND fc.feature = m.src
        JOIN models pm ON pm.model = e.parent JOIN models cm ON cm.model = e.child
        GROUP BY e.parent, e.child, pm.idx, cm.idx ORDER BY cm.idx, pm.idx
    """, {"t": threshold}).fetchall()
    cols = ["parent", "child", "persisting", "disappearing", "inherited", "emerging", "parent_alive"]
    out = [dict(zip(cols, r)) for r in rows]
    for r in out:
        r["threshold"] = threshold
        r["persist_share"] = r["persisting"] / r["parent_alive"] if r["parent_alive"] else 0.0
    return out


def origin_table(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Per model: alive features by where their chain of persisting matches starts (default threshold)."""
    return con.execute("""
        SELECT f.model, f.origin_model, count(*) FROM features f JOIN models m USING (model)
        JOIN models o ON o.model = f.origin_model
        WHERE f.alive GROUP BY f.model, f.origin_model, m.idx, o.idx ORDER BY m.idx, o.idx""").fetchall()


def print_report(db: str, threshold: float | None = None) -> None:
    from pathlib import Path

    if not Path(db).exists():
        raise FileNotFoundError(f"store '{db}' does not exist (run `featureflow run --config ...` first)")
    con = duckdb.connect(db, read_only=True)
    run, thr = con.execute("SELECT name, default_threshold FROM runs").fetchone()
    print(f"run {run}: feature flows per edge (Pearson r > {threshold or thr} persists)\n")
    print(f"{'edge':32s} {'persist':>8s} {'vanish':>8s} {'inherit':>8s} {'emerge':>8s} {'persist%':>9s}")
    for r in flow_table(con, threshold):
        edge = f"{r['parent']} -> {r['child']}"
        print(f"{edge:32s} {r['persisting']:8d} {r['disappearing']:8d} {r['inherited']:8d} {r['emerging']:8d} "
              f"{100 * r['persist_share']:8.1f}%")
    print("\nalive features by origin (where their chain of persisting matches starts):")
    for model, origin, n in origin_table(con):
        print(f"  {model:20s} from {origin:20s} {n:6d}")
    print("\nSAE health:")
    for row in con.execute("SELECT model, l0, mse, explained_variance, dead_features, sae_metrics.d_sae, loss_recovered, "
                           "loss_recovered_scope FROM sae_metrics JOIN models USING (model) ORDER BY idx").fetchall():
        lr = "n/a" if row[6] is None else f"{row[6]:.3f}"
        print(f"  {row[0]:20s} L0 {row[1]:6.1f}  MSE {row[2]:.4g}  expl.var {row[3]:.3f}  dead {row[4]}/{row[5]}  "
              f"loss recovered {lr} ({row[7]})")
    con.close()
