"""Every SQL query the explorer runs. Read-only, bound parameters only; the one read of a whole table's rows is
the per-(threshold, mode) index of every feature's partners, fates and seed stability (`Store._index`).

`Store` opens the run's DuckDB file read-only and hands each request its own cursor. Functions return
plain dicts / lists ready for JSON and templates; the schema they read is `featureflow/store/schema.py`.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from featureflow.modes import RULES, split_mode
from featureflow import merges as merge_methods
from featureflow.store import flows as flow_sql
from featureflow.store import summary
from featureflow.store.rows import dicts


def run_timings(text: str | None) -> dict:
    """`runs.timings_json` as {"stages": [{stage, seconds}], "total": s, "hardware": {...}}; stores built before
    per-stage timings were recorded give no stages."""
    raw = json.loads(text) if text else {}
    stages = raw.get("stages") if isinstance(raw.get("stages"), dict) else {}
    rows = [{"stage": k, "seconds": float(v)} for k, v in stages.items()]
    return {"stages": rows, "total": sum(r["seconds"] for r in rows), "hardware": raw.get("hardware") or {}}


class StoreError(RuntimeError):
    pass


class NotFound(LookupError):
    """A model / feature / case that does not exist; the message says what does."""


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


def _deep_clean(v: Any) -> Any:
    """`_clean` through nested dicts and lists."""
    if isinstance(v, dict):
        return {k: _deep_clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_deep_clean(x) for x in v]
    return _clean(v)


def like_literal(text: str) -> str:
    """`text` for a LIKE pattern with ESCAPE '\\': its wildcards (% _) and the escape itself match literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def memo(fn):
    """Keep a Store method's answers per arguments (the store never changes while it is open; at most 256
    argument sets, e.g. thresholds, least recently used out); each caller gets its own deep copy to change."""
    cached = functools.lru_cache(maxsize=256)(fn)

    @functools.wraps(fn)
    def fresh(*args, **kwargs):
        return copy.deepcopy(cached(*args, **kwargs))

    return fresh


class Store:
    def __init__(self, path: str | Path, threads: int | None = None):
        """`threads`: DuckDB's threads per query (default: DuckDB's, every core). A server of several worker
        processes gives each its share of the cores: the workers already fill them, and a feature page's three
        point reads cost 20% less CPU on one thread than on two (measured: 4.8 against 5.9 ms)."""
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"store '{self.path}' does not exist (run `featureflow run --config ...` first)")
        self._con = duckdb.connect(str(self.path), read_only=True)
        if threads:  # a setting, not the connection's config: one process may open the file again with defaults
            self._con.execute(f"SET threads = {int(threads)}")
        self._indices: OrderedDict[tuple, dict] = OrderedDict()  # `_index`: (kind, threshold, mode) -> entry
        self._index_lock = threading.Lock()
        self._local = threading.local()
        self._vocab: dict[int, str] | None = None
        why = summary.schema_mismatch(self._con, self.path)
        if why:
            raise StoreError(why)
        self.run = self.q1("SELECT * FROM runs")
        self.timings = run_timings(self.run.get("timings_json"))
        self.modes = list(self.run["modes"])
        self.default_mode = self.run["default_mode"]
        self.models = self.q("SELECT * FROM models ORDER BY idx")
        self.model_names = [m["model"] for m in self.models]
        self.model_idx = {m["model"]: m["idx"] for m in self.models}
        self.edges = self.q("SELECT e.* FROM model_edges e JOIN models c ON c.model = e.child "
                            "JOIN models p ON p.model = e.parent ORDER BY c.idx, p.idx")
        self.has_crosscoders = bool(self.q1("SELECT count(*) AS n FROM crosscoders")["n"])

    # -- plumbing ---------------------------------------------------------------------------
    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._con.cursor()
        return cur

    def q(self, sql: str, params: list | dict | None = None) -> list[dict]:
        return dicts(self.cursor().execute(sql, params or []), clean=_clean)  # NaN, inf -> None

    def q1(self, sql: str, params: list | dict | None = None) -> dict | None:
        rows = self.q(sql, params)
        return rows[0] if rows else None

    def close(self) -> None:
        self._indices.clear()
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
    @memo
    def overview_models(self) -> list[dict]:
        rows = [{k: _clean(v) for k, v in r.items()} for r in summary.sae_health(self.cursor())]
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

    @memo
    def flows(self, threshold: float, mode: str | None = None) -> list[dict]:
        """Per edge at `threshold` under `mode`, from the stored matches, with the edge's noise floor."""
        return [{k: _clean(v) for k, v in r.items()}
                for r in flow_sql.flows(self.cursor(), threshold, self.mode(mode))]

    @memo
    def floors(self, threshold: float, mode: str | None = None) -> list[dict]:
        """Per replicated member: the seed-control noise floor at `threshold` under `mode`, with the
        distribution of its replica match r."""
        return _deep_clean(summary.member_floors(self.cursor(), threshold, self.mode(mode)))

    @functools.cached_property
    def replicated(self) -> list[str]:
        """Members with seed replicas (rows in `noise_floor`), in family order."""
        have = {r["model"] for r in self.q("SELECT DISTINCT model FROM noise_floor")}
        return [m for m in self.model_names if m in have]

    INDEX_KINDS = ("partners", "fates", "stability")
    INDEX_KEEP = 4  # (threshold, mode) pairs kept per kind: a paper-scale partners index is tens of MB

    def _index(self, kind: str, threshold: float, mode: str) -> dict:
        """Every feature's partners (`flows.all_partners`, keyed (model, feature, direction): tuples (other model,
        other feature, r, persists) in `flows.PARTNER_ORDER`), fate (`flows.all_fates`, keyed (model, feature))
        or seed stability (`flows.all_stability`) at `threshold` under `mode` (already resolved by `self.mode`),
        each read in one statement by the store's one rule; the `INDEX_KEEP` most recent (threshold, mode) of each
        kind are kept. A feature page never seen before then reads none of them (a few ms of SQL planning each,
        several per lineage) and pays a dict lookup. One thread builds a missing index; others asking for it
        wait for that one rather than read it again."""
        if kind not in self.INDEX_KINDS:
            raise ValueError(f"no index of {kind!r} (kinds: {', '.join(self.INDEX_KINDS)})")
        key = (kind, threshold, mode)
        with self._index_lock:
            entry = self._indices.get(key)
            if entry is None:
                entry = self._indices[key] = {"ready": threading.Event(), "value": None}
                build = True
            else:
                self._indices.move_to_end(key)
                build = False
        if not build:
            entry["ready"].wait()
            if entry["value"] is None:  # the builder failed: try again here
                return self._index(kind, threshold, mode)
            return entry["value"]
        try:
            cur = self.cursor()
            if kind == "partners":
                value: dict = {}
                for model, feature, direction, other, dst, r, persists in flow_sql.all_partners(cur, threshold, mode):
                    value.setdefault((model, feature, direction), []).append((other, dst, _clean(r), persists))
            elif kind == "fates":
                value = {(m, f): label for m, f, label in flow_sql.all_fates(cur, threshold, mode)}
            else:
                value = flow_sql.all_stability(cur, threshold, mode)
            entry["value"] = value
            return value
        finally:
            with self._index_lock:
                if entry["value"] is None:
                    self._indices.pop(key, None)
                else:
                    same = [k for k in self._indices if k[0] == kind and self._indices[k]["value"] is not None]
                    for old in same[:-self.INDEX_KEEP]:
                        del self._indices[old]
            entry["ready"].set()

    def stability(self, model: str, feature: int, threshold: float, mode: str | None = None) -> dict | None:
        """A feature's seed stability at `threshold` under `mode` (`flows.all_stability`); None without
        replicas."""
        self.model(model)
        got = self._index("stability", threshold, self.mode(mode)).get((model, feature))
        return copy.deepcopy(got)
    @functools.cached_property
    def planted_scores(self) -> dict[tuple[str, str, str], dict]:
        """The planted scorecard's rows (`planted_scores`) by (mode, population, fate): calls, correct, precision;
        empty without a planted section."""
        return {(r.pop("mode"), r.pop("population"), r.pop("fate")): r for r in self.q(
            'SELECT mode, population, fate, calls, correct, "precision" FROM planted_scores')}

    @functools.cached_property
    def planted_threshold(self) -> float | None:
        """The threshold the planted scorecard was computed at (None without one)."""
        meta = self.q1("SELECT threshold FROM planted_meta")
        return None if meta is None else meta["threshold"]

    def call_precision(self, fate_label: str, threshold: float, mode: str, stability: dict | None) -> list[dict]:
        """How often calls like a feature's were right on this run's planted family: for each scored fate in its
        label ('inherited, persisting' -> both), the scorecard's precision under `mode` among reproducible latents
        when the feature is reproducible (`stability`), else among all alive latents. Empty without a scorecard,
        at a threshold other than the one it was scored at, or for a mode or fate it does not score (uncertain is
        left out of precision: it calls neither way)."""
        if self.planted_threshold is None or self.planted_threshold != threshold:
            return []
        population = "reproducible" if stability and stability.get("stable") else "all"
        out = []
        for fate in (part.strip() for part in fate_label.split(",")):
            row = self.planted_scores.get((mode, population, fate))
            if row is not None and row["calls"]:
                out.append({"fate": fate, "population": population, **row})
        return out

    def planted(self) -> dict | None:
        """The planted-family scorecard of this run (None when its config has no planted section): scores per
        mode, population and fate, recall by drift angle, split detection, every SAE's MCC, the config and
        the planted edits."""
        meta = self.q1("SELECT * FROM planted_meta")
        if meta is None:
            return None
        scores = self.q('SELECT * FROM planted_scores ORDER BY mode, population, fate')
        return {"threshold": meta["threshold"], "seconds": meta["seconds"],
                "config": json.loads(meta["config_json"]), "truth": json.loads(meta["truth_json"]),
                "scores": scores,
                "drift": self.q("SELECT * FROM planted_drift ORDER BY mode, angle"),
                "calls": self.q("SELECT * FROM planted_calls ORDER BY mode, population, fate, n DESC, truth"),
                "split": self.q("SELECT * FROM planted_split ORDER BY mode, population"),
                "saes": self.q("SELECT * FROM planted_saes ORDER BY model, replica"),
                **({"evidence": ev} if (ev := self.q(
                    "SELECT * FROM planted_evidence ORDER BY kind, parent, child, metric")) else {})}

    @memo
    def emerged_in(self, threshold: float, mode: str | None = None) -> dict[str, int]:
        """Alive features of each non-root model that no parent feature reaches (over all its parents)."""
        return flow_sql.emerged_in(self.cursor(), threshold, self.mode(mode))

    @memo
    def node_flows(self, threshold: float, mode: str | None = None, reproducible: bool = False) -> list[dict]:
        """Each alive feature once per model node (the Sankey): see `flows.node_flows`; with `reproducible`,
        only the reproducible features of members with seed replicas."""
        return flow_sql.node_flows(self.cursor(), threshold, self.mode(mode), reproducible)

    def edge(self, parent: str, child: str) -> dict:
        """An edge of the family, or NotFound naming the edges there are."""
        for e in self.edges:
            if e["parent"] == parent and e["child"] == child:
                return e
        self.model(parent), self.model(child)
        have = ", ".join(f"{e['parent']} -> {e['child']}" for e in self.edges) or "none"
        raise NotFound(f"'{parent}' -> '{child}' is not an edge of run '{self.run['name']}' (edges: {have})")

    # ------------------------------------------------------------------------------ crosscoders
    CROSSCODER_SORTS = {"rho": "rho", "fire_rate": "fire_rate", "latent": "latent", "nu_e": "nu_e"}

    def crosscoder(self, parent: str, child: str) -> dict | None:
        """The edge's crosscoder (`crosscoders`), or None when the run trained none."""
        self.edge(parent, child)
        return self.q1("SELECT * FROM crosscoders WHERE parent = ? AND child = ?", [parent, child])

    def crosscoder_latents(self, parent: str, child: str, call: str | None, sort: str, descending: bool, page: int,
                           per_page: int) -> dict:
        """One page of an edge's crosscoder latents (dead ones left out), optionally of one call, each with its top
        tokens' text."""
        where, params = "parent = ? AND child = ? AND call <> 'dead'", [parent, child]
        if call:
            where += " AND call = ?"
            params.append(call)
        total = self.q1(f"SELECT count(*) AS n FROM crosscoder_latents WHERE {where}", params)["n"]
        col = self.CROSSCODER_SORTS[sort]
        rows = self.q(f"""SELECT l.*, (SELECT list(v.text ORDER BY t.i) FROM unnest(l.top_tokens) WITH ORDINALITY
                                      AS t(idx, i) JOIN sample_tokens s ON s.token_index = t.idx
                                      JOIN vocab v ON v.token_id = s.token_id) AS top_text
                         FROM crosscoder_latents l WHERE {where}
                         ORDER BY {col} {'DESC' if descending else 'ASC'} NULLS LAST, latent
                         LIMIT ? OFFSET ?""", params + [per_page, (page - 1) * per_page])
        return {"total": total, "page": page, "per_page": per_page, "pages": max(1, -(-total // per_page)),
                "rows": rows}

    def crosscoder_rho(self, parent: str, child: str, bins: int = 20) -> dict:
        """The relative norms of the edge's alive latents as a histogram over [0, 1]."""
        rows = self.q("""SELECT least(floor(rho * ?)::INTEGER, ? - 1) AS b, count(*) AS n FROM crosscoder_latents
                         WHERE parent = ? AND child = ? AND rho IS NOT NULL GROUP BY b ORDER BY b""",
                      [bins, bins, parent, child])
        counts = [0] * bins
        for r in rows:
            counts[r["b"]] = r["n"]
        return {"edges": [i / bins for i in range(bins + 1)], "counts": counts}

    def crosscoder_agreement(self, parent: str, child: str, threshold: float, mode: str | None) -> dict:
        """How many SAE fates the crosscoder confirms on this edge (`summary.crosscoder_agreement`)."""
        return summary.crosscoder_agreement(self.cursor(), parent, child, threshold, self.mode(mode))

    def feature_crosscoder(self, model: str, feature: int) -> list[dict]:
        """The crosscoder latents whose best SAE feature in `model` is this one, best first."""
        return self.q("""SELECT parent, child, latent, call, rho, CASE WHEN parent = ? THEN parent_r ELSE child_r END
                                AS r
                         FROM crosscoder_latents
                         WHERE (parent = ? AND parent_feature = ?) OR (child = ? AND child_feature = ?)
                         ORDER BY r DESC NULLS LAST LIMIT 3""", [model, model, feature, model, feature])

    def edge_features(self, parent: str, child: str, fate: str, threshold: float, mode: str | None, sort: str,
                      descending: bool, page: int, per_page: int, stable: bool | None = None,
                      token: bool | None = None) -> dict:
        """One page of the features behind a flow count of edge parent -> child (see `flows.edge_features`),
        each with a short highlighted context around its top activation."""
        self.edge(parent, child)
        total, rows = flow_sql.edge_features(self.cursor(), parent, child, fate, threshold, self.mode(mode), sort,
                                             descending, per_page, (page - 1) * per_page, stable, token)
        model = parent if flow_sql.EDGE_FATES[fate] == "p2c" else child
        snippets = self.snippets(model, [r["feature"] for r in rows])
        for r in rows:
            r["match_model"] = child if model == parent else parent
            r["snippet"] = snippets.get(r["feature"], [])
        return {"total": total, "page": page, "per_page": per_page, "pages": max(1, -(-total // per_page)),
                "rows": rows}

    def snippets(self, model: str, features: list[int], radius: int = 4) -> dict[int, list[dict]]:
        """Per feature: the tokens of its top example within `radius` of the peak, with activations."""
        if not features:
            return {}
        rows = self.q("""SELECT feature, center, start, acts FROM examples
                         WHERE model = ? AND kind = 'top' AND rank = 0
                           AND feature IN (SELECT unnest(?::INTEGER[]))""", [model, features])
        spans = {r["feature"]: (max(r["start"], r["center"] - radius), r["center"] + radius + 1, r) for r in rows}
        wanted = sorted({i for lo, hi, _ in spans.values() for i in range(lo, hi)})
        toks = {t["token_index"]: t for t in self.q("""
            SELECT s.token_index, s.token_id, v.text FROM sample_tokens s JOIN vocab v USING (token_id)
            WHERE s.token_index IN (SELECT unnest(?::BIGINT[]))""", [wanted])} if wanted else {}
        out = {}
        for f, (lo, hi, r) in spans.items():
            acts = r["acts"]
            out[f] = [{"text": toks[i]["text"], "id": toks[i]["token_id"], "act": float(acts[i - r["start"]]),
                       "center": i == r["center"]} for i in range(lo, hi)
                      if i in toks and i - r["start"] < len(acts)]
        return out

    # -- features -----------------------------------------------------------------------------
    def feature(self, model: str, feature: int) -> dict:
        """The feature's row with its histogram and its explanation (`explanation`, as `explanation()` reads it;
        one read), its logit effects and top tokens (one read), the tokens' texts from the vocabulary held in
        memory: a feature page seen for the first time pays two reads here, not a read per table and a join
        with `vocab`."""
        m = self.model(model)
        row = self.q1("""SELECT f.*, h.edges AS _hist_edges, h.counts AS _hist_counts, e AS _explanation
                         FROM features f
                         LEFT JOIN feature_histograms h ON h.model = f.model AND h.feature = f.feature
                         LEFT JOIN explanations e ON e.model = f.model AND e.feature = f.feature
                         WHERE f.model = ? AND f.feature = ?""", [model, feature])
        if row is None:
            self.feature_row(model, feature)  # raises NotFound, saying which features exist
        e = row.pop("_explanation")
        row["explanation"] = ({k: _clean(v) for k, v in e.items() if k not in ("model", "feature")}
                              if e is not None and e.get("model") is not None else None)
        edges, counts = row.pop("_hist_edges"), row.pop("_hist_counts")
        row["label"] = m["label"]
        row["histogram"] = {"edges": edges, "counts": counts} if edges is not None else {"edges": [], "counts": []}
        toks = self.cursor().execute("""
            SELECT 'logit' AS kind, sign, rank, token_id, value, NULL AS count, NULL AS mean_act, NULL AS total_act
            FROM feature_logits WHERE model = $model AND feature = $feature
            UNION ALL
            SELECT 'top', NULL, rank, token_id, NULL, count, mean_act, total_act
            FROM feature_top_tokens WHERE model = $model AND feature = $feature
            ORDER BY kind, sign, rank""", {"model": model, "feature": feature}).fetchall()
        text = self.vocab_texts()
        row["logits"] = [{"sign": sign, "rank": rank, "token_id": tid, "text": text[tid], "value": _clean(value)}
                         for kind, sign, rank, tid, value, *_ in toks if kind == "logit"]
        row["top_tokens"] = [{"rank": rank, "token_id": tid, "text": text[tid], "count": count,
                              "mean_act": _clean(mean_act), "total_act": _clean(total_act)}
                             for kind, _, rank, tid, _, count, mean_act, total_act in toks if kind == "top"]
        return row

    @functools.cached_property
    def evidence_kinds(self) -> dict[str, dict]:
        """The store's evidence kinds (`evidence_kinds`): kind -> {label, side, reads, doc, measures: [{name, label,
        doc}]}, read from the store (a kind this process never registered reads the same)."""
        rows = self.q("SELECT * FROM evidence_kinds ORDER BY kind")
        return {r["kind"]: {k: v for k, v in r.items() if k not in ("kind", "measures_json")}
                | {"measures": json.loads(r["measures_json"])} for r in rows}

    @functools.cached_property
    def control_labels(self) -> dict[str, str]:
        """control -> its label (`controls`)."""
        return dict(self.cursor().execute("SELECT control, label FROM controls").fetchall())

    def feature_evidence(self, model: str, feature: int) -> list[dict]:
        """Every evidence kind's values for one feature, on each edge where the feature is on the kind's side:
        [{kind, label, parent, child, parent_label, child_label, values: [{measure, label, value}]}]."""
        if not self.evidence_kinds:
            return []
        rows = self.q("""SELECT e.kind, e.parent, e.child, e.measure, e.value FROM evidence e
                         JOIN evidence_kinds k ON k.kind = e.kind
                         WHERE e.feature = $feature
                           AND CASE k.side WHEN 'parent' THEN e.parent ELSE e.child END = $model
                         ORDER BY e.kind, e.child IN (SELECT control FROM controls), e.parent, e.child""",
                      {"model": model, "feature": feature})
        out: dict[tuple, dict] = {}
        for r in rows:
            kind = self.evidence_kinds[r["kind"]]
            entry = out.setdefault((r["kind"], r["parent"], r["child"]), {
                "kind": r["kind"], "label": kind["label"], "parent": r["parent"], "child": r["child"],
                "parent_label": self.label(r["parent"]), "values": {},
                "child_label": (self.control_labels[r["child"]] if r["child"] in self.control_labels
                                else self.label(r["child"])), "control": r["child"] in self.control_labels})
            entry["values"][r["measure"]] = r["value"]
        for e in out.values():  # in the kind's order of measures, each with its label
            measures = self.evidence_kinds[e["kind"]]["measures"]
            e["values"] = [{"measure": m["name"], "label": m["label"], "value": e["values"].get(m["name"]),
                            "feature": bool(m.get("feature")), "count": bool(m.get("count"))} for m in measures]
            e["other"] = e["child"] if self.evidence_kinds[e["kind"]]["side"] == "parent" else e["parent"]
        return list(out.values())

    def cross_health(self) -> list[dict]:
        """Each SAE on another model's activations beside that model's own SAE (`summary.cross_health`)."""
        return summary.cross_health(self.cursor(), {m: self.label(m) for m in self.model_names})

    def evidence_summary(self) -> list[dict]:
        """Per evidence kind, edge and measure: features with a value, their mean, and the 10th, 50th and 90th
        percentiles (`summary.evidence_summary`, the report's too)."""
        return summary.evidence_summary(self.cursor(), {m: self.label(m) for m in self.model_names})

    def vocab_texts(self) -> dict[int, str]:
        """token_id -> text of the whole vocabulary, read once (a few thousand short strings)."""
        if self._vocab is None:
            self._vocab = dict(self.cursor().execute("SELECT token_id, text FROM vocab").fetchall())
        return self._vocab

    def explanation(self, model: str, feature: int) -> dict | None:
        return self.q1("SELECT * EXCLUDE (model, feature) FROM explanations WHERE model = ? AND feature = ?",
                       [model, feature])

    def score_distributions(self, threshold: float, mode: str | None = None) -> list[dict]:
        """Per model, explained features' simulation and detection scores, split persisting vs not at
        `threshold` under `mode` (the paper's Figure 6; `flows.score_fates`). `persisting` is NULL for models
        without children."""
        return [{k: _clean(v) for k, v in r.items()}
                for r in flow_sql.score_fates(self.cursor(), threshold, self.mode(mode))]

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

    def cases(self, threshold: float, mode: str | None = None) -> list[dict]:
        """Every case with its hops at `threshold` under `mode` (see `case`)."""
        return [self.case(r["slug"], threshold, mode) for r in self.q("SELECT slug FROM cases ORDER BY slug")]

    def case(self, slug: str, threshold: float, mode: str | None = None) -> dict:
        """A case and its hops: the root feature's lineage (`lineage_hops`) at `threshold` under `mode`, kept to
        the case's `descendants` when it names some, each hop with its feature's LLR for the case's token
        (None: never fires on it); the mean r over the hops and whether every hop persists."""
        c = self.q1("SELECT * FROM cases WHERE slug = ?", [slug])
        if c is None:
            have = ", ".join(r["slug"] for r in self.q("SELECT slug FROM cases ORDER BY slug")) or "none"
            raise NotFound(f"no case study '{slug}' in run '{self.run['name']}' (cases: {have})")
        c.update(hops=[], mean_r=None, persists_everywhere=None, root_control=None)
        if c["status"] != "ok":
            return c
        c["root_control"] = self.control_match(c["root_model"], c["root_feature"], threshold, mode)
        hops = self.lineage_hops(c["root_model"], c["root_feature"], threshold, mode)
        if c["descendants"] is not None:
            hops = [h for h in hops if h["model"] in c["descendants"]]
        llr = self.case_llrs(slug, [(h["model"], h["feature"]) for h in hops])
        for h in hops:
            h["llr"] = llr.get((h["model"], h["feature"]))
        rs = [h["r"] for h in hops]
        c.update(hops=hops, mean_r=sum(rs) / len(rs) if rs else None,
                 persists_everywhere=bool(hops) and all(h["persists"] for h in hops))
        return c

    def control_match(self, model: str, feature: int, threshold: float, mode: str | None = None) -> dict | None:
        """The feature's match in its member's random-weights control and whether it is token-level
        (`flows.control_match`); None when its member has no control."""
        return flow_sql.control_match(self.cursor(), model, feature, threshold, self.mode(mode))

    def case_llrs(self, slug: str, features: list[tuple[str, int]]) -> dict[tuple[str, int], float]:
        """The stored LLR for the case's token of each (model, feature) that fires on it."""
        if not features:
            return {}
        rows = self.q("""SELECT l.model, l.feature, l.llr FROM case_llrs l
                         JOIN (SELECT unnest(?::VARCHAR[]) AS model, unnest(?::INTEGER[]) AS feature) w
                           USING (model, feature) WHERE l.slug = ?""",
                      [[m for m, _ in features], [f for _, f in features], slug])
        return {(r["model"], r["feature"]): r["llr"] for r in rows}

    def examples(self, model: str, feature: int, kinds: str = "all") -> list[dict]:
        """Example windows with every token's text, id and this feature's activation.

        Two indexed reads: the feature's example rows, then every token they cover in one query
        (a correlated per-window join scans the whole sample: 30x slower at paper scale)."""
        where = "" if kinds == "all" else " AND kind = 'top'"
        rows = self.q(f"""SELECT kind, rank, center, start, "end", acts FROM examples
                          WHERE model = ? AND feature = ?{where}
                          ORDER BY kind = 'top' DESC, kind DESC, rank""", [model, feature])
        wanted = sorted({i for r in rows for i in range(r["start"], r["end"])})
        # token index -> (token id, domain) as plain tuples (a feature's examples cover ~1,300 tokens: a dict
        # per row cost more than the read), texts from the vocabulary held in memory
        toks = {i: (tid, dom) for i, tid, dom in self.cursor().execute("""
            SELECT token_index, token_id, domain FROM sample_tokens
            WHERE token_index IN (SELECT unnest(?::BIGINT[]))""", [wanted]).fetchall()} if wanted else {}
        text = self.vocab_texts()
        for r in rows:
            r["domain"] = toks[r["center"]][1]
            r["act"] = float(r["acts"][r["center"] - r["start"]])  # the example's value: its centre token's
            r["tokens"] = [{"text": text[toks[i][0]], "id": toks[i][0], "act": float(a), "center": i == r["center"]}
                           for i, a in zip(range(r["start"], r["end"]), r.pop("acts"))]
        return rows

    @functools.cached_property
    def quantile_bins(self) -> int:
        """How many equal-count activation groups the quantile examples were drawn from (the run's
        `sample.quantile_bins`; else as many as there are quantile kinds)."""
        cfg = json.loads(self.run.get("config_json") or "{}")
        return int((cfg.get("sample") or {}).get("quantile_bins") or
                   self.cursor().execute("SELECT count(DISTINCT kind) FROM examples WHERE kind <> 'top'").fetchone()[0]
                   or 1)

    def quantile_ranges(self, model: str, feature: int) -> dict[str, dict]:
        """Per quantile kind ('q0' = lowest): the activation range [lo, hi] and token count of its group, made
        as the examples stage makes them: the feature's non-zero activations over the sample, ascending,
        cut into `quantile_bins` groups of equal count (numpy.array_split's sizes), empty groups skipped."""
        _, values = self._sparse(model, feature)
        groups = [g for g in np.array_split(np.sort(values), self.quantile_bins) if len(g)]
        return {f"q{i}": {"lo": float(g[0]), "hi": float(g[-1]), "n": len(g)} for i, g in enumerate(groups)}

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

    def _sparse(self, model: str, feature: int) -> tuple[np.ndarray, np.ndarray]:
        """A feature's non-zero activations over the sample: token indices (ascending) and values (float64)."""
        got = self.cursor().execute("""SELECT token_index, act FROM activation_values
                                       WHERE model = ? AND feature = ? ORDER BY token_index""",
                                    [model, feature]).fetchnumpy()
        return np.asarray(got["token_index"], dtype=np.int64), np.asarray(got["act"], dtype=np.float64)

    def joint_activations(self, ma: str, fa: int, mb: str, fb: int) -> dict:
        """Both features' activations on every sample token where either fires (ascending token index; 0 where
        one does not fire), how many sample tokens neither fires on, and their correlation `r` (each feature
        read once)."""
        (ia, xa), (ib, xb) = self._sparse(ma, fa), self._sparse(mb, fb)
        idx = np.union1d(ia, ib)
        a, b = np.zeros(len(idx)), np.zeros(len(idx))
        a[np.searchsorted(idx, ia)], b[np.searchsorted(idx, ib)] = xa, xb
        return {"token_index": idx, "a": a, "b": b, "neither": int(self.run["sample_tokens"]) - len(idx),
                "r": self._pearson((ia, xa), (ib, xb), (ma, fa) == (mb, fb))}

    def correlation(self, ma: str, fa: int, mb: str, fb: int) -> float | None:
        """Exact Pearson r of two features over the whole shared sample, from their sparse activations.

        The two pairs compared are chosen per request (any two features), so this is computed here, not
        stored; see `_pearson`."""
        return self._pearson(self._sparse(ma, fa), self._sparse(mb, fb), (ma, fa) == (mb, fb))

    def correlations(self, features: list[tuple[str, int]]) -> list[list[float | None]]:
        """The matrix of `correlation` over (model, feature) pairs, each feature's activations read once and
        each pair computed once (r is symmetric)."""
        acts = [self._sparse(m, f) for m, f in features]
        out = [[None] * len(features) for _ in features]
        for i in range(len(features)):
            for j in range(i, len(features)):
                out[i][j] = out[j][i] = self._pearson(acts[i], acts[j], features[i] == features[j])
        return out

    def _pearson(self, a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], same: bool) -> float | None:
        """Pearson r over the sample of two sparse activation vectors (token indices, values). The sums are
        exactly rounded (math.fsum), so identical requests give identical bits whatever DuckDB's thread count,
        and r is clamped to [-1, 1]; a feature with itself (`same`) is exactly 1. None when either never varies."""
        n = self.run["sample_tokens"]
        (ia, xa), (ib, xb) = a, b
        _, pa, pb = np.intersect1d(ia, ib, assume_unique=True, return_indices=True)
        sa, sb = math.fsum(xa), math.fsum(xb)
        var_a = math.fsum(xa * xa) / n - (sa / n) ** 2
        var_b = math.fsum(xb * xb) / n - (sb / n) ** 2
        if var_a <= 0 or var_b <= 0:
            return None
        if same:
            return 1.0  # by definition (the float formula can land an ulp either side)
        cov = math.fsum(xa[pa] * xb[pb]) / n - (sa / n) * (sb / n)
        return max(-1.0, min(1.0, cov / math.sqrt(var_a * var_b)))

    def matches(self, model: str, feature: int, threshold: float, mode: str | None = None) -> dict:
        """Top-k matches under `mode`'s similarity in every parent (c2p) and child (p2c) model, each with r and
        whether it persists."""
        sim = split_mode(self.mode(mode))[0]
        rows = self.q(f"""SELECT direction, CASE direction WHEN 'c2p' THEN parent ELSE child END AS model, dst AS feature,
                                rank, r, {flow_sql.PERSISTS} AS persists FROM matches
                         WHERE src = $feature AND similarity = $sim
                           AND (child = $model AND direction = 'c2p' OR parent = $model AND direction = 'p2c')
                         ORDER BY direction, model, rank""", {"model": model, "feature": feature, "sim": sim,
                                                              "t": threshold})
        up, down = [], []
        for r in rows:
            (up if r.pop("direction") == "c2p" else down).append(r)
        for r in up + down:
            r["label"] = self.label(r["model"])
        return {"parents": up, "children": down}

    def partners(self, model: str, feature: int, direction: str, threshold: float,
                 mode: str | None = None) -> list[dict]:
        """The feature's match under `mode` in each parent (direction 'c2p') or child ('p2c') model: its best
        match (rank 0), or its assigned partner under the `1to1` rule (left out when unassigned), each with
        whether it persists at `threshold` (`flows.all_partners`: the store's one fate rule), strongest first.
        The rule behind lineage and case studies."""
        if not (self.parents(model) if direction == "c2p" else self.children(model)):
            return []  # a root has no parent models, a leaf no child models
        return [{"model": m, "feature": f, "r": r, "persists": p}
                for m, f, r, p in self._index("partners", threshold, self.mode(mode)).get((model, feature, direction), [])]

    def best_parent(self, model: str, feature: int, threshold: float, mode: str | None = None) -> dict | None:
        """The strongest of the feature's partners over its parents (ties: the parent first in family order):
        its best parent match, `flows.PARTNER_ORDER`."""
        rows = self.partners(model, feature, "c2p", threshold, mode)
        return rows[0] if rows else None

    def best_children(self, model: str, feature: int, threshold: float, mode: str | None = None) -> list[dict]:
        return self.partners(model, feature, "p2c", threshold, mode)

    def lineage(self, model: str, feature: int, threshold: float, mode: str | None = None,
                row: dict | None = None) -> dict:
        """The feature's lineage at `threshold`: the chain of best persisting parent matches up to its
        origin (`ancestors`: the chain `flows.ancestry` walks in SQL for search and `featureflow report`), the
        tree of its partners in every parent model followed up while they persist (`parents`: a merge child
        shows both parents), and the tree of best persisting child matches down to the leaves, all read from
        the partners index (`partners`). `row` (its `features` row) saves the read that checks it exists."""
        if row is None:
            self.feature_row(model, feature)  # raises NotFound, saying which features exist
        ups, kids = (self.partners(model, feature, "c2p", threshold, mode),
                     self.partners(model, feature, "p2c", threshold, mode))
        up: list[dict] = []
        bp = ups[0] if ups else None  # partners strongest first: the first is its best parent match

        def matched(p: dict) -> bool:
            """A hop the lineage follows: it persists through its partner latent (r above the threshold). Under a
            rule that keeps by evidence (`pearson+transfer`) a feature can persist with no partner above it
            (`carried`): the other model carries it, no latent of its SAE is it, so the lineage stops there."""
            return bool(p["persists"]) and p["r"] is not None and p["r"] > threshold

        while bp is not None and matched(bp) and len(up) < 64:
            up.append({"model": bp["model"], "label": self.label(bp["model"]), "feature": bp["feature"],
                       "r_to_next": bp["r"]})
            bp = self.best_parent(bp["model"], bp["feature"], threshold, mode)
        up.reverse()

        def above(parts: list[dict], depth: int) -> list[dict]:
            """Every parent model's partner (a merge child has one per parent), strongest first, each followed
            up while it persists."""
            out = []
            for p in parts:
                node = {"model": p["model"], "label": self.label(p["model"]), "feature": p["feature"], "r": p["r"],
                        "persists": bool(p["persists"]), "carried": bool(p["persists"]) and not matched(p)}
                node["parents"] = above(self.partners(p["model"], p["feature"], "c2p", threshold, mode), depth + 1) \
                    if matched(p) and depth < 16 else []
                out.append(node)
            return out

        def down(kids: list[dict], depth: int) -> list[dict]:
            out = []
            for c in kids:
                node = {"model": c["model"], "label": self.label(c["model"]), "feature": c["feature"], "r": c["r"],
                        "persists": bool(c["persists"]), "carried": bool(c["persists"]) and not matched(c)}
                node["children"] = down(self.best_children(c["model"], c["feature"], threshold, mode), depth + 1) \
                    if matched(c) and depth < 16 else []
                out.append(node)
            return out

        # where the chain ends: a carried hop ends it in the model that carries the feature, with no latent
        # (`flows.ancestry`, the same rule for search and the report)
        origin = up[0] if up else {"model": model, "feature": feature}
        if bp is not None and bp["persists"] and not matched(bp):
            origin = {"model": bp["model"], "label": self.label(bp["model"]), "feature": None, "carried": True}
        return {"ancestors": up, "parents": above(ups, 0), "descendants": down(kids, 0), "origin": origin,
                "fate": self._index("fates", threshold, self.mode(mode))[(model, feature)]}

    def inheritance(self, threshold: float, mode: str | None = None, reproducible: bool = False) -> list[dict]:
        """What each merged member inherits (`flows.inheritance_counts` of `flows.merge_inheritance`)."""
        return flow_sql.inheritance_counts(flow_sql.merge_inheritance(self.cursor(), threshold, self.mode(mode),
                                                                      reproducible and bool(self.replicated)))

    @memo
    def merge_origins(self, threshold: float, mode: str | None = None) -> list[dict]:
        """Each merged member's alive features: traceable to an ancestor, from the root or emerged in fine-tuning,
        or new (`summary.merge_origins`)."""
        return summary.merge_origins(self.cursor(), threshold, self.mode(mode))

    def feature_survival(self, model: str, feature: int, threshold: float) -> list[dict]:
        """The feature along each merge path it is a parent of (`flows.feature_survival`), with the merge's label."""
        rows = flow_sql.feature_survival(self.cursor(), model, feature, threshold)
        for r in rows:
            r["label"] = self.label(r["model"])
        return rows

    def feature_events(self, model: str, feature: int, threshold: float, mode: str | None = None) -> list[dict]:
        """The feature's splits and absorptions (`flows.feature_events`), each with the other side's model and its
        label: where it is split or absorbing, its parts there; where it is a part, the feature it is a part of."""
        rows = flow_sql.feature_events(self.cursor(), model, feature, threshold, self.mode(mode))
        for r in rows:
            r["other"] = r["child"] if r["direction"] == "p2c" else r["parent"]
            r["other_label"] = self.label(r["other"])
            r["parts"] = list(r["parts"] or [])
        return rows

    def lineage_hops(self, model: str, feature: int, threshold: float, mode: str | None = None) -> list[dict]:
        """The descendant tree of `lineage` as a list of hops, one per edge of the tree (parent first, then
        in family order): {model, feature, parent_model, parent_feature, r, persists}. A model reached
        through two parents appears once per parent. Case studies read their hops here."""
        out: list[dict] = []

        def walk(nodes: list[dict], pm: str, pf: int) -> None:
            for n in nodes:
                out.append({"model": n["model"], "feature": n["feature"], "parent_model": pm, "parent_feature": pf,
                            "r": n["r"], "persists": n["persists"]})
                walk(n["children"], n["model"], n["feature"])

        walk(self.lineage(model, feature, threshold, mode)["descendants"], model, feature)
        return sorted(out, key=lambda h: self.model_idx[h["model"]])

    # -- browse / search ------------------------------------------------------------------------
    # Sort keys, each with its natural direction (the default when no order is given).
    SORTS = {"density": ("f.density", True), "max_act": ("f.max_act", True), "feature": ("f.feature", False),
             "sim_score": ("e.sim_score", True), "llr": ("f.top_token_llr", True),
             "parent_r": ("s.parent_r", True), "best_child_r": ("s.best_child_r", True)}
    FATE_FILTERS = flow_sql.FATE_FILTERS  # search fates at a threshold and mode: the store's one rule

    def search(self, model: str | None, fate: str | None, min_density: float, max_density: float,
               token: str | None, sort: str, page: int, per_page: int, text: str | None = None,
               threshold: float | None = None, mode: str | None = None, edge: tuple[str, str] | None = None,
               descending: bool | None = None, stable: bool | None = None,
               token_level: bool | None = None, inherits: str | None = None) -> dict:
        """One page of features matching the filters, each with its fate, best parent r, best child r and origin
        (`flows.origins`, over every edge) computed at `threshold` under `mode` from the stored matches (the
        rule of `flows`: counts per edge equal `flows`, per model `emerged_in` and the Sankey's lost features). With `edge` (parent, child)
        only that edge's matches count and only its two models' features are listed. `descending`: None
        sorts `sort` in its natural direction; NULLs sort last either way. `stable` True / False keeps
        only features that are reproducible / measured but not reproducible across their member's seed
        replicas at the threshold (`flows.STABILITY`; a member without replicas has neither); `token_level` True / False
        only features that are / are not token-level (persist into their member's random-weights control,
        `flows.token_level`; a member without a control has neither); `inherits` (a class of
        `flows.INHERITANCE`) only features of a merged member that it inherits so (`flows.inheritance_sql`)."""
        sim, rule = split_mode(self.mode(mode))
        params: dict = {"sim": sim, "rule": RULES[rule].floor_rule,
                        "t": self.run["default_threshold"] if threshold is None else threshold,
                        "lo": min_density, "hi": max_density}
        where = ["f.density >= $lo AND f.density <= $hi"]
        on_edge = ""
        if edge:
            self.edge(*edge)
            params.update(parent=edge[0], child=edge[1])
            on_edge = "AND parent = $parent AND child = $child"
            where.append("f.model IN ($parent, $child)")
        if model:
            self.model(model)
            where.append("f.model = $model")
            params["model"] = model
        if fate:
            where.append(self.FATE_FILTERS[fate])
        if token:  # literal substring: % and _ in the search text match themselves
            where.append("v.text ILIKE $token ESCAPE '\\'")
            params["token"] = f"%{like_literal(token)}%"
        if text:
            where.append("e.explanation ILIKE $text ESCAPE '\\'")
            params["text"] = f"%{like_literal(text)}%"
        if stable is not None:
            where.append("st.stable = $stable")
            params["stable"] = stable
        if token_level is not None:
            where.append("tl.token_level = $token_level")
            params["token_level"] = token_level
        inherit = ""
        if inherits:
            if inherits not in flow_sql.INHERITANCE:
                raise ValueError(f"inherits must be one of {', '.join(flow_sql.INHERITANCE)} (got {inherits!r})")
            inherit = (f"JOIN ({flow_sql.inheritance_sql(rule)}) ih ON ih.model = f.model AND ih.feature = f.feature "
                       "AND ih.inheritance = $inherits")
            params["inherits"] = inherits
        base = f"""
            FROM features f JOIN models m USING (model) LEFT JOIN vocab v ON v.token_id = f.top_token_id
            LEFT JOIN explanations e USING (model, feature)
            LEFT JOIN ({flow_sql.feature_fates(rule, on_edge)}) s
              ON s.model = f.model AND s.feature = f.feature
            LEFT JOIN ({flow_sql.STABILITY}) st ON st.model = f.model AND st.feature = f.feature
            LEFT JOIN ({flow_sql.token_level(rule)}) tl ON tl.model = f.model AND tl.feature = f.feature
            {inherit}
            WHERE {" AND ".join(where)}"""
        total = self.cursor().execute(f"SELECT count(*) {base}", params).fetchone()[0]
        column, natural = self.SORTS[sort]
        order = "DESC" if (natural if descending is None else descending) else "ASC"
        rows = self.q(f"""
            SELECT f.model, m.label, f.feature, f.density, f.max_act,
                   {flow_sql.FATE_LABEL} AS fate,
                   s.parent_r, s.best_child_r, v.text AS top_token, f.top_token_share,
                   f.top_token_llr, e.explanation, e.explainer, e.sim_score, st.replicas, st.reproduced, st.stable,
                   tl.control_r, tl.token_level
            {base} ORDER BY {column} {order} NULLS LAST, m.idx, f.feature LIMIT $limit OFFSET $offset""",
                      {**params, "limit": per_page, "offset": (page - 1) * per_page})
        # each listed feature's origin at the same threshold and mode, over every edge (its lineage's)
        origin = flow_sql.origins(self.cursor(), [(r["model"], r["feature"]) for r in rows], params["t"],
                                  self.mode(mode))
        for r in rows:
            o = origin[(r["model"], r["feature"])]
            r["origin_model"], r["origin_feature"], r["origin_carried"] = (o["origin_model"], o["origin_feature"],
                                                                         o["carried"])
        return {"total": total, "page": page, "per_page": per_page, "pages": max(1, -(-total // per_page)),
                "rows": rows}

    def fates(self) -> list[str]:
        return list(self.FATE_FILTERS)

    # -- merges ---------------------------------------------------------------------------------
    def merges(self, threshold: float | None = None, mode: str | None = None, reproducible: bool = True
               ) -> list[dict]:
        """Every merged member's sweep (the `slerp_meta` tables hold every method's, not only SLERP's), with its
        `method` and `method_label` ('SLERP', 'linear merge', ...) read from the stored config; with a threshold,
        also `survival` (`flows.merge_survival`: each parent's features along the path, {parent: [points]}) and
        `survival_crossing` (`flows.survival_crossing`), and `inheritance` (`flows.inheritance_counts`: its
        features by the parents they are inherited from)."""
        surv = (flow_sql.merge_survival(self.cursor(), threshold, self.mode(mode), reproducible and self.replicated)
                if threshold is not None else [])
        crossing = flow_sql.survival_crossing(surv)
        control = (flow_sql.survival_control(self.cursor(), threshold, self.mode(mode),
                                             reproducible and bool(self.replicated)) if threshold is not None else [])
        inherits = ({c["model"]: c for c in self.inheritance(threshold, mode, reproducible)}
                    if threshold is not None else {})
        out = []
        methods = self.member_merge_methods()
        for meta in self.q("SELECT * FROM slerp_meta s JOIN models m USING (model) ORDER BY m.idx"):
            meta["method"] = methods.get(meta["model"])
            meta["method_label"] = merge_methods.label(meta["method"])
            meta["curve_domains"] = json.loads(meta.pop("curve_domains_json"))
            meta["points"] = self.q("""SELECT t, source, domain, loss, accuracy FROM slerp_curve
                                       WHERE model = ? ORDER BY t, domain""", [meta["model"]])
            meta["baselines"] = self.q("SELECT root, domain, loss, accuracy FROM slerp_baselines WHERE model = ?",
                                       [meta["model"]])
            meta["survival"] = {}
            for r in surv:
                if r["model"] == meta["model"]:
                    meta["survival"].setdefault(r["parent"], []).append(
                        {k: r[k] for k in ("t", "n", "survived", "share", "lo", "hi", "population")})
            meta["survival_crossing"] = crossing.get(meta["model"])
            meta["survival_control"] = {r["parent"]: {k: r[k] for k in ("control", "n", "survived", "share", "lo",
                                                                         "hi", "population")}
                                        for r in control if r["model"] == meta["model"]}
            meta["inheritance"] = inherits.get(meta["model"])
            out.append(meta)
        return out

    def member_merge_methods(self) -> dict[str, str]:
        """Merged member -> its merge method, from the run's stored config (`runs.config_json`); the store's
        tables do not record it. A member the config does not name a method for merged by the default, slerp."""
        cfg = json.loads(self.run.get("config_json") or "{}")
        return {m["name"]: m.get("method") or "slerp" for m in cfg.get("family") or [] if m.get("make") == "merge"}

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
