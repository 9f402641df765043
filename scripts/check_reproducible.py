"""Check `featureflow report`'s reproducible-persistence lines against a count made another way.

Reads the store's tables straight into numpy with duckdb (`features`, `noise_floor`, `matches` /
`assignments`, `model_edges`, `pw_mcc`; none of featureflow's SQL or functions), recounts per edge and mode
the reproducible features that persist (and emerged), the range over seeds, the reproducible floor and the
raw share, takes the Wilson intervals from statsmodels, and compares every figure with the report's `repro`
line for that edge. Prints one line per edge and mode; exits 1 on any mismatch.

    python scripts/check_reproducible.py data/demo.duckdb [--threshold 0.8]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys

import duckdb
import numpy as np
from statsmodels.stats.proportion import proportion_confint


def tables(con, sim: str, rule: str):
    """Alive flags per model, every replica match r (model -> replica -> r per feature, NaN: unassigned) and
    each edge's best match r per source feature ((parent, child, direction) -> r)."""
    alive: dict = {}
    for m, f, a in con.execute("SELECT model, feature, alive FROM features ORDER BY model, feature").fetchall():
        alive.setdefault(m, []).append(a)
    alive = {m: np.array(v, dtype=bool) for m, v in alive.items()}
    reps: dict[str, dict[int, np.ndarray]] = {}
    for m, rep, f, r in con.execute("SELECT model, replica, feature, r FROM noise_floor WHERE similarity = ? AND rule = ?",
                                    [sim, rule]).fetchall():
        reps.setdefault(m, {}).setdefault(rep, np.full(len(alive[m]), np.nan))[f] = np.nan if r is None else r
    table, rank = ("assignments", "") if rule == "1to1" else ("matches", " AND rank = 0")
    best: dict = {}
    for p, c, d, src, r in con.execute(f"SELECT parent, child, direction, src, r FROM {table} WHERE similarity = ?{rank}",
                                       [sim]).fetchall():
        n = len(alive[p] if d == "p2c" else alive[c])
        best.setdefault((p, c, d), np.full(n, np.nan))[src] = np.nan if r is None else r
    return alive, reps, best


def above(r: np.ndarray, t: float) -> np.ndarray:
    return np.nan_to_num(r, nan=-2.0) > t


def independent(con, t: float, mode: str) -> dict:
    """Per edge: raw share, (persisting, reproducible parent features), seed shares, (emerged, reproducible
    child features), (matched, n) of the reproducible floor of the parent else the child (None without two
    extra replicas on either side), and (PW-MCC, chance)."""
    sim, _, rule = mode.partition("-")
    alive, reps, best = tables(con, sim, rule or "best")
    stable = {m: alive[m] & np.all([above(r, t) for r in rs.values()], axis=0) for m, rs in reps.items()}
    floors = {}
    for m, rs in reps.items():
        if len(rs) >= 2:  # hold each replica out in turn: of the features reproducing in all the others
            num = den = 0
            for j in rs:
                pop = alive[m] & np.all([above(rs[i], t) for i in rs if i != j], axis=0)
                den += int(pop.sum())
                num += int((pop & above(rs[j], t)).sum())
            floors[m] = (num, den)
    mcc = {(a, b): (s, ch) for a, b, s, ch in con.execute(
        "SELECT model_a, model_b, pw_mcc, chance FROM pw_mcc WHERE kind = 'edge'").fetchall()}
    out = {}
    for p, c in con.execute("SELECT parent, child FROM model_edges").fetchall():
        hit = above(best[(p, c, "p2c")], t)
        row = {"raw": (alive[p] & hit).sum() / alive[p].sum(), "persist": None, "seeds": None, "emerge": None}
        if p in stable:
            row["persist"] = (int((stable[p] & hit).sum()), int(stable[p].sum()))
            if len(reps[p]) >= 2:
                row["seeds"] = [(alive[p] & above(r, t) & hit).sum() / (alive[p] & above(r, t)).sum()
                                for r in reps[p].values() if (alive[p] & above(r, t)).any()]
        if c in stable:
            row["emerge"] = (int((stable[c] & ~above(best[(p, c, "c2p")], t)).sum()), int(stable[c].sum()))
        src = p if p in floors else c if c in floors else None
        row["floor"] = floors[src] if src else None
        row["pw_mcc"] = mcc[(p, c)]
        out[(p, c)] = row
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(k: int, n: int) -> str:
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    return f"[{_pct(0.0 if k == 0 else lo)}, {_pct(1.0 if k == n else hi)}]"


def _share(label: str, pair: tuple[int, int] | None, missing: str, empty: str | None) -> str | None:
    """The report's piece for a count `pair` (k, n): `missing` when there is none, `empty` when n is 0 (None:
    the report prints nothing then), else "label k of n = share [Wilson CI]"."""
    if pair is None:
        return missing
    k, n = pair
    return f"{label} {k} of {n} = {_pct(k / n)} {_ci(k, n)}" if n else empty


def expected(want: dict) -> list[str]:
    """The pieces the report's `repro` line must hold for these counts."""
    parts = [f"raw {_pct(want['raw'])}", _share("persisting", want["persist"], "persisting n/a", "persisting: no ")]
    if want["seeds"]:
        parts.append(f"seeds {_pct(min(want['seeds']))}-{_pct(max(want['seeds']))}")
    parts.append(_share("emerged", want["emerge"], "emerged n/a", "emerged: no "))
    parts.append(_share("reproducible floor", want["floor"], "reproducible floor unavailable", None))
    parts = [p for p in parts if p is not None]
    score, chance = want["pw_mcc"]
    parts.append(f"PW-MCC {'n/a' if score is None else f'{score:.3f}'} (chance {'n/a' if chance is None else f'{chance:.3f}'})")
    return parts


def check(db: str, threshold: float | None = None) -> tuple[list[str], list[str]]:
    """(lines checked, mismatches) of `featureflow report --db db [--threshold]` against `independent`."""
    from featureflow.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        args = ["report", "--db", str(db)] + ([] if threshold is None else ["--threshold", str(threshold)])
        if main(args) != 0:
            raise SystemExit(f"featureflow {' '.join(args)} failed")
    con = duckdb.connect(str(db), read_only=True)
    t = con.execute("SELECT default_threshold FROM runs").fetchone()[0] if threshold is None else threshold
    checked, bad = [], []
    for section in buf.getvalue().split("\nmode ")[1:]:
        mode = section.split()[0]
        for (p, c), want in independent(con, t, mode).items():
            line = next((l.strip() for l in section.splitlines() if l.strip().startswith(f"repro {p} -> {c}:")), None)
            if line is None:
                bad.append(f"{mode} {p} -> {c}: no repro line in the report")
                continue
            missing = [x for x in expected(want) if x not in line]
            (bad if missing else checked).append(f"{mode} {line}" + (f"\n    expected: {missing}" if missing else ""))
    con.close()
    return checked, bad


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("db")
    ap.add_argument("--threshold", type=float)
    a = ap.parse_args()
    ok, bad = check(a.db, a.threshold)
    for line in ok:
        print("ok  ", line)
    for line in bad:
        print("BAD ", line)
    print(f"{len(ok)} edge-mode lines equal the independent count, {len(bad)} differ")
    sys.exit(1 if bad else 0)
