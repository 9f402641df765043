"""Feature flows and their noise floor, as SQL over the store: one home for both, used by the store
builder (the `flows` table), `featureflow report` and the explorer (at any threshold and mode).

A mode is a similarity and a rule (`pearson`, `pearson-1to1`, `decoder`, ...). Under the `best` rule a
feature's match is its rank-0 row in `matches`; under `1to1` it is its row in `assignments` (NULL when
unassigned, which never persists). Counts cover alive features only (features that fire in the sample).

The floor of a member is what persistence reads between two SAEs of the *same* model that differ only
in their seed (`noise_floor`): the share of replica 0's alive features whose match in another replica
exceeds the threshold, pooled over its replicas. An edge shows the floor of its parent when the parent
has replicas, else of its child, else the pooled floor of every replicated member (`floor_source` says
which). Free of heavy imports: the app imports this module.
"""

from __future__ import annotations

from typing import Any

from featureflow.config import parse_mode

_BEST = {
    "best": "SELECT parent, child, direction, src, dst, r FROM matches WHERE rank = 0 AND similarity = $sim",
    "1to1": "SELECT parent, child, direction, src, dst, r FROM assignments WHERE similarity = $sim",
}

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
    rows = _dicts(cur.execute("""
        SELECT model, count(DISTINCT replica) AS replicas,
               count(*) FILTER (WHERE alive) AS alive,
               count(*) FILTER (WHERE alive AND coalesce(r, -1e9) > $t) AS matched,
               avg(coalesce(r, 0)) FILTER (WHERE alive) AS mean_r
        FROM noise_floor WHERE similarity = $sim AND rule = $rule GROUP BY model""",
                              {"t": threshold, "sim": sim, "rule": rule}))
    return {r["model"]: {**r, "share": r["matched"] / r["alive"] if r["alive"] else 0.0} for r in rows}


def edge_floor(parent: str, child: str, fl: dict[str, dict], labels: dict[str, str] | None = None) -> dict | None:
    """The floor shown beside one edge: the parent's, else the child's, else every replicated member's pooled.
    `source` names the member(s) it comes from, `source_label` the same by their labels."""
    labels = labels or {}
    for m in (parent, child):
        if m in fl:
            return {"share": fl[m]["share"], "mean_r": fl[m]["mean_r"], "source": m,
                    "source_label": labels.get(m, m)}
    if not fl:
        return None
    alive = sum(f["alive"] for f in fl.values())
    return {"share": sum(f["matched"] for f in fl.values()) / alive if alive else 0.0,
            "mean_r": sum(f["mean_r"] * f["alive"] for f in fl.values()) / alive if alive else 0.0,
            "source": "pooled: " + ", ".join(sorted(fl)),
            "source_label": "pooled: " + ", ".join(labels.get(m, m) for m in sorted(fl))}


def flows(cur, threshold: float, mode: str) -> list[dict]:
    """Per edge (children in family order): persisting / disappearing parent features, inherited / emerging
    child features, same-index persisting pairs, the persisting share and the edge's noise floor."""
    sim, rule = parse_mode(mode)
    rows = _dicts(cur.execute(f"""
        WITH best AS ({_BEST[rule]})
        SELECT e.parent, e.child,
          count(*) FILTER (WHERE m.direction = 'p2c' AND f.alive AND coalesce(m.r, -1e9) > $t) AS persisting,
          count(*) FILTER (WHERE m.direction = 'p2c' AND f.alive AND NOT coalesce(m.r, -1e9) > $t) AS disappearing,
          count(*) FILTER (WHERE m.direction = 'c2p' AND f.alive AND coalesce(m.r, -1e9) > $t) AS inherited,
          count(*) FILTER (WHERE m.direction = 'c2p' AND f.alive AND NOT coalesce(m.r, -1e9) > $t) AS emerging,
          count(*) FILTER (WHERE m.direction = 'p2c' AND NOT f.alive) AS parent_dead,
          count(*) FILTER (WHERE m.direction = 'c2p' AND NOT f.alive) AS child_dead,
          count(*) FILTER (WHERE m.direction = 'p2c' AND f.alive) AS parent_alive,
          count(*) FILTER (WHERE m.direction = 'c2p' AND f.alive) AS child_alive,
          count(*) FILTER (WHERE m.direction = 'p2c' AND f.alive AND coalesce(m.r, -1e9) > $t
                           AND m.src = m.dst) AS same_index
        FROM model_edges e
        JOIN best m ON m.parent = e.parent AND m.child = e.child
        JOIN features f ON f.model = (CASE WHEN m.direction = 'p2c' THEN e.parent ELSE e.child END)
                       AND f.feature = m.src
        JOIN models pm ON pm.model = e.parent JOIN models cm ON cm.model = e.child
        GROUP BY e.parent, e.child, pm.idx, cm.idx ORDER BY cm.idx, pm.idx""",
                              {"t": threshold, "sim": sim}))
    fl = floors(cur, threshold, mode)
    labels = dict(cur.execute("SELECT model, label FROM models").fetchall())
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
    return rows


def emerged_in(cur, threshold: float, mode: str) -> dict[str, int]:
    """Alive features of each non-root model that no parent feature reaches (over all its parents)."""
    sim, rule = parse_mode(mode)
    rows = _dicts(cur.execute(f"""
        WITH best AS ({_BEST[rule]})
        SELECT m.child AS model, count(*) AS n FROM (
            SELECT child, src, max(coalesce(r, -1e9)) AS best FROM best WHERE direction = 'c2p'
            GROUP BY child, src) m
        JOIN features f ON f.model = m.child AND f.feature = m.src
        WHERE f.alive AND NOT m.best > $t GROUP BY m.child""", {"t": threshold, "sim": sim}))
    return {r["model"]: r["n"] for r in rows}


def floor_histogram(cur, model: str, mode: str, bins: int = 20) -> list[dict]:
    """The distribution of a member's replica match r (alive features of replica 0), `bins` equal bins on [-1, 1]."""
    sim, rule = parse_mode(mode)
    return _dicts(cur.execute("""
        SELECT least(floor((coalesce(r, 0) + 1) / 2 * $bins), $bins - 1)::INTEGER AS bin, count(*) AS n
        FROM noise_floor WHERE model = $model AND similarity = $sim AND rule = $rule AND alive
        GROUP BY bin ORDER BY bin""", {"bins": bins, "model": model, "sim": sim, "rule": rule}))


# -- per-node partition and per-edge feature lists (the explorer's Sankey and /edges pages) ---------------
def node_flows(cur, threshold: float, mode: str) -> list[dict]:
    """Each alive feature counted once per model node, for the Sankey.

    Rows (side, model, via, n): side 'out' partitions a parent's alive features by the child its best
    persisting match lies in (the strongest r over its children; `via` NULL: it persists in none, lost);
    side 'in' partitions a child's alive features by the parent its best persisting match lies in (`via`
    NULL: no parent reaches it, new). Ties go to the model earlier in family order."""
    sim, rule = parse_mode(mode)
    return _dicts(cur.execute(f"""
        WITH best AS ({_BEST[rule]}),
        side AS (
            SELECT CASE WHEN direction = 'p2c' THEN parent ELSE child END AS model, src AS feature,
                   CASE WHEN direction = 'p2c' THEN child ELSE parent END AS other, direction,
                   coalesce(r, -1e9) AS r FROM best),
        ranked AS (
            SELECT s.*, row_number() OVER (PARTITION BY s.model, s.feature, s.direction
                                           ORDER BY s.r DESC, o.idx) AS k
            FROM side s JOIN models o ON o.model = s.other)
        SELECT CASE WHEN k.direction = 'p2c' THEN 'out' ELSE 'in' END AS side, k.model,
               CASE WHEN k.r > $t THEN k.other END AS via, count(*) AS n
        FROM ranked k JOIN features f ON f.model = k.model AND f.feature = k.feature
        WHERE k.k = 1 AND f.alive GROUP BY ALL ORDER BY ALL""", {"t": threshold, "sim": sim}))


EDGE_FATES = {"persisting": ("p2c", True), "disappearing": ("p2c", False),
              "inherited": ("c2p", True), "emerging": ("c2p", False)}
EDGE_SORTS = {"r": "m.r", "density": "f.density", "llr": "f.top_token_llr",
              "sim_score": "e.sim_score", "feature": "f.feature"}


def edge_features(cur, parent: str, child: str, fate: str, threshold: float, mode: str, sort: str = "r",
                  descending: bool = True, limit: int = 50, offset: int = 0) -> tuple[int, list[dict]]:
    """The alive features behind one count of `flows` on edge parent -> child: persisting / disappearing
    parent features or inherited / emerging child features, each with its match on the other side (its
    best match, or its assigned partner under `1to1`; NULL when unassigned), r, density, top-token LLR and
    explanation. Returns (total, one page of rows sorted by `sort`, NULLs last)."""
    sim, rule = parse_mode(mode)
    if fate not in EDGE_FATES:
        raise ValueError(f"unknown edge fate '{fate}' (fates: {', '.join(EDGE_FATES)})")
    if sort not in EDGE_SORTS:
        raise ValueError(f"unknown sort '{sort}' (sorts: {', '.join(EDGE_SORTS)})")
    direction, persists = EDGE_FATES[fate]
    base = f"""
        FROM ({_BEST[rule]}) m
        JOIN features f ON f.model = (CASE WHEN m.direction = 'p2c' THEN m.parent ELSE m.child END)
                       AND f.feature = m.src
        LEFT JOIN vocab v ON v.token_id = f.top_token_id
        LEFT JOIN explanations e ON e.model = f.model AND e.feature = f.feature
        WHERE m.parent = $parent AND m.child = $child AND m.direction = $direction AND f.alive
          AND (coalesce(m.r, -1e9) > $t) = $persists"""
    params = {"sim": sim, "parent": parent, "child": child, "direction": direction, "t": threshold,
              "persists": persists}
    total = cur.execute(f"SELECT count(*) {base}", params).fetchone()[0]
    order = "DESC" if descending else "ASC"
    rows = _dicts(cur.execute(f"""
        SELECT f.model, f.feature, m.dst AS match_feature, m.r, f.density, f.max_act, f.top_token_llr,
               v.text AS top_token, e.explanation, e.explainer, e.sim_score {base}
        ORDER BY {EDGE_SORTS[sort]} {order} NULLS LAST, f.feature LIMIT $limit OFFSET $offset""",
                              {**params, "limit": limit, "offset": offset}))
    return total, rows
