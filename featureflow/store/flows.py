"""Feature flows, fates and their noise floor, as SQL over the store: the one home of the fate rule
(`PERSISTS`: a match persists when its r exceeds the threshold; `edge_matches`, `feature_fates`,
`FATE_LABEL`, `FATE_FILTERS`), used by the explorer's flows, Sankey, edge lists, search, lineage, feature page,
cases and /autointerp, by `featureflow report` and by the planted scorecard, at any threshold and mode. No
fate is stored: each is computed here at query time.

A mode is a similarity and a rule (`pearson`, `pearson-1to1`, `decoder`, ...). Under the `best` rule a
feature's match is its rank-0 row in `matches`; under `1to1` it is its row in `assignments` (NULL when
unassigned, which never persists). Counts cover alive features only (features that fire in the sample).

The floor of a member is what persistence reads between two SAEs of the *same* model that differ only
in their seed (`noise_floor`): the share of replica 0's alive features whose match in another replica
exceeds the threshold, pooled over its replicas. An edge shows the floor of its parent when the parent
has replicas, else of its child, else the pooled floor of every replicated member (`floor_source` says
which). Free of heavy imports: the app imports this module.

Seed stability and reproducible persistence (issue 21). A feature of replica 0 of a replicated member
*reproduces* in another replica when its match there (`noise_floor`, same similarity and rule as the mode)
exceeds the threshold; its stability is the share of the other replicas it reproduces in, and it is
*reproducible* (stable) when it reproduces in every one. Reproducible persistence on an edge is the share
of the parent's alive reproducible features that persist (emergence: of the child's, the share that
emerged), with a 95% Wilson interval over features and, with two or more extra replicas, the spread over
seeds. Its floor is what that share reads for an unchanged model: of replica 0's features that reproduce in
every extra replica but one, the share that also match the one held out (pooled over which is held out).
All of it is computed at query time, for any threshold, from `noise_floor`, `matches` / `assignments`
and `features`.
"""

from __future__ import annotations

import math
from typing import Any

from featureflow.config import parse_mode

_BEST = {
    "best": "SELECT parent, child, direction, src, dst, r FROM matches WHERE rank = 0 AND similarity = $sim",
    "1to1": "SELECT parent, child, direction, src, dst, r FROM assignments WHERE similarity = $sim",
}

# -- the fate rule: the one place that decides whether a match persists and what a feature's fate is --------
# A feature's match on an edge (its `_BEST` row) persists when its r exceeds the threshold $t; an unassigned
# match (NULL r under 1to1) never persists. Every count, list and label of a fate reads this rule.
PERSISTS = "coalesce(r, -1e9) > $t"


def edge_matches(rule: str, where: str = "") -> str:
    """Each feature's match on each edge under `rule` ($sim, $t bound): parent, child, direction, `model`
    (the feature's own side), src, dst, r and `persists` (`PERSISTS`). `where` filters the match rows."""
    return (f"SELECT parent, child, direction, CASE WHEN direction = 'p2c' THEN parent ELSE child END AS model, "
            f"src, dst, r, {PERSISTS} AS persists FROM ({_BEST[rule]}) WHERE true {where}")


def feature_fates(rule: str, where: str = "") -> str:
    """Per (model, feature) with matches: `parent_r` / `best_child_r` (its strongest match over its parents /
    children), `inherited` (it persists from some parent; NULL: a root) and `persisting` (it persists into
    some child; NULL: a leaf). `where` filters the match rows (e.g. one edge, one feature)."""
    return f"""SELECT model, src AS feature,
                      max(r) FILTER (WHERE direction = 'c2p') AS parent_r,
                      max(r) FILTER (WHERE direction = 'p2c') AS best_child_r,
                      bool_or(persists) FILTER (WHERE direction = 'c2p') AS inherited,
                      bool_or(persists) FILTER (WHERE direction = 'p2c') AS persisting
               FROM ({edge_matches(rule, where)}) GROUP BY ALL"""


# -- lineage: a feature's chain of best persisting parent matches, read through the same rule ---------------
# A feature's best parent match: its strongest match over its parent models (`parent_matches`), ties to the
# parent earlier in family order. Its chain follows best parent matches up while they persist (`PERSISTS`);
# where the chain ends is the feature's origin: the root for a feature carried all the way, else the model where
# it emerged. `ancestry` walks every chain of a set of features at once (search, the report's origin counts);
# the explorer's feature page walks one chain over its partners index (`all_partners`, sorted in this order).
# The order of a feature's partners in its parent (or child) models: strongest first, ties to the model earlier in
# family order (`other_idx`); the first in a feature's parents is its best parent match.
PARTNER_ORDER = "{t}r DESC NULLS LAST, {t}other_idx"


def parent_matches(rule: str) -> str:
    """Each feature's match under `rule` ($sim, $t bound) in each of its parent models, unassigned ones left out:
    model, feature, parent, dst (the parent feature), r, `persists` and `other_idx` (the parent's family order)."""
    return f"""SELECT m.model, m.src AS feature, m.parent, m.dst, m.r, m.persists, o.idx AS other_idx
               FROM ({edge_matches(rule, "AND direction = 'c2p' AND dst IS NOT NULL")}) m
               JOIN models o ON o.model = m.parent"""


def ancestry(rule: str, start: str) -> str:
    """Every chain of the features of `start` (a query of model, feature) at once, one row per step: the
    start's model and feature, `depth` (0: the feature itself), the feature reached (`at_model`, `at_feature`)
    and `hop_r`, the r of the hop into it (NULL at depth 0)."""
    return f"""WITH RECURSIVE walk(model, feature, depth, at_model, at_feature, hop_r) AS (
                   SELECT model, feature, 0, model, feature, NULL::DOUBLE FROM ({start})
                   UNION ALL
                   SELECT w.model, w.feature, w.depth + 1, b.parent, b.dst, b.r
                   FROM walk w JOIN ({parent_matches(rule)}) b ON b.model = w.at_model AND b.feature = w.at_feature
                   WHERE w.depth < 64
                   QUALIFY row_number() OVER (PARTITION BY w.model, w.feature
                                              ORDER BY {PARTNER_ORDER.format(t="b.")}) = 1 AND b.persists)
               SELECT * FROM walk"""


def origins_of(rule: str, start: str) -> str:
    """Per feature of `start`: `origin_model`, `origin_feature` (the end of its chain, `ancestry`) and `depth`
    (hops to it)."""
    return f"""SELECT model, feature, arg_max(at_model, depth) AS origin_model,
                      arg_max(at_feature, depth) AS origin_feature, max(depth) AS depth
               FROM ({ancestry(rule, start)}) GROUP BY model, feature"""


def origins(cur, features: list[tuple[str, int]], threshold: float, mode: str) -> dict[tuple[str, int], dict]:
    """(model, feature) -> its `origin_model`, `origin_feature` and `depth` at `threshold` under `mode`."""
    if not features:
        return {}
    start = "SELECT unnest($models::VARCHAR[]) AS model, unnest($features::INTEGER[]) AS feature"
    rows = _dicts(cur.execute(f"SELECT * FROM ({origins_of(parse_mode(mode)[1], start)})",
                              {**fate_params(threshold, mode), "models": [m for m, _ in features],
                               "features": [f for _, f in features]}))
    return {(r.pop("model"), r.pop("feature")): r for r in rows}


def origin_counts(cur, threshold: float, mode: str) -> list[dict]:
    """Alive features per model by the model their chain of persisting matches starts in (`origins_of`), at
    `threshold` under `mode`, in family order."""
    start = "SELECT model, feature FROM features WHERE alive"
    return _dicts(cur.execute(f"""
        SELECT o.model, o.origin_model, count(*) AS n FROM ({origins_of(parse_mode(mode)[1], start)}) o
        JOIN models m ON m.model = o.model JOIN models g ON g.model = o.origin_model
        GROUP BY o.model, o.origin_model, m.idx, g.idx ORDER BY m.idx, g.idx""", fate_params(threshold, mode)))


# A feature's fate label from its `features` row `f` and its `feature_fates` row `s`: dead, else its parent
# side (inherited / emerging) and child side (persisting / disappearing) joined by ', ', else 'alive'.
FATE_LABEL = """CASE WHEN NOT f.alive THEN 'dead' ELSE coalesce(nullif(concat_ws(', ',
                    CASE s.inherited WHEN true THEN 'inherited' WHEN false THEN 'emerging' END,
                    CASE s.persisting WHEN true THEN 'persisting' WHEN false THEN 'disappearing' END), ''),
                    'alive') END"""
# Search filters by fate (same rule). persisting / disappearing: an alive feature of a model with children,
# matched above the threshold in some child / in none; inherited / emerging: an alive feature of a model with
# parents, matched in some parent / in none; leaf: alive in a model without children.
FATE_FILTERS = {"persisting": "f.alive AND s.persisting", "disappearing": "f.alive AND NOT s.persisting",
                "inherited": "f.alive AND s.inherited", "emerging": "f.alive AND NOT s.inherited",
                "leaf": "f.alive AND f.model NOT IN (SELECT parent FROM model_edges)", "dead": "NOT f.alive"}


def fate_params(threshold: float, mode: str) -> dict:
    """The bound parameters the fate rule needs ($t, $sim)."""
    return {"t": threshold, "sim": parse_mode(mode)[0]}


def all_partners(cur, threshold: float, mode: str) -> list[tuple]:
    """Every feature's match under `mode` in each parent (direction 'c2p') or child ('p2c') model: its best
    match (rank 0), or its assigned partner under the `1to1` rule (none when unassigned), and whether it
    persists at `threshold`: rows (model, feature, direction, other model, other feature, r, persists), each
    feature's partners on one side in `PARTNER_ORDER` (strongest first, ties in family order). Read
    for all features in one statement: the explorer indexes them per (threshold, mode), so a feature page never
    seen before pays no query for its lineage."""
    return cur.execute(f"""SELECT model, src, direction, other, dst, r, persists FROM (
                               SELECT m.*, o.model AS other, o.idx AS other_idx
                               FROM ({edge_matches(parse_mode(mode)[1], "AND dst IS NOT NULL")}) m
                               JOIN models o ON o.model = CASE m.direction WHEN 'c2p' THEN m.parent ELSE m.child END)
                           ORDER BY model, src, direction, {PARTNER_ORDER.format(t="")}""",
                       fate_params(threshold, mode)).fetchall()


def all_fates(cur, threshold: float, mode: str) -> list[tuple]:
    """Every feature's fate label (`FATE_LABEL`) at `threshold` under `mode`: rows (model, feature, label)."""
    return cur.execute(f"""SELECT f.model, f.feature, {FATE_LABEL} FROM features f
                           LEFT JOIN ({feature_fates(parse_mode(mode)[1])}) s
                             ON s.model = f.model AND s.feature = f.feature""", fate_params(threshold, mode)).fetchall()


def score_fates(cur, threshold: float, mode: str) -> list[dict]:
    """Explained features (status ok) with their scores and whether they persist at `threshold` under `mode`
    (`persisting`: NULL for a dead feature or a model without children; the paper's Figure 6)."""
    rule = parse_mode(mode)[1]
    return _dicts(cur.execute(f"""
        SELECT e.model, m.label, e.explainer, e.sim_score, e.detection_score,
               CASE WHEN f.alive THEN s.persisting END AS persisting
        FROM explanations e JOIN features f USING (model, feature) JOIN models m USING (model)
        LEFT JOIN ({feature_fates(rule)}) s ON s.model = f.model AND s.feature = f.feature
        WHERE e.status = 'ok' ORDER BY m.idx, e.feature""", fate_params(threshold, mode)))

MODE_LABELS = {"pearson": "activation Pearson", "decoder": "decoder cosine", "token-type": "token-type Pearson",
               "best": "best match", "1to1": "one-to-one assignment"}


def mode_label(mode: str) -> str:
    sim, rule = parse_mode(mode)
    return f"{MODE_LABELS[sim]}, {MODE_LABELS[rule]}"


def _dicts(cur) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


def floors(cur, threshold: float, mode: str) -> dict[str, dict]:
    """Per replicated member: replicas, alive features of replica 0, how many match above `threshold` in
    another replica (pooled over replicas), the share, and the mean match r (unassigned counts 0)."""
    sim, rule = parse_mode(mode)
    rows = _dicts(cur.execute(f"""
        SELECT model, count(DISTINCT replica) AS replicas,
               count(*) FILTER (WHERE alive) AS alive,
               count(*) FILTER (WHERE alive AND {PERSISTS}) AS matched,
               avg(coalesce(r, 0)) FILTER (WHERE alive) AS mean_r
        FROM noise_floor WHERE similarity = $sim AND rule = $rule GROUP BY model""",
                              {"t": threshold, "sim": sim, "rule": rule}))
    return {r["model"]: {**r, "share": r["matched"] / r["alive"] if r["alive"] else 0.0} for r in rows}


def floor_members(parent: str, child: str, measured, pool: bool = True) -> list[str]:
    """The one rule for whose floor an edge shows: the parent's when measured, else the child's, else (with
    `pool`) every measured member's pooled (sorted); [] when none is measured."""
    for m in (parent, child):
        if m in measured:
            return [m]
    return sorted(measured) if pool else []


def edge_floor(parent: str, child: str, fl: dict[str, dict], labels: dict[str, str] | None = None) -> dict | None:
    """The floor shown beside one edge (`floor_members`). `source` names the member(s) it comes from,
    `source_label` the same by their labels."""
    labels = labels or {}
    members = floor_members(parent, child, fl)
    if len(members) == 1 and members[0] in (parent, child):
        m = members[0]
        return {"share": fl[m]["share"], "mean_r": fl[m]["mean_r"], "source": m,
                "source_label": labels.get(m, m)}
    if not members:
        return None
    alive = sum(f["alive"] for f in fl.values())
    return {"share": sum(f["matched"] for f in fl.values()) / alive if alive else 0.0,
            "mean_r": sum(f["mean_r"] * f["alive"] for f in fl.values()) / alive if alive else 0.0,
            "source": "pooled: " + ", ".join(sorted(fl)),
            "source_label": "pooled: " + ", ".join(labels.get(m, m) for m in sorted(fl))}


# -- seed stability and reproducible persistence ---------------------------------------------------------
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion k / n (95% by default); None when n is 0.
    (Equal to statsmodels' `proportion_confint(k, n, method="wilson")`; written out so the app needs no
    statsmodels.)"""
    if not n:
        return None
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # k = 0 and k = n have exact ends 0 and 1 (the float formula lands an ulp beside them)
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


# Replica 0's features against each other replica of their member: `ok` when the match exceeds $t.
_REPLICA_MATCH = f"""SELECT model, feature, replica, alive, r, {PERSISTS} AS ok FROM noise_floor
                     WHERE similarity = $sim AND rule = $rule"""
# Per feature of a replicated member: how many other replicas, in how many it reproduces, its mean match r
# (unassigned counts 0) and whether it is reproducible (reproduces in every one).
STABILITY = f"""SELECT model, feature, count(*) AS replicas, count(*) FILTER (WHERE ok) AS reproduced,
                       avg(coalesce(r, 0)) AS mean_r, count(*) FILTER (WHERE ok) = count(*) AS stable
                FROM ({_REPLICA_MATCH}) GROUP BY model, feature"""


def stability_params(threshold: float, mode: str) -> dict:
    """The bound parameters `STABILITY` needs ($t, $sim, $rule)."""
    sim, rule = parse_mode(mode)
    return {"t": threshold, "sim": sim, "rule": rule}


def all_stability(cur, threshold: float, mode: str) -> dict[tuple[str, int], dict]:
    """Every feature's seed stability at `threshold` under `mode`, for the features of replicated members:
    {(model, feature): its match r in each other replica of its member (`rs`: replica, r, reproduces), how
    many it reproduces in, the share, the mean r and whether it is reproducible}."""
    rows = cur.execute(f"""SELECT model, feature, replica, r, ok FROM ({_REPLICA_MATCH}) ORDER BY model, feature,
                           replica""", stability_params(threshold, mode)).fetchall()
    per: dict[tuple[str, int], list[dict]] = {}
    for model, feature, replica, r, ok in rows:
        per.setdefault((model, feature), []).append({"replica": replica, "r": r, "reproduces": ok})
    return {key: _stability(rs) for key, rs in per.items()}


def _stability(rows: list[dict]) -> dict:
    n, k = len(rows), sum(r["reproduces"] for r in rows)
    return {"replicas": n, "reproduced": k, "share": k / n, "stable": k == n, "rs": rows,
            "mean_r": sum(r["r"] if r["r"] is not None else 0.0 for r in rows) / n}


def reproducible_floors(cur, threshold: float, mode: str) -> dict[str, dict]:
    """Per member with two or more extra replicas: what reproducible persistence reads for an unchanged
    model. Of replica 0's alive features that reproduce in every extra replica but one, the share that
    also match the one held out, pooled over which one is held out (`matched` of `n`, `share`, Wilson `ci`);
    `extra`: its number of extra replicas."""
    rows = _dicts(cur.execute(f"""
        WITH per AS (SELECT model, feature, alive, ok, count(*) OVER w AS k, sum(ok::INTEGER) OVER w AS tot
                     FROM ({_REPLICA_MATCH}) WINDOW w AS (PARTITION BY model, feature))
        SELECT model, max(k) AS extra,
               count(*) FILTER (WHERE tot - ok::INTEGER = k - 1) AS n,
               count(*) FILTER (WHERE tot - ok::INTEGER = k - 1 AND ok) AS matched
        FROM per WHERE alive AND k >= 2 GROUP BY model""", stability_params(threshold, mode)))
    return {r["model"]: {**r, "share": r["matched"] / r["n"] if r["n"] else None, "ci": wilson(r["matched"], r["n"])}
            for r in rows}


def _verdict(parent: str, child: str, ci: tuple | None, floor_ci: tuple | None) -> str | None:
    """A plain-language reading of reproducible persistence against its floor, only where the two 95%
    intervals do not overlap."""
    if ci is None or floor_ci is None:
        return None
    if ci[1] < floor_ci[0]:
        return (f"Fewer reproducible {parent} features persist into {child} than between two seeds of one "
                f"unchanged model: this edge changed some of them.")
    if ci[0] > floor_ci[1]:
        return (f"More reproducible {parent} features persist into {child} than between two seeds of one "
                f"unchanged model.")
    return None


def reproducible(cur, threshold: float, mode: str, labels: dict[str, str] | None = None) -> dict[tuple, dict]:
    """Per edge (parent, child): reproducible persistence and emergence with their intervals and seed spread,
    the reproducible floor (the parent's, else the child's; never another member's: NULL when neither has
    two or more extra replicas) and the verdict (the `flows` rows' keys from `stable_parent` to
    `verdict`; NULL where a side has no replicas)."""
    sim, rule = parse_mode(mode)
    labels = labels or {}
    params = stability_params(threshold, mode)
    side = f"""
        WITH side AS (SELECT parent, child, direction, src AS feature, persists AS matched, model
                      FROM ({edge_matches(rule)}))"""
    pooled = _dicts(cur.execute(f"""{side}
        SELECT s.parent, s.child, s.direction, count(*) AS n, count(*) FILTER (WHERE s.matched) AS matched
        FROM side s JOIN features f ON f.model = s.model AND f.feature = s.feature
        JOIN ({STABILITY}) st ON st.model = s.model AND st.feature = s.feature
        WHERE f.alive AND st.stable GROUP BY ALL""", params))
    per_seed = _dicts(cur.execute(f"""{side}
        SELECT s.parent, s.child, s.direction, n.replica, count(*) AS n, count(*) FILTER (WHERE s.matched) AS matched
        FROM side s JOIN features f ON f.model = s.model AND f.feature = s.feature
        JOIN ({_REPLICA_MATCH}) n ON n.model = s.model AND n.feature = s.feature
        WHERE f.alive AND n.ok GROUP BY ALL""", params))
    extra = dict(cur.execute("""SELECT model, count(DISTINCT replica) FROM noise_floor
                                WHERE similarity = $sim AND rule = $rule GROUP BY model""",
                             {"sim": sim, "rule": rule}).fetchall())
    rfl = reproducible_floors(cur, threshold, mode)
    out = {}
    for e in _dicts(cur.execute("SELECT parent, child FROM model_edges")):
        p, c = e["parent"], e["child"]
        row: dict[str, Any] = {}
        for prefix, direction, model, count_key, n_key, k_key in (
                ("repro", "p2c", p, "matched", "stable_parent", "stable_persisting"),
                ("emerge", "c2p", c, "unmatched", "stable_child", "stable_emerging")):
            got = next((r for r in pooled if (r["parent"], r["child"], r["direction"]) == (p, c, direction)), None)
            n = (got["n"] if got else 0) if model in extra else None
            k = None if n is None else (got[count_key] if got and count_key == "matched" else
                                        (got["n"] - got["matched"] if got else 0))
            ci = wilson(k, n) if n else None
            seeds = []
            if extra.get(model, 0) >= 2:
                for r in per_seed:
                    if (r["parent"], r["child"], r["direction"]) == (p, c, direction) and r["n"]:
                        seeds.append((r["matched"] if direction == "p2c" else r["n"] - r["matched"]) / r["n"])
            row.update({n_key: n, k_key: k, f"{prefix}_share": k / n if n else None,
                        f"{prefix}_lo": ci[0] if ci else None, f"{prefix}_hi": ci[1] if ci else None,
                        f"{prefix}_seed_min": min(seeds) if seeds else None,
                        f"{prefix}_seed_max": max(seeds) if seeds else None})
        members = floor_members(p, c, rfl, pool=False)  # never borrowed from a member off the edge
        if members:
            matched, n = sum(rfl[m]["matched"] for m in members), sum(rfl[m]["n"] for m in members)
            fci = wilson(matched, n)
            source = members[0]
            row.update(repro_floor_matched=matched, repro_floor_n=n, repro_floor_share=matched / n if n else None,
                       repro_floor_lo=fci[0] if fci else None, repro_floor_hi=fci[1] if fci else None,
                       repro_floor_source=source)
        else:
            fci = None
            row.update(repro_floor_matched=None, repro_floor_n=None, repro_floor_share=None, repro_floor_lo=None,
                       repro_floor_hi=None, repro_floor_source=None)
        ci = None if row["repro_lo"] is None else (row["repro_lo"], row["repro_hi"])
        row["verdict"] = _verdict(labels.get(p, p), labels.get(c, c), ci, fci)
        out[(p, c)] = row
    return out


def pw_mcc_edges(cur) -> dict[tuple[str, str], dict]:
    """Each edge's decoder PW-MCC and chance level (table `pw_mcc`, kind 'edge')."""
    return {(r["model_a"], r["model_b"]): r for r in _dicts(cur.execute(
        "SELECT model_a, model_b, pw_mcc, chance FROM pw_mcc WHERE kind = 'edge'"))}


def pw_mcc_replicas(cur) -> dict[str, list[dict]]:
    """Per replicated member: replica 0's decoder PW-MCC against each other replica, with its chance level."""
    out: dict[str, list[dict]] = {}
    for r in _dicts(cur.execute("""SELECT model_a AS model, replica_b AS replica, pw_mcc, chance FROM pw_mcc
                                   WHERE kind = 'replica' ORDER BY model_a, replica_b""")):
        out.setdefault(r["model"], []).append(r)
    return out


def flows(cur, threshold: float, mode: str) -> list[dict]:
    """Per edge (children in family order): persisting / disappearing parent features, inherited / emerging
    child features, same-index persisting pairs, the persisting share and the edge's noise floor."""
    sim, rule = parse_mode(mode)
    rows = _dicts(cur.execute(f"""
        WITH best AS ({edge_matches(rule)})
        SELECT e.parent, e.child,
          count(*) FILTER (WHERE m.direction = 'p2c' AND f.alive AND m.persists) AS persisting,
          count(*) FILTER (WHERE m.direction = 'p2c' AND f.alive AND NOT m.persists) AS disappearing,
          count(*) FILTER (WHERE m.direction = 'c2p' AND f.alive AND m.persists) AS inherited,
          count(*) FILTER (WHERE m.direction = 'c2p' AND f.alive AND NOT m.persists) AS emerging,
          count(*) FILTER (WHERE m.direction = 'p2c' AND NOT f.alive) AS parent_dead,
          count(*) FILTER (WHERE m.direction = 'c2p' AND NOT f.alive) AS child_dead,
          count(*) FILTER (WHERE m.direction = 'p2c' AND f.alive) AS parent_alive,
          count(*) FILTER (WHERE m.direction = 'c2p' AND f.alive) AS child_alive,
          count(*) FILTER (WHERE m.direction = 'p2c' AND f.alive AND m.persists AND m.src = m.dst) AS same_index
        FROM model_edges e
        JOIN best m ON m.parent = e.parent AND m.child = e.child
        JOIN features f ON f.model = m.model AND f.feature = m.src
        JOIN models pm ON pm.model = e.parent JOIN models cm ON cm.model = e.child
        GROUP BY e.parent, e.child, pm.idx, cm.idx ORDER BY cm.idx, pm.idx""",
                              {"t": threshold, "sim": sim}))
    fl = floors(cur, threshold, mode)
    labels = dict(cur.execute("SELECT model, label FROM models").fetchall())
    rep = reproducible(cur, threshold, mode, labels)
    mcc = pw_mcc_edges(cur)
    for r in rows:
        r["mode"] = mode
        r["mode_label"] = mode_label(mode)
        r["threshold"] = threshold
        r["persist_share"] = r["persisting"] / r["parent_alive"] if r["parent_alive"] else 0.0
        f = edge_floor(r["parent"], r["child"], fl, labels)
        r["floor_share"] = f["share"] if f else None
        r["floor_mean_r"] = f["mean_r"] if f else None
        r["floor_source"] = f["source"] if f else None
        r["floor_source_label"] = f["source_label"] if f else None
        r.update(rep[(r["parent"], r["child"])])
        r["repro_floor_source_label"] = labels.get(r["repro_floor_source"], r["repro_floor_source"])
        pw = mcc.get((r["parent"], r["child"]), {})
        r["pw_mcc"], r["pw_mcc_chance"] = pw.get("pw_mcc"), pw.get("chance")
    return rows


def emerged_in(cur, threshold: float, mode: str) -> dict[str, int]:
    """Alive features of each non-root model that no parent feature reaches (over all its parents)."""
    rule = parse_mode(mode)[1]
    rows = _dicts(cur.execute(f"""
        SELECT s.model, count(*) AS n FROM ({feature_fates(rule, "AND direction = 'c2p'")}) s
        JOIN features f ON f.model = s.model AND f.feature = s.feature
        WHERE {FATE_FILTERS['emerging']} GROUP BY s.model""", fate_params(threshold, mode)))
    return {r["model"]: r["n"] for r in rows}


def floor_histogram(cur, model: str, mode: str, bins: int = 20) -> list[dict]:
    """The distribution of a member's replica match r (alive features of replica 0), `bins` equal bins on [-1, 1]."""
    sim, rule = parse_mode(mode)
    return _dicts(cur.execute("""
        SELECT least(floor((coalesce(r, 0) + 1) / 2 * $bins), $bins - 1)::INTEGER AS bin, count(*) AS n
        FROM noise_floor WHERE model = $model AND similarity = $sim AND rule = $rule AND alive
        GROUP BY bin ORDER BY bin""", {"bins": bins, "model": model, "sim": sim, "rule": rule}))


# -- per-node partition and per-edge feature lists (the explorer's Sankey and /edges pages) ---------------
def node_flows(cur, threshold: float, mode: str, reproducible: bool = False) -> list[dict]:
    """Each alive feature counted once per model node, for the Sankey.

    Rows (side, model, via, n): side 'out' partitions a parent's alive features by the child its best
    persisting match lies in (the strongest r over its children; `via` NULL: it persists in none, lost);
    side 'in' partitions a child's alive features by the parent its best persisting match lies in (`via`
    NULL: no parent reaches it, new). Ties go to the model earlier in family order. With `reproducible`,
    a member with seed replicas counts only its reproducible features (`STABILITY`); a member without
    replicas still counts all of them."""
    sim, rule = parse_mode(mode)
    keep = (f"LEFT JOIN ({STABILITY}) st ON st.model = k.model AND st.feature = k.feature"
            if reproducible else "")
    where = " AND coalesce(st.stable, true)" if reproducible else ""
    return _dicts(cur.execute(f"""
        WITH side AS (
            SELECT model, src AS feature, CASE WHEN direction = 'p2c' THEN child ELSE parent END AS other,
                   direction, coalesce(r, -1e9) AS r, persists FROM ({edge_matches(rule)})),
        ranked AS (
            SELECT s.*, row_number() OVER (PARTITION BY s.model, s.feature, s.direction
                                           ORDER BY s.r DESC, o.idx) AS k
            FROM side s JOIN models o ON o.model = s.other)
        SELECT CASE WHEN k.direction = 'p2c' THEN 'out' ELSE 'in' END AS side, k.model,
               CASE WHEN k.persists THEN k.other END AS via, count(*) AS n
        FROM ranked k JOIN features f ON f.model = k.model AND f.feature = k.feature {keep}
        WHERE k.k = 1 AND f.alive{where} GROUP BY ALL ORDER BY ALL""",
                              {"t": threshold, "sim": sim, **({"rule": rule} if reproducible else {})}))


EDGE_FATES = {"persisting": ("p2c", True), "disappearing": ("p2c", False),
              "inherited": ("c2p", True), "emerging": ("c2p", False)}
EDGE_SORTS = {"r": "m.r", "density": "f.density", "llr": "f.top_token_llr",
              "sim_score": "e.sim_score", "feature": "f.feature"}


def edge_features(cur, parent: str, child: str, fate: str, threshold: float, mode: str, sort: str = "r",
                  descending: bool = True, limit: int = 50, offset: int = 0,
                  stable: bool | None = None) -> tuple[int, list[dict]]:
    """The alive features behind one count of `flows` on edge parent -> child: persisting / disappearing
    parent features or inherited / emerging child features, each with its match on the other side (its
    best match, or its assigned partner under `1to1`; NULL when unassigned), r, density, top-token LLR,
    explanation and seed stability (`replicas`, `reproduced`, `stable`: NULL without replicas). `stable`
    True / False keeps only reproducible / measured but not reproducible features (None: all). Returns
    (total, one page of rows sorted by `sort`, NULLs last)."""
    sim, rule = parse_mode(mode)
    if fate not in EDGE_FATES:
        raise ValueError(f"unknown edge fate '{fate}' (fates: {', '.join(EDGE_FATES)})")
    if sort not in EDGE_SORTS:
        raise ValueError(f"unknown sort '{sort}' (sorts: {', '.join(EDGE_SORTS)})")
    direction, persists = EDGE_FATES[fate]
    base = f"""
        FROM ({edge_matches(rule)}) m
        JOIN features f ON f.model = m.model AND f.feature = m.src
        LEFT JOIN vocab v ON v.token_id = f.top_token_id
        LEFT JOIN explanations e ON e.model = f.model AND e.feature = f.feature
        LEFT JOIN ({STABILITY}) st ON st.model = f.model AND st.feature = f.feature
        WHERE m.parent = $parent AND m.child = $child AND m.direction = $direction AND f.alive
          AND m.persists = $persists{"" if stable is None else " AND st.stable = $stable"}"""
    params = {"sim": sim, "rule": rule, "parent": parent, "child": child, "direction": direction, "t": threshold,
              "persists": persists, **({} if stable is None else {"stable": stable})}
    total = cur.execute(f"SELECT count(*) {base}", params).fetchone()[0]
    order = "DESC" if descending else "ASC"
    rows = _dicts(cur.execute(f"""
        SELECT f.model, f.feature, m.dst AS match_feature, m.r, f.density, f.max_act, f.top_token_llr,
               v.text AS top_token, e.explanation, e.explainer, e.sim_score, st.replicas, st.reproduced,
               st.stable {base}
        ORDER BY {EDGE_SORTS[sort]} {order} NULLS LAST, f.feature LIMIT $limit OFFSET $offset""",
                              {**params, "limit": limit, "offset": offset}))
    return total, rows
