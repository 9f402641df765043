"""`featureflow report`: the paper's Figure 2 in text, read from a store through `featureflow/store/` (`flows.py`'s
fate rule and `summary.py`), read-only; it does not import the explorer."""

from __future__ import annotations

from pathlib import Path

import duckdb

from featureflow.evidence.split import RULE_TEXT
from featureflow.modes import mode_label, rule_of
from featureflow.store import flows as F
from featureflow.store import summary
from featureflow.store.rows import dicts


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ci(ci) -> str:
    return "[n/a]" if ci is None or ci[0] is None else f"[{100 * ci[0]:.1f}%, {100 * ci[1]:.1f}%]"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _emerged(r: dict) -> str:
    """Emergence among the child's reproducible features (those matched above the threshold in every seed replica)."""
    n, k = r["stable_child"], r["stable_emerging"]
    if n is None:
        return f"emerged n/a ({r['child']} has no seed replicas)"
    if n == 0:
        return f"emerged: no {r['child']} feature reproduces in every seed replica"
    return f"emerged {k} of {n} = {_pct(r['emerge_share'])} {_ci((r['emerge_lo'], r['emerge_hi']))}"


def scale_line(r: dict) -> str:
    """One edge on its scale: reproducible persistence (the parent's leave-one-out population), its random-weights
    control and seed floor on the same rows with intervals, the share beyond token identity, the raw shares,
    token-level persisting features, emergence and PW-MCC."""
    n = r["stable_parent"]
    raw_floor = _pct(r["floor_share"]) if r["floor_share"] is not None else "n/a"
    tokens = ("" if r["token_level"] is None else
              f"; of {r['persisting']} persisting {r['token_level']} token-level, {r['beyond_token']} not")
    tail = (f"raw {_pct(r['persist_share'])} (control {_pct(r['control_share'])}, floor {raw_floor}){tokens}; "
            f"{_emerged(r)}; PW-MCC {_num(r['pw_mcc'])} (chance {_num(r['pw_mcc_chance'])})")
    if n is None:
        head = f"persisting n/a ({r['parent']} has no seed replicas)"
    elif n == 0:
        head = f"persisting: no {r['parent']} feature reproduces"
    else:
        seeds = "" if r["repro_seed_min"] is None else \
            f", held-out seeds {_pct(r['repro_seed_min'])}-{_pct(r['repro_seed_max'])}"
        control = ("control n/a (no random-weights control)" if r["repro_control_share"] is None else
                   f"control {r['repro_control_matched']} of {n} = {_pct(r['repro_control_share'])} "
                   f"{_ci((r['repro_control_lo'], r['repro_control_hi']))} ({r['control']})")
        beyond = ("beyond token identity n/a" if r["beyond_share"] is None else
                  f"beyond token identity {_pct(r['beyond_share'])} {_ci((r['beyond_lo'], r['beyond_hi']))}")
        head = (f"persisting {r['stable_persisting']} of {n} = {_pct(r['repro_share'])} "
                f"{_ci((r['repro_lo'], r['repro_hi']))} ({r['repro_features']} features x held-out replicas{seeds}); "
                f"{control}; floor {r['repro_floor_matched']} of {n} = {_pct(r['repro_floor_share'])} "
                f"{_ci((r['repro_floor_lo'], r['repro_floor_hi']))} ({r['repro_floor_source']}); {beyond}")
    return f"repro {r['parent']} -> {r['child']}: {head}; {tail}"


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
        print(f"\nmode {mode} ({mode_label(mode)}){'  [default]' if mode == run['default_mode'] else ''}")
        print(f"{'edge':32s} {'persist':>8s} {'vanish':>8s} {'inherit':>8s} {'emerge':>8s} {'persist%':>9s} "
              f"{'floor%':>8s} {'same-idx':>8s}  floor from")
        rows = F.flows(con, t, mode)
        for r in rows:
            edge = f"{r['parent']} -> {r['child']}"
            floor = "    n/a" if r["floor_share"] is None else f"{100 * r['floor_share']:7.1f}%"
            print(f"{edge:32s} {r['persisting']:8d} {r['disappearing']:8d} {r['inherited']:8d} {r['emerging']:8d} "
                  f"{100 * r['persist_share']:8.1f}% {floor} {r['same_index']:8d}  {r['floor_source'] or 'no replicas'}")
        if rule_of(mode).admits_doubt:
            R = rule_of(mode)
            print(f"  uncertain ({R.label}): no match above the threshold, but the evidence says the other model "
                  f"may still carry the feature{f', or it fires fewer than {R.min_events} times' if R.min_events else ''}"
                  "; left out of persist / vanish / inherit / emerge above:")
            for r in rows:
                print(f"  {r['parent'] + ' -> ' + r['child']:30s} uncertain {r['uncertain']:6d} of "
                      f"{r['parent_alive']:,} parent features, origin uncertain {r['uncertain_origin']:6d} of "
                      f"{r['child_alive']:,} child features; carried by transfer {r['carried']:,} "
                      f"({100 * r['carried_share']:.1f}%) beside {100 * r['persist_share']:.1f}% persisting")
        if any(r["split"] or r["absorbed"] or r["absorbing"] or r["split_part"] for r in rows):
            print(f"  splits and absorptions (split evidence: {RULE_TEXT}); left out of vanish / emerge above:")
            for r in rows:
                print(f"  {r['parent'] + ' -> ' + r['child']:30s} split {r['split']:6d}, absorbed {r['absorbed']:6d} "
                      f"of {r['parent_alive']:,} parent features; split parts {r['split_part']:6d}, absorbing "
                      f"{r['absorbing']:6d} of {r['child_alive']:,} child features")
        print("  on its scale: of the parent's reproducible features (those matched above the threshold in every "
              "seed replica but one, held out in turn, pooled), the share that persists; on the same features, the "
              "share that persists into a random-weights model (control: token identity) and the share that "
              "matches the held-out seed (floor: an unchanged model); 95% intervals over features:")
        for r in F.flows(con, t, mode):
            print("  " + scale_line(r))
            if r["verdict"]:
                print(f"    verdict: {r['verdict']}")
        for f in summary.member_floors(con, t, mode):
            print(f"  floor {f['model']}: {f['matched']} of {f['alive']} alive features ({100 * f['share']:.1f}%) "
                  f"match another seed replica; mean match r {f['mean_r']:.3f}")
            sc = f["scale"]
            if not sc:
                print(f"    reproducible floor {f['model']}: no feature reproduces")
                continue
            control = sc["control"]
            print(f"    reproducible floor {f['model']}: {sc['floor']['matched']} of {sc['n']} "
                  f"({_pct(sc['floor']['share'])} {_ci(sc['floor']['ci'])}); control " +
                  ("n/a" if control is None else f"{control['matched']} of {sc['n']} ({_pct(control['share'])} "
                                                 f"{_ci(control['ci'])}, {sc['control_name']})"))
            for p in f["pw_mcc"]:
                print(f"    PW-MCC {f['model']} r0 vs r{p['replica']}: {_num(p['pw_mcc'])} (chance {_num(p['chance'])})")
    print(f"\nalive features by origin (mode {origin_mode}, threshold {t}; "
          f"where their chain of persisting matches starts, or ends at a hop kept by evidence alone):")
    for r in summary.origin_counts(con, t, origin_mode):
        print(f"  {r['model']:20s} from {r['origin_model']:20s} {r['n']:6d}"
              + (f"  ({r['carried']} carried by transfer evidence: no latent of {r['origin_model']}'s SAE matches "
                 "them, so their chain ends there)" if r["carried"] else ""))
    for o in summary.merge_origins(con, t, origin_mode):
        print(f"  {o['model']:20s} traceable to an ancestor {o['traceable']:,} of {o['n']:,}: from the root "
              f"{o['root']:,}, emerged in fine-tuning {o['between']:,}; new {o['new']:,} "
              "(Horn & Elliott's reading of a merged model)")
    repro = bool(con.execute("SELECT count(*) FROM sae_replicas WHERE replica > 0").fetchone()[0])
    surv = F.merge_survival(con, t, origin_mode, repro)
    if surv:
        crossing = F.survival_crossing(surv)
        print(f"\nfeatures along each merge's path (mode {origin_mode}, threshold {t}: a parent feature survives at t "
              "when its SAE's activations on the merged model correlate with those on the parent above the threshold; "
              f"{surv[0]['population']} features, 95% intervals):")
        control = {(c["model"], c["parent"]): c for c in F.survival_control(con, t, origin_mode, repro)}
        for meta in dicts(con.execute("SELECT model, parent0, parent1, t, t_star FROM slerp_meta")):
            for r in (r for r in surv if r["model"] == meta["model"] and abs(r["t"] - meta["t"]) < 1e-9):
                c = control.get((r["model"], r["parent"]))
                print(f"  {meta['model']:20s} at chosen t {meta['t']:.3f}: {r['survived']:5d} of {r['n']:5d} "
                      f"{r['parent']} features survive ({_pct(r['share'])} {_ci((r['lo'], r['hi']))}); control "
                      + ("n/a" if c is None else f"{c['survived']} of {c['n']} ({_pct(c['share'])} "
                                                 f"{_ci((c['lo'], c['hi']))}, {c['control']})"))
            for h in (h for h in F.inheritance_counts(F.merge_inheritance(con, t, origin_mode, repro))
                      if h["model"] == meta["model"]):
                print(f"  {meta['model']:20s} inherits, of {h['n']} features: both parents {h['both']}, "
                      f"{h['first_parent']} only {h['first']}, {h['second_parent']} only {h['second']}, "
                      f"uncertain {h['uncertain']}, split {h['split']}, new {h['new']}")
            x = crossing.get(meta["model"])
            print(f"  {meta['model']:20s} the parents' feature shares cross at "
                  + ("no t of the sweep" if x is None else f"t = {x:.3f}") + f"; the accuracies at t* = {meta['t_star']:.3f}")
    print(f"\ncase studies (mode {origin_mode}, threshold {t}; token-level: the root feature also persists into a "
          "random-weights model of the same architecture and tokenizer):")
    for c in summary.cases(con, t, origin_mode):
        if c["status"] != "ok":
            print(f"  {c['slug']}: not found ({c['reason']})")
            continue
        rc = c["root_control"]
        said = ("no random-weights control measured" if rc is None else
                f"token-level: persists into {rc['control']} #{rc['control_feature']} at r {_num(rc['control_r'])}"
                if rc["token_level"] else f"not token-level (best match in {rc['control']}: r {_num(rc['control_r'])})")
        print(f"  {c['slug']}: root {c['root_model']} #{c['root_feature']}: {said}")
    ch = summary.cross_health(con)
    if ch:
        print("\neach SAE on another model's activations (what transfer evidence reads), beside that model's own SAE:")
        for r in ch:
            print(f"  {r['sae_of']}'s SAE on {r['data_of']}: explained variance {_num(r['explained_variance'])} "
                  f"(its own SAE {_num(r['own_explained_variance'])}), L0 {r['l0']:.1f} (own "
                  f"{'n/a' if r['own_l0'] is None else format(r['own_l0'], '.1f')})")
    ccs = con.execute("SELECT * FROM crosscoders ORDER BY parent, child").fetchall()
    if ccs:
        cols = [d[0] for d in con.description]
        t0, m0 = t, origin_mode
        print(f"\ncrosscoders beside matching (agreement with SAE fates at {t0} under {m0}: latents whose best parent "
              f"SAE feature correlates at r >= {summary.AGREE_R}):")
        for row in ccs:
            c = dict(zip(cols, row))
            a = summary.crosscoder_agreement(con, c["parent"], c["child"], t0, m0)
            print(f"  {c['parent']} -> {c['child']} ({c['architecture']}, {c['latents']} latents, L0 {c['l0']:.1f}, "
                  f"EV {_num(c['ev_parent'])} / {_num(c['ev_child'])}): shared {c['shared']}, parent-only "
                  f"{c['parent_only']}, child-only {c['child_only']}; agree with SAE fates {a['agree']} of "
                  f"{a['latents']}" + "".join(f"; SAE {f}: " + ", ".join(f"{v} {k}" for k, v in calls.items())
                                              for f, calls in a["by_fate"].items()))
    ev = summary.evidence_summary(con)
    if ev:
        print("\nevidence beside matching (per edge: features with a value, mean, 10% / median / 90%):")
        for r in ev:
            print(f"  {r['kind']} {r['parent']}->{r['child']} {r['measure_label']}: n {r['n']}, mean {_num(r['mean'])}, "
                  f"{_num(r['p10'])} / {_num(r['median'])} / {_num(r['p90'])}")
    print("\nSAE health:")
    for m in summary.sae_health(con):
        lr = "n/a" if m["loss_recovered"] is None else f"{m['loss_recovered']:.3f}"
        print(f"  {m['model']:20s} L0 {m['l0']:6.1f}  MSE {m['mse']:.4g}  expl.var {m['explained_variance']:.3f}  "
              f"dead {m['dead_features']}/{m['d_sae']} (silent on {m['eval_tokens']:,} held-out tokens; alive on the "
              f"sample: {m['alive']})  loss recovered {lr} ({m['loss_recovered_scope']})")
