"""Every SQL query the explorer runs. Read-only, bound parameters only, nothing loads a whole table.

`Store` opens the run's DuckDB file read-only and hands each request its own cursor. Functions return
plain dicts / lists ready for JSON and templates; the schema they read is `backend/store/schema.py`.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from backend.config import parse_mode
from backend.store import flows as flow_sql
from backend.store.schema import SCHEMA_VERSION


class StoreError(RuntimeError):
    pass


class NotFound(LookupError):
    """A model / feature / case that does not exist; the message says what does."""


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


def _dicts(cur) -> list[dict]:
    cols = [d[0] for d in cur.description]
    return [{c: _clean(v) for c, v in zip(cols, row)} for row in cur.fetchall()]


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"store '{self.path}' does not exist (run `featureflow run --config ...` first)")
        self._con = duckdb.connect(str(self.path), read_only=True)
        self._local = threading.local()
        version = self._con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise StoreError(f"store '{self.path}' has schema version {version}; this explorer reads version "
                             f"{SCHEMA_VERSION}: rebuild it with `featureflow run`")
        self.run = self.q1("SELECT * FROM runs")
        self.modes = list(self.run["modes"])
        self.default_mode = self.run["default_mode"]
        self.similarity = parse_mode(self.default_mode)[0]  # feature pages, lineage and cases use this one
        self.models = self.q("SELECT * FROM models ORDER BY idx")
        self.model_names = [m["model"] for m in self.models]
        self.edges = self.q("SELECT e.* FROM model_edges e JOIN models c ON c.model = e.child "
                            "JOIN models p ON p.model = e.parent ORDER BY c.idx, p.idx")

    # -- plumbing ---------------------------------------------------------------------------
    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._con.cursor()
        return cur

    def q(self, sql: str, params: list | dict | None = None) -> list[dict]:
        return _dicts(self.cursor().execute(sql, params or []))

    def q1(self, sql: str, params: list | dict | None = None) -> dict | None:
        rows = self.q(sql, params)
        return rows[0] if rows else None

    def close(self) -> None:
        self._con.close()

    # -- validation ---------------------------------------------------------------------------
    def model(self, name: str) -> dict:
        for m in self.models:
            if m["model"] == name:
                return m
        raise NotFound(f"no model '{name}' in run '{self.run['name']}' (models: {', '.join(self.model_names)})")

    def feature_row(self, model: str, feature: int) -> dict:
        m = self.model(model)
        row = self.q1("SELECT * FROM features WHERE model = ? AND feature = ?", [model, feature])
        if row is None:
            raise NotFound(f"model '{model}' has no feature {feature} (features 0 to {m['d_sae'] - 1})")
        return row

    def parents(self, model: str) -> list[str]:
        return [e["parent"] for e in self.edges if e["child"] == model]

    def children(self, model: str) -> list[str]:
        return [e["child"] for e in self.edges if e["parent"] == model]

    def label(self, model: str) -> str:
        return self.model(model)["label"]

    # -- overview -----------------------------------------------------------------------------
    def overview_models(self) -> list[dict]:
        rows = self.q("""
            SELECT m.model, m.label, m.make, m.domains, m.merge_t, m.train_tokens, m.seconds, m.d_sae,
                   s.l0, s.mse, s.explained_variance, s.dead_features, s.loss_recovered, s.recipe,
                   s.loss_recovered_scope, s.loss_recovered_all, s.eval_tokens,
                   (SELECT count(*) FILTER (WHERE alive) FROM features f WHERE f.model = m.model) AS alive
            FROM models m JOIN sae_metrics s USING (model) ORDER BY m.idx""")
        evals = self.q("SELECT model, domain, loss, accuracy FROM model_eval")
        per_domain = self.q("SELECT * FROM sae_health_domains")
        for r in rows:
            r["parents"] = self.parents(r["model"])
            r["eval"] = {e["domain"]: {"loss": e["loss"], "accuracy": e["accuracy"]}
                         for e in evals if e["model"] == r["model"]}
            r["sae_by_domain"] = [h for h in per_domain if h["model"] == r["model"]]
        return rows

    def mode(self, mode: str | None) -> str:
        """A stored matching mode (default: the run's); anything else is a clear error."""
        if mode is None:
            return self.default_mode
        if mode not in self.modes:
            raise ValueError(f"matching mode '{mode}' is not stored in run '{self.run['name']}' "
                             f"(modes: {', '.join(self.modes)})")
        return mode

    def flows(self, threshold: float, mode: str | None = None) -> list[dict]:
        """Per edge at `threshold` under `mode`, from the stored matches, with the edge's noise floor."""
        return [{k: _clean(v) for k, v in r.items()}
                for r in flow_sql.flows(self.cursor(), threshold, self.mode(mode))]

    def floors(self, threshold: float, mode: str | None = None) -> list[dict]:
        """Per replicated member: the seed-control noise floor at `threshold` under `mode`, with the
        distribution of its replica match r."""
        mode = self.mode(mode)
        fl = flow_sql.floors(self.cursor(), threshold, mode)
        reps = self.q("SELECT * FROM sae_replicas ORDER BY model, replica")
        out = []
        for m in self.models:
            if m["model"] in fl:
                out.append({**fl[m["model"]], "label": m["label"], "mode": mode, "threshold": threshold,
                            "histogram": flow_sql.floor_histogram(self.cursor(), m["model"], mode),
                            "saes": [r for r in reps if r["model"] == m["model"]]})
        return out

    def origin_counts(self) -> list[dict]:
        """Alive features per model by the model their chain of persisting matches starts in (default threshold)."""
        return self.q("""
            SELECT f.model, f.origin_model, count(*) AS n FROM features f JOIN models m USING (model)
            JOIN models o ON o.model = f.origin_model
            WHERE f.alive GROUP BY f.model, f.origin_model, m.idx, o.idx ORDER BY m.idx, o.idx""")

    def emerged_in(self, threshold: float, mode: str | None = None) -> dict[str, int]:
        """Alive features of each non-root model that no parent feature reaches (over all its parents)."""
        return flow_sql.emerged_in(self.cursor(), threshold, self.mode(mode))

    # -- features -----------------------------------------------------------------------------
    def feature(self, model: str, feature: int) -> dict:
        row = self.feature_row(model, feature)
        row["label"] = self.label(model)
        hist = self.q1("SELECT edges, counts FROM feature_histograms WHERE model = ? AND feature = ?", [model, feature])
        row["histogram"] = hist or {"edges": [], "counts": []}
        row["logits"] = self.q("""
            SELECT l.sign, l.rank, l.token_id, v.text, l.value FROM feature_logits l JOIN vocab v USING (token_id)
            WHERE l.model = ? AND l.feature = ? ORDER BY l.sign, l.rank""", [model, feature])
        row["top_tokens"] = self.q("""
            SELECT t.rank, t.token_id, v.text, t.count, t.mean_act, t.total_act FROM feature_top_tokens t
            JOIN vocab v USING (token_id) WHERE t.model = ? AND t.feature = ? ORDER BY t.rank""", [model, feature])
        return row

    def explanation(self, model: str, feature: int) -> dict | None:
        return self.q1("SELECT * EXCLUDE (model, feature) FROM explanations WHERE model = ? AND feature = ?",
                       [model, feature])

    def score_distributions(self) -> list[dict]:
        """Per model, explained features' simulation and detection scores, split persisting vs not
        (the paper's Figure 6). `persisting` is NULL for models without children."""
        return self.q("""
            SELECT e.model, m.label, e.explainer, e.sim_score, e.detection_score,
                   CASE WHEN f.fate IN ('persisting', 'disappearing') THEN f.fate = 'persisting' END AS persisting
            FROM explanations e JOIN features f USING (model, feature) JOIN models m USING (model)
            WHERE e.status = 'ok' ORDER BY m.idx, e.feature""")

    def autointerp_summary(self) -> list[dict]:
        return self.q("""
            SELECT s.*, m.label,
                   (SELECT count(*) FROM explanations e WHERE e.model = s.model AND e.status = 'ok') AS explained,
                   (SELECT count(*) FROM explanations e WHERE e.model = s.model AND e.status = 'failed') AS failed,
                   (SELECT count(*) FROM explanations e WHERE e.model = s.model AND e.status = 'skipped') AS skipped,
                   (SELECT avg(sim_score) FROM explanations e WHERE e.model = s.model) AS mean_sim,
                   (SELECT avg(detection_score) FROM explanations e WHERE e.model = s.model) AS mean_detection,
                   (SELECT first(explainer) FROM explanations e WHERE e.model = s.model) AS explainer
            FROM autointerp_spend s JOIN models m USING (model) ORDER BY m.idx""")

    def cases(self) -> list[dict]:
        return self.q("SELECT * FROM cases ORDER BY slug")

    def case(self, slug: str) -> dict:
        c = self.q1("SELECT * FROM cases WHERE slug = ?", [slug])
        if c is None:
            have = ", ".join(r["slug"] for r in self.cases()) or "none"
            raise NotFound(f"no case study '{slug}' in run '{self.run['name']}' (cases: {have})")
        c["hops"] = self.q("SELECT * FROM case_hops WHERE slug = ? ORDER BY step", [slug])
        return c

    def examples(self, model: str, feature: int, kinds: str = "all") -> list[dict]:
        """Example windows with every token's text, id and this feature's activation.

        Two indexed reads: the feature's example rows, then every token they cover in one query
        (a correlated per-window join scans the whole sample: 30x slower at paper scale)."""
        where = "" if kinds == "all" else " AND kind = 'top'"
        rows = self.q(f"""SELECT kind, rank, center, start, "end", acts FROM examples
                          WHERE model = ? AND feature = ?{where}
                          ORDER BY kind = 'top' DESC, kind DESC, rank""", [model, feature])
        wanted = sorted({i for r in rows for i in range(r["start"], r["end"])})
        toks = {t["token_index"]: t for t in self.q("""
            SELECT s.token_index, s.token_id, s.domain, v.text FROM sample_tokens s JOIN vocab v USING (token_id)
            WHERE s.token_index IN (SELECT unnest(?::BIGINT[]))""", [wanted])} if wanted else {}
        for r in rows:
            r["domain"] = toks[r["center"]]["domain"]
            r["tokens"] = [{"text": toks[i]["text"], "id": toks[i]["token_id"], "act": float(a), "center": i == r["center"]}
                           for i, a in zip(range(r["start"], r["end"]), r.pop("acts"))]
        return rows

    def activations_at(self, model: str, feature: int, start: int, end: int) -> list[float]:
        """A feature's activation on sample tokens [start, end): from the stored examples it appears in,
        else from its row in `activation_values` when the store keeps all activations."""
        rows = self.q("""SELECT token_index, act FROM activation_values
                         WHERE model = ? AND feature = ? AND token_index >= ? AND token_index < ?""",
                      [model, feature, start, end])
        out = [0.0] * (end - start)
        for r in rows:
            out[r["token_index"] - start] = r["act"]
        return out

    def correlation(self, ma: str, fa: int, mb: str, fb: int) -> float | None:
        """Exact Pearson r of two features over the whole shared sample, from their sparse activations."""
        n = self.run["sample_tokens"]
        row = self.cursor().execute("""
            WITH a AS (SELECT token_index, act::DOUBLE AS x FROM activation_values WHERE model = ? AND feature = ?),
                 b AS (SELECT token_index, act::DOUBLE AS y FROM activation_values WHERE model = ? AND feature = ?)
            SELECT (SELECT sum(x) FROM a), (SELECT sum(x * x) FROM a), (SELECT sum(y) FROM b),
                   (SELECT sum(y * y) FROM b), (SELECT sum(x * y) FROM a JOIN b USING (token_index))""",
            [ma, fa, mb, fb]).fetchone()
        sa, saa, sb, sbb, sab = (v or 0.0 for v in row)
        var_a, var_b = saa / n - (sa / n) ** 2, sbb / n - (sb / n) ** 2
        if var_a <= 0 or var_b <= 0:
            return None
        return (sab / n - (sa / n) * (sb / n)) / math.sqrt(var_a * var_b)

    def matches(self, model: str, feature: int, threshold: float) -> dict:
        """Best matches in every parent (c2p) and child (p2c) model, each with r and whether it persists."""
        up = self.q("""SELECT parent AS model, dst AS feature, rank, r FROM matches
                       WHERE child = ? AND direction = 'c2p' AND src = ? AND similarity = ?
                       ORDER BY parent, rank""", [model, feature, self.similarity])
        down = self.q("""SELECT child AS model, dst AS feature, rank, r FROM matches
                         WHERE parent = ? AND direction = 'p2c' AND src = ? AND similarity = ?
                         ORDER BY child, rank""", [model, feature, self.similarity])
        for r in up + down:
            r["persists"] = r["r"] > threshold
            r["label"] = self.label(r["model"])
        return {"parents": up, "children": down}

    def best_parent(self, model: str, feature: int) -> dict | None:
        return self.q1("""SELECT parent AS model, dst AS feature, r FROM matches
                          WHERE child = ? AND direction = 'c2p' AND src = ? AND rank = 0 AND similarity = ?
                          ORDER BY r DESC LIMIT 1""", [model, feature, self.similarity])

    def best_children(self, model: str, feature: int) -> list[dict]:
        return self.q("""SELECT child AS model, dst AS feature, r FROM matches
                         WHERE parent = ? AND direction = 'p2c' AND src = ? AND rank = 0 AND similarity = ?""",
                      [model, feature, self.similarity])

    def lineage(self, model: str, feature: int, threshold: float) -> dict:
        """The feature's lineage at `threshold`: the chain of best persisting parent matches up to its
        origin, and the tree of best persisting child matches down to the leaves."""
        up: list[dict] = []
        m, f = model, feature
        while True:
            bp = self.best_parent(m, f)
            if bp is None or bp["r"] <= threshold:
                break
            up.append({"model": bp["model"], "label": self.label(bp["model"]), "feature": bp["feature"],
                       "r_to_next": bp["r"]})
            m, f = bp["model"], bp["feature"]
        up.reverse()

        def down(m: str, f: int, depth: int) -> list[dict]:
            out = []
            for c in self.best_children(m, f):
                node = {"model": c["model"], "label": self.label(c["model"]), "feature": c["feature"], "r": c["r"],
                        "persists": c["r"] > threshold}
                node["children"] = down(c["model"], c["feature"], depth + 1) if node["persists"] and depth < 16 else []
                out.append(node)
            return out

        origin = up[0] if up else {"model": model, "feature": feature}
        fate = self._fate(model, feature, threshold)
        return {"ancestors": up, "descendants": down(model, feature, 0), "origin": origin, "fate": fate}

    def _fate(self, model: str, feature: int, threshold: float) -> str:
        row = self.feature_row(model, feature)
        if not row["alive"]:
            return "dead"
        parts = []
        if self.parents(model):
            bp = self.best_parent(model, feature)
            parts.append("inherited" if bp and bp["r"] > threshold else "emerging")
        kids = self.best_children(model, feature)
        if kids:
            parts.append("persisting" if any(k["r"] > threshold for k in kids) else "disappearing")
        return ", ".join(parts) or "alive"

    # -- browse / search ------------------------------------------------------------------------
    SORTS = {"density": "f.density DESC", "max_act": "f.max_act DESC", "feature": "f.feature",
             "sim_score": "e.sim_score DESC NULLS LAST", "llr": "f.top_token_llr DESC NULLS LAST",
             "parent_r": "f.parent_r DESC NULLS LAST", "best_child_r": "f.best_child_r DESC NULLS LAST"}

    def search(self, model: str | None, fate: str | None, min_density: float, max_density: float,
               token: str | None, sort: str, page: int, per_page: int, text: str | None = None) -> dict:
        where = ["f.density >= ? AND f.density <= ?"]
        params: list = [min_density, max_density]
        if model:
            self.model(model)
            where.append("f.model = ?")
            params.append(model)
        if fate:
            where.append("f.fate = ?")
            params.append(fate)
        if token:
            where.append("v.text ILIKE ?")
            params.append(f"%{token}%")
        if text:
            where.append("e.explanation ILIKE ?")
            params.append(f"%{text}%")
        w = " AND ".join(where)
        base = (f"FROM features f JOIN models m USING (model) LEFT JOIN vocab v ON v.token_id = f.top_token_id "
                f"LEFT JOIN explanations e USING (model, feature) WHERE {w}")
        total = self.cursor().execute(f"SELECT count(*) {base}", params).fetchone()[0]
        rows = self.q(f"""SELECT f.model, m.label, f.feature, f.density, f.max_act, f.fate, f.parent_r,
                                 f.best_child_r, f.origin_model, v.text AS top_token, f.top_token_share,
                                 f.top_token_llr, e.explanation, e.explainer, e.sim_score
                          {base} ORDER BY {self.SORTS[sort]}, m.idx, f.feature LIMIT ? OFFSET ?""",
                      params + [per_page, (page - 1) * per_page])
        return {"total": total, "page": page, "per_page": per_page, "pages": max(1, -(-total // per_page)),
                "rows": rows}

    def fates(self) -> list[str]:
        return [r["fate"] for r in self.q("SELECT DISTINCT fate FROM features ORDER BY fate")]

    # -- merges ---------------------------------------------------------------------------------
    def merges(self) -> list[dict]:
        out = []
        for meta in self.q("SELECT * FROM slerp_meta s JOIN models m USING (model) ORDER BY m.idx"):
            meta["curve_domains"] = json.loads(meta.pop("curve_domains_json"))
            meta["points"] = self.q("""SELECT t, source, domain, loss, accuracy FROM slerp_curve
                                       WHERE model = ? ORDER BY t, domain""", [meta["model"]])
            meta["baselines"] = self.q("SELECT root, domain, loss, accuracy FROM slerp_baselines WHERE model = ?",
                                       [meta["model"]])
            out.append(meta)
        return out

    # -- fingerprints -----------------------------------------------------------------------------
    VARIANTS = ("delta-hidden", "delta-mlp", "delta-logits")

    def fingerprint_overview(self, variant: str) -> dict:
        ents = self.q("""SELECT entity, kind, model, base, label, norm FROM fingerprints
                         WHERE variant = ? AND kind IN ('member', 'pool') ORDER BY kind, entity""", [variant])
        return {
            "entities": ents,
            "similarity": self.q("SELECT a, b, cos FROM fingerprint_similarity WHERE variant = ?", [variant]),
            "map": self.q("""SELECT m.method, m.entity, m.x, m.y, f.kind, f.label FROM fingerprint_map m
                             JOIN fingerprints f ON f.entity = m.entity AND f.variant = m.variant
                             WHERE m.variant = ? ORDER BY f.kind, m.entity""", [variant]),
            "stats": self.q1("SELECT * FROM fingerprint_stats WHERE variant = ?", [variant]),
            "probe_counts": self.q("SELECT k, silhouette, mean_cos_to_all FROM fingerprint_probe_counts ORDER BY k"),
            "additivity": self.q("""SELECT model, t, cos_interp, rel_norm_interp, cos_sum, rel_norm_sum
                                    FROM fingerprint_additivity WHERE variant = ? ORDER BY model, t""", [variant]),
        }

    def model_fingerprint(self, model: str, variant: str) -> dict:
        self.model(model)
        return {
            "fingerprint": self.q1("""SELECT entity, base, label, norm FROM fingerprints
                                      WHERE entity = ? AND variant = ?""", [model, variant]),
            "neighbours": self.q("""SELECT rank, other, cos FROM fingerprint_neighbours
                                    WHERE entity = ? AND variant = ? ORDER BY rank""", [model, variant]),
            "features_behind": self.q("""
                SELECT b.rank_by, b.rank, b.feature, b.base, b.base_mean, b.child_mean, b.delta_mean, b.base_rate,
                       b.child_rate, b.delta_rate, e.explanation
                FROM fingerprint_features b LEFT JOIN explanations e ON e.model = b.base AND e.feature = b.feature
                WHERE b.model = ? ORDER BY b.rank_by, b.rank""", [model]),
        }


@dataclass
class Ref:
    """`model:feature` as used in /compare."""

    model: str
    feature: int

    @classmethod
    def parse(cls, s: str) -> "Ref":
        model, sep, feat = s.rpartition(":")
        if not sep or not model or not feat.lstrip("-").isdigit():
            raise ValueError(f"'{s}' is not of the form model:feature (e.g. lua:12)")
        return cls(model, int(feat))
