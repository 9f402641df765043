"""Writing a store: every row goes in by column name, checked against the schema (`schema.columns`), so a column
moved or added in the DDL can never shift a value into its neighbour. The one writer of every store and in-memory
table: the store stage (`featureflow/pipeline/store_stage.py`), the planted family, autointerp's persisting
features, the Parquet import, the synthetic test store and the benchmarks.

    insert(con, table, rows)        rows: a dict of columns (lists, numpy or Arrow arrays) or a pyarrow Table
    insert_row(con, table, row)     row: a dict of one value per column, bound as query parameters
    insert_edge_matches / insert_floor / insert_evidence / insert_planted: the domain writers (an edge's matches
        and assignment, a replica's noise floor, an evidence kind's values on an edge, the planted scorecard)
    new_store(path): a DuckDB file written under a temporary name, renamed over `path` only when complete

A column a table lacks is a ValueError naming the table and the column; a column left out is NULL. Imports nothing
from `featureflow.pipeline` and nothing heavy (duckdb, numpy, pyarrow): the explorer's side of the contract.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import duckdb
import numpy as np
import pyarrow as pa

from featureflow.store.schema import TABLES, columns


def check_columns(table: str, names) -> None:
    """ValueError unless `table` is a table of the schema and has every column in `names`."""
    if table not in TABLES:
        raise ValueError(f"unknown table '{table}': the schema (featureflow/store/schema.py) has no such table")
    known = columns(table)
    unknown = [c for c in names if c not in known]
    if unknown:
        raise ValueError(f"table '{table}' has no column {', '.join(repr(c) for c in unknown)} "
                         f"(its columns: {', '.join(known)})")


def columns_of(dicts: list[dict]) -> dict[str, list]:
    """Row dicts (each with the first one's keys) as a dict of columns, for `insert`."""
    keys = list(dicts[0]) if dicts else []
    return {k: [d[k] for d in dicts] for k in keys}


def insert(con: duckdb.DuckDBPyConnection, table: str, rows: Mapping[str, Any] | pa.Table) -> int:
    """Append `rows` (a dict of equally long columns, or a pyarrow Table) to `table` by column name; columns the
    rows leave out are NULL. Returns the number of rows written."""
    t = rows if isinstance(rows, pa.Table) else pa.table(dict(rows))
    check_columns(table, t.column_names)
    if t.num_rows == 0:
        return 0
    con.register("_src", t)
    try:
        cols = ", ".join(f'"{c}"' for c in t.column_names)
        con.execute(f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM _src')
    finally:
        con.unregister("_src")
    return t.num_rows


def insert_row(con: duckdb.DuckDBPyConnection, table: str, row: Mapping[str, Any]) -> None:
    """Append one row to `table`: `row` maps column names to values (bound as query parameters, each converted
    by DuckDB to its column's type); columns it leaves out are NULL."""
    check_columns(table, row)
    cols = ", ".join(f'"{c}"' for c in row)
    marks = ", ".join("?" for _ in row)
    con.execute(f'INSERT INTO "{table}" ({cols}) VALUES ({marks})', list(row.values()))


@contextmanager
def new_store(path: str | Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to a new DuckDB file that becomes `path` only when the block completes: it is written as
    `.<name>.tmp-<pid>` beside `path` (DuckDB's log as that name + `.wal`), checkpointed, closed and renamed over
    `path`. An exception leaves `path` as it was and removes both temporary files; a killed process leaves them
    to the next sweep (`featureflow.pipeline.artifacts.sweep_temps` knows the names)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    wal = tmp.with_name(tmp.name + ".wal")
    tmp.unlink(missing_ok=True)
    wal.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        yield con
        con.execute("CHECKPOINT")
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        wal.unlink(missing_ok=True)
        raise
    con.close()
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------ domain writers
def r_column(r: np.ndarray) -> pa.Array:
    """Correlations as stored: clamped to [-1, 1] (float error can leave |r| a few ulps above 1), NaN -> NULL."""
    r = np.asarray(r, dtype=np.float64)
    return pa.array(np.clip(r, -1.0, 1.0), mask=~np.isfinite(r))


def side_rows(idx: np.ndarray, r: np.ndarray, matched_only: bool = False, **const) -> dict:
    """Columns for one direction of matches (idx, r of shape (n_src, k)) or of an assignment ((n_src,)).
    `matched_only`: leave out the slots without a partner (index -1: a feature that never fires has no
    match; see `matching.among_alive`), so the `matches` table holds real matches only."""
    idx, r = (idx, r) if idx.ndim == 2 else (idx[:, None], r[:, None])
    n_src, k = idx.shape
    src, rank = np.repeat(np.arange(n_src, dtype=np.int32), k), np.tile(np.arange(k, dtype=np.int32), n_src)
    idx, r = idx.ravel(), r.ravel()
    if matched_only:
        keep = idx >= 0
        src, rank, idx, r = src[keep], rank[keep], idx[keep], r[keep]
    out = {c: np.full(len(idx), v, dtype=object) for c, v in const.items()}
    out.update(src=src, rank=rank, dst=pa.array(idx.astype(np.int32), mask=idx < 0), r=r_column(r))
    return out


def insert_edge_matches(con: duckdb.DuckDBPyConnection, similarity: str, parent: str, child: str,
                        top: dict, one: dict, tables: tuple[str, str] = ("matches", "assignments")) -> None:
    """One edge's rows of `matches` (top-k both ways: `top` with p2c_idx / p2c_r / c2p_idx / c2p_r of shape
    (n, k)) and of `assignments` (`one`, the same keys of shape (n,)). The store stage and the planted family
    fill the tables the fate rules (`featureflow/store/flows.py`) read through this one function; a member
    against its control fills `tables` ("control_matches", "control_assignments") the same way."""
    for d in ("p2c", "c2p"):
        insert(con, tables[0], side_rows(top[f"{d}_idx"], top[f"{d}_r"], True, similarity=similarity,
                                         parent=parent, child=child, direction=d))
        rows = side_rows(one[f"{d}_idx"], one[f"{d}_r"], similarity=similarity, parent=parent, child=child,
                         direction=d)
        rows.pop("rank")
        insert(con, tables[1], rows)


def insert_floor(con: duckdb.DuckDBPyConnection, name: str, replica: int, similarity: str, rule: str,
                 r: np.ndarray, alive: np.ndarray) -> None:
    """`noise_floor` rows: replica 0 of `name` matched against `replica` (r per feature of replica 0)."""
    insert(con, "noise_floor", {
        "model": np.full(len(r), name, dtype=object), "replica": np.full(len(r), replica, dtype=np.int32),
        "similarity": np.full(len(r), similarity, dtype=object), "rule": np.full(len(r), rule, dtype=object),
        "feature": np.arange(len(r), dtype=np.int32), "alive": alive, "r": r_column(r)})


def insert_evidence_kind(con: duckdb.DuckDBPyConnection, kind) -> None:
    """The `evidence_kinds` row of a registered evidence kind (`featureflow.evidence.Evidence`)."""
    insert_row(con, "evidence_kinds", {
        "kind": kind.name, "label": kind.label, "side": kind.side, "reads": list(kind.reads), "doc": kind.doc,
        "measures_json": json.dumps([{"name": m.name, "label": m.label, "doc": m.doc, "feature": m.feature,
                                     "count": m.count}
                                     for m in kind.measures])})


def insert_evidence(con: duckdb.DuckDBPyConnection, kind: str, parent: str, child: str,
                    values: Mapping[str, np.ndarray]) -> int:
    """`evidence` rows of one kind on one edge: `values` maps each measure to one value per feature of the kind's
    side (index = feature); NaN values are left out."""
    n = 0
    for measure, v in values.items():
        v = np.asarray(v, dtype=np.float64)
        f = np.flatnonzero(np.isfinite(v))
        n += insert(con, "evidence", {
            "kind": np.full(len(f), kind, dtype=object), "parent": np.full(len(f), parent, dtype=object),
            "child": np.full(len(f), child, dtype=object), "feature": f.astype(np.int32),
            "measure": np.full(len(f), measure, dtype=object), "value": v[f]})
    return n


def insert_planted(con: duckdb.DuckDBPyConnection, card: dict) -> None:
    """The planted_* tables from a scorecard (`featureflow.pipeline.planted.run_planted`, its planted.json)."""
    rows = [{"mode": m, "population": pop, "fate": f, **{k: s[k] for k in ("calls", "correct", "support", "precision",
                                                                            "recall", "f1")}}
            for pop, key in (("all", "modes"), ("reproducible", "reproducible"))
            for m, fates in card[key].items() for f, s in fates.items()]
    insert(con, "planted_scores", pa.Table.from_pylist(rows, schema=pa.schema([
        ("mode", pa.string()), ("population", pa.string()), ("fate", pa.string()), ("calls", pa.int32()),
        ("correct", pa.int32()), ("support", pa.int32()), ("precision", pa.float64()), ("recall", pa.float64()),
        ("f1", pa.float64())])))
    insert(con, "planted_calls", columns_of([{"mode": m, "population": pop, "fate": f, "truth": t, "n": n}
                                             for m, pops in card["calls_by_truth"].items()
                                             for pop, fates in pops.items()
                                             for f, c in fates.items() for t, n in sorted(c.items())]))
    insert(con, "planted_drift", pa.Table.from_pylist(
        [{"mode": m, "angle": float(a), "recall": v["recall"], "support": v["support"]}
         for m, bins in card["drift"].items() for a, v in bins.items()],
        schema=pa.schema([("mode", pa.string()), ("angle", pa.float64()), ("recall", pa.float64()),
                          ("support", pa.int32())])))
    insert(con, "planted_split", pa.Table.from_pylist(
        [{"mode": m, "population": pop, **{k: s[k] for k in ("support", "calls", "correct", "precision", "recall",
                                                             "with_halves", "called_persisting", "called_disappearing")}}
         for m, pops in card["split"].items() for pop, s in pops.items()],
        schema=pa.schema([("mode", pa.string()), ("population", pa.string())]
                         + [(k, pa.int32()) for k in ("support", "calls", "correct")]
                         + [("precision", pa.float64()), ("recall", pa.float64())]
                         + [(k, pa.int32()) for k in ("with_halves", "called_persisting", "called_disappearing")])))
    insert(con, "planted_saes", columns_of([
        {"model": n, "replica": int(r), "mcc": card["mcc"][n][r], **{k: h[k] for k in (
            "l0", "explained_variance", "dead", "d_sae", "true_features", "resolved")}}
        for n, reps in card["sae"].items() for r, h in reps.items()]))
    insert(con, "planted_evidence", pa.Table.from_pylist(
        [{"kind": k, "parent": e.split("->")[0], "child": e.split("->")[1], "metric": m,
          "value": None if v is None else float(v)}
         for k, edges in card.get("evidence", {}).items() for e, metrics in edges.items() for m, v in metrics.items()],
        schema=pa.schema([("kind", pa.string()), ("parent", pa.string()), ("child", pa.string()),
                          ("metric", pa.string()), ("value", pa.float64())])))
    insert_row(con, "planted_meta", {"config_json": json.dumps(card["config"]), "threshold": card["threshold"],
                                     "truth_json": json.dumps(card["truth"]), "seconds": card["seconds"]})
