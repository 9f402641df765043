"""`featureflow report`: the paper's Figure 2 in text, read from a store through `featureflow/store/` (`flows.py`'s
fate rule and `summary.py`), read-only; it does not import the explorer."""

from __future__ import annotations

from pathlib import Path

import duckdb

from featureflow.store import flows as F
from featureflow.store import summary


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ci(ci) -> str:
    return "[n/a]" if ci is None or ci[0] is None else f"[{100 * ci[0]:.1f}%, {100 * ci[1]:.1f}%]"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _side(kind: str, model: str, n, k, share, lo, hi, seed_min, seed_max) -> str:
    """`kind` ("persisting" / "emerged") among `model`'s `n` reproducible features: k of n, share, interval and
    the range over seeds; n is None where `model` has no seed replicas."""
    if n is None:
        return f"{kind} n/a ({model} has no seed replicas)"
    spread = "" if seed_min is None else f", seeds {_pct(seed_min)}-{_pct(seed_max)}"
    if n == 0:
        return f"{kind}: no {model} feature reproduces in every seed replica{spread}"
    return f"{kind} {k} of {n} = {_pct(share)} {_ci((lo, hi))}{spread}"


def reproducible_line(r: dict) -> str:
    """One edge's reproducible persistence, emergence, raw share, floors and PW-MCC on one line."""
    edge = f"repro {r['parent']} -> {r['child']}:"
    persist = _side("persisting", r["parent"], r["stable_parent"], r["stable_persisting"], r["repro_share"],
                    r["repro_lo"], r["repro_hi"], r["repro_seed_min"], r["repro_seed_max"])
    emerge = _side("emerged", r["child"], r["stable_child"], r["stable_emerging"], r["emerge_share"],
                   r["emerge_lo"], r["emerge_hi"], r["emerge_seed_min"], r["emerge_seed_max"])
    floor = ("reproducible floor unavailable (neither side has two or more extra seed replicas)"
             if r["repro_floor_source"] is None else
             f"reproducible floor {r['repro_floor_matched']} of {r['repro_floor_n']} = {_pct(r['repro_floor_share'])} "
             f"{_ci((r['repro_floor_lo'], r['repro_floor_hi']))} ({r['repro_floor_source']})")
    raw_floor = _pct(r["floor_share"]) if r["floor_share"] is not None else "n/a"
    return (f"{edge} {persist}; {floor}; raw {_pct(r['persist_share'])} (floor {raw_floor}); {emerge}; "
            f"PW-MCC {_num(r['pw_mcc'])} (chance {_num(r['pw_mcc_chance'])})")


def print_report(db: str, threshold: float | None = None, mode: str | None = None) -> None:
    """Flows per edge and mode at `threshold` (default: the run's), beside each edge's noise floor; with
    `mode`, that stored matching mode only. Everything is recomputed from the stored matches."""
    if not Path(db).exists():
        raise FileNotFoundError(f"store '{db}' does not exist (run `featureflow run --config ...` first)")
    if threshold is not None and not -1 < threshold < 1:
        raise ValueError(f"--threshold {threshold} is outside (-1, 1): similarities are correlations or cosines")
    con = duckdb.connect(str(db), read_only=True)
    try:
        _report(con, db, threshold, mode)
    finally:
        con.close()


def _report(con, db, threshold, mode) -> None:
    why = summary.schema_mismatch(con, db)
    if why:
        raise ValueError(why)
    cols = [d[0] for d in con.execute("SELECT * FROM runs").description]
    run = dict(zip(cols, con.execute("SELECT * FROM runs").fetchone()))
    t = run["default_threshold"] if threshold is None else threshold
    if mode is not None and mode not in run["modes"]:
        raise ValueError(f"matching mode '{mode}' is not stored in run '{run['name']}' "
                         f"(modes: {', '.join(run['modes'])})")
    modes = list(run["modes"]) if mode is None else [mode]
    origin_mode = run["default_mode"] if mode is None else mode  # the mode the origin counts are read under
    init = ("every SAE shares one seed (sae.shared_init: the paper's setup)" if run["shared_init"]
            else "each SAE has its own seed")
    print(f"run {run['name']}: feature flows per edge, similarity > {t} persists; {init}; "
          "matching across models uses replica 0 of each SAE")
    for mode in modes:
        print(f"\nmode {mode} ({F.mode_label(mode)}){'  [default]' if mode == run['default_mode'] else ''}")
        print(f"{'edge':32s} {'persist':>8s} {'vanish':>8s} {'inherit':>8s} {'emerge':>8s} {'persist%':>9s} "
              f"{'floor%':>8s} {'same-idx':>8s}  floor from")
        for r in F.flows(con, t, mode):
            edge = f"{r['parent']} -> {r['child']}"
            floor = "    n/a" if r["floor_share"] is None else f"{100 * r['floor_share']:7.1f}%"
            print(f"{edge:32s} {r['persisting']:8d} {r['disappearing']:8d} {r['inherited']:8d} {r['emerging']:8d} "
                  f"{100 * r['persist_share']:8.1f}% {floor} {r['same_index']:8d}  {r['floor_source'] or 'no replicas'}")
        print("  reproducible features only (those matched above the threshold in every seed replica of their "
              "member), 95% Wilson intervals; floor: the same share between seeds of one unchanged model:")
        for r in F.flows(con, t, mode):
            print("  " + reproducible_line(r))
            if r["verdict"]:
                print(f"    verdict: {r['verdict']}")
        for f in summary.member_floors(con, t, mode):
            print(f"  floor {f['model']}: {f['matched']} of {f['alive']} alive features ({100 * f['share']:.1f}%) "
                  f"match another seed replica; mean match r {f['mean_r']:.3f}")
            rf = f["reproducible_floor"]
            print(f"    reproducible floor {f['model']}: " + (
                f"{rf['matched']} of {rf['n']} ({_pct(rf['share'])} {_ci(rf['ci'])})" if rf and rf["n"] else
                "unavailable (needs two or more extra seed replicas)" if not rf else "no feature reproduces"))
            for p in f["pw_mcc"]:
                print(f"    PW-MCC {f['model']} r0 vs r{p['replica']}: {_num(p['pw_mcc'])} (chance {_num(p['chance'])})")
    print(f"\nalive features by origin (mode {origin_mode}, threshold {t}; "
          f"where their chain of persisting matches starts):")
    for r in summary.origin_counts(con, t, origin_mode):
        print(f"  {r['model']:20s} from {r['origin_model']:20s} {r['n']:6d}")
    print("\nSAE health:")
    for m in summary.sae_health(con):
        lr = "n/a" if m["loss_recovered"] is None else f"{m['loss_recovered']:.3f}"
        print(f"  {m['model']:20s} L0 {m['l0']:6.1f}  MSE {m['mse']:.4g}  expl.var {m['explained_variance']:.3f}  "
              f"dead {m['dead_features']}/{m['d_sae']} (silent on {m['eval_tokens']:,} held-out tokens; alive on the "
              f"sample: {m['alive']})  loss recovered {lr} ({m['loss_recovered_scope']})")
