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
of the parent's alive reproducible features that persist (emergence: of the child's, the share whose fate on the
edge is emerging: not inherited, not of uncertain origin, not from a split), with a 95% Wilson interval over features and, with two or more extra replicas, the spread over
seeds. Its floor is what that share reads for an unchanged model: of replica 0's features that reproduce in
every extra replica but one, the share that also match the one held out (pooled over which is held out).
All of it is computed at query time, for any threshold, from `noise_floor`, `matches` / `assignments`
and `features`.
"""

from __future__ import annotations

import math
from typing import Any

from featureflow.evidence.split import BALANCE, GAIN, MAX_OVERLAP, SLACK
from featureflow.modes import RULES, mode_label
from featureflow.modes import split_mode  # a store's modes, whether or not this process registered them
from featureflow.store.rows import dicts

# The tables a rule reads: the family's edges, or every parent member against its random-weights control.
_TABLES = {False: {"matches": "matches", "assignments": "assignments"},
           True: {"matches": "control_matches", "assignments": "control_assignments"}}

# -- the fate rule: the one place that decides whether a match persists and what a feature's fate is --------
# A feature's match on an edge (its rule's row, `modes.RULES`) persists when its r exceeds the threshold $t; an
# unassigned match (NULL r under 1to1) never persists. Every count, list and label of a fate reads this rule.
PERSISTS = "coalesce(r, -1e9) > $t"
# Under a rule with doubt (`modes.Rule.doubt_sql`, e.g. `pearson+transfer`), a match that does not persist is
# *uncertain* when the rule's evidence (`doubt_r`) says the feature is still there: above the rule's `tau`; or when
# the feature fires too rarely on the shared sample to judge (`n_events` below the rule's `min_events`).
UNCERTAIN = "(coalesce(doubt_r, -1e9) > {tau} OR coalesce(n_events, 0) < {min_events})"
# A rule that keeps by its evidence (`keep_tau`) also persists a feature whose evidence exceeds `keep_tau`, when it
# fires often enough to judge: the other model carries it, whether or not the other model's SAE learnt it. Not a
# split (absorbing) feature, nor a part of one: a parent feature split in two is carried by its halves together, so
# its transfer r is high, and the split is what happened to it.
KEPT = "(coalesce(doubt_r, -1e9) > {keep_tau} AND coalesce(n_events, 0) >= {min_events})"


def _n_events(model: str, feature: str) -> str:
    """How many times a feature (SQL expressions for its model and id) fires on the shared sample: what a rule's
    `min_events` reads."""
    return f"(SELECT fa.n_active FROM features fa WHERE fa.model = {model} AND fa.feature = {feature})"
# A feature reproduced by several features of the other model together (evidence kinds `split` for a parent feature,
# `absorption` for a child feature: featureflow/evidence/split.py, read whatever the mode): two or more of them carry
# a share of its non-negative least-squares fit, the first two rarely fire together (a pair that does is two
# latents for one feature, not parts of it), and either the fit exceeds the threshold while no single part does or
# beats the best part by `GAIN`, or the parts are balanced (the best part's r at most `BALANCE` of the fit's) and
# the fit exceeds the threshold less `SLACK`. A parent feature so reproduced is *split* (its parts are child
# features, fate `split-part` on the child's side); a child feature so reproduced is *absorbing* (its parts are
# parent features, fate `absorbed`). Without the evidence no feature is either.
EVENT = ("coalesce({e}.parts, 0) >= 2 AND coalesce({e}.overlap, 1e9) <= " + str(MAX_OVERLAP) + " AND coalesce("
         "({e}.fit_r > $t AND ({e}.single_r <= $t OR {e}.fit_r - {e}.single_r >= " + str(GAIN) + ")) OR "
         "({e}.fit_r > $t - " + str(SLACK) + " AND {e}.single_r <= " + str(BALANCE) + " * {e}.fit_r), false)")
EVENTS = """SELECT kind, parent, child, feature,
                   max(value) FILTER (WHERE measure = 'fit_r') AS fit_r,
                   max(value) FILTER (WHERE measure = 'single_r') AS single_r,
                   max(value) FILTER (WHERE measure = 'parts') AS parts,
                   max(value) FILTER (WHERE measure = 'overlap') AS overlap,
                   list(value::INTEGER ORDER BY measure) FILTER (WHERE starts_with(measure, 'part_')
                                                                AND NOT isnan(value)) AS part_ids
            FROM evidence WHERE kind IN ('split', 'absorption') GROUP BY kind, parent, child, feature"""
# the feature each part belongs to (the event's feature; the lowest where a feature is a part of several), and all
# of them (`part_ofs`)
PARTS = f"""SELECT kind, parent, child, part, min(feature) AS part_of, list(feature) AS part_ofs FROM (
                SELECT kind, parent, child, feature, unnest(part_ids) AS part FROM ({EVENTS}) e
                WHERE {EVENT.format(e="e")}) GROUP BY ALL"""
# The fate of a feature's match on one edge, in this order: a split (absorbing) feature is split (absorbing), even
# where one part alone matches it above the threshold; else a match above the threshold persists (inherited),
# unless its partner is a feature it is a part of (then it is that split's part, not a copy of it); else the
# feature is a part of the other side's absorption (split), uncertain (a rule with doubt), or disappearing
# (emerging).
FATE = """CASE WHEN split THEN CASE direction WHEN 'p2c' THEN 'split' ELSE 'absorbing' END
               WHEN persists THEN CASE direction WHEN 'p2c' THEN 'persisting' ELSE 'inherited' END
               WHEN part THEN CASE direction WHEN 'p2c' THEN 'absorbed' ELSE 'split-part' END
               WHEN uncertain THEN CASE direction WHEN 'p2c' THEN 'uncertain' ELSE 'uncertain-origin' END
               ELSE CASE direction WHEN 'p2c' THEN 'disappearing' ELSE 'emerging' END END"""


def edge_matches(rule: str, where: str = "", control: bool = False) -> str:
    """Each feature's match on each edge under `rule` ($sim, $t bound): parent, child, direction, `model`
    (the feature's own side), src, dst, r, `persists` (`PERSISTS`, not split, its partner not a feature it is a part
    of), `split` (reproduced by several features of the other side: `EVENT`), `part_of` / `part` (not persisting,
    not split, a part of such a feature of the other side), `uncertain` (a rule with doubt only, none of the above:
    `UNCERTAIN`), `carried` (a rule with doubt: its evidence says the other model carries the feature, whether or not
    it matches; NULL otherwise) and `fate` (`FATE`). `where` filters the match rows. With `control`, each parent
    member against its random-weights control instead (`child` is the control; no doubt and no splits: the control
    has no evidence)."""
    R = RULES[rule]
    rows = R.sql.format(**_TABLES[control])
    doubt = R.admits_doubt and not control
    # a control edge reads the rule's evidence where it has some (a parent-side kind on each member against its
    # control: `Pipeline.evidence`), so a rule that keeps by evidence keeps the same way there; no uncertain call
    if R.admits_doubt:
        rows = R.doubt_sql.format(base=rows)
    kept = (f" OR ({KEPT.format(keep_tau=R.keep_tau, min_events=R.min_events)} AND part_of IS NULL)"
            if R.admits_doubt and R.keep_tau is not None else "")
    n_events = (_n_events("CASE m.direction WHEN 'p2c' THEN m.parent ELSE m.child END", "m.src") if R.admits_doubt
                else "NULL::BIGINT")
    if control:
        events = "false AS split, NULL::INTEGER AS part_of, NULL::INTEGER[] AS part_ofs"
        joins = ""
    else:
        events = f"coalesce({EVENT.format(e='ev')}, false) AS split, pt.part_of, pt.part_ofs"
        joins = f"""LEFT JOIN ({EVENTS}) ev ON ev.parent = m.parent AND ev.child = m.child AND ev.feature = m.src
                         AND ev.kind = CASE m.direction WHEN 'p2c' THEN 'split' ELSE 'absorption' END
                    LEFT JOIN ({PARTS}) pt ON pt.parent = m.parent AND pt.child = m.child AND pt.part = m.src
                         AND pt.kind = CASE m.direction WHEN 'p2c' THEN 'absorption' ELSE 'split' END"""
    ev = f"""SELECT m.*, {n_events} AS n_events, {events}, {f'coalesce(doubt_r, -1e9) > {R.tau}' if doubt
              else 'NULL::BOOLEAN'} AS carried FROM ({rows}) m {joins}"""
    # a split (absorbing) feature does not persist, nor does a part into the feature it is a part of; evidence keeps
    # no split or part
    flags = f"""SELECT *, NOT persists AND NOT split AND part_of IS NOT NULL AS part FROM (
                    SELECT *, ({PERSISTS}{kept}) AND NOT split
                              AND NOT coalesce(list_contains(part_ofs, dst), false) AS persists FROM ({ev}))"""
    marked = f"""SELECT *, NOT persists AND NOT split AND NOT part AND {UNCERTAIN.format(
                 tau=R.tau, min_events=R.min_events) if doubt else 'false'} AS uncertain FROM ({flags})"""
    return (f"SELECT parent, child, direction, CASE WHEN direction = 'p2c' THEN parent ELSE child END AS model, "
            f"src, dst, r, persists, split, part_of, part, uncertain, carried, {FATE} AS fate "
            f"FROM ({marked}) WHERE true {where}")


def feature_fates(rule: str, where: str = "") -> str:
    """Per (model, feature) with matches: `parent_r` / `best_child_r` (its strongest match over its parents /
    children), `inherited` (it persists from some parent; NULL: a root) and `persisting` (it persists into
    some child; NULL: a leaf), and whether on some edge it is uncertain (`uncertain_in` / `uncertain_out`), split,
    absorbed, absorbing or a split part (`EVENT`). `where` filters the match rows (e.g. one edge, one feature)."""
    return f"""SELECT model, src AS feature,
                      max(r) FILTER (WHERE direction = 'c2p') AS parent_r,
                      max(r) FILTER (WHERE direction = 'p2c') AS best_child_r,
                      bool_or(persists) FILTER (WHERE direction = 'c2p') AS inherited,
                      bool_or(persists) FILTER (WHERE direction = 'p2c') AS persisting,
                      bool_or(uncertain) FILTER (WHERE direction = 'c2p') AS uncertain_in,
                      bool_or(uncertain) FILTER (WHERE direction = 'p2c') AS uncertain_out,
                      bool_or(split) FILTER (WHERE direction = 'c2p') AS absorbing,
                      bool_or(split) FILTER (WHERE direction = 'p2c') AS split,
                      bool_or(part) FILTER (WHERE direction = 'c2p') AS split_part,
                      bool_or(part) FILTER (WHERE direction = 'p2c') AS absorbed
               FROM ({edge_matches(rule, where)}) GROUP BY ALL"""


def feature_events(cur, model: str, feature: int, threshold: float, mode: str) -> list[dict]:
    """The feature's splits and absorptions at `threshold` under `mode`, one row per edge where it is split or
    absorbing (`fate`; `parts`: the other side's features that together reproduce it) or a part of one (`part_of`:
    the other side's feature it is a part of; `parts`: all of that one's parts), with the event's `fit_r`,
    `single_r` and `overlap` (`EVENT`). Parent first, in family order."""
    rule = split_mode(mode)[1]
    return dicts(cur.execute(f"""
        SELECT m.parent, m.child, m.direction, m.fate, m.part_of,
               CASE WHEN m.split THEN ev.fit_r ELSE ow.fit_r END AS fit_r,
               CASE WHEN m.split THEN ev.single_r ELSE ow.single_r END AS single_r,
               CASE WHEN m.split THEN ev.overlap ELSE ow.overlap END AS overlap,
               CASE WHEN m.split THEN ev.part_ids ELSE ow.part_ids END AS parts
        FROM ({edge_matches(rule, "AND (split OR part) AND model = $model AND src = $feature")}) m
        LEFT JOIN ({EVENTS}) ev ON ev.parent = m.parent AND ev.child = m.child AND ev.feature = m.src
             AND ev.kind = CASE m.direction WHEN 'p2c' THEN 'split' ELSE 'absorption' END
        LEFT JOIN ({EVENTS}) ow ON ow.parent = m.parent AND ow.child = m.child AND ow.feature = m.part_of
             AND ow.kind = CASE m.direction WHEN 'p2c' THEN 'absorption' ELSE 'split' END
        JOIN models pm ON pm.model = m.parent JOIN models cm ON cm.model = m.child
        ORDER BY m.direction DESC, pm.idx, cm.idx""", {**fate_params(threshold, mode), "model": model,
                                                        "feature": feature}))


# -- lineage: a feature's chain of best persisting parent matches, read through the same rule ---------------
# A feature's best parent match: its strongest persisting match over its parent models (`parent_matches`; its
# strongest match where none persists), ties to the parent earlier in family order. Its chain follows best parent matches up while they persist through their partner
# latent (r above the threshold); where the chain ends is the feature's origin: the root for a feature carried all
# the way, else the model where it emerged. Under a rule that keeps by evidence (`pearson+transfer`) a hop can
# persist with no partner above the threshold (*carried*: the parent model carries the feature, no latent of its
# SAE is it): the chain ends in that parent, with no latent, since any latent named past it would be a guess.
# `ancestry` walks every chain of a set of features at once (search, the report's origin counts); the explorer's
# feature page walks one chain over its partners index (`all_partners`, sorted in this order).
# The order of a feature's partners in its parent (or child) models: those it persists through first (under a keep
# rule a carried hop can have the lower r), then strongest first, ties to the model earlier in family order
# (`other_idx`); the first in a feature's parents is its best parent match.
PARTNER_ORDER = "{t}persists DESC, {t}r DESC NULLS LAST, {t}other_idx"


def parent_matches(rule: str) -> str:
    """Each feature's match under `rule` ($sim, $t bound) in each of its parent models, unassigned ones left out:
    model, feature, parent, dst (the parent feature), r, `persists`, `matched` (it persists through its partner
    latent: r above the threshold, not by evidence alone) and `other_idx` (the parent's family order)."""
    return f"""SELECT m.model, m.src AS feature, m.parent, m.dst, m.r, m.persists,
                      m.persists AND {PERSISTS} AS matched,
                      o.idx AS other_idx
               FROM ({edge_matches(rule, "AND direction = 'c2p' AND dst IS NOT NULL")}) m
               JOIN models o ON o.model = m.parent"""


def ancestry(rule: str, start: str) -> str:
    """Every chain of the features of `start` (a query of model, feature) at once, one row per step: the
    start's model and feature, `depth` (0: the feature itself), the feature reached (`at_model`, `at_feature`:
    NULL at a carried hop, where the chain ends), `hop_r`, the r of the hop into it (NULL at depth 0), and
    `carried` (the hop persists by the rule's evidence alone)."""
    return f"""WITH RECURSIVE walk(model, feature, depth, at_model, at_feature, hop_r, carried) AS (
                   SELECT model, feature, 0, model, feature, NULL::DOUBLE, false FROM ({start})
                   UNION ALL
                   SELECT w.model, w.feature, w.depth + 1, b.parent, CASE WHEN b.matched THEN b.dst END, b.r,
                          NOT b.matched
                   FROM walk w JOIN ({parent_matches(rule)}) b ON b.model = w.at_model AND b.feature = w.at_feature
                   WHERE w.depth < 64
                   QUALIFY row_number() OVER (PARTITION BY w.model, w.feature
                                              ORDER BY {PARTNER_ORDER.format(t="b.")}) = 1 AND b.persists)
               SELECT * FROM walk"""


def origins_of(rule: str, start: str) -> str:
    """Per feature of `start`: `origin_model`, `origin_feature` (the end of its chain, `ancestry`; NULL where the
    chain ends at a carried hop), `carried` (it does) and `depth` (hops to it)."""
    return f"""SELECT model, feature, arg_max(at_model, depth) AS origin_model,
                      arg_max_null(at_feature, depth) AS origin_feature, arg_max(carried, depth) AS carried,
                      max(depth) AS depth
               FROM ({ancestry(rule, start)}) GROUP BY model, feature"""


def origins(cur, features: list[tuple[str, int]], threshold: float, mode: str) -> dict[tuple[str, int], dict]:
    """(model, feature) -> its `origin_model`, `origin_feature`, `carried` and `depth` at `threshold` under
    `mode` (`origins_of`)."""
    if not features:
        return {}
    start = "SELECT unnest($models::VARCHAR[]) AS model, unnest($features::INTEGER[]) AS feature"
    rows = dicts(cur.execute(f"SELECT * FROM ({origins_of(split_mode(mode)[1], start)})",
                             {**fate_params(threshold, mode), "models": [m for m, _ in features],
                              "features": [f for _, f in features]}))
    return {(r.pop("model"), r.pop("feature")): r for r in rows}


def origin_counts(cur, threshold: float, mode: str) -> list[dict]:
    """Alive features per model by the model their chain of persisting matches starts in (`origins_of`), at
    `threshold` under `mode`, in family order: {model, origin_model, n, carried (of n, those whose chain ends at a
    carried hop: the origin model carries them, and where they came from before it is not known)}."""
    start = "SELECT model, feature FROM features WHERE alive"
    return dicts(cur.execute(f"""
        SELECT o.model, o.origin_model, count(*) AS n, count(*) FILTER (WHERE o.carried) AS carried
        FROM ({origins_of(split_mode(mode)[1], start)}) o
        JOIN models m ON m.model = o.model JOIN models g ON g.model = o.origin_model
        GROUP BY o.model, o.origin_model, m.idx, g.idx ORDER BY m.idx, g.idx""", fate_params(threshold, mode)))


# A feature's fate label from its `features` row `f` and its `feature_fates` row `s`: dead, else its parent
# side (inherited / absorbing / split part / uncertain origin / emerging) and child side (persisting / split /
# absorbed / uncertain / disappearing) joined by ', ', else 'alive'; on each side the first that holds on some edge,
# in the order of `FATE`.
FATE_LABEL = """CASE WHEN NOT f.alive THEN 'dead' ELSE coalesce(nullif(concat_ws(', ',
                    CASE WHEN s.inherited THEN 'inherited' WHEN s.absorbing THEN 'absorbing'
                         WHEN s.split_part THEN 'split part' WHEN s.uncertain_in THEN 'uncertain origin'
                         WHEN NOT s.inherited THEN 'emerging' END,
                    CASE WHEN s.persisting THEN 'persisting' WHEN s.split THEN 'split' WHEN s.absorbed THEN 'absorbed'
                         WHEN s.uncertain_out THEN 'uncertain' WHEN NOT s.persisting THEN 'disappearing' END), ''),
                    'alive') END"""
# Search filters by fate (same rule and order). persisting / disappearing: an alive feature of a model with
# children, matched above the threshold in some child / in none (and none of split, absorbed, uncertain);
# inherited / emerging likewise over its parents; split / absorbed / absorbing / split-part (with split
# evidence) and uncertain / uncertain-origin (a rule with doubt) as in `FATE`; leaf: alive in a model without
# children.
_NOT_OUT = "NOT s.persisting AND NOT coalesce(s.split, false) AND NOT coalesce(s.absorbed, false)"
_NOT_IN = "NOT s.inherited AND NOT coalesce(s.absorbing, false) AND NOT coalesce(s.split_part, false)"
FATE_FILTERS = {"persisting": "f.alive AND s.persisting",
                "split": "f.alive AND NOT s.persisting AND s.split",
                "absorbed": "f.alive AND NOT s.persisting AND NOT coalesce(s.split, false) AND s.absorbed",
                "uncertain": f"f.alive AND {_NOT_OUT} AND s.uncertain_out",
                "disappearing": f"f.alive AND {_NOT_OUT} AND NOT s.uncertain_out",
                "inherited": "f.alive AND s.inherited",
                "absorbing": "f.alive AND NOT s.inherited AND s.absorbing",
                "split-part": "f.alive AND NOT s.inherited AND NOT coalesce(s.absorbing, false) AND s.split_part",
                "uncertain-origin": f"f.alive AND {_NOT_IN} AND s.uncertain_in",
                "emerging": f"f.alive AND {_NOT_IN} AND NOT s.uncertain_in",
                "leaf": "f.alive AND f.model NOT IN (SELECT parent FROM model_edges)", "dead": "NOT f.alive"}


def fate_params(threshold: float, mode: str) -> dict:
    """The bound parameters the fate rule needs ($t, $sim)."""
    return {"t": threshold, "sim": split_mode(mode)[0]}


def all_partners(cur, threshold: float, mode: str) -> list[tuple]:
    """Every feature's match under `mode` in each parent (direction 'c2p') or child ('p2c') model: its best
    match (rank 0), or its assigned partner under the `1to1` rule (none when unassigned), and whether it
    persists at `threshold`: rows (model, feature, direction, other model, other feature, r, persists), each
    feature's partners on one side in `PARTNER_ORDER` (strongest first, ties in family order). Read
    for all features in one statement: the explorer indexes them per (threshold, mode), so a feature page never
    seen before pays no query for its lineage."""
    return cur.execute(f"""SELECT model, src, direction, other, dst, r, persists FROM (
                               SELECT m.*, o.model AS other, o.idx AS other_idx
                               FROM ({edge_matches(split_mode(mode)[1], "AND dst IS NOT NULL")}) m
                               JOIN models o ON o.model = CASE m.direction WHEN 'c2p' THEN m.parent ELSE m.child END)
                           ORDER BY model, src, direction, {PARTNER_ORDER.format(t="")}""",
                       fate_params(threshold, mode)).fetchall()


def all_fates(cur, threshold: float, mode: str) -> list[tuple]:
    """Every feature's fate label (`FATE_LABEL`) at `threshold` under `mode`: rows (model, feature, label)."""
    return cur.execute(f"""SELECT f.model, f.feature, {FATE_LABEL} FROM features f
                           LEFT JOIN ({feature_fates(split_mode(mode)[1])}) s
                             ON s.model = f.model AND s.feature = f.feature""", fate_params(threshold, mode)).fetchall()


def score_fates(cur, threshold: float, mode: str) -> list[dict]:
    """Explained features (status ok) with their scores and whether they persist at `threshold` under `mode`
    (`persisting`: NULL for a dead feature or a model without children; the paper's Figure 6)."""
    rule = split_mode(mode)[1]
    return dicts(cur.execute(f"""
        SELECT e.model, m.label, e.explainer, e.sim_score, e.detection_score,
               CASE WHEN f.alive THEN s.persisting END AS persisting
        FROM explanations e JOIN features f USING (model, feature) JOIN models m USING (model)
        LEFT JOIN ({feature_fates(rule)}) s ON s.model = f.model AND s.feature = f.feature
        WHERE e.status = 'ok' ORDER BY m.idx, e.feature""", fate_params(threshold, mode)))


def kept_by_itself(rule: str, alias: str) -> str:
    """Under a rule that keeps a feature by its evidence (`keep_tau`), whether the feature (`{alias}.model`,
    `{alias}.feature`) persists between its model and the same model (a seed floor: two SAEs of one unchanged model):
    the evidence of a model on itself is 1 for every alive feature (transfer r: the same SAE on the same
    activations), so it persists when it fires often enough to judge. 'false' for any other rule: its floor is its
    matches' alone."""
    R = RULES[rule]
    if not (R.admits_doubt and R.keep_tau is not None and R.keep_tau < 1):
        return "false"
    return f"coalesce({_n_events(f'{alias}.model', f'{alias}.feature')}, 0) >= {R.min_events}"


def floors(cur, threshold: float, mode: str) -> dict[str, dict]:
    """Per replicated member: replicas, alive features of replica 0, how many match above `threshold` in
    another replica (pooled over replicas; under a rule that keeps by evidence, or that the evidence of the model on
    itself keeps: `kept_by_itself`), the share, and the mean match r (unassigned counts 0)."""
    sim, rule = split_mode(mode)
    rows = dicts(cur.execute(f"""
        SELECT model, count(DISTINCT replica) AS replicas,
               count(*) FILTER (WHERE alive) AS alive,
               count(*) FILTER (WHERE alive AND ({PERSISTS} OR {kept_by_itself(rule, 'nf')})) AS matched,
               avg(coalesce(r, 0)) FILTER (WHERE alive) AS mean_r
        FROM noise_floor nf WHERE similarity = $sim AND rule = $rule GROUP BY model""",
                              {"t": threshold, "sim": sim, "rule": RULES[rule].floor_rule}))
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
    sim, rule = split_mode(mode)
    return {"t": threshold, "sim": sim, "rule": RULES[rule].floor_rule}


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


# -- the scale every persistence figure is read on (issue 29) ---------------------------------------------
# Two anchors, each read on the *same* features as the edge. Leave-one-out: for a parent member with k >= 1
# extra seed replicas and each held-out replica j, the population is replica 0's alive features that reproduce
# (match above the threshold) in every extra replica but j (k = 1: every alive feature); pooled over j, a
# feature counts once per held-out replica it is in. On those (feature, j) rows three shares are read:
#   - persistence: the feature persists into the child (the edge's rule, `PERSISTS`);
#   - the seed floor (top anchor): it matches the held-out replica j, i.e. what persistence reads when the
#     child is the unchanged parent and only the SAE's seed differs;
#   - the control (bottom anchor): it persists into the parent's random-weights control (same architecture
#     and tokenizer, untrained): what token identity alone gives.
# Intervals: a feature's rows are not independent (they share its edge and control match), so each share is a
# ratio of sums over features (clusters), with the linearised (sandwich) variance of a ratio estimator
# (Cochran 1977, ch. 6) turned into a Wilson interval at the effective sample size; "beyond token identity",
# (p - p_control) / (p_floor - p_control) = sum(e - c) / sum(f - c) over features, gets the same variance and a
# normal interval. tests/test_controls.py checks both against a cluster bootstrap over features.
# Each (feature of replica 0, held-out replica) row: `ok` (it matches the held-out replica), `k` (its member's extra
# replicas) and `in_pop` (it reproduces in every other extra replica: the row is in the population).
_HELD_OUT = f"""SELECT model, feature, replica, alive, ok, k, tot - ok::INTEGER = k - 1 AS in_pop FROM (
                    SELECT *, count(*) OVER w AS k, sum(ok::INTEGER) OVER w AS tot FROM ({_REPLICA_MATCH})
                    WINDOW w AS (PARTITION BY model, feature))"""
_LOO = f"""SELECT model, feature, count(*) AS n, count(*) FILTER (WHERE ok) AS fl FROM ({_HELD_OUT})
           WHERE alive AND in_pop GROUP BY model, feature"""
# Per feature: n, its population rows (held-out replicas it is in); e, f, c: how many of them persist into the
# child (n or 0), match the held-out replica (the floor), persist into the control (n or 0). Summed over
# features: each (`n1` ...) and every pairwise product (`nn`, `ne`, ...), what the intervals need.
_SUMS = ", ".join([f"sum({a})::DOUBLE AS {a}1" for a in "nefc"] +
                  [f"sum({a} * {b})::DOUBLE AS {a}{b}" for i, a in enumerate("nefc") for b in "nefc"[i:]])


def _clustered(a: float, n: float, aa: float, an: float, nn: float, m: int) -> tuple[float, float] | None:
    """A 95% interval for the share a / n, a ratio of sums over m clusters (features) with sums of squares aa, nn
    and cross products an: Wilson at the effective sample size p (1 - p) / var, var the linearised variance of
    the ratio; all or none of the rows in: Wilson over the m features."""
    if not n or not m:
        return None
    p = a / n
    var = m / (m - 1) * max(0.0, aa - 2 * p * an + p * p * nn) / (n * n) if m > 1 else 0.0
    if 0 < p < 1 and var > 0:
        n_eff = p * (1 - p) / var
        return wilson(p * n_eff, n_eff)
    return wilson(round(p * m), m)


def _beyond(s: dict, m: int) -> tuple[float | None, tuple[float, float] | None]:
    """(p - p_control) / (p_floor - p_control) from the sums `s` (`_SUMS`), and its 95% normal interval (linearised
    variance over the m features); None where the floor does not exceed the control."""
    u, v = s["e1"] - s["c1"], s["f1"] - s["c1"]  # sums of e - c and f - c over features
    if v <= 0:
        return None, None
    b = u / v
    uu = s["ee"] - 2 * s["ec"] + s["cc"]
    vv = s["ff"] - 2 * s["fc"] + s["cc"]
    uv = s["ef"] - s["ec"] - s["fc"] + s["cc"]
    var = m / (m - 1) * max(0.0, uu - 2 * b * uv + b * b * vv) / (v * v) if m > 1 else 0.0
    half = Z95 * math.sqrt(var)
    return b, (b - half, b + half)


def _share(s: dict | None, key: str, m: int) -> dict:
    """One share of the scale from the sums `s`: `matched` (sum of `key`) of `n` pooled rows, `share` and its
    clustered interval `ci`; all None without sums."""
    if s is None:
        return {"matched": None, "n": None, "share": None, "ci": None}
    k, n = s[key + "1"], s["n1"]
    return {"matched": int(k), "n": int(n), "share": k / n if n else None,
            "ci": _clustered(k, n, s[key + key], s["n" + key], s["nn"], m)}


def member_scale(cur, threshold: float, mode: str) -> dict[str, dict]:
    """Per member with seed replicas: its leave-one-out population (`n` pooled rows over `features` features,
    `extra` replicas), the share that matches the held-out replica (`floor`) and the share that persists into its
    random-weights control (`control`: None without one), each {matched, n, share, ci}; `control_name`."""
    sim, rule = split_mode(mode)
    params = stability_params(threshold, mode)
    ctl = edge_matches(rule, "AND direction = 'p2c'", control=True)
    extra = dict(cur.execute("""SELECT model, count(DISTINCT replica) FROM noise_floor
                                WHERE similarity = $sim AND rule = $rule GROUP BY model""",
                             {"sim": sim, "rule": RULES[rule].floor_rule}).fetchall())
    controls = dict(cur.execute("SELECT DISTINCT parent, child FROM control_matches WHERE similarity = $sim",
                                {"sim": sim}).fetchall())
    rows = dicts(cur.execute(f"""
        WITH cl AS ({_LOO}),
        x AS (SELECT cl.model, cl.n, 0 AS e, CASE WHEN {kept_by_itself(rule, 'cl')} THEN cl.n ELSE cl.fl END AS f,
                     CASE WHEN c.persists THEN cl.n ELSE 0 END AS c
              FROM cl LEFT JOIN ({ctl}) c ON c.parent = cl.model AND c.src = cl.feature)
        SELECT model, count(*) AS m, {_SUMS} FROM x GROUP BY model""", params))
    return {s["model"]: {"features": s["m"], "n": int(s["n1"]), "extra": extra.get(s["model"]),
                         "floor": _share(s, "f", s["m"]),
                         "control": _share(s, "c", s["m"]) if s["model"] in controls else None,
                         "control_name": controls.get(s["model"])} for s in rows}


def reproducible(cur, threshold: float, mode: str, labels: dict[str, str] | None = None) -> dict[tuple, dict]:
    """Per edge (parent, child): the scale (`member_scale`'s leave-one-out population of the parent): reproducible
    persistence (`stable_parent` pooled rows over `repro_features` features, `stable_persisting` persist,
    `repro_share`, `repro_lo` / `repro_hi`, and with two or more extra replicas the range over which replica is
    held out, `repro_seed_min` / `_max`), its seed floor (`repro_floor_*`) and random-weights control
    (`repro_control_*`) on the same rows, persistence beyond token identity (`beyond_share`, `beyond_lo`,
    `beyond_hi`) and the verdict (`verdict_floor`, `verdict_control`, joined in `verdict`), only where
    intervals separate; emergence among the child's reproducible features (`emerge_*`, Wilson). NULLs where
    the parent has no seed replicas (the scale's population is the parent's)."""
    sim, rule = split_mode(mode)
    labels = labels or {}
    params = stability_params(threshold, mode)
    edge = edge_matches(rule, "AND direction = 'p2c'")
    ctl = edge_matches(rule, "AND direction = 'p2c'", control=True)
    controls = dict(cur.execute("SELECT DISTINCT parent, child FROM control_matches WHERE similarity = $sim",
                                {"sim": sim}).fetchall())
    x = f"""WITH cl AS ({_LOO}),
        x AS (SELECT e.parent, e.child, cl.feature, cl.n,
                     CASE WHEN {kept_by_itself(rule, 'cl')} THEN cl.n ELSE cl.fl END AS f,
                     CASE WHEN m.persists THEN cl.n ELSE 0 END AS e,
                     CASE WHEN c.persists THEN cl.n ELSE 0 END AS c
              FROM model_edges e JOIN cl ON cl.model = e.parent
              LEFT JOIN ({edge}) m ON m.parent = e.parent AND m.child = e.child AND m.src = cl.feature
              LEFT JOIN ({ctl}) c ON c.parent = e.parent AND c.src = cl.feature)"""
    sums = {(r["parent"], r["child"]): r for r in dicts(cur.execute(
        f"{x} SELECT parent, child, count(*) AS m, {_SUMS} FROM x GROUP BY parent, child", params))}
    # per held-out replica: the edge's share among that replica's population (the range over seeds)
    per_seed: dict[tuple, list[float]] = {}
    for p, c, share in cur.execute(f"""
            SELECT e.parent, e.child, avg(coalesce(m.persists, false)::INTEGER)
            FROM model_edges e JOIN ({_HELD_OUT}) h ON h.model = e.parent
            LEFT JOIN ({edge}) m ON m.parent = e.parent AND m.child = e.child AND m.src = h.feature
            WHERE h.alive AND h.in_pop AND h.k >= 2
            GROUP BY e.parent, e.child, h.replica ORDER BY ALL""", params).fetchall():
        per_seed.setdefault((p, c), []).append(share)
    emerge = dicts(cur.execute(f"""
        SELECT s.parent, s.child, count(*) AS n, count(*) FILTER (WHERE s.fate = 'emerging') AS unmatched
        FROM ({edge_matches(rule, "AND direction = 'c2p'")}) s
        JOIN features f ON f.model = s.model AND f.feature = s.src
        JOIN ({STABILITY}) st ON st.model = s.model AND st.feature = s.src
        WHERE f.alive AND st.stable GROUP BY ALL""", params))
    replicated = dict(cur.execute("""SELECT model, count(DISTINCT replica) FROM noise_floor
                                     WHERE similarity = $sim AND rule = $rule GROUP BY model""",
                                  {"sim": sim, "rule": RULES[rule].floor_rule}).fetchall())  # member -> extra replicas
    out = {}
    for e in dicts(cur.execute("SELECT parent, child FROM model_edges")):
        p, c = e["parent"], e["child"]
        s = sums.get((p, c))
        row: dict[str, Any] = {}
        m = s["m"] if s else 0
        n = int(s["n1"]) if s else (0 if p in replicated else None)  # None: the parent has no seed replicas
        pers, flo = _share(s, "e", m), _share(s, "f", m)
        con = _share(s if p in controls else None, "c", m)
        beyond, bci = _beyond(s, m) if s and p in controls else (None, None)
        seeds = per_seed.get((p, c), [])
        row.update(stable_parent=n, stable_persisting=pers["matched"] if s else (0 if n == 0 else None),
                   repro_features=m if n is not None else None, repro_extra=replicated.get(p),
                   repro_share=pers["share"], **_ends("repro", pers["ci"]),
                   repro_seed_min=min(seeds) if seeds else None, repro_seed_max=max(seeds) if seeds else None,
                   repro_floor_matched=flo["matched"], repro_floor_n=n if flo["share"] is not None else None,
                   repro_floor_share=flo["share"], **_ends("repro_floor", flo["ci"]),
                   repro_floor_source=p if flo["share"] is not None else None,
                   repro_control_matched=con["matched"], repro_control_share=con["share"],
                   **_ends("repro_control", con["ci"]), control=controls.get(p),
                   beyond_share=beyond, **_ends("beyond", bci))
        got = next((r for r in emerge if (r["parent"], r["child"]) == (p, c)), None)
        en = (got["n"] if got else 0) if c in replicated else None
        ek = None if en is None else (got["unmatched"] if got else 0)
        eci = wilson(ek, en) if en else None
        row.update(stable_child=en, stable_emerging=ek, emerge_share=ek / en if en else None, **_ends("emerge", eci))
        ci = pers["ci"]
        row["verdict_floor"] = _verdict(labels.get(p, p), labels.get(c, c), ci, flo["ci"], "floor")
        row["verdict_control"] = _verdict(labels.get(p, p), labels.get(c, c), ci, con["ci"], "control")
        row["verdict"] = " ".join(v for v in (row["verdict_floor"], row["verdict_control"]) if v) or None
        out[(p, c)] = row
    return out


def _ends(prefix: str, ci: tuple | None) -> dict:
    return {f"{prefix}_lo": ci[0] if ci else None, f"{prefix}_hi": ci[1] if ci else None}


def _verdict(parent: str, child: str, ci: tuple | None, other: tuple | None, anchor: str) -> str | None:
    """A plain-language reading of reproducible persistence against one anchor of its scale, only where the two
    95% intervals do not overlap."""
    if ci is None or other is None:
        return None
    below, above = ci[1] < other[0], ci[0] > other[1]
    if anchor == "floor" and below:
        return (f"Fewer reproducible {parent} features persist into {child} than between two seeds of one "
                f"unchanged model: this edge changed some of them.")
    if anchor == "floor" and above:
        return (f"More reproducible {parent} features persist into {child} than between two seeds of one "
                f"unchanged model.")
    if anchor == "control" and above:
        return ("More persist than into an untrained model of the same architecture and tokenizer: this "
                "persistence is more than token identity.")
    if anchor == "control" and below:
        return (f"Fewer persist into {child} than into an untrained model of the same architecture and tokenizer.")
    return None


def token_level(rule: str) -> str:
    """Per (model, feature) of every member matched against a random-weights control: its match there under `rule`
    ($sim, $t bound: `control`, `control_feature`, `control_r`) and `token_level`, whether it persists into the
    control (`PERSISTS`): a feature an untrained model of the same architecture and tokenizer also has."""
    p2c = edge_matches(rule, "AND direction = 'p2c'", control=True)
    return (f"SELECT parent AS model, src AS feature, child AS control, dst AS control_feature, r AS control_r, "
            f"persists AS token_level FROM ({p2c})")


def control_match(cur, model: str, feature: int, threshold: float, mode: str) -> dict | None:
    """A feature's match in its member's random-weights control at `threshold` under `mode` (`token_level`):
    control, control_feature, control_r, token_level and the control's label; None when its member has no
    control (it is not a parent on any edge, or the run has no controls)."""
    rows = dicts(cur.execute(f"""SELECT t.*, c.label AS control_label FROM ({token_level(split_mode(mode)[1])}) t
                                  JOIN controls c ON c.control = t.control
                                  WHERE t.model = $model AND t.feature = $feature""",
                              {**fate_params(threshold, mode), "model": model, "feature": feature}))
    return rows[0] if rows else None


def pw_mcc_edges(cur) -> dict[tuple[str, str], dict]:
    """Each edge's decoder PW-MCC and chance level (table `pw_mcc`, kind 'edge')."""
    return {(r["model_a"], r["model_b"]): r for r in dicts(cur.execute(
        "SELECT model_a, model_b, pw_mcc, chance FROM pw_mcc WHERE kind = 'edge'"))}


def pw_mcc_replicas(cur) -> dict[str, list[dict]]:
    """Per replicated member: replica 0's decoder PW-MCC against each other replica, with its chance level."""
    out: dict[str, list[dict]] = {}
    for r in dicts(cur.execute("""SELECT model_a AS model, replica_b AS replica, pw_mcc, chance FROM pw_mcc
                                   WHERE kind = 'replica' ORDER BY model_a, replica_b""")):
        out.setdefault(r["model"], []).append(r)
    return out


def flows(cur, threshold: float, mode: str) -> list[dict]:
    """Per edge (children in family order): persisting / disappearing parent features, inherited / emerging
    child features (and, under a rule with doubt, `uncertain` parent and `uncertain_origin` child features; with split
    evidence, `split` and `absorbed` parent and `absorbing` and `split_part` child features: `FATE`, which
    disappearing / emerging then leave out), same-index persisting pairs, the persisting share and the edge's noise floor; the parent's
    alive features that persist into its random-weights control (`control_matched`, `control_share`: the raw
    share's lower anchor; NULL without a control) and, of the persisting ones, how many are token-level (persist
    into the control too: `token_level`) and how many are not (`beyond_token`); and the scale
    (`reproducible`)."""
    sim, rule = split_mode(mode)
    rows = dicts(cur.execute(f"""
        WITH best AS ({edge_matches(rule)}),
        ctl AS ({edge_matches(rule, "AND direction = 'p2c'", control=True)})
        SELECT e.parent, e.child,
          count(*) FILTER (WHERE m.direction = 'p2c' AND f.alive AND m.persists) AS persisting,
          count(*) FILTER (WHERE f.alive AND m.fate = 'disappearing') AS disappearing,
          count(*) FILTER (WHERE f.alive AND m.fate = 'uncertain') AS uncertain,
          count(*) FILTER (WHERE f.alive AND m.fate = 'split') AS split,
          count(*) FILTER (WHERE f.alive AND m.fate = 'absorbed') AS absorbed,
          count(*) FILTER (WHERE m.direction = 'c2p' AND f.alive AND m.persists) AS inherited,
          count(*) FILTER (WHERE f.alive AND m.fate = 'emerging') AS emerging,
          count(*) FILTER (WHERE f.alive AND m.fate = 'uncertain-origin') AS uncertain_origin,
          count(*) FILTER (WHERE f.alive AND m.fate = 'absorbing') AS absorbing,
          count(*) FILTER (WHERE f.alive AND m.fate = 'split-part') AS split_part,
          count(*) FILTER (WHERE m.direction = 'p2c' AND f.alive AND m.carried) AS carried,
          count(*) FILTER (WHERE m.direction = 'p2c' AND NOT f.alive) AS parent_dead,
          count(*) FILTER (WHERE m.direction = 'c2p' AND NOT f.alive) AS child_dead,
          count(*) FILTER (WHERE m.direction = 'p2c' AND f.alive) AS parent_alive,
          count(*) FILTER (WHERE m.direction = 'c2p' AND f.alive) AS child_alive,
          count(*) FILTER (WHERE m.direction = 'p2c' AND f.alive AND m.persists AND m.src = m.dst) AS same_index,
          count(*) FILTER (WHERE m.direction = 'p2c' AND f.alive AND c.persists) AS control_matched,
          count(*) FILTER (WHERE m.direction = 'p2c' AND f.alive AND m.persists AND c.persists) AS token_level
        FROM model_edges e
        JOIN best m ON m.parent = e.parent AND m.child = e.child
        JOIN features f ON f.model = m.model AND f.feature = m.src
        LEFT JOIN ctl c ON m.direction = 'p2c' AND c.parent = m.parent AND c.src = m.src
        JOIN models pm ON pm.model = e.parent JOIN models cm ON cm.model = e.child
        GROUP BY e.parent, e.child, pm.idx, cm.idx ORDER BY cm.idx, pm.idx""",
                              {"t": threshold, "sim": sim}))
    fl = floors(cur, threshold, mode)
    labels = dict(cur.execute("SELECT model, label FROM models").fetchall())
    rep = reproducible(cur, threshold, mode, labels)
    control_labels = dict(cur.execute("SELECT control, label FROM controls").fetchall())
    mcc = pw_mcc_edges(cur)
    for r in rows:
        r["mode"] = mode
        r["mode_label"] = mode_label(mode)
        r["threshold"] = threshold
        r["persist_share"] = r["persisting"] / r["parent_alive"] if r["parent_alive"] else 0.0
        # transfer survival (a rule with doubt): the share of alive parent features its evidence says the child
        # still carries, matched or not; None under a rule without doubt
        doubt = RULES[rule].admits_doubt
        r["carried_share"] = (r["carried"] / r["parent_alive"] if r["parent_alive"] else 0.0) if doubt else None
        if not doubt:
            r["carried"] = None
        has_control = rep[(r["parent"], r["child"])]["control"] is not None
        r["control_share"] = r["control_matched"] / r["parent_alive"] if has_control and r["parent_alive"] else None
        if not has_control:
            r["control_matched"] = r["token_level"] = None
        r["beyond_token"] = None if r["token_level"] is None else r["persisting"] - r["token_level"]
        f = edge_floor(r["parent"], r["child"], fl, labels)
        r["floor_share"] = f["share"] if f else None
        r["floor_mean_r"] = f["mean_r"] if f else None
        r["floor_source"] = f["source"] if f else None
        r["floor_source_label"] = f["source_label"] if f else None
        r.update(rep[(r["parent"], r["child"])])
        r["repro_floor_source_label"] = labels.get(r["repro_floor_source"], r["repro_floor_source"])
        r["control_label"] = control_labels.get(r["control"])
        pw = mcc.get((r["parent"], r["child"]), {})
        r["pw_mcc"], r["pw_mcc_chance"] = pw.get("pw_mcc"), pw.get("chance")
    return rows


def emerged_in(cur, threshold: float, mode: str) -> dict[str, int]:
    """Alive features of each non-root model that no parent feature reaches (over all its parents)."""
    rule = split_mode(mode)[1]
    rows = dicts(cur.execute(f"""
        SELECT s.model, count(*) AS n FROM ({feature_fates(rule, "AND direction = 'c2p'")}) s
        JOIN features f ON f.model = s.model AND f.feature = s.feature JOIN models m ON m.model = s.model
        WHERE {FATE_FILTERS['emerging']} GROUP BY s.model, m.idx ORDER BY m.idx""", fate_params(threshold, mode)))
    return {r["model"]: r["n"] for r in rows}  # in family order (unordered, a page's sentence changed between runs)


def floor_histogram(cur, model: str, mode: str, bins: int = 20) -> list[dict]:
    """The distribution of a member's replica match r (alive features of replica 0), `bins` equal bins on [-1, 1]."""
    sim, rule = split_mode(mode)
    return dicts(cur.execute("""
        SELECT least(floor((coalesce(r, 0) + 1) / 2 * $bins), $bins - 1)::INTEGER AS bin, count(*) AS n
        FROM noise_floor WHERE model = $model AND similarity = $sim AND rule = $rule AND alive
        GROUP BY bin ORDER BY bin""", {"bins": bins, "model": model, "sim": sim, "rule": RULES[rule].floor_rule}))


# -- per-node partition and per-edge feature lists (the explorer's Sankey and /edges pages) ---------------
UNCERTAIN_VIA = "~uncertain"  # `node_flows`'s `via` of an uncertain feature (no model name has a '~')
SPLIT_VIA = "~split"          # ... of a split parent feature (split on some edge), an absorbing child feature
PART_VIA = "~part"            # ... of an absorbed parent feature (a part of one on some edge), a split-part child one
def node_flows(cur, threshold: float, mode: str, reproducible: bool = False) -> list[dict]:
    """Each alive feature counted once per model node, for the Sankey.

    Rows (side, model, via, n): side 'out' partitions a parent's alive features by the child its best
    persisting match lies in (the strongest r over the children it persists in; `via` NULL: it persists in none,
    lost; `SPLIT_VIA`: in none, but split in some child; `PART_VIA`: in none, split in none, but absorbed in some;
    `UNCERTAIN_VIA`: none of these, but uncertain under a rule with doubt); side 'in' partitions a child's alive
    features by the parent its best persisting match lies in (`via` NULL: no parent reaches it, new; `SPLIT_VIA`:
    absorbing; `PART_VIA`: a split part; `UNCERTAIN_VIA`: its origin is uncertain). The order is the fate labels'
    (`FATE_LABEL`), so each node counts the features search lists under its fate. Ties go to the model earlier in
    family order. With `reproducible`, a member with seed replicas counts only its reproducible features
    (`STABILITY`); a member without replicas still counts all of them."""
    sim, rule = split_mode(mode)
    keep = (f"LEFT JOIN ({STABILITY}) st ON st.model = k.model AND st.feature = k.feature"
            if reproducible else "")
    where = " AND coalesce(st.stable, true)" if reproducible else ""
    return dicts(cur.execute(f"""
        WITH side AS (
            SELECT model, src AS feature, CASE WHEN direction = 'p2c' THEN child ELSE parent END AS other,
                   direction, coalesce(r, -1e9) AS r, persists, uncertain, split, part
            FROM ({edge_matches(rule)})),
        ranked AS (  -- a hop that persists first (under a keep rule it may have the lower r), then the strongest
            SELECT s.*, row_number() OVER (PARTITION BY s.model, s.feature, s.direction
                                           ORDER BY s.persists DESC, s.r DESC, o.idx) AS k,
                   bool_or(s.uncertain) OVER (PARTITION BY s.model, s.feature, s.direction) AS unsure,
                   bool_or(s.split) OVER (PARTITION BY s.model, s.feature, s.direction) AS split_any,
                   bool_or(s.part) OVER (PARTITION BY s.model, s.feature, s.direction) AS part_any
            FROM side s JOIN models o ON o.model = s.other)
        SELECT CASE WHEN k.direction = 'p2c' THEN 'out' ELSE 'in' END AS side, k.model,
               CASE WHEN k.persists THEN k.other WHEN k.split_any THEN '{SPLIT_VIA}' WHEN k.part_any THEN '{PART_VIA}'
                    WHEN k.unsure THEN '{UNCERTAIN_VIA}' END AS via, count(*) AS n
        FROM ranked k JOIN features f ON f.model = k.model AND f.feature = k.feature {keep}
        WHERE k.k = 1 AND f.alive{where} GROUP BY ALL ORDER BY ALL""",
                              {"t": threshold, "sim": sim,
                               **({"rule": RULES[rule].floor_rule} if reproducible else {})}))


# fate on an edge (`FATE`) -> the side it is a fate of; uncertain ones exist under a rule with doubt only, split,
# absorbed, absorbing and split-part ones with split evidence only
EDGE_FATES = {"persisting": "p2c", "split": "p2c", "absorbed": "p2c", "uncertain": "p2c", "disappearing": "p2c",
              "inherited": "c2p", "absorbing": "c2p", "split-part": "c2p", "uncertain-origin": "c2p",
              "emerging": "c2p"}
EDGE_SORTS = {"r": "m.r", "density": "f.density", "llr": "f.top_token_llr",
              "sim_score": "e.sim_score", "feature": "f.feature"}


def edge_features(cur, parent: str, child: str, fate: str, threshold: float, mode: str, sort: str = "r",
                  descending: bool = True, limit: int = 50, offset: int = 0,
                  stable: bool | None = None, token: bool | None = None) -> tuple[int, list[dict]]:
    """The alive features behind one count of `flows` on edge parent -> child: persisting / disappearing
    parent features or inherited / emerging child features, each with its match on the other side (its
    best match, or its assigned partner under `1to1`; NULL when unassigned), r, density, top-token LLR,
    explanation, seed stability (`replicas`, `reproduced`, `stable`: NULL without replicas) and its match in its
    member's random-weights control (`control_feature`, `control_r`, `token_level`: NULL without one). `stable`
    True / False keeps only reproducible / measured but not reproducible features, `token` True / False only
    token-level / not token-level ones (None: all). Returns (total, one page of rows sorted by `sort`, NULLs
    last)."""
    sim, rule = split_mode(mode)
    if fate not in EDGE_FATES:
        raise ValueError(f"unknown edge fate '{fate}' (fates: {', '.join(EDGE_FATES)})")
    if sort not in EDGE_SORTS:
        raise ValueError(f"unknown sort '{sort}' (sorts: {', '.join(EDGE_SORTS)})")
    direction = EDGE_FATES[fate]
    base = f"""
        FROM ({edge_matches(rule)}) m
        JOIN features f ON f.model = m.model AND f.feature = m.src
        LEFT JOIN vocab v ON v.token_id = f.top_token_id
        LEFT JOIN explanations e ON e.model = f.model AND e.feature = f.feature
        LEFT JOIN ({STABILITY}) st ON st.model = f.model AND st.feature = f.feature
        LEFT JOIN ({token_level(rule)}) tl ON tl.model = f.model AND tl.feature = f.feature
        WHERE m.parent = $parent AND m.child = $child AND m.direction = $direction AND f.alive
          AND m.fate = $fate{"" if stable is None else " AND st.stable = $stable"}{
              "" if token is None else " AND tl.token_level = $token"}"""
    params = {"sim": sim, "rule": RULES[rule].floor_rule, "parent": parent, "child": child, "direction": direction,
              "t": threshold, "fate": fate,
              **({} if stable is None else {"stable": stable}),
              **({} if token is None else {"token": token})}
    total = cur.execute(f"SELECT count(*) {base}", params).fetchone()[0]
    order = "DESC" if descending else "ASC"
    rows = dicts(cur.execute(f"""
        SELECT f.model, f.feature, m.dst AS match_feature, m.r, m.part_of, f.density, f.max_act, f.top_token_llr,
               v.text AS top_token, e.explanation, e.explainer, e.sim_score, st.replicas, st.reproduced,
               st.stable, tl.control_feature, tl.control_r, tl.token_level {base}
        ORDER BY {EDGE_SORTS[sort]} {order} NULLS LAST, f.feature LIMIT $limit OFFSET $offset""",
                              {**params, "limit": limit, "offset": offset}))
    return total, rows


def edge_fate_sets(cur, parent: str, child: str, threshold: float, mode: str) -> dict[str, set[int]]:
    """Every alive feature of edge parent -> child by its fate (`EDGE_FATES`: each fate's features, as
    `edge_features` lists them), in one query: what the planted scorecard reads for every fate at once."""
    sim, rule = split_mode(mode)
    out: dict[str, set[int]] = {f: set() for f in EDGE_FATES}
    for fate, feature in cur.execute(f"""
            SELECT m.fate, m.src FROM ({edge_matches(rule)}) m JOIN features f ON f.model = m.model AND f.feature = m.src
            WHERE m.parent = $parent AND m.child = $child AND f.alive""",
                                     {"sim": sim, "parent": parent, "child": child, "t": threshold}).fetchall():
        out[fate].add(int(feature))
    return out


# -- features along a merge's interpolation path (`merge_survival`, featureflow/pipeline/survival.py) ------------
# A parent feature survives into the merged model at t when its survival r there exceeds the threshold $t (the
# fate rule's own comparison, `PERSISTS`). Its population: the parent's alive features that fire in the survival
# sample (a row at the parent's own end of the path), reproducible ones only (`STABILITY`) when asked and the
# parent has seed replicas. A feature without a row at some t never fires there: it does not survive.
def _survival_population(reproducible: bool) -> str:
    """The features a merge's survival shares are of (model, parent, feature): each parent's alive features that
    fire at its own end of the path (reproducible ones only, with `reproducible`: $sim, $rule bound)."""
    keep = f"LEFT JOIN ({STABILITY}) st ON st.model = s.parent AND st.feature = s.feature" if reproducible else ""
    where = "AND coalesce(st.stable, true)" if reproducible else ""
    return f"""
            SELECT s.model, s.parent, s.feature FROM merge_survival s
            JOIN slerp_meta sm ON sm.model = s.model
            JOIN features f ON f.model = s.parent AND f.feature = s.feature {keep}
            WHERE s.t = CASE WHEN s.parent = sm.parent0 THEN 0.0 ELSE 1.0 END::DOUBLE AND f.alive {where}"""


def _with_interval(rows: list[dict], reproducible: bool) -> list[dict]:
    for r in rows:
        r["share"] = r["survived"] / r["n"] if r["n"] else None
        r["lo"], r["hi"] = wilson(r["survived"], r["n"]) or (None, None)
        r["population"] = "reproducible" if reproducible else "all"
    return rows


def merge_survival(cur, threshold: float, mode: str, reproducible: bool = True) -> list[dict]:
    """Per merge member, parent and sweep point t: the population (`n`), how many survive (`survived`), the
    share and its 95% Wilson interval (`lo`, `hi`), and `population` ('reproducible' or 'all'), in family order."""
    rows = dicts(cur.execute(f"""
        WITH pop AS ({_survival_population(reproducible)})
        SELECT p.model, p.parent, ts.t, count(*) AS n, count(*) FILTER (WHERE coalesce(s.r, -1e9) > $t) AS survived
        FROM pop p JOIN (SELECT DISTINCT model, t FROM merge_survival) ts ON ts.model = p.model
        LEFT JOIN merge_survival s ON s.model = p.model AND s.parent = p.parent AND s.feature = p.feature
             AND s.t = ts.t
        JOIN models m ON m.model = p.model JOIN models pm ON pm.model = p.parent
        GROUP BY p.model, p.parent, ts.t, m.idx, pm.idx ORDER BY m.idx, pm.idx, ts.t""",
                             stability_params(threshold, mode) if reproducible else {"t": threshold}))
    return _with_interval(rows, reproducible)


def survival_control(cur, threshold: float, mode: str, reproducible: bool = True) -> list[dict]:
    """The survival curves' lower anchor: per merge member and parent with a random-weights control
    (`merge_survival_control`), the same population as `merge_survival`'s (`n`), how many of them survive into the
    control (r above the threshold: `survived`), the share, its 95% Wilson interval, `population` and `control`,
    in family order. None of a parent without a control."""
    rows = dicts(cur.execute(f"""
        WITH pop AS ({_survival_population(reproducible)}),
        ctl AS (SELECT DISTINCT model, parent, control FROM merge_survival_control)
        SELECT p.model, p.parent, c.control, count(*) AS n,
               count(*) FILTER (WHERE coalesce(s.r, -1e9) > $t) AS survived
        FROM pop p JOIN ctl c ON c.model = p.model AND c.parent = p.parent
        LEFT JOIN merge_survival_control s ON s.model = p.model AND s.parent = p.parent AND s.feature = p.feature
        JOIN models m ON m.model = p.model JOIN models pm ON pm.model = p.parent
        GROUP BY p.model, p.parent, c.control, m.idx, pm.idx ORDER BY m.idx, pm.idx""",
                             stability_params(threshold, mode) if reproducible else {"t": threshold}))
    return _with_interval(rows, reproducible)


def survival_crossing(rows: list[dict]) -> dict[str, float | None]:
    """Per merge member in `rows` (`merge_survival`): the t where its two parents' survival shares cross (the first
    sign change of first-parent share minus second-parent share, linear between sweep points; a sweep point where
    they are equal is the crossing), None where they never cross. Beside t*, where the accuracies cross."""
    out: dict[str, float | None] = {}
    by: dict[str, dict[str, dict[float, float]]] = {}
    for r in rows:
        by.setdefault(r["model"], {}).setdefault(r["parent"], {})[r["t"]] = r["share"]
    for model, parents in by.items():
        out[model] = None
        if len(parents) != 2:
            continue
        a, b = parents.values()
        ts = sorted(set(a) & set(b))
        d = [a[t] - b[t] for t in ts]
        for i, t in enumerate(ts):
            if d[i] == 0:
                out[model] = t
                break
            if i and d[i - 1] * d[i] < 0:
                out[model] = ts[i - 1] + (ts[i] - ts[i - 1]) * d[i - 1] / (d[i - 1] - d[i])
                break
    return out


def feature_survival(cur, model: str, feature: int, threshold: float) -> list[dict]:
    """One parent feature along the path of every merge it is a parent of: {model (the merge), own (its end of the
    path: 0 or 1), points [{t, r}] (r None where it never fires), survives: the t interval [lo, hi] reached from
    its own end while r exceeds the threshold (the fate rule's comparison)}, in family order."""
    rows = dicts(cur.execute("""
        SELECT ts.model, CASE WHEN sm.parent0 = $parent THEN 0.0 ELSE 1.0 END::DOUBLE AS own, ts.t, s.r
        FROM (SELECT DISTINCT model, t FROM merge_survival WHERE parent = $parent) ts
        JOIN slerp_meta sm ON sm.model = ts.model JOIN models m ON m.model = ts.model
        LEFT JOIN merge_survival s ON s.model = ts.model AND s.parent = $parent AND s.feature = $feature
             AND s.t = ts.t
        ORDER BY m.idx, ts.t""", {"parent": model, "feature": feature}))
    out: dict[str, dict] = {}
    for r in rows:
        e = out.setdefault(r["model"], {"model": r["model"], "own": r["own"], "points": []})
        e["points"].append({"t": r["t"], "r": r["r"]})
    for e in out.values():
        pts = e["points"] if e["own"] == 0.0 else e["points"][::-1]
        kept = []
        for p in pts:
            if p["r"] is None or not p["r"] > threshold:
                break
            kept.append(p["t"])
        e["survives"] = [min(kept), max(kept)] if kept else None
    return list(out.values())


# -- what a merged model inherits: each of its features by the parents it persists from ----------------------------
INHERITANCE = ("both", "first", "second", "uncertain", "split", "new")


def inheritance_sql(rule: str) -> str:
    """Each alive feature of every member with two parents (a merge), by where the fate rule `rule` says it comes
    from ($t, $sim bound): rows (model, feature, first_parent, second_parent, inheritance). `both` (inherited from
    each parent: matched above the threshold in both; or inherited from one and a split part or absorbing in the
    other, which then has a part in it), `first` / `second` (inherited from one only, and no part in the other; the
    parents in family order), else `split` (a split part or absorbing on some edge, inherited from neither: split
    evidence), `uncertain` (a rule with doubt: of uncertain origin in some parent and inherited from neither; or
    inherited from one while it fires too rarely to judge the other, `min_events`), or `new` (emerging from both).

    A doubt in the other parent (its evidence between the rule's `tau` and `keep_tau`) does not make a feature
    inherited from one parent uncertain: over eleven planted merges the one-parent call was right for 10 of the 11
    such features scored, 3 of 3 on the shapes drawn after the choice (README, "What a merged model inherits"); the
    wrong one's evidence is inverted (the parent lacking it holds a feature at |cos| 0.42 with it)."""
    R = RULES[rule]
    rare = f"coalesce(f.n_active, 0) < {R.min_events}" if R.admits_doubt and R.min_events else "false"
    return f"""
        WITH two AS (SELECT e.child, arg_min(e.parent, pm.idx) AS first_parent,
                            arg_max(e.parent, pm.idx) AS second_parent
                     FROM model_edges e JOIN models pm ON pm.model = e.parent
                     GROUP BY e.child HAVING count(*) = 2),
        m AS (SELECT * FROM ({edge_matches(rule, "AND direction = 'c2p'")})),
        origin AS (SELECT m.child AS model, m.src AS feature, two.first_parent, two.second_parent,
                      bool_or(m.persists AND m.parent = two.first_parent) AS from_first,
                      bool_or(m.persists AND m.parent = two.second_parent) AS from_second,
                      bool_or((m.split OR m.part) AND m.parent = two.first_parent) AS event_first,
                      bool_or((m.split OR m.part) AND m.parent = two.second_parent) AS event_second,
                      bool_or(m.split OR m.part) AS event, bool_or(m.uncertain) AS unsure
               FROM m JOIN two ON two.child = m.child GROUP BY ALL)
        SELECT o.model, o.feature, o.first_parent, o.second_parent,
               CASE WHEN from_first AND (from_second OR event_second) OR from_second AND event_first THEN 'both'
                    WHEN from_first AND NOT {rare} THEN 'first'
                    WHEN from_second AND NOT {rare} THEN 'second'
                    WHEN event THEN 'split' WHEN from_first OR from_second OR unsure THEN 'uncertain'
                    ELSE 'new' END AS inheritance
        FROM origin o JOIN features f ON f.model = o.model AND f.feature = o.feature WHERE f.alive"""


def merge_inheritance(cur, threshold: float, mode: str, reproducible: bool = False) -> list[dict]:
    """`inheritance_sql`'s rows at `threshold` under `mode`, ordered by model and feature: {model, feature,
    first_parent, second_parent, inheritance}; with `reproducible`, a member with seed replicas keeps its
    reproducible features only."""
    sim, rule = split_mode(mode)
    keep = (f"LEFT JOIN ({STABILITY}) st ON st.model = i.model AND st.feature = i.feature "
            "WHERE coalesce(st.stable, true)" if reproducible else "")
    return dicts(cur.execute(f"SELECT i.* FROM ({inheritance_sql(rule)}) i {keep} ORDER BY i.model, i.feature",
                              {"t": threshold, "sim": sim, **({"rule": RULES[rule].floor_rule} if reproducible else {})}))


def inheritance_counts(rows: list[dict]) -> list[dict]:
    """`merge_inheritance` rows counted per merge member: {model, first_parent, second_parent, n, and a count per
    `INHERITANCE` class}."""
    out: dict[str, dict] = {}
    for r in rows:
        c = out.setdefault(r["model"], {"model": r["model"], "first_parent": r["first_parent"],
                                        "second_parent": r["second_parent"], "n": 0,
                                        **{k: 0 for k in INHERITANCE}})
        c[r["inheritance"]] += 1
        c["n"] += 1
    return list(out.values())
