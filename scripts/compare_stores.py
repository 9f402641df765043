"""Compare two stores row for row: every table of either, with DuckDB's EXCEPT ALL both ways (duplicates count).

    python scripts/compare_stores.py old.duckdb new.duckdb                  # exit 0: equal, 1: they differ
    python scripts/compare_stores.py a.duckdb b.duckdb --ignore runs.device

For a refactor of the store build that must not change what it writes: run the pipeline with the old code, move its
store aside, build the store again with the new code from the same artefacts (`featureflow run` finds every stage
done and rebuilds only the store; no new artefact folder may appear, or a key changed), then compare the two files:

    git worktree add /tmp/old <old commit>
    PYTHONPATH=/tmp/old featureflow run --config run.yaml          # data_dir: a fresh folder
    mv DATA/<run>.duckdb /tmp/old.duckdb
    featureflow run --config run.yaml                             # the new code, the same artefacts
    python scripts/compare_stores.py /tmp/old.duckdb DATA/<run>.duckdb

Columns that record when or how fast the build ran differ by nature and are left out by default
(`runs.timings_json`, `schema_version.created_at`); `--ignore TABLE.COLUMN` leaves out more. A table present in
one file only, or with other columns, counts as a difference.
"""

from __future__ import annotations

import argparse
import sys

import duckdb

IGNORE = ("runs.timings_json", "schema_version.created_at")


def _columns(con: duckdb.DuckDBPyConnection, db: str) -> dict[str, list[str]]:
    rows = con.execute("SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = ? "
                       "ORDER BY table_name, column_index", [db]).fetchall()
    out: dict[str, list[str]] = {}
    for t, c in rows:
        out.setdefault(t, []).append(c)
    return out


def compare(a: str, b: str, ignore: tuple[str, ...] = IGNORE) -> list[dict]:
    """One dict per table of either store: rows in each, rows only in a, only in b (EXCEPT ALL), and a note
    when the table or its columns differ."""
    con = duckdb.connect()
    con.execute("ATTACH ? AS a (READ_ONLY)", [a])
    con.execute("ATTACH ? AS b (READ_ONLY)", [b])
    cols_a, cols_b = _columns(con, "a"), _columns(con, "b")
    out = []
    for t in sorted(set(cols_a) | set(cols_b)):
        row = {"table": t, "rows_a": None, "rows_b": None, "only_a": None, "only_b": None, "note": ""}
        if t not in cols_a or t not in cols_b:
            row["note"] = f"only in {'a' if t in cols_a else 'b'}"
        elif cols_a[t] != cols_b[t]:
            row["note"] = f"columns differ: {cols_a[t]} vs {cols_b[t]}"
        for side, cols in (("a", cols_a), ("b", cols_b)):
            if t in cols:
                row[f"rows_{side}"] = con.execute(f'SELECT count(*) FROM {side}."{t}"').fetchone()[0]
        if not row["note"]:
            kept = ", ".join(f'"{c}"' for c in cols_a[t] if f"{t}.{c}" not in ignore)
            for x, y in (("a", "b"), ("b", "a")):
                row[f"only_{x}"] = con.execute(f'SELECT count(*) FROM (SELECT {kept} FROM {x}."{t}" EXCEPT ALL '
                                               f'SELECT {kept} FROM {y}."{t}")').fetchone()[0]
        out.append(row)
    con.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--ignore", action="append", default=[], metavar="TABLE.COLUMN",
                    help=f"a column left out of the comparison (always left out: {', '.join(IGNORE)})")
    args = ap.parse_args(argv)
    rows = compare(args.a, args.b, IGNORE + tuple(args.ignore))
    print(f"{'table':28} {'rows a':>9} {'rows b':>9} {'only a':>7} {'only b':>7}")
    for r in rows:
        n = {k: "-" if r[k] is None else r[k] for k in ("rows_a", "rows_b", "only_a", "only_b")}
        print(f"{r['table']:28} {n['rows_a']:>9} {n['rows_b']:>9} {n['only_a']:>7} {n['only_b']:>7} {r['note']}")
    differ = [r for r in rows if r["note"] or r["only_a"] or r["only_b"]]
    print(f"{len(rows)} tables, {sum(r['rows_a'] or 0 for r in rows)} rows in a; "
          f"{sum((r['only_a'] or 0) + (r['only_b'] or 0) for r in rows)} rows differ, "
          f"{len(differ)} tables differ" + (f": {', '.join(r['table'] for r in differ)}" if differ else ""))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
