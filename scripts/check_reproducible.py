"""Check `featureflow report`'s scale lines (reproducible persistence, its random-weights control and seed floor)
against a count made another way.

Reads the store's tables straight into numpy with duckdb (`features`, `noise_floor`, `matches` / `assignments`,
`control_matches` / `control_assignments`, `model_edges`, `pw_mcc`; none of featureflow's SQL or functions) and
recounts per edge and mode: the parent's leave-one-out population (for each held-out seed replica, replica 0's
alive features that match above the threshold in every other extra replica), pooled over which replica is held
out; of those rows, how many persist into the child, into the random-weights control, and match the held-out
replica (the floor); the range over held-out replicas, the share beyond token identity, the raw shares, the
token-level persisting features and the child's reproducible emergence (Wilson intervals from statsmodels).
Compares every figure with the report's `repro` line for that edge. Prints one line per edge and mode; exits 1
on any mismatch. (The clustered intervals are checked against a cluster bootstrap in tests/test_controls.py.)

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
    """Alive flags per model, every replica match r (model -> replica -> r per feature, NaN: unassigned), each
    edge's best match r per source feature ((parent, child, direction) -> r) and each member's best match r in
    its random-weights control (member -> r per feature; members without a control are absent)."""
    alive: dict = {}
    for m, f, a in con.execute("SELECT model, feature, alive FROM features ORDER BY model, feature").fetchall():
        alive.setdefault(m, []).append(a)
    alive = {m: np.array(v, dtype=bool) for m, v in alive.items()}
    reps: dict[str, dict[int, np.ndarray]] = {}
    for m, rep, f, r in con.execute("SELECT model, replica, feature, r FROM noise_floor WHERE similarity = ? AND rule = ?",
                                    [sim, rule]).fetchall():
        reps.setdefault(m, {}).setdefault(rep, np.full(len(alive[m]), np.nan))[f] = np.nan if r is None else r
    best: dict = {}
    control: dict = {}
    for prefix, out in (("", best), ("control_", control)):
        table, rank = (f"{prefix}assignments", "") if rule == "1to1" else (f"{prefix}matches", " AND rank = 0")
        for p, c, d, src, r in con.execute(f"SELECT parent, child, direction, src, r FROM {table} "
                                           f"WHERE similarity = ?{rank}", [sim]).fetchall():
            if prefix:  # a member against its control: only its own features (p2c) count
                if d == "p2c":
                    control.setdefault(p, np.full(len(alive[p]), np.nan))[src] = np.nan if r is None else r
                continue
            n = len(alive[p] if d == "p2c" else alive[c])
            best.setdefault((p, c, d), np.full(n, np.nan))[src] = np.nan if r is None else r
    return alive, reps, best, control


def above(r: np.ndarray, t: float) -> np.ndarray:
    return np.nan_to_num(r, nan=-2.0) > t


def independent(con, t: float, mode: str) -> dict:
    """Per edge: the raw share, its control share and token-level count; on the parent's leave-one-out rows
    (None without seed replicas) the counts (k, n) persisting, into the control (None without one) and matching the
    held-out replica, the share per held-out replica, the share beyond token identity; (emerged, reproducible
    child features); (PW-MCC, chance)."""
    # a mode with doubt ('pearson+transfer') persists exactly as its base mode: the scale is the base mode's
    sim, _, rule = mode.split("+")[0].partition("-")
    alive, reps, best, control = tables(con, sim, rule or "best")
    stable = {m: alive[m] & np.all([above(r, t) for r in rs.values()], axis=0) for m, rs in reps.items()}
    mcc = {(a, b): (s, ch) for a, b, s, ch in con.execute(
        "SELECT model_a, model_b, pw_mcc, chance FROM pw_mcc WHERE kind = 'edge'").fetchall()}
    out = {}
    for p, c in con.execute("SELECT parent, child FROM model_edges").fetchall():
        hit = above(best[(p, c, "p2c")], t)
        ctl = above(control[p], t) if p in control else None
        row = {"raw": (alive[p] & hit).sum() / alive[p].sum(), "persisting": int((alive[p] & hit).sum()),
               "raw_control": None if ctl is None else (alive[p] & ctl).sum() / alive[p].sum(),
               "token_level": None if ctl is None else int((alive[p] & hit & ctl).sum()),
               "persist": None, "control": None, "floor": None, "seeds": None, "beyond": None, "emerge": None}
        if p in reps:
            rows = {j: alive[p] & np.all([above(reps[p][i], t) for i in reps[p] if i != j], axis=0) for j in reps[p]}
            n = sum(int(pop.sum()) for pop in rows.values())
            k = sum(int((pop & hit).sum()) for pop in rows.values())
            kf = sum(int((pop & above(reps[p][j], t)).sum()) for j, pop in rows.items())
            row.update(persist=(k, n), floor=(kf, n))
            if len(reps[p]) >= 2:
                row["seeds"] = [(pop & hit).sum() / pop.sum() for pop in rows.values() if pop.any()]
            if ctl is not None:
                kc = sum(int((pop & ctl).sum()) for pop in rows.values())
                row["control"] = (kc, n)
                row["beyond"] = (k - kc) / (kf - kc) if kf > kc else None
        if c in stable:
            row["emerge"] = (int((stable[c] & ~above(best[(p, c, "c2p")], t)).sum()), int(stable[c].sum()))
        row["pw_mcc"] = mcc[(p, c)]
        out[(p, c)] = row
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(k: int, n: int) -> str:
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    return f"[{_pct(0.0 if k == 0 else lo)}, {_pct(1.0 if k == n else hi)}]"


def expected(want: dict) -> list[str]:
    """The pieces the report's `repro` line must hold for these counts."""
    parts = [f"raw {_pct(want['raw'])}"]
    if want["raw_control"] is not None:
        parts.append(f"(control {_pct(want['raw_control'])},")
        parts.append(f"of {want['persisting']} persisting {want['token_level']} token-level, "
                     f"{want['persisting'] - want['token_level']} not")
    if want["persist"] is None:
        parts.append("persisting n/a")
    elif want["persist"][1]:
        (k, n), (kf, _) = want["persist"], want["floor"]
        parts += [f"persisting {k} of {n} = {_pct(k / n)} ", f"floor {kf} of {n} = {_pct(kf / n)} "]
        if want["control"] is not None:
            kc = want["control"][0]
            parts.append(f"control {kc} of {n} = {_pct(kc / n)} ")
            parts.append("beyond token identity n/a" if want["beyond"] is None else
                         f"beyond token identity {_pct(want['beyond'])} ")
        else:
            parts.append("control n/a")
    else:
        parts.append("persisting: no ")
    if want["seeds"]:
        parts.append(f"held-out seeds {_pct(min(want['seeds']))}-{_pct(max(want['seeds']))}")
    if want["emerge"] is None:
        parts.append("emerged n/a")
    elif want["emerge"][1]:
        k, n = want["emerge"]
        parts.append(f"emerged {k} of {n} = {_pct(k / n)} {_ci(k, n)}")
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
