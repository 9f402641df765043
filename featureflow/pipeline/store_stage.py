"""The store stage: build the run's DuckDB file from the pipeline's artefacts.

The pipeline's half of the store: it reads the artefacts and writes their rows through the store's own writers
(`featureflow/store/writers.py`, by column name, checked against `featureflow/store/schema.py`); the store package
imports nothing from the pipeline. Everything is written into `.<run>.duckdb.tmp-<pid>` and renamed over
`<run>.duckdb` only when complete (`writers.new_store`), so a killed build leaves the previous store untouched; the
next build removes the temp files (and their `.wal`) of builds whose process is gone. The build is skipped when the
store already holds the same inputs (`runs.inputs_key`). Correlations are stored clamped to [-1, 1]; text that
could carry a secret (the config, explanations and failure reasons) is stored redacted.

A stage like the others: `build_store(cfg, inputs)` reads only its `StoreInputs` (the artefact folders the
runner resolved, and the run's device, default mode and timings), never the runner itself (this module does
not import `featureflow.pipeline.runner`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from featureflow.config import ExperimentConfig, MergeMember, parse_mode
from featureflow.pipeline.artifacts import key_of, read_json, sweep_temps
from featureflow.pipeline.autointerp.llm import redact
from featureflow.pipeline.matching import read_rule_matches
from featureflow.pipeline.stages import VERSIONS, hardware
from featureflow.store.schema import SCHEMA_VERSION, create_tables
from featureflow.store.writers import (columns_of, insert, insert_edge_matches, insert_evidence,
                                       insert_evidence_kind, insert_floor, insert_planted, insert_row, new_store)

log = logging.getLogger("featureflow")


@dataclass(frozen=True)
class StoreInputs:
    """What building the store reads, resolved by the runner (`Pipeline.store_inputs`; a test may pass its
    own): the artefact folders of every stage it reads, and plain values. Dicts keep the runner's order
    (members in topological order), which the rows and `inputs_key` follow."""

    corpora: Path                                   # stats.json
    tokenizer: Path                                 # token_counts.json, tokenizer/ (the HF tokenizer)
    sample: Path                                    # tokens.npy, window_domains.npy, domains.json
    members: dict[str, Path]                        # member -> its model folder (member.json, curves)
    saes: dict[str, list[Path]]                     # member -> its SAE folders, replica i at index i
    activations: dict[str, Path]                    # member -> replica 0's activations (acts.npz, parquet tables)
    matches: dict[tuple[str, str, str], Path]       # (parent, child, similarity) -> topk.npz, assign.npz
    floors: dict[tuple[str, int, str], Path]        # (member, replica, similarity) -> replica 0 vs replica
    agreements: list[Path]                          # pw_mcc.json of every edge, then every replica pair
    autointerp: dict[str, Path]                     # member -> explanations.parquet, spend.json, llr.npy
    cases: Path                                     # cases.json, case_llrs.parquet
    controls: dict[str, dict]                       # control -> {root, model, saes: [replica i], acts: replica 0's}
    control_matches: dict[tuple[str, str, str], Path]  # (member, control, similarity) -> topk.npz, assign.npz
    evidence: dict[tuple[str, str, str], Path]     # (evidence kind, parent, child) -> values.npz
    cross: dict[tuple[str, str], Path]              # (sae_of, data_of) -> health.json of one SAE on another model
    survival: dict[str, Path]                       # merge member -> survival.npz (its parents along its path)
    crosscoders: dict[tuple[str, str], Path]        # (parent, child) -> latents.npz, crosscoder.json (none: {})
    fingerprints: Path                              # fingerprints.json, vectors.npz
    planted: Path | None                            # planted.json (None: the config has no planted section)
    device: str
    default_mode: str                               # the first of `matching.modes`
    timings: dict[str, float]                       # seconds per stage call of the building process
    stage_seconds: dict[str, float]                 # seconds per stage of the building process's `run`


def inputs_key(cfg: ExperimentConfig, inp: StoreInputs) -> str:
    """The store's key: the schema, the stage versions, the config and the names (keys) of the artefacts it
    reads; the same key means the store on disk is up to date."""
    sim = parse_mode(inp.default_mode)[0]
    return key_of(SCHEMA_VERSION, VERSIONS, cfg, [p.name for p in inp.activations.values()],
                  [inp.matches[(p, c, sim)].name for p, c in cfg.edges()], [p.name for p in inp.floors.values()],
                  [p.name for p in inp.agreements],
                  [p.name for p in inp.autointerp.values()], inp.cases.name, inp.fingerprints.name,
                  inp.planted and inp.planted.name,
                  *([[c["acts"].name for c in inp.controls.values()], [f.name for f in inp.control_matches.values()]]
                    if inp.controls else []),  # a run without controls keeps the key it had before them
                  *([[p.name for p in inp.evidence.values()], [p.name for p in inp.cross.values()]]
                    if inp.evidence else []),
                  *([[p.name for p in inp.survival.values()]] if inp.survival else []),
                  *([[p.name for p in inp.crosscoders.values()]] if inp.crosscoders else []))


def existing_inputs_key(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        con = duckdb.connect(str(path), read_only=True)
        try:
            return con.execute("SELECT inputs_key FROM runs").fetchone()[0]
        finally:
            con.close()
    except (duckdb.Error, TypeError):
        return None


def build_store(cfg: ExperimentConfig, inp: StoreInputs) -> Path:
    """Write `cfg.store_path()` from `inp` (temp file, then rename); skipped when it holds the same key."""
    out = cfg.store_path()
    for p in sweep_temps(out.parent):  # `.<run>.duckdb.tmp-<pid>` (and .wal) of killed builds
        log.info("store: removed %s, left by a killed build", p)
    key = inputs_key(cfg, inp)
    if existing_inputs_key(out) == key:
        log.info("store: %s is up to date", out)
        return out
    t0 = time.time()
    with new_store(out) as con:
        create_tables(con)
        _fill(cfg, inp, con, key)
    log.info("store: wrote %s (%.1f MB) in %.1f s", out, out.stat().st_size / 1e6, time.time() - t0)
    return out


def _timings_json(inp: StoreInputs) -> str:
    """`runs.timings_json`: {"stages": seconds per stage of the run that built this store (a stage found
    cached takes about 0 s), "calls": seconds per stage call, "hardware": what it ran on}."""
    return json.dumps({"stages": inp.stage_seconds, "calls": inp.timings, "hardware": hardware(inp.device)})


def _config_json(cfg) -> str:
    """The config as stored: the LLM server URL without credentials (`https://user:key@host`)."""
    d = cfg.model_dump(mode="json")
    d["autointerp"]["base_url"] = redact(d["autointerp"]["base_url"])
    return json.dumps(d)


def _fill(cfg: ExperimentConfig, inp: StoreInputs, con: duckdb.DuckDBPyConnection, key: str) -> None:
    order = cfg.topological_order()
    insert_row(con, "schema_version", {"version": SCHEMA_VERSION, "created_at": datetime.now(timezone.utc)})
    tokens = np.load(inp.sample / "tokens.npy")
    W, C = tokens.shape
    insert_row(con, "runs", {
        "name": cfg.name, "description": cfg.description, "config_json": _config_json(cfg), "device": inp.device,
        "timings_json": _timings_json(inp), "default_threshold": cfg.matching.threshold, "top_k": cfg.matching.top_k,
        "modes": cfg.matching.modes, "default_mode": inp.default_mode, "shared_init": cfg.sae.shared_init,
        "sample_tokens": W * C, "sample_context": C, "hook": cfg.sae.hook, "inputs_key": key})

    # corpora & sample
    stats = read_json(inp.corpora / "stats.json")
    counts = read_json(inp.tokenizer / "token_counts.json")
    sample_domains = read_json(inp.sample / "domains.json")
    win_dom = np.load(inp.sample / "window_domains.npy")
    insert(con, "domains", columns_of([{
        "domain": d, "source": s["source"], "train_docs": s["train_docs"], "val_docs": s["val_docs"],
        "train_tokens": counts[f"{d}.train"], "val_tokens": counts[f"{d}.val"],
        "sample_windows": int((win_dom == sample_domains.index(d)).sum()) if d in sample_domains else 0,
    } for d, s in stats.items()]))
    from featureflow.pipeline.tokenizer import load_tokenizer, token_strings

    vocab = token_strings(load_tokenizer(inp.tokenizer / "tokenizer"))
    insert(con, "vocab", {"token_id": np.arange(len(vocab), dtype=np.int32), "text": vocab})
    insert(con, "sample_tokens", {
        "token_index": np.arange(W * C, dtype=np.int64), "window_idx": np.repeat(np.arange(W, dtype=np.int32), C),
        "position": np.tile(np.arange(C, dtype=np.int32), W),
        "domain": np.asarray(sample_domains, dtype=object)[np.repeat(win_dom, C)],
        "token_id": tokens.ravel().astype(np.int32)})

    # models, evaluations, curves, merges
    for i, name in enumerate(order):
        m = cfg.member(name)
        mdir = inp.members[name]
        saes = inp.saes[name]
        info = read_json(mdir / "member.json")
        sinfo = read_json(saes[0] / "featureflow.json")
        d_sae = read_json(saes[0] / "cfg.json")["d_sae"]
        h = sinfo["health"]
        insert_row(con, "models", {
            "model": name, "label": m.label or name, "idx": i, "make": m.make, "domains": info["domains"],
            "seed": info["seed"], "train_tokens": info.get("tokens"), "train_steps": info.get("steps"),
            "merge_t": info.get("t"), "seconds": info["seconds"],
            **{k: info["shape"][k] for k in ("hidden", "d_mlp", "heads", "vocab")}, "d_sae": d_sae})
        for p in m.parents:
            insert_row(con, "model_edges", {"parent": p, "child": name, "make": m.make})
        insert(con, "model_eval", columns_of([{"model": name, "domain": d, "loss": v["loss"],
                                               "accuracy": v["accuracy"]} for d, v in info["eval"].items()]))
        if (mdir / "train_log.json").exists():
            insert(con, "training_curves", columns_of([
                {"model": name, "step": r["step"], "tokens": r["tokens"], "lr": r["lr"], "train_loss": r["train_loss"],
                 "domain": d, "val_loss": v["loss"], "val_accuracy": v["accuracy"]}
                for r in read_json(mdir / "train_log.json") for d, v in r["val"].items()]))
        if isinstance(m, MergeMember):
            c = read_json(mdir / "merge_curve.json")
            insert_row(con, "slerp_meta", {
                "model": name, "parent0": c["parents"][0], "parent1": c["parents"][1],
                **{k: c[k] for k in ("t", "t_mode", "t_star", "crossed", "t_grid_interpolated", "grid_step",
                                     "tolerance", "t_direction")},
                "curve_domains_json": json.dumps(c["curve_domains"])})
            insert(con, "slerp_curve", columns_of([
                {"model": name, "t": p["t"], "source": p["source"], "domain": d, "loss": v["loss"],
                 "accuracy": v["accuracy"]} for p in c["points"] for d, v in p["val"].items()]))
            insert(con, "slerp_baselines", columns_of([
                {"model": name, "root": r, "domain": d, "loss": v["loss"], "accuracy": v["accuracy"]}
                for r, ev in c["baselines"].items() for d, v in ev.items()]))
        insert_row(con, "sae_metrics", {
            "model": name, "hook": cfg.sae.hook, "d_in": info["shape"]["d_mlp"], "d_sae": d_sae,
            "recipe": sinfo["recipe"], **{k: sinfo.get(k) for k in ("architecture", "k", "target_l0", "seed")},
            "replicas": len(saes) - 1, "l1_coefficient": sinfo["l1_coefficient"],
            "training_tokens": sinfo["training_tokens"],
            **{k: h[k] for k in ("l0", "mse", "explained_variance", "dead_features", "dead_fraction", "ce_clean",
                                 "ce_sae", "ce_zero", "loss_recovered", "loss_recovered_scope", "loss_recovered_all",
                                 "eval_tokens")},
            "seconds": sinfo["seconds"]})
        insert(con, "sae_health_domains", columns_of([
            {"model": name, "domain": d, **{k: v[k] for k in ("l0", "mse", "explained_variance", "ce_clean", "ce_sae",
                                                              "ce_zero", "loss_recovered")}}
            for d, v in sinfo["health_by_domain"].items()]))
        if sinfo["log"]:
            cols = ("step", "tokens", "loss", "mse", "l1", "l0")
            insert(con, "sae_training", columns_of([{"model": name, **{k: r.get(k) for k in cols}}
                                                    for r in sinfo["log"]]))
        for rep, folder in enumerate(saes):
            ri = read_json(folder / "featureflow.json")
            rh = ri["health"]
            insert_row(con, "sae_replicas", {
                "model": name, "replica": rep, "seed": ri.get("seed"), "l1_coefficient": ri["l1_coefficient"],
                **{k: rh[k] for k in ("l0", "mse", "explained_variance", "dead_features", "loss_recovered")}})

    _fill_features(cfg, inp, con, order)
    _fill_controls(inp, con, {n: cfg.member(n).label or n for n in order})
    _fill_evidence(inp, con)
    _fill_survival(inp, con)
    _fill_crosscoders(inp, con)
    _fill_fingerprints(inp, con)
    if inp.planted is not None:
        insert_planted(con, read_json(inp.planted / "planted.json"))


def _fill_fingerprints(inp: StoreInputs, con: duckdb.DuckDBPyConnection) -> None:
    folder = inp.fingerprints
    fp = read_json(folder / "fingerprints.json")
    vecs = np.load(folder / "vectors.npz")
    rows = []
    for e in fp["entities"]:
        for v, norm in e["norms"].items():
            rows.append({**{k: e[k] for k in ("entity", "kind", "model", "t", "base", "label")}, "variant": v,
                         "norm": norm, "vector": vecs[f"{e['entity']}|{v}"].tolist()})
    if rows:
        insert(con, "fingerprints", pa.Table.from_pylist(rows, schema=pa.schema([
            ("entity", pa.string()), ("kind", pa.string()), ("model", pa.string()), ("t", pa.float64()),
            ("base", pa.string()), ("label", pa.string()), ("variant", pa.string()), ("norm", pa.float64()),
            ("vector", pa.list_(pa.float64()))])))
    for table, key in (("fingerprint_similarity", "similarity"), ("fingerprint_neighbours", "neighbours"),
                       ("fingerprint_map", "map"), ("fingerprint_stats", "stats"),
                       ("fingerprint_probe_counts", "probe_counts"), ("fingerprint_additivity", "additivity"),
                       ("fingerprint_features", "features_behind")):
        if fp[key]:
            insert(con, table, pa.Table.from_pylist(fp[key]))


def _redacted(t: pa.Table, columns: tuple[str, ...]) -> pa.Table:
    """`t` with its text `columns` passed through `redact` (no API key or key-shaped text is stored)."""
    for c in columns:
        if c in t.column_names:
            i = t.column_names.index(c)
            t = t.set_column(i, c, pa.array([redact(v) for v in t.column(c).to_pylist()], pa.string()))
    return t


def _fill_matches(cfg: ExperimentConfig, inp: StoreInputs, con: duckdb.DuckDBPyConnection,
                  alive: dict[str, np.ndarray]) -> None:
    """matches and assignments for every similarity, and the noise floor."""
    for sim in cfg.matching.similarities:
        for p, c in cfg.edges():
            folder = inp.matches[(p, c, sim)]
            insert_edge_matches(con, sim, p, c, np.load(folder / "topk.npz"), read_rule_matches(folder, "1to1"))
    for (name, rep, sim), folder in inp.floors.items():
        for rule in ("best", "1to1"):
            insert_floor(con, name, rep, sim, rule, read_rule_matches(folder, rule)["p2c_r"], alive[name])
    for (member, control, sim), folder in inp.control_matches.items():
        insert_edge_matches(con, sim, member, control, np.load(folder / "topk.npz"), read_rule_matches(folder, "1to1"),
                            tables=("control_matches", "control_assignments"))


def _fill_controls(inp: StoreInputs, con: duckdb.DuckDBPyConnection, labels: dict[str, str]) -> None:
    """The controls table: each random-weights control, its seed and its SAE's health (replica 0)."""
    from featureflow.pipeline.features import load_acts

    for control, c in inp.controls.items():
        sdir = c["saes"][0]
        info, sinfo = read_json(c["model"] / "member.json"), read_json(sdir / "featureflow.json")
        h = sinfo["health"]
        alive = int((np.diff(load_acts(c["acts"]).indptr) > 0).sum())
        insert_row(con, "controls", {
            "control": control, "root": c["root"], "label": f"random weights ({labels.get(c['root'], c['root'])})",
            "seed": info["seed"], "init": info["init"], "d_sae": read_json(sdir / "cfg.json")["d_sae"],
            "sae_seed": sinfo.get("seed"), "replicas": len(c["saes"]) - 1,
            **{k: h[k] for k in ("l0", "mse", "explained_variance", "dead_features")}, "alive": alive})


def _fill_survival(inp: StoreInputs, con: duckdb.DuckDBPyConnection) -> None:
    """`merge_survival`: every merge member's parents along its path, and `merge_survival_control`: each parent in
    its random-weights control (NaN r left out)."""
    for model, folder in inp.survival.items():
        with np.load(folder / "survival.npz") as z:
            ts = z["ts"]
            for name in (k for k in z.files if k.startswith("r/")):
                r = z[name]
                ti, f = np.nonzero(np.isfinite(r))
                insert(con, "merge_survival", {"model": np.full(len(f), model, dtype=object),
                                               "parent": np.full(len(f), name[2:], dtype=object),
                                               "t": ts[ti].astype(np.float64), "feature": f.astype(np.int32),
                                               "r": r[ti, f].astype(np.float64)})
            names = dict(x.split("=", 1) for x in z["control_names"].tolist()) if "control_names" in z.files else {}
            for parent, control in names.items():
                r = z[f"control/{parent}"]
                (f,) = np.nonzero(np.isfinite(r))
                insert(con, "merge_survival_control", {
                    "model": np.full(len(f), model, dtype=object), "parent": np.full(len(f), parent, dtype=object),
                    "control": np.full(len(f), control, dtype=object), "feature": f.astype(np.int32),
                    "r": r[f].astype(np.float64)})


def _fill_crosscoders(inp: StoreInputs, con: duckdb.DuckDBPyConnection) -> None:
    """`crosscoders` and `crosscoder_latents`: every edge's crosscoder (none unless configured)."""
    for (parent, child), folder in inp.crosscoders.items():
        info = read_json(folder / "crosscoder.json")
        h, calls, c = info["health"], info["calls"], info["config"]
        insert_row(con, "crosscoders", {
            "parent": parent, "child": child, "architecture": info["architecture"], "latents": info["latents"],
            "tokens": info["tokens"], "l0": info["l0"], "ev_parent": h["parent"]["explained_variance"],
            "ev_child": h["child"]["explained_variance"], "mse_parent": h["parent"]["mse"],
            "mse_child": h["child"]["mse"], "exclusive_below": c["exclusive_below"], "scaling": c["scaling"],
            "shared": calls["shared"], "parent_only": calls["parent-only"], "child_only": calls["child-only"],
            "dead": calls["dead"], "seed": info["seed"], "seconds": info["seconds"]})
        with np.load(folder / "latents.npz") as z:
            n = len(z["rho"])
            cols = {k: pa.array(z[k].astype(np.float64), mask=~np.isfinite(z[k]))  # NaN (undefined): NULL
                    for k in ("norm_parent", "norm_child", "rho", "cos", "fire_rate", "max_act", "nu_r", "nu_e",
                              "parent_r", "child_r")}
            insert(con, "crosscoder_latents", {
                "parent": np.full(n, parent, dtype=object), "child": np.full(n, child, dtype=object),
                "latent": np.arange(n, dtype=np.int32), **cols, "call": z["call"].astype(object),
                "parent_feature": z["parent_feature"].astype(np.int32), "child_feature": z["child_feature"].astype(np.int32),
                "top_tokens": [row[row >= 0].tolist() for row in z["top_tokens"]]})


def _fill_evidence(inp: StoreInputs, con: duckdb.DuckDBPyConnection) -> None:
    """`evidence_kinds` and `evidence`: every configured kind (`featureflow/evidence/`) on every edge."""
    from featureflow.evidence import evidence as registered

    for kind in dict.fromkeys(k for k, _, _ in inp.evidence):
        insert_evidence_kind(con, registered(kind))
    for (kind, parent, child), folder in inp.evidence.items():
        with np.load(folder / "values.npz") as z:
            insert_evidence(con, kind, parent, child, {m: z[m] for m in z.files})
    for folder in inp.cross.values():
        h = read_json(folder / "health.json")
        insert_row(con, "cross_health", {k: h.get(k) for k in ("sae_of", "replica", "data_of", "explained_variance",
                                                                "mse", "l0", "rows")})


def _fill_pw_mcc(inp: StoreInputs, con: duckdb.DuckDBPyConnection) -> None:
    """The pw_mcc table: every edge's and every replica pair's decoder PW-MCC with its chance level."""
    for folder in inp.agreements:
        a = read_json(folder / "pw_mcc.json")
        (ma, ra), (mb, rb) = a["a"], a["b"]
        insert_row(con, "pw_mcc", {
            "kind": "replica" if ma == mb else "control" if mb in inp.controls else "edge", "model_a": ma,
            "replica_a": ra, "model_b": mb, "replica_b": rb,
            **{k: a[k] for k in ("n_a", "n_b", "pw_mcc", "chance", "seed")}})


def _fill_features(cfg: ExperimentConfig, inp: StoreInputs, con: duckdb.DuckDBPyConnection,
                   order: list[str]) -> None:
    import pyarrow.parquet as pq

    from featureflow.pipeline.features import load_acts

    feats = {n: pq.read_table(inp.activations[n] / "features.parquet") for n in order}
    alive = {n: feats[n].column("alive").to_numpy() for n in order}

    _fill_matches(cfg, inp, con, alive)
    for n in order:  # fates and lineage are not stored: store/flows.py reads them from matches / assignments
        t = feats[n].append_column("model", pa.array([n] * len(alive[n])))
        llr = np.load(inp.autointerp[n] / "llr.npy")
        t = t.append_column("top_token_llr", pa.array(np.where(np.isfinite(llr), llr, np.nan)))
        insert(con, "features", t)
        ex_path = inp.autointerp[n] / "explanations.parquet"
        if ex_path.exists():
            part = _redacted(pq.read_table(ex_path), ("explanation", "explanation_json", "reason"))
            insert(con, "explanations", part.append_column("model", pa.array([n] * part.num_rows, pa.string())))
        sp = read_json(inp.autointerp[n] / "spend.json")
        insert_row(con, "autointerp_spend", {
            "model": n, "mode": sp["mode"], "llm_model": sp.get("model"),
            **{k: sp[k] for k in ("calls", "cached_calls", "prompt_tokens", "completion_tokens", "usd")}})
        acts = load_acts(inp.activations[n])
        insert(con, "activation_values", {
            "model": pa.DictionaryArray.from_arrays(np.zeros(acts.nnz, dtype=np.int32), pa.array([n])),
            "feature": np.repeat(np.arange(acts.shape[1], dtype=np.int32), np.diff(acts.indptr)),
            "token_index": acts.indices.astype(np.int64), "act": acts.data.astype(np.float32)})
        for table, fname in (("feature_histograms", "histograms"), ("feature_top_tokens", "top_tokens"),
                             ("examples", "examples"), ("feature_logits", "logits")):
            part = pq.read_table(inp.activations[n] / f"{fname}.parquet")
            insert(con, table, part.append_column("model", pa.array([n] * part.num_rows, pa.string())))
    for c in read_json(inp.cases / "cases.json"):
        insert_row(con, "cases", {k: c[k] for k in (
            "slug", "title", "description", "hypothesis", "root_model", "root_feature", "root_llr", "root_coverage",
            "descendants", "status", "reason")})
    insert(con, "case_llrs", pq.read_table(inp.cases / "case_llrs.parquet"))
    _fill_pw_mcc(inp, con)
    # NaN -> NULL for "never fires" rows
    con.execute("UPDATE features SET top_token_llr = NULL WHERE isnan(top_token_llr)")
