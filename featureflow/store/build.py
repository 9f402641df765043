"""Build the run's DuckDB file from the pipeline's artefacts.

Everything is written into `<run>.duckdb.tmp-<pid>` and renamed over `<run>.duckdb` only when complete,
so a killed build leaves the previous store untouched; the next build removes the temp files (and their
`.wal`) of builds whose process is gone. The build is skipped when the store already holds the same
inputs (`runs.inputs_key`). Correlations are stored clamped to [-1, 1]; text that could carry a secret
(the config, explanations and failure reasons) is stored redacted.

A stage like the others: `build_store(cfg, inputs)` reads only its `StoreInputs` (the artefact folders the
runner resolved, and the run's device, default mode and timings), never the runner itself (this module does
not import `featureflow.pipeline.runner`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from featureflow.pipeline.artifacts import key_of, read_json, sweep_temps
from featureflow.pipeline.autointerp.llm import redact
from featureflow.config import ExperimentConfig, MergeMember, parse_mode
from featureflow.pipeline.matching import read_rule_matches
from featureflow.store.schema import SCHEMA_VERSION, create_tables

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
    fingerprints: Path                              # fingerprints.json, vectors.npz
    planted: Path | None                            # planted.json (None: the config has no planted section)
    device: str
    default_mode: str                               # the first of `matching.modes`
    timings: dict[str, float]                       # seconds per stage call of the building process
    stage_seconds: dict[str, float]                 # seconds per stage of the building process's `run`


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: dict | pa.Table) -> None:
    t = rows if isinstance(rows, pa.Table) else pa.table(rows)
    if t.num_rows == 0:
        return
    con.register("_src", t)
    cols = ", ".join(f'"{c}"' for c in t.column_names)
    con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _src")
    con.unregister("_src")


def _rows(dicts: list[dict]) -> dict[str, list]:
    keys = list(dicts[0]) if dicts else []
    return {k: [d[k] for d in dicts] for k in keys}


def inputs_key(cfg: ExperimentConfig, inp: StoreInputs) -> str:
    """The store's key: the schema, the stage versions, the config and the names (keys) of the artefacts it
    reads; the same key means the store on disk is up to date."""
    from featureflow.pipeline.stages import VERSIONS

    sim = parse_mode(inp.default_mode)[0]
    return key_of(SCHEMA_VERSION, VERSIONS, cfg, [p.name for p in inp.activations.values()],
                  [inp.matches[(p, c, sim)].name for p, c in cfg.edges()], [p.name for p in inp.floors.values()],
                  [p.name for p in inp.agreements],
                  [p.name for p in inp.autointerp.values()], inp.cases.name, inp.fingerprints.name,
                  inp.planted and inp.planted.name,
                  *([[c["acts"].name for c in inp.controls.values()], [f.name for f in inp.control_matches.values()]]
                    if inp.controls else []))  # a run without controls keeps the key it had before them


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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    wal = tmp.with_name(tmp.name + ".wal")
    tmp.unlink(missing_ok=True)
    wal.unlink(missing_ok=True)
    t0 = time.time()
    con = duckdb.connect(str(tmp))
    try:
        create_tables(con)
        _fill(cfg, inp, con, key)
        con.execute("CHECKPOINT")
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        wal.unlink(missing_ok=True)
        raise
    con.close()
    os.replace(tmp, out)
    log.info("store: wrote %s (%.1f MB) in %.1f s", out, out.stat().st_size / 1e6, time.time() - t0)
    return out


def _timings_json(inp: StoreInputs) -> str:
    """`runs.timings_json`: {"stages": seconds per stage of the run that built this store (a stage found
    cached takes about 0 s), "calls": seconds per stage call, "hardware": what it ran on}."""
    from featureflow.pipeline.stages import hardware

    return json.dumps({"stages": inp.stage_seconds, "calls": inp.timings, "hardware": hardware(inp.device)})


def _config_json(cfg) -> str:
    """The config as stored: the LLM server URL without credentials (`https://user:key@host`)."""
    d = cfg.model_dump(mode="json")
    d["autointerp"]["base_url"] = redact(d["autointerp"]["base_url"])
    return json.dumps(d)


def _fill(cfg: ExperimentConfig, inp: StoreInputs, con: duckdb.DuckDBPyConnection, key: str) -> None:
    order = cfg.topological_order()
    con.execute("INSERT INTO schema_version VALUES (?, ?)", [SCHEMA_VERSION, datetime.now(timezone.utc)])
    tokens = np.load(inp.sample / "tokens.npy")
    W, C = tokens.shape
    con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        cfg.name, cfg.description, _config_json(cfg), inp.device, _timings_json(inp),
        cfg.matching.threshold, cfg.matching.top_k, cfg.matching.modes, inp.default_mode, cfg.sae.shared_init,
        W * C, C, cfg.sae.hook, key])

    # corpora & sample
    stats = read_json(inp.corpora / "stats.json")
    counts = read_json(inp.tokenizer / "token_counts.json")
    sample_domains = read_json(inp.sample / "domains.json")
    win_dom = np.load(inp.sample / "window_domains.npy")
    _insert(con, "domains", _rows([{
        "domain": d, "source": s["source"], "train_docs": s["train_docs"], "val_docs": s["val_docs"],
        "train_tokens": counts[f"{d}.train"], "val_tokens": counts[f"{d}.val"],
        "sample_windows": int((win_dom == sample_domains.index(d)).sum()) if d in sample_domains else 0,
    } for d, s in stats.items()]))
    from featureflow.pipeline.tokenizer import load_tokenizer, token_strings

    vocab = token_strings(load_tokenizer(inp.tokenizer / "tokenizer"))
    _insert(con, "vocab", {"token_id": np.arange(len(vocab), dtype=np.int32), "text": vocab})
    _insert(con, "sample_tokens", {
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
        con.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            name, m.label or name, i, m.make, info["domains"], info["seed"], info.get("tokens"), info.get("steps"),
            info.get("t"), info["seconds"], info["shape"]["hidden"], info["shape"]["d_mlp"], info["shape"]["heads"],
            info["shape"]["vocab"], d_sae])
        for p in m.parents:
            con.execute("INSERT INTO model_edges VALUES (?, ?, ?)", [p, name, m.make])
        _insert(con, "model_eval", _rows([{"model": name, "domain": d, "loss": v["loss"], "accuracy": v["accuracy"]}
                                          for d, v in info["eval"].items()]))
        if (mdir / "train_log.json").exists():
            _insert(con, "training_curves", _rows([
                {"model": name, "step": r["step"], "tokens": r["tokens"], "lr": r["lr"], "train_loss": r["train_loss"],
                 "domain": d, "val_loss": v["loss"], "val_accuracy": v["accuracy"]}
                for r in read_json(mdir / "train_log.json") for d, v in r["val"].items()]))
        if isinstance(m, MergeMember):
            c = read_json(mdir / "merge_curve.json")
            con.execute("INSERT INTO slerp_meta VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                name, c["parents"][0], c["parents"][1], c["t"], c["t_mode"], c["t_star"], c["crossed"],
                c["t_grid_interpolated"], c["grid_step"], c["tolerance"], c["t_direction"],
                json.dumps(c["curve_domains"])])
            _insert(con, "slerp_curve", _rows([
                {"model": name, "t": p["t"], "source": p["source"], "domain": d, "loss": v["loss"],
                 "accuracy": v["accuracy"]} for p in c["points"] for d, v in p["val"].items()]))
            _insert(con, "slerp_baselines", _rows([
                {"model": name, "root": r, "domain": d, "loss": v["loss"], "accuracy": v["accuracy"]}
                for r, ev in c["baselines"].items() for d, v in ev.items()]))
        con.execute("INSERT INTO sae_metrics VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            name, cfg.sae.hook, info["shape"]["d_mlp"], d_sae, sinfo["recipe"], sinfo.get("architecture"),
            sinfo.get("k"), sinfo.get("target_l0"), sinfo.get("seed"), len(saes) - 1,
            sinfo["l1_coefficient"], sinfo["training_tokens"], h["l0"], h["mse"],
            h["explained_variance"], h["dead_features"], h["dead_fraction"], h["ce_clean"], h["ce_sae"],
            h["ce_zero"], h["loss_recovered"], h["loss_recovered_scope"], h["loss_recovered_all"],
            h["eval_tokens"], sinfo["seconds"]])
        _insert(con, "sae_health_domains", _rows([
            {"model": name, "domain": d, **{k: v[k] for k in ("l0", "mse", "explained_variance", "ce_clean", "ce_sae",
                                                              "ce_zero", "loss_recovered")}}
            for d, v in sinfo["health_by_domain"].items()]))
        if sinfo["log"]:
            cols = ("step", "tokens", "loss", "mse", "l1", "l0")
            _insert(con, "sae_training", _rows([{"model": name, **{k: r.get(k) for k in cols}} for r in sinfo["log"]]))
        for rep, folder in enumerate(saes):
            ri = read_json(folder / "featureflow.json")
            rh = ri["health"]
            con.execute("INSERT INTO sae_replicas VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                name, rep, ri.get("seed"), ri["l1_coefficient"], rh["l0"], rh["mse"], rh["explained_variance"],
                rh["dead_features"], rh["loss_recovered"]])

    _fill_features(cfg, inp, con, order)
    _fill_controls(inp, con, {n: cfg.member(n).label or n for n in order})
    _fill_fingerprints(inp, con)
    if inp.planted is not None:
        fill_planted(con, read_json(inp.planted / "planted.json"))


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
        _insert(con, "fingerprints", pa.Table.from_pylist(rows, schema=pa.schema([
            ("entity", pa.string()), ("kind", pa.string()), ("model", pa.string()), ("t", pa.float64()),
            ("base", pa.string()), ("label", pa.string()), ("variant", pa.string()), ("norm", pa.float64()),
            ("vector", pa.list_(pa.float64()))])))
    for table, key in (("fingerprint_similarity", "similarity"), ("fingerprint_neighbours", "neighbours"),
                       ("fingerprint_map", "map"), ("fingerprint_stats", "stats"),
                       ("fingerprint_probe_counts", "probe_counts"), ("fingerprint_additivity", "additivity"),
                       ("fingerprint_features", "features_behind")):
        if fp[key]:
            _insert(con, table, pa.Table.from_pylist(fp[key]))


def _side_rows(idx: np.ndarray, r: np.ndarray, matched_only: bool = False, **const) -> dict:
    """Columns for one direction of matches (idx, r of shape (n_src, k)) or of an assignment ((n_src,)).
    `matched_only`: leave out the slots without a partner (index -1: a feature that never fires has no
    match; see `matching.among_alive`), so the `matches` table holds real matches only."""
    idx, r = (idx, r) if idx.ndim == 2 else (idx[:, None], r[:, None])
    n_src, k = idx.shape
    src, rank = np.repeat(np.arange(n_src, dtype=np.int32), k), np.tile(np.arange(k, dtype=np.int32), n_src)
    idx, r = idx.ravel(), r.ravel()
    if matched_only:
        keep = idx >= 0
        src, rank, idx, r = src[keep], rank[keep], idx[keep], r[keep]
    out = {c: np.full(len(idx), v, dtype=object) for c, v in const.items()}
    out.update(src=src, rank=rank, dst=pa.array(idx.astype(np.int32), mask=idx < 0), r=_r_column(r))
    return out


def _r_column(r: np.ndarray) -> pa.Array:
    """Correlations as stored: clamped to [-1, 1] (float error can leave |r| a few ulps above 1), NaN -> NULL."""
    r = np.asarray(r, dtype=np.float64)
    return pa.array(np.clip(r, -1.0, 1.0), mask=~np.isfinite(r))


def _redacted(t: pa.Table, columns: tuple[str, ...]) -> pa.Table:
    """`t` with its text `columns` passed through `redact` (no API key or key-shaped text is stored)."""
    for c in columns:
        if c in t.column_names:
            i = t.column_names.index(c)
            t = t.set_column(i, c, pa.array([redact(v) for v in t.column(c).to_pylist()], pa.string()))
    return t


def insert_edge_matches(con: duckdb.DuckDBPyConnection, similarity: str, parent: str, child: str,
                        top: dict, one: dict, tables: tuple[str, str] = ("matches", "assignments")) -> None:
    """One edge's rows of `matches` (top-k both ways: `top` with p2c_idx / p2c_r / c2p_idx / c2p_r of shape
    (n, k)) and of `assignments` (`one`, the same keys of shape (n,)). The store build and the planted family
    fill the tables the fate rules (`featureflow/store/flows.py`) read through this one function; a member
    against its control fills `tables` ("control_matches", "control_assignments") the same way."""
    for d in ("p2c", "c2p"):
        _insert(con, tables[0], _side_rows(top[f"{d}_idx"], top[f"{d}_r"], True, similarity=similarity,
                                           parent=parent, child=child, direction=d))
        rows = _side_rows(one[f"{d}_idx"], one[f"{d}_r"], similarity=similarity, parent=parent, child=child,
                          direction=d)
        rows.pop("rank")
        _insert(con, tables[1], rows)


def insert_floor(con: duckdb.DuckDBPyConnection, name: str, replica: int, similarity: str, rule: str,
                 r: np.ndarray, alive: np.ndarray) -> None:
    """`noise_floor` rows: replica 0 of `name` matched against `replica` (r per feature of replica 0)."""
    _insert(con, "noise_floor", {
        "model": np.full(len(r), name, dtype=object), "replica": np.full(len(r), replica, dtype=np.int32),
        "similarity": np.full(len(r), similarity, dtype=object), "rule": np.full(len(r), rule, dtype=object),
        "feature": np.arange(len(r), dtype=np.int32), "alive": alive, "r": _r_column(r)})


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
        con.execute("INSERT INTO controls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            control, c["root"], f"random weights ({labels.get(c['root'], c['root'])})", info["seed"], info["init"],
            read_json(sdir / "cfg.json")["d_sae"], sinfo.get("seed"), len(c["saes"]) - 1, h["l0"], h["mse"],
            h["explained_variance"], h["dead_features"], alive])


def fill_planted(con: duckdb.DuckDBPyConnection, card: dict) -> None:
    """The planted_* tables from a scorecard (`featureflow.pipeline.planted.run_planted`)."""
    rows = [{"mode": m, "population": pop, "fate": f, **{k: s[k] for k in ("calls", "correct", "support", "precision",
                                                                            "recall", "f1")}}
            for pop, key in (("all", "modes"), ("reproducible", "reproducible"))
            for m, fates in card[key].items() for f, s in fates.items()]
    _insert(con, "planted_scores", pa.Table.from_pylist(rows, schema=pa.schema([
        ("mode", pa.string()), ("population", pa.string()), ("fate", pa.string()), ("calls", pa.int32()),
        ("correct", pa.int32()), ("support", pa.int32()), ("precision", pa.float64()), ("recall", pa.float64()),
        ("f1", pa.float64())])))
    _insert(con, "planted_calls", _rows([{"mode": m, "population": pop, "fate": f, "truth": t, "n": n}
                                         for m, pops in card["calls_by_truth"].items() for pop, fates in pops.items()
                                         for f, c in fates.items() for t, n in sorted(c.items())]))
    _insert(con, "planted_drift", pa.Table.from_pylist(
        [{"mode": m, "angle": float(a), "recall": v["recall"], "support": v["support"]}
         for m, bins in card["drift"].items() for a, v in bins.items()],
        schema=pa.schema([("mode", pa.string()), ("angle", pa.float64()), ("recall", pa.float64()),
                          ("support", pa.int32())])))
    _insert(con, "planted_split", _rows([{"mode": m, **{k: s[k] for k in ("support", "detected", "called_persisting",
                                                                          "called_disappearing")}}
                                         for m, s in card["split"].items()]))
    _insert(con, "planted_saes", _rows([
        {"model": n, "replica": int(r), "mcc": card["mcc"][n][r], **{k: h[k] for k in (
            "l0", "explained_variance", "dead", "d_sae", "true_features", "resolved")}}
        for n, reps in card["sae"].items() for r, h in reps.items()]))
    con.execute("INSERT INTO planted_meta VALUES (?, ?, ?, ?)", [json.dumps(card["config"]), card["threshold"],
                                                                 json.dumps(card["truth"]), card["seconds"]])


def _fill_pw_mcc(inp: StoreInputs, con: duckdb.DuckDBPyConnection) -> None:
    """The pw_mcc table: every edge's and every replica pair's decoder PW-MCC with its chance level."""
    for folder in inp.agreements:
        a = read_json(folder / "pw_mcc.json")
        (ma, ra), (mb, rb) = a["a"], a["b"]
        con.execute("INSERT INTO pw_mcc VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            "replica" if ma == mb else "control" if mb in inp.controls else "edge", ma, ra, mb, rb, a["n_a"], a["n_b"], a["pw_mcc"], a["chance"],
            a["seed"]])


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
        _insert(con, "features", t)
        ex_path = inp.autointerp[n] / "explanations.parquet"
        if ex_path.exists():
            part = _redacted(pq.read_table(ex_path), ("explanation", "explanation_json", "reason"))
            _insert(con, "explanations", part.append_column("model", pa.array([n] * part.num_rows, pa.string())))
        sp = read_json(inp.autointerp[n] / "spend.json")
        con.execute("INSERT INTO autointerp_spend VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
            n, sp["mode"], sp.get("model"), sp["calls"], sp["cached_calls"], sp["prompt_tokens"],
            sp["completion_tokens"], sp["usd"]])
        acts = load_acts(inp.activations[n])
        _insert(con, "activation_values", {
            "model": pa.DictionaryArray.from_arrays(np.zeros(acts.nnz, dtype=np.int32), pa.array([n])),
            "feature": np.repeat(np.arange(acts.shape[1], dtype=np.int32), np.diff(acts.indptr)),
            "token_index": acts.indices.astype(np.int64), "act": acts.data.astype(np.float32)})
        for table, fname in (("feature_histograms", "histograms"), ("feature_top_tokens", "top_tokens"),
                             ("examples", "examples"), ("feature_logits", "logits")):
            part = pq.read_table(inp.activations[n] / f"{fname}.parquet")
            _insert(con, table, part.append_column("model", pa.array([n] * part.num_rows, pa.string())))
    for c in read_json(inp.cases / "cases.json"):
        con.execute("INSERT INTO cases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            c["slug"], c["title"], c["description"], c["hypothesis"], c["root_model"], c["root_feature"],
            c["root_llr"], c["root_coverage"], c["descendants"], c["status"], c["reason"]])
    _insert(con, "case_llrs", pq.read_table(inp.cases / "case_llrs.parquet"))
    _fill_pw_mcc(inp, con)
    # NaN -> NULL for "never fires" rows
    con.execute("UPDATE features SET top_token_llr = NULL WHERE isnan(top_token_llr)")
