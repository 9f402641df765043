"""Export a run's store for other tools, and rebuild a store from a Parquet export.

`featureflow export --db RUN.duckdb --format parquet DIR` writes every table that
`featureflow/store/schema.py` defines as `DIR/<table>.parquet` (zstd), a `manifest.json` (format, schema
version, run name, per table: file, row count and column types) and a `README.md` of the tables and
their columns, generated from the schema module's own documentation. `featureflow import --from DIR
--db OUT.duckdb` recreates the store through the same DDL (`schema.TABLES`, then `schema.INDEXES`),
checks every row count against the manifest, and `featureflow serve --db OUT.duckdb` serves it.

`featureflow export --db RUN.duckdb --format neuronpedia DIR` writes one Neuronpedia source per
family member in the directory layout and field names of Neuronpedia's bulk exports and imports:

    DIR/config/explanation_type.jsonl, explanation_model_type.jsonl,
               explanation_score_type.jsonl, explanation_score_model.jsonl
    DIR/<modelId>/<sourceId>/release.jsonl, model.jsonl, sourceset.jsonl, source.jsonl
    DIR/<modelId>/<sourceId>/features/batch-<k>.jsonl.gz      one `Neuron` row per feature
    DIR/<modelId>/<sourceId>/activations/batch-<k>.jsonl.gz   one `Activation` row per example window
    DIR/<modelId>/<sourceId>/explanations/batch-<k>.jsonl.gz  one `Explanation` row per explained feature,
                                                              its `scores` (`ExplanationScore` rows) nested

Batch k holds features [k * 1024, (k + 1) * 1024). The layout and the `Neuron` / `Activation` /
`Model` / `Source` / `SourceSet` / `SourceRelease` fields follow SAEDashboard's
`sae_dashboard/neuronpedia/neuronpedia_export.py` (which mirrors neuronpedia-utils'
`neuronpedia_utils/db_models/*.py`); the `Explanation` columns and the `config/` files follow
hijohnnylin/neuronpedia `utils/neuronpedia-utils/neuronpedia_utils/export-data.py`; `ExplanationScore`
and the four config tables follow its Prisma schema `apps/webapp/prisma/schema.prisma`, nested under
`scores` the way Neuronpedia's feature API returns explanations. Conventions kept from SAEDashboard's
`neuronpedia_converter.py`: `pos_str` / `pos_values` are the top promoted logits, `neg_*` the most
suppressed, `freq_hist_data_bar_values` the histogram's bin centres and `_bar_heights` its counts, and
a top-activation example has `binMin` -1, `binMax` the feature's max and `binContains` -1. Quantile
examples carry their equal-count bin's activation range and share of non-zero activations.

What featureflow does not have stays at the dataclass default: no decoder vectors (`hasVector` false),
no logit histogram, no cosine-similar or correlated features. `creatorId` is a placeholder
(`--creator-id`) that Neuronpedia's import replaces with its own default creator.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import duckdb
import numpy as np
from featureflow.progress import progress as tqdm  # a bar on a terminal, log lines elsewhere

from featureflow.store.rows import dicts
from featureflow.store.schema import INDEXES, SCHEMA_VERSION, TABLES
from featureflow.store.writers import new_store

FORMATS = ("parquet", "neuronpedia")
PARQUET_FORMAT = "featureflow-parquet"
PARQUET_FORMAT_VERSION = 1
NP_BATCH = 1024  # features per Neuronpedia batch file, as in Neuronpedia's own exports
NP_CREATOR = "featureflow"


class ExportError(ValueError):
    """A store or an export that cannot be read or written; the message says what is wrong."""


# ------------------------------------------------------------------------------------ plumbing
def open_store(db: str | Path) -> duckdb.DuckDBPyConnection:
    """The store read-only, after checking it is one this featureflow reads."""
    path = Path(db)
    if not path.exists():
        raise FileNotFoundError(f"store '{path}' does not exist (run `featureflow run --config ...` first)")
    con = duckdb.connect(str(path), read_only=True)
    try:
        version = con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    except duckdb.Error as e:
        con.close()
        raise ExportError(f"'{path}' is not a featureflow store (no schema_version table): {e}") from None
    if version != SCHEMA_VERSION:
        con.close()
        raise ExportError(f"store '{path}' has schema version {version}; this featureflow reads version "
                          f"{SCHEMA_VERSION}: rebuild it with `featureflow run`")
    return con


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A sibling temporary folder renamed to `out` only when the block completes; `out` must not exist
    or be an empty folder, so an export never mixes with older files."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"output '{out}' already exists and is not an empty folder: choose a new one")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return [tuple(r) for r in con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
        "ORDER BY ordinal_position", [table]).fetchall()]


def export(db: str | Path, out: str | Path, fmt: str, **kw) -> Path:
    if fmt == "parquet":
        export_parquet(db, out)
    elif fmt == "neuronpedia":
        export_neuronpedia(db, out, **kw)
    else:
        raise ExportError(f"unknown export format '{fmt}' (formats: {', '.join(FORMATS)})")
    return Path(out)


# ------------------------------------------------------------------------------------ parquet
def export_parquet(db: str | Path, out: str | Path) -> dict:
    """Every schema table as Parquet, the manifest and the README of columns. Returns the manifest."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportError("--format parquet needs pyarrow (not installed): pip install 'featureflow[export]'") from None

    con = open_store(db)
    try:
        missing = [t for t in TABLES if not _columns(con, t)]
        if missing:
            raise ExportError(f"store '{db}' lacks the tables {', '.join(missing)} of schema version {SCHEMA_VERSION}")
        counts = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in TABLES}
        run = con.execute("SELECT name FROM runs").fetchone()
        created = con.execute("SELECT max(created_at) FROM schema_version").fetchone()[0]
        manifest = {"format": PARQUET_FORMAT, "format_version": PARQUET_FORMAT_VERSION,
                    "schema_version": SCHEMA_VERSION, "run": run[0] if run else None,
                    "store_created_at": created.isoformat() if created else None,
                    "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "tables": {}}
        with staging(Path(out)) as tmp, tqdm(total=sum(counts.values()), desc="export parquet", unit="row",
                                             unit_scale=True, dynamic_ncols=True, mininterval=1.0) as bar:
            for table in TABLES:
                # insertion order is kept (DuckDB's default), so sorted tables stay sorted
                rel = con.cursor().sql(f'SELECT * FROM "{table}"')  # its own cursor: nothing left pending
                reader = (getattr(rel, "to_arrow_reader", None) or rel.fetch_arrow_reader)(1_000_000)  # duckdb 2 / 1.x
                path = tmp / f"{table}.parquet"
                with pq.ParquetWriter(path, reader.schema, **_encodings(reader.schema)) as writer:
                    for batch in reader:
                        writer.write_batch(batch)
                        bar.update(batch.num_rows)
                manifest["tables"][table] = {"file": path.name, "rows": counts[table],
                                             "columns": [list(c) for c in _columns(con, table)]}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
            (tmp / "README.md").write_text(parquet_readme(manifest))
    finally:
        con.close()
    return manifest


def _encodings(schema) -> dict:
    """ParquetWriter options: zstd; delta-encoded integers and byte-stream-split floats (numeric columns
    are long runs of sorted ids and noisy activations: 30% smaller than dictionaries on the demo's
    `activation_values`), dictionaries for the rest."""
    import pyarrow.types as pt

    enc = {f.name: "DELTA_BINARY_PACKED" if pt.is_integer(f.type) else "BYTE_STREAM_SPLIT"
           for f in schema if pt.is_integer(f.type) or pt.is_floating(f.type)}
    return {"compression": "zstd", "use_dictionary": [f.name for f in schema if f.name not in enc],
            "column_encoding": enc or None}


def parquet_readme(manifest: dict) -> str:
    """The export's README: how to read it, then every table with its documentation (from
    `featureflow/store/schema.py`), row count and columns with their types."""
    out = [f"# featureflow run '{manifest['run']}': the store as Parquet", "",
           f"Schema version {manifest['schema_version']}, exported {manifest['exported_at']}. One file per table "
           "of the run's DuckDB store; `manifest.json` lists each file, its row count and column types.", "",
           "```python",
           "import duckdb; duckdb.sql(\"SELECT * FROM 'features.parquet'\")",
           "import pandas as pd; pd.read_parquet('matches.parquet')",
           "```", "",
           "Rebuild the store and serve it: `featureflow import --from THIS_DIR --db run.duckdb`, then "
           "`featureflow serve --db run.duckdb`.", "",
           "Models are named by their config name (`models.model`); features by (model, feature) with `feature` "
           "the SAE latent index. A matching mode is a similarity plus a rule: the `best` rule reads rank 0 of "
           "`matches`, the `1to1` rule reads `assignments`.", ""]
    for table, (doc, _) in TABLES.items():
        info = manifest["tables"][table]
        out += [f"## {table}", "", doc, "", f"`{info['file']}`: {info['rows']:,} rows.", "",
                "| column | type |", "|---|---|"]
        out += [f"| `{name}` | {typ} |" for name, typ in info["columns"]]
        out.append("")
    return "\n".join(out)


def read_manifest(src: str | Path) -> dict:
    """The manifest of a Parquet export, checked against this featureflow's schema."""
    src = Path(src)
    path = src / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"'{src}' is not a featureflow Parquet export: no manifest.json "
                                "(write one with `featureflow export --format parquet`)")
    m = json.loads(path.read_text())
    if m.get("format") != PARQUET_FORMAT:
        raise ExportError(f"'{path}' has format {m.get('format')!r}, not {PARQUET_FORMAT!r}")
    if m.get("schema_version") != SCHEMA_VERSION:
        raise ExportError(f"export '{src}' was written with schema version {m.get('schema_version')}; this "
                          f"featureflow reads version {SCHEMA_VERSION}: import it with the featureflow that wrote it")
    tables = m.get("tables", {})
    missing = [t for t in TABLES if t not in tables]
    extra = [t for t in tables if t not in TABLES]
    if missing or extra:
        raise ExportError(f"export '{src}' does not match schema version {SCHEMA_VERSION}: "
                          f"missing tables {missing or 'none'}, unknown tables {extra or 'none'}")
    absent = [tables[t]["file"] for t in TABLES if not (src / tables[t]["file"]).exists()]
    if absent:
        raise FileNotFoundError(f"export '{src}' lacks the files {', '.join(absent)} named in its manifest")
    return m


def import_parquet(src: str | Path, db: str | Path, force: bool = False) -> Path:
    """Recreate a store from a Parquet export through the schema module's DDL, into a temporary file
    renamed to `db` once every table holds the manifest's row count."""
    src, db = Path(src), Path(db)
    m = read_manifest(src)
    if db.exists() and not force:
        raise ExportError(f"store '{db}' already exists (pass --force to replace it)")
    with new_store(db) as con:
        for name, (_, body) in TABLES.items():
            con.execute(f"CREATE TABLE {name} ({body})")
        for table in tqdm(TABLES, desc="import parquet", unit="table", dynamic_ncols=True):
            con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM read_parquet(?)',
                        [str(src / m["tables"][table]["file"])])
            got = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            if got != m["tables"][table]["rows"]:
                raise ExportError(f"table '{table}': {got} rows in {m['tables'][table]['file']}, "
                                  f"the manifest says {m['tables'][table]['rows']}")
        for stmt in INDEXES:
            con.execute(stmt)
    return db


# ------------------------------------------------------------------------------------ neuronpedia
def np_id(text: str) -> str:
    """A Neuronpedia id: lower case letters, digits, dashes and underscores."""
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "x"


def hook_layer(hook: str) -> int:
    m = re.match(r"blocks\.(\d+)\.", hook or "")
    return int(m.group(1)) if m else 0


def source_ids(run: str, model: str, hook: str, d_sae: int) -> tuple[str, str, str]:
    """(modelId, sourceSet name, source id) of one member's SAE, as Neuronpedia names them:
    the source id is `<layer>-<set name>`."""
    point = re.sub(r"^blocks\.\d+\.", "", hook or "").replace("hook_", "")
    set_name = f"featureflow-{np_id(point)}-{d_sae}"
    return np_id(f"{run}-{model}"), set_name, f"{hook_layer(hook)}-{set_name}"


def _num(x: Any) -> Any:
    """JSON-safe numbers: numpy scalars to Python, NaN / inf to None."""
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, np.integer):
        return int(x)
    return x


def _jsonl_gz(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data, compresslevel=5))


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in rows))


def _q(con, sql: str, params: list) -> list[dict]:
    return dicts(con.execute(sql, params))


def explanation_model(name: str | None) -> str:
    """The explainer / scorer model as Neuronpedia names it (`llm:gpt-4o-mini` -> `gpt-4o-mini`)."""
    return (name or "unknown").removeprefix("llm:")


EXPLANATION_TYPE = "featureflow-windows"
SCORE_TYPES = {"sim_score": "featureflow-simulation", "detection_score": "featureflow-detection"}


def export_neuronpedia(db: str | Path, out: str | Path, creator_id: str = NP_CREATOR,
                       batch_size: int = NP_BATCH) -> list[Path]:
    """Per member, its SAE's feature dashboards as a Neuronpedia source. Returns the source folders."""
    con = open_store(db)
    try:
        run = _q(con, "SELECT * FROM runs", [])[0]
        created = con.execute("SELECT max(created_at) FROM schema_version").fetchone()[0].isoformat()
        cfg = json.loads(run["config_json"] or "{}")
        qbins = (cfg.get("sample") or {}).get("quantile_bins") or len(
            con.execute("SELECT DISTINCT kind FROM examples WHERE kind <> 'top'").fetchall()) or 1
        models = _q(con, """SELECT m.model, m.label, m.hidden, m.d_mlp, m.d_sae, s.hook, s.architecture, s.d_in, s.k,
                                   s.recipe
                            FROM models m JOIN sae_metrics s USING (model) ORDER BY m.idx""", [])
        vocab = dict(con.execute("SELECT token_id, text FROM vocab").fetchall())
        ids, doms = con.execute("SELECT list(token_id ORDER BY token_index), list(domain ORDER BY token_index) "
                                "FROM sample_tokens").fetchone()
        tok_text = [vocab.get(t, "") for t in ids or []]
        doms = doms or []
        context = run["sample_context"] or 1
        expl = _q(con, "SELECT DISTINCT explainer, simulator, sim_scale, detection_scale, quantisation "
                       "FROM explanations WHERE status = 'ok'", [])
        release = f"featureflow-{np_id(run['name'])}"
        base = {"creatorId": creator_id, "createdAt": created}
        folders = []
        with staging(Path(out)) as tmp:
            _np_config(tmp / "config", expl, run["name"], base)
            for m in models:
                folders.append(_np_source(con, tmp, run, m, release, base, vocab, tok_text, doms, context,
                                          qbins, batch_size))
        return [Path(out) / f.relative_to(tmp) for f in folders]
    finally:
        con.close()


def _np_config(folder: Path, expl: list[dict], run: str, base: dict) -> None:
    """The explanation / score types and models the explanations refer to (Neuronpedia's `config/`)."""
    folder.mkdir(parents=True)
    stamp = {"createdAt": base["createdAt"], "updatedAt": base["createdAt"]}
    quant = sorted({e["quantisation"] for e in expl if e["quantisation"]})
    _jsonl(folder / "explanation_type.jsonl", [{
        "name": EXPLANATION_TYPE, "displayName": "featureflow windows",
        "description": "featureflow autointerp: explained from ~32-token windows of the shared sample (top windows at "
                       "even ranks and true equal-count activation quantiles), every token's activation quantised: "
                       + ("; ".join(quant) or "0-10"),
        "featured": False, "isAttention": False, "settings": None, "url": None, "creatorName": "featureflow",
        "creatorId": base["creatorId"], **stamp}])
    models = sorted({explanation_model(e["explainer"]) for e in expl} | {explanation_model(e["simulator"]) for e in expl})
    _jsonl(folder / "explanation_model_type.jsonl", [{
        "name": name, "displayName": name,
        "description": ("featureflow's offline explainer / simulator from token statistics (no LLM)"
                        if name.startswith("offline-") else f"{name} through an OpenAI-compatible API"),
        "featured": False, "openRouterModelId": None, "url": None, "creatorName": "featureflow", **stamp}
        for name in models])
    _jsonl(folder / "explanation_score_model.jsonl", [{
        "name": name, "displayName": name, "description": f"featureflow scorer {name}", "featured": False,
        "openRouterModelId": None, "url": None, "creatorName": "featureflow", **stamp}
        for name in sorted({explanation_model(e["simulator"]) for e in expl})])
    scales = {k: sorted({e[k.replace("_score", "_scale")] for e in expl if e[k.replace("_score", "_scale")]})
              for k in SCORE_TYPES}
    _jsonl(folder / "explanation_score_type.jsonl", [{
        "name": name, "displayName": name.removeprefix("featureflow-"),
        "description": ("simulation: the simulator predicts every held-out token's level from the explanation"
                        if col == "sim_score" else
                        "detection: the scorer says which held-out windows fire (as many random as top windows)"),
        "featured": False, "isAttention": False, "scoreDescription": "; ".join(scales[col]) or None,
        "scorerModel": None, "settings": None, "url": None, "creatorName": "featureflow",
        "creatorId": base["creatorId"], **stamp} for col, name in SCORE_TYPES.items()])


def _where(a: str) -> str:
    """One batch of one model's features, in table alias `a` (parameters: model, first, end)."""
    return f"{a}.model = ? AND {a}.feature >= ? AND {a}.feature < ?"


def _np_source(con, out: Path, run: dict, m: dict, release: str, base: dict, vocab: dict[int, str],
               tok_text: list[str], doms: list[str], context: int, qbins: int, batch_size: int) -> Path:
    """One member's source: its metadata files, then features, activations and explanations in batches."""
    model_id, set_name, source_id = source_ids(run["name"], m["model"], m["hook"], m["d_sae"])
    folder = out / model_id / source_id
    folder.mkdir(parents=True)
    _np_meta(folder, run, m, model_id, set_name, source_id, release, base, context)
    ident = {"modelId": model_id, "layer": source_id}
    bar = tqdm(total=m["d_sae"], desc=f"neuronpedia {m['model']}", unit="feat", dynamic_ncols=True, mininterval=1.0)
    for k, lo in enumerate(range(0, m["d_sae"], batch_size)):
        args = [m["model"], lo, min(lo + batch_size, m["d_sae"])]
        name = f"batch-{k}.jsonl.gz"
        _jsonl_gz(folder / "features" / name, _np_neurons(con, args, ident, base, m["hook"], set_name, vocab))
        _jsonl_gz(folder / "activations" / name, _np_activations(con, args, ident, base, tok_text, doms, context,
                                                                 qbins))
        _jsonl_gz(folder / "explanations" / name, _np_explanations(con, args, ident, base))
        bar.update(args[2] - lo)
    bar.close()
    return folder


def _np_meta(folder: Path, run: dict, m: dict, model_id: str, set_name: str, source_id: str, release: str,
             base: dict, context: int) -> None:
    """release.jsonl, model.jsonl, sourceset.jsonl and source.jsonl of one member."""
    created, creator = base["createdAt"], base["creatorId"]
    _jsonl(folder / "release.jsonl", [{
        "name": release, "description": run["description"] or f"featureflow run {run['name']}",
        "creatorName": "featureflow", "creatorId": creator, "visibility": "PUBLIC", "isNewUi": False,
        "featured": False, "descriptionShort": f"featureflow run {run['name']}", "urls": [], "creatorEmail": None,
        "creatorNameShort": "featureflow", "defaultSourceSetName": None, "defaultSourceId": None,
        "defaultUmapSourceIds": [], "createdAt": created}])
    _jsonl(folder / "model.jsonl", [{  # layers: 0 (Neuronpedia's default), the store does not record depth
        "id": model_id, "instruct": False, "creatorId": creator, "displayNameShort": m["label"],
        "displayName": f"{m['label']} ({run['name']})", "tlensId": None, "dimension": m["hidden"],
        "visibility": "PUBLIC", "defaultSourceSetName": set_name, "defaultSourceId": source_id,
        "inferenceEnabled": False, "layers": 0, "neuronsPerLayer": m["d_mlp"] or 0, "createdAt": created,
        "owner": "featureflow", "updatedAt": created, "website": None}])
    _jsonl(folder / "sourceset.jsonl", [{
        "modelId": model_id, "name": set_name, "creatorId": creator, "hasDashboards": True,
        "visibility": "PUBLIC", "description": f"{m['hook']} - {m['d_sae']} ({m['architecture']} SAE)",
        "type": "", "creatorName": "featureflow", "urls": [], "creatorEmail": None, "releaseName": release,
        "defaultOfModelId": model_id, "defaultRange": 1, "defaultShowBreaks": True, "showDfa": False,
        "showCorrelated": False, "showHeadAttribution": False, "showUmap": False, "createdAt": created}])
    saelens = {"architecture": m["architecture"], "d_in": m["d_in"], "d_sae": m["d_sae"], "hook_name": m["hook"],
               "k": m["k"], "recipe": m["recipe"]}
    _jsonl(folder / "source.jsonl", [{
        "id": source_id, "modelId": model_id, "setName": set_name, "creatorId": creator,
        "hasDashboards": True, "inferenceEnabled": False, "inferenceHosts": [], "saelensConfig": json.dumps(saelens),
        "saelensRelease": None, "saelensSaeId": None, "hfRepoId": None, "hfFolderId": None, "visibility": "PUBLIC",
        "defaultOfModelId": model_id, "hasUmap": False, "hasUmapLogSparsity": False, "hasUmapClusters": False,
        "num_prompts": (run["sample_tokens"] or 0) // context, "num_tokens_in_prompt": context,
        "dataset": f"featureflow shared sample of run '{run['name']}'",
        "notes": f"featureflow run '{run['name']}': {m['label']} ({m['model']}), SAE on {m['hook']}",
        "createdAt": created}])


def _np_neurons(con, args: list, ident: dict, base: dict, hook: str, set_name: str,
                vocab: dict[int, str]) -> list[dict]:
    """`Neuron` rows: density, max activation, activation histogram, top promoted / suppressed logits."""
    logits: dict[int, dict[str, tuple[list, list]]] = {}
    for r in _q(con, f"""SELECT l.feature, l.sign, l.token_id, l.value FROM feature_logits l WHERE {_where('l')}
                         ORDER BY l.feature, l.sign, l.rank""", args):
        d = logits.setdefault(r["feature"], {"+": ([], []), "-": ([], [])})
        d[r["sign"]][0].append(vocab.get(r["token_id"], ""))
        d[r["sign"]][1].append(_num(r["value"]))
    rows = []
    for f in _q(con, f"""SELECT f.feature, f.density, f.max_act, h.edges, h.counts FROM features f
                         LEFT JOIN feature_histograms h ON h.model = f.model AND h.feature = f.feature
                         WHERE {_where('f')} ORDER BY f.feature""", args):
        edges, counts = f["edges"] or [], f["counts"] or []
        lg = logits.get(f["feature"], {"+": ([], []), "-": ([], [])})
        rows.append({
            **ident, "index": str(f["feature"]), "creatorId": base["creatorId"], "createdAt": base["createdAt"],
            "maxActApprox": _num(f["max_act"]), "hasVector": False, "vector": [], "vectorLabel": None,
            "vectorDefaultSteerStrength": 10, "hookName": hook, "topkCosSimIndices": [], "topkCosSimValues": [],
            "neuron_alignment_indices": [], "neuron_alignment_values": [], "neuron_alignment_l1": [],
            "correlated_neurons_indices": [], "correlated_neurons_pearson": [], "correlated_neurons_l1": [],
            "correlated_features_indices": [], "correlated_features_pearson": [], "correlated_features_l1": [],
            "neg_str": lg["-"][0], "neg_values": lg["-"][1], "pos_str": lg["+"][0], "pos_values": lg["+"][1],
            "frac_nonzero": _num(f["density"]) or 0.0,
            "freq_hist_data_bar_heights": [float(c) for c in counts],
            "freq_hist_data_bar_values": [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])],
            "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [], "decoder_weights_dist": [],
            "sourceSetName": set_name})
    return rows


def _np_activations(con, args: list, ident: dict, base: dict, tok_text: list[str], doms: list[str],
                    context: int, qbins: int) -> list[dict]:
    """`Activation` rows: every example window with its tokens and values; a quantile example carries its
    equal-count bin (NTILE splits like `np.array_split` in featureflow/features.py: larger bins first)."""
    bins = {(r["feature"], r["bin"]): r for r in _q(con, f"""
        WITH q AS (SELECT feature, act, ntile(?) OVER (PARTITION BY feature ORDER BY act) - 1 AS bin
                   FROM activation_values a WHERE {_where('a')})
        SELECT feature, bin, min(act) AS lo, max(act) AS hi, count(*) AS n,
               sum(count(*)) OVER (PARTITION BY feature) AS total FROM q GROUP BY feature, bin""", [qbins] + args)}
    rows = []
    for e in _q(con, f"""SELECT e.feature, e.kind, e.rank, e.center, e.start, e."end", e.acts, f.max_act
                         FROM examples e JOIN features f USING (model, feature) WHERE {_where('e')}
                         ORDER BY e.feature, e.kind = 'top' DESC, e.kind DESC, e.rank""", args):
        values = e["acts"]
        peak = max(values)
        if e["kind"] == "top":
            bmin, bmax, bcont = -1.0, _num(e["max_act"]), -1.0
        else:
            b = bins.get((e["feature"], int(e["kind"][1:])))
            bmin, bmax, bcont = (float(b["lo"]), float(b["hi"]), b["n"] / b["total"]) if b else (None, None, None)
        rows.append({
            "id": f"ff-{ident['modelId']}-{ident['layer']}-{e['feature']}-{e['kind']}-{e['rank']}",
            "tokens": tok_text[e["start"]:e["end"]], **ident, "index": str(e["feature"]),
            "maxValue": peak, "maxValueTokenIndex": values.index(peak), "minValue": min(values), "values": values,
            "creatorId": base["creatorId"], "dataSource": doms[e["center"]] if e["center"] < len(doms) else None,
            "dataIndex": str(e["start"] // context), "dfaValues": [], "dfaTargetIndex": None, "dfaMaxValue": None,
            "createdAt": base["createdAt"], "lossValues": [], "logitContributions": None,
            "binMin": bmin, "binMax": bmax, "binContains": bcont, "qualifyingTokenIndex": e["center"] - e["start"]})
    return rows


def _np_explanations(con, args: list, ident: dict, base: dict) -> list[dict]:
    """`Explanation` rows of the explained features, each with its typed `ExplanationScore`s."""
    rows = []
    for x in _q(con, f"SELECT x.* FROM explanations x WHERE {_where('x')} AND x.status = 'ok' ORDER BY x.feature",
                args):
        eid = f"ff-{ident['modelId']}-{ident['layer']}-{x['feature']}-explanation"
        scores = [{"id": f"{eid}-{name.removeprefix('featureflow-')}", "initiatedByUserId": base["creatorId"],
                   "value": _num(x[col]), "explanationId": eid, "explanationScoreTypeName": name,
                   "explanationScoreModelName": explanation_model(x["simulator"]),
                   "jsonDetails": json.dumps({"scale": x[col.replace("_score", "_scale")],
                                              "quantisation": x["quantisation"], "n_explain": x["n_explain"],
                                              "n_score": x["n_score"]}),
                   "createdAt": base["createdAt"]}
                  for col, name in SCORE_TYPES.items() if _num(x[col]) is not None]
        rows.append({"id": eid, **ident, "index": str(x["feature"]), "description": x["explanation"],
                     "authorId": base["creatorId"], "embedding": None, "triggeredByUserId": None,
                     "typeName": EXPLANATION_TYPE, "explanationModelName": explanation_model(x["explainer"]),
                     "notes": x["explanation_json"], "createdAt": base["createdAt"], "scores": scores})
    return rows
