"""Read-only summaries of a store shared by `featureflow report` and the explorer: the schema check, each
replicated member's floors, alive features by origin and SAE health. Free of heavy imports (no explorer, no
pipeline): the report reads a store through this module and `flows.py` alone."""

from __future__ import annotations

from featureflow.store import flows as F
from featureflow.store.rows import dicts
from featureflow.store.schema import SCHEMA_VERSION


def schema_mismatch(cur, path) -> str | None:
    """Why a store cannot be read by this version (its schema version differs), else None."""
    version = cur.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        return (f"store '{path}' has schema version {version}; this explorer reads version "
                f"{SCHEMA_VERSION}: rebuild it with `featureflow run`")
    return None


def member_floors(cur, threshold: float, mode: str) -> list[dict]:
    """Per replicated member in family order: the seed-control noise floor at `threshold` under `mode`
    (`flows.floors`), its label, the distribution of its replica match r, its SAEs, its replicas' PW-MCC and
    `scale` (`flows.member_scale`: its leave-one-out population with the seed floor and the random-weights
    control read on it, each with its interval)."""
    fl = F.floors(cur, threshold, mode)
    rfl = F.member_scale(cur, threshold, mode)
    mcc = F.pw_mcc_replicas(cur)
    reps = dicts(cur.execute("SELECT * FROM sae_replicas ORDER BY model, replica"))
    out = []
    for m in dicts(cur.execute("SELECT model, label FROM models ORDER BY idx")):
        if m["model"] in fl:
            out.append({**fl[m["model"]], "label": m["label"], "mode": mode, "threshold": threshold,
                        "histogram": F.floor_histogram(cur, m["model"], mode),
                        "saes": [r for r in reps if r["model"] == m["model"]],
                        "scale": rfl.get(m["model"]), "pw_mcc": mcc.get(m["model"], [])})
    return out


def origin_counts(cur, threshold: float, mode: str) -> list[dict]:
    """Alive features per model by the model their chain of persisting matches starts in, at `threshold`
    under `mode` (`flows.origin_counts`)."""
    return F.origin_counts(cur, threshold, mode)


def merge_origins(cur, threshold: float, mode: str) -> list[dict]:
    """The paper's reading of a merged model (Horn & Elliott 2024: of its features, those traceable to an ancestor,
    emerged in fine-tuning or from the root): per member with two parents, in family order, its alive
    features by where their chain of persisting matches starts (`origin_counts`). {model, n, traceable (from an
    ancestor), root (from a member without parents), between (from an ancestor that has parents: emerged in
    fine-tuning), new (the chain starts at the member itself), carried (of traceable, those whose chain ends at a
    hop kept by evidence alone)}."""
    parents: dict[str, list[str]] = {}
    for p, c in cur.execute("SELECT parent, child FROM model_edges").fetchall():
        parents.setdefault(c, []).append(p)
    out: dict[str, dict] = {}
    for r in origin_counts(cur, threshold, mode):
        m, o = r["model"], r["origin_model"]
        if len(parents.get(m, ())) != 2:
            continue
        e = out.setdefault(m, {"model": m, "n": 0, "traceable": 0, "root": 0, "between": 0, "new": 0, "carried": 0})
        e["n"] += r["n"]
        if o == m:
            e["new"] += r["n"]
            continue
        e["traceable"] += r["n"]
        e["carried"] += r["carried"]
        e["between" if parents.get(o) else "root"] += r["n"]
    return list(out.values())


def cases(cur, threshold: float, mode: str) -> list[dict]:
    """Every case study (slug order) with its root feature's match in its member's random-weights control at
    `threshold` under `mode` (`root_control`: `flows.control_match`; None without a control or a root)."""
    rows = dicts(cur.execute("SELECT slug, status, reason, root_model, root_feature FROM cases ORDER BY slug"))
    for c in rows:
        c["root_control"] = (F.control_match(cur, c["root_model"], c["root_feature"], threshold, mode)
                             if c["status"] == "ok" else None)
    return rows


def sae_health(cur) -> list[dict]:
    """Per model in family order: its SAE's health and its alive features on the sample."""
    return dicts(cur.execute("""
        SELECT m.model, m.label, m.make, m.domains, m.merge_t, m.train_tokens, m.seconds, m.d_sae,
               s.l0, s.mse, s.explained_variance, s.dead_features, s.loss_recovered, s.recipe,
               s.loss_recovered_scope, s.loss_recovered_all, s.eval_tokens,
               (SELECT count(*) FILTER (WHERE alive) FROM features f WHERE f.model = m.model) AS alive
        FROM models m JOIN sae_metrics s USING (model) ORDER BY m.idx"""))


def evidence_summary(cur, labels: dict[str, str] | None = None) -> list[dict]:
    """Per evidence kind (`evidence_kinds`), edge and measure, in family order: the kind's label and side, the
    measure's label (measures whose values are feature ids left out), the features with a value (`n`), their mean and 10th / 50th / 90th percentiles; then each
    parent-side kind on every member against its random-weights control (`control` true: the kind's lower
    anchor)."""
    import json

    controls = dict(cur.execute("SELECT control, label FROM controls").fetchall())
    kinds = {k: (label, side, {m["name"]: m["label"] for m in json.loads(measures)},
                 {m["name"] for m in json.loads(measures) if m.get("feature")})
             for k, label, side, measures in cur.execute(
                 "SELECT kind, label, side, measures_json FROM evidence_kinds").fetchall()}
    rows = dicts(cur.execute("""
        SELECT e.kind, e.parent, e.child, e.measure, count(*) AS n, avg(e.value) AS mean,
               quantile_cont(e.value, 0.1) AS p10, quantile_cont(e.value, 0.5) AS median,
               quantile_cont(e.value, 0.9) AS p90, k.control IS NOT NULL AS control
        FROM evidence e JOIN models p ON p.model = e.parent
        LEFT JOIN models c ON c.model = e.child LEFT JOIN controls k ON k.control = e.child
        WHERE c.model IS NOT NULL OR k.control IS NOT NULL
        GROUP BY e.kind, e.parent, e.child, e.measure, k.control, c.idx, p.idx
        ORDER BY e.kind, control, c.idx NULLS LAST, p.idx, e.measure"""))
    rows = [r for r in rows if r["measure"] not in kinds[r["kind"]][3]]  # feature ids: not numbers to summarise
    for r in rows:
        label, side, measures, _ = kinds[r["kind"]]
        r.update(label=label, side=side, measure_label=measures.get(r["measure"], r["measure"]))
        if labels:
            r.update(parent_label=labels.get(r["parent"], r["parent"]), child_label=labels.get(r["child"], r["child"]))
        if r["control"]:
            r["child_label"] = controls.get(r["child"], r["child"])
    return rows


def cross_health(cur, labels: dict[str, str] | None = None) -> list[dict]:
    """Every encode of one member's SAE on another model's activations (`cross_health`), in family order of the
    SAE's member: its explained variance, MSE and L0 there, beside the other model's own SAE (`own_*`: a member's
    `sae_metrics`, a control's `controls` row)."""
    rows = dicts(cur.execute("""
        SELECT h.sae_of, h.replica, h.data_of, h.explained_variance, h.mse, h.l0, h.rows,
               coalesce(s.explained_variance, k.explained_variance) AS own_explained_variance,
               coalesce(s.l0, k.l0) AS own_l0, k.control IS NOT NULL AS control
        FROM cross_health h JOIN models m ON m.model = h.sae_of
        LEFT JOIN sae_metrics s ON s.model = h.data_of LEFT JOIN controls k ON k.control = h.data_of
        LEFT JOIN models d ON d.model = h.data_of
        ORDER BY m.idx, control, d.idx"""))
    labels = {**(labels or {}), **dict(cur.execute("SELECT control, label FROM controls").fetchall())}
    for r in rows:
        r["sae_label"] = labels.get(r["sae_of"], r["sae_of"])
        r["data_label"] = labels.get(r["data_of"], r["data_of"])
    return rows


AGREE_R = 0.5  # a crosscoder latent speaks for the SAE feature it correlates with at least this well (activation r)


def crosscoder_agreement(cur, parent: str, child: str, threshold: float, mode: str) -> dict:
    """How many SAE fates an edge's crosscoder confirms: each alive latent whose best parent SAE feature correlates
    with it at least AGREE_R, that feature's fate at `threshold` under `mode` (persisting or disappearing, the one
    fate rule) against the latent's call (shared or parent-only): counts by (fate, call), and how many agree
    (persisting with shared, disappearing with parent-only)."""
    fates = {}
    for fate in ("persisting", "disappearing"):
        _, rows = F.edge_features(cur, parent, child, fate, threshold, mode, "feature", False, 1 << 30, 0)
        fates.update({r["feature"]: fate for r in rows})
    lat = cur.execute("""SELECT parent_feature, call FROM crosscoder_latents WHERE parent = ? AND child = ?
                         AND call <> 'dead' AND parent_r >= ?""", [parent, child, AGREE_R]).fetchall()
    table: dict[str, dict[str, int]] = {}
    agree = n = 0
    for feature, call in lat:
        fate = fates.get(feature)
        if fate is None:
            continue
        table.setdefault(fate, {}).setdefault(call, 0)
        table[fate][call] += 1
        n += 1
        agree += (fate, call) in (("persisting", "shared"), ("disappearing", "parent-only"))
    return {"latents": n, "agree": agree, "share": agree / n if n else None, "by_fate": table, "min_r": AGREE_R}
