"""Exports of the tiny run's store: Parquet (and the store rebuilt from it, served identically on every
/api route), Neuronpedia's export layout, and `featureflow report` at another threshold and mode."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient

from featureflow.explorer.app import create_app
from featureflow.store.export import ExportError, export_neuronpedia, export_parquet, import_parquet
from featureflow.store.schema import SCHEMA_VERSION, TABLES

from api_calls import api_calls


@pytest.fixture(scope="module")
def store(tiny_pipeline) -> Path:
    return tiny_pipeline.cfg.store_path()


@pytest.fixture(scope="module")
def con(store):
    c = duckdb.connect(str(store), read_only=True)
    yield c
    c.close()


@pytest.fixture(scope="module")
def parquet_dir(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "parquet"
    export_parquet(store, out)
    return out


# ------------------------------------------------------------------------------------ parquet
def test_parquet_export_has_every_table_manifest_and_readme(parquet_dir, con):
    import pyarrow.parquet as pq

    m = json.loads((parquet_dir / "manifest.json").read_text())
    assert m["schema_version"] == SCHEMA_VERSION and m["run"] == con.execute("SELECT name FROM runs").fetchone()[0]
    assert set(m["tables"]) == set(TABLES)
    readme = (parquet_dir / "README.md").read_text()
    for table, (doc, _) in TABLES.items():
        rows = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        f = pq.ParquetFile(parquet_dir / m["tables"][table]["file"])
        assert f.metadata.num_rows == m["tables"][table]["rows"] == rows, table
        cols = [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                                          "ORDER BY ordinal_position", [table]).fetchall()]
        assert f.schema_arrow.names == cols
        assert f"## {table}" in readme and doc in readme
        assert all(f"`{c}`" in readme for c in cols)
    assert m["tables"]["activation_values"]["rows"] > 0 and m["tables"]["matches"]["rows"] > 0


def test_store_rebuilt_from_parquet_serves_identical_api(parquet_dir, store, con, tmp_path):
    rebuilt = import_parquet(parquet_dir, tmp_path / "rebuilt.duckdb")
    a, b = TestClient(create_app(store)), TestClient(create_app(rebuilt))
    calls = api_calls(a, con)
    routes = {u for u, _ in calls}
    assert "/api/" in routes and "/api/schema" in routes and any("/features/" in u for u in routes)
    assert any(u.startswith("/api/cases/") for u in routes) and len(calls) > 20
    for url, params in calls:
        ra, rb = a.get(url, params=params), b.get(url, params=params)
        assert ra.status_code == 200, (url, params, ra.text[:300])
        assert rb.status_code == 200 and rb.json() == ra.json(), (url, params)
    # the same rows in the same order; activation_values (the big one) by per-feature checksums
    rc = duckdb.connect(str(rebuilt), read_only=True)
    try:
        for table in ("matches", "noise_floor", "features", "examples", "fingerprints", "runs"):
            assert rc.execute(f'SELECT * FROM "{table}"').fetchall() == con.execute(f'SELECT * FROM "{table}"').fetchall()
        sums = ("SELECT model, feature, count(*), sum(token_index), hash(list(act ORDER BY token_index)) "
                "FROM activation_values GROUP BY ALL ORDER BY ALL")
        assert rc.execute(sums).fetchall() == con.execute(sums).fetchall()
        assert len(rc.execute("SELECT * FROM duckdb_indexes()").fetchall()) == \
            len(con.execute("SELECT * FROM duckdb_indexes()").fetchall())
    finally:
        rc.close()


def test_import_refuses_an_export_it_cannot_trust(parquet_dir, store, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(parquet_dir, bad)
    m = json.loads((bad / "manifest.json").read_text())
    (bad / "manifest.json").write_text(json.dumps({**m, "schema_version": SCHEMA_VERSION - 1}))
    with pytest.raises(ExportError, match=f"schema version {SCHEMA_VERSION - 1}"):
        import_parquet(bad, tmp_path / "a.duckdb")
    m["tables"]["matches"]["rows"] += 1
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ExportError, match="table 'matches'"):
        import_parquet(bad, tmp_path / "b.duckdb")
    assert not (tmp_path / "b.duckdb").exists() and not list(tmp_path.glob(".b.duckdb.tmp-*"))
    (bad / "cases.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="cases.parquet"):
        import_parquet(bad, tmp_path / "c.duckdb")
    with pytest.raises(ExportError, match="already exists"):
        import_parquet(parquet_dir, Path(bad / "manifest.json"))
    with pytest.raises(ExportError, match="not an empty folder"):  # never mixed with older files
        export_parquet(store, bad)


# ------------------------------------------------------------------------------------ neuronpedia
# Field -> JSON type, from the dataclasses of SAEDashboard's neuronpedia_export.py / neuronpedia-utils'
# db_models and the Prisma schema of hijohnnylin/neuronpedia (ExplanationScore, Explanation).
NUM, OPT_NUM, OPT_STR, OPT_INT = (int, float), (int, float, type(None)), (str, type(None)), (int, type(None))
NEURON = {"modelId": str, "layer": str, "index": str, "creatorId": str, "createdAt": str, "maxActApprox": NUM,
          "hasVector": bool, "vector": list, "vectorLabel": OPT_STR, "vectorDefaultSteerStrength": OPT_NUM,
          "hookName": OPT_STR, "topkCosSimIndices": list, "topkCosSimValues": list,
          "neuron_alignment_indices": list, "neuron_alignment_values": list, "neuron_alignment_l1": list,
          "correlated_neurons_indices": list, "correlated_neurons_pearson": list, "correlated_neurons_l1": list,
          "correlated_features_indices": list, "correlated_features_pearson": list, "correlated_features_l1": list,
          "neg_str": list, "neg_values": list, "pos_str": list, "pos_values": list, "frac_nonzero": NUM,
          "freq_hist_data_bar_heights": list, "freq_hist_data_bar_values": list,
          "logits_hist_data_bar_heights": list, "logits_hist_data_bar_values": list, "decoder_weights_dist": list}
ACTIVATION = {"id": str, "tokens": list, "index": str, "layer": str, "modelId": str, "maxValue": NUM,
              "maxValueTokenIndex": int, "minValue": NUM, "values": list, "creatorId": str, "dataSource": OPT_STR,
              "dataIndex": OPT_STR, "dfaValues": list, "dfaTargetIndex": OPT_INT, "dfaMaxValue": OPT_NUM,
              "createdAt": str, "lossValues": list, "logitContributions": OPT_STR, "binMin": OPT_NUM,
              "binMax": OPT_NUM, "binContains": OPT_NUM, "qualifyingTokenIndex": OPT_INT}
EXPLANATION = {"id": str, "modelId": str, "layer": str, "index": str, "description": str, "authorId": str,
               "typeName": OPT_STR, "explanationModelName": OPT_STR, "notes": OPT_STR, "createdAt": str,
               "scores": list}
SCORE = {"id": str, "initiatedByUserId": str, "value": NUM, "explanationId": str, "explanationScoreTypeName": str,
         "explanationScoreModelName": str, "jsonDetails": str, "createdAt": str}
MODEL = {"id": str, "instruct": bool, "creatorId": str, "displayNameShort": str, "displayName": str,
         "visibility": str, "layers": int, "neuronsPerLayer": int, "createdAt": str, "owner": str, "updatedAt": str}
SOURCE = {"id": str, "modelId": str, "setName": str, "creatorId": str, "hasDashboards": bool, "visibility": str,
          "num_prompts": OPT_INT, "num_tokens_in_prompt": OPT_INT, "dataset": OPT_STR, "createdAt": str}
SOURCESET = {"modelId": str, "name": str, "creatorId": str, "description": str, "creatorName": str,
             "releaseName": OPT_STR, "visibility": str, "urls": list, "createdAt": str}
RELEASE = {"name": str, "description": str, "creatorName": str, "creatorId": str, "urls": list, "createdAt": str}


def _check(row: dict, spec: dict, what: str) -> None:
    for key, typ in spec.items():
        assert key in row, f"{what}: no '{key}'"
        assert isinstance(row[key], typ) and not (typ == NUM and isinstance(row[key], bool)), \
            f"{what}.{key} = {row[key]!r} is not {typ}"


def _jsonl(path: Path) -> list[dict]:
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_neuronpedia_export_has_the_layout_and_the_store_values(store, con, tmp_path):
    out = tmp_path / "np"
    folders = export_neuronpedia(store, out, batch_size=100)
    models = con.execute("SELECT m.model, m.d_sae, s.hook FROM models m JOIN sae_metrics s USING (model) "
                         "ORDER BY m.idx").fetchall()
    assert len(folders) == len(models)
    vocab = dict(con.execute("SELECT token_id, text FROM vocab").fetchall())
    sample = [vocab[t] for (t,) in con.execute("SELECT token_id FROM sample_tokens ORDER BY token_index").fetchall()]
    config = {n: {r["name"] for r in _jsonl(out / "config" / f"{n}.jsonl")}
              for n in ("explanation_type", "explanation_model_type", "explanation_score_type", "explanation_score_model")}
    n_scores = 0
    for (model, d_sae, hook), folder in zip(models, folders):
        (mrow,), (src,), (sset,), (rel,) = (_jsonl(folder / f"{n}.jsonl") for n in ("model", "source", "sourceset",
                                                                                   "release"))
        _check(mrow, MODEL, "model"), _check(src, SOURCE, "source"), _check(sset, SOURCESET, "sourceset")
        _check(rel, RELEASE, "release")
        assert folder == out / mrow["id"] / src["id"] and src["modelId"] == sset["modelId"] == mrow["id"]
        layer = int(re.match(r"blocks\.(\d+)\.", hook).group(1))
        assert src["id"] == f"{layer}-{sset['name']}" and src["setName"] == sset["name"]
        assert sset["releaseName"] == rel["name"] and re.fullmatch(r"[a-z0-9_-]+", mrow["id"])

        batches = sorted((folder / "features").glob("batch-*.jsonl.gz"), key=lambda p: int(p.name[6:-9]))
        assert len(batches) == -(-d_sae // 100)
        neurons = []
        for k, b in enumerate(batches):
            rows = _jsonl(b)
            assert {int(r["index"]) // 100 for r in rows} == {k}
            assert (folder / "activations" / b.name).exists() and (folder / "explanations" / b.name).exists()
            neurons += rows
        assert [int(r["index"]) for r in neurons] == list(range(d_sae))
        feats = {r[0]: r[1:] for r in con.execute(
            "SELECT f.feature, f.density, f.max_act, h.counts FROM features f LEFT JOIN feature_histograms h "
            "USING (model, feature) WHERE f.model = ?", [model]).fetchall()}
        logits = {}
        for f, sign, tok, val in con.execute("SELECT feature, sign, token_id, value FROM feature_logits WHERE model = ? "
                                             "ORDER BY feature, sign, rank", [model]).fetchall():
            logits.setdefault((f, sign), ([], []))[0].append(vocab[tok])
            logits[(f, sign)][1].append(val)
        for r in neurons:
            _check(r, NEURON, "feature")
            f = int(r["index"])
            density, max_act, counts = feats[f]
            assert (r["modelId"], r["layer"], r["hookName"]) == (mrow["id"], src["id"], hook)
            assert r["frac_nonzero"] == pytest.approx(density) and r["maxActApprox"] == pytest.approx(max_act)
            assert r["freq_hist_data_bar_heights"] == [float(c) for c in (counts or [])]
            assert len(r["freq_hist_data_bar_values"]) == len(r["freq_hist_data_bar_heights"])
            assert (r["pos_str"], r["pos_values"]) == (logits.get((f, "+"), ([], [])))
            assert (r["neg_str"], r["neg_values"]) == (logits.get((f, "-"), ([], [])))
            assert r["pos_values"] == sorted(r["pos_values"], reverse=True) and r["neg_values"] == sorted(r["neg_values"])

        acts = [a for b in batches for a in _jsonl(folder / "activations" / b.name)]
        examples = con.execute("""SELECT feature, kind, rank, center, start, "end", acts FROM examples WHERE model = ?
                                  ORDER BY feature, kind = 'top' DESC, kind DESC, rank""", [model]).fetchall()
        assert len(acts) == len(examples) > 0 and len({a["id"] for a in acts}) == len(acts)
        contains: dict[int, dict[float, float]] = {}
        for a, (f, kind, rank, center, start, end, values) in zip(acts, examples):
            _check(a, ACTIVATION, "activation")
            assert int(a["index"]) == f and a["tokens"] == sample[start:end] and a["values"] == pytest.approx(values)
            assert a["values"][a["maxValueTokenIndex"]] == a["maxValue"] == max(a["values"])
            assert a["qualifyingTokenIndex"] == center - start
            if kind == "top":
                assert (a["binMin"], a["binContains"]) == (-1, -1) and a["binMax"] == pytest.approx(feats[f][1])
            else:  # the qualifying token's activation lies in its equal-count bin
                assert a["binMin"] <= a["values"][a["qualifyingTokenIndex"]] <= a["binMax"]
                contains.setdefault(f, {})[kind] = a["binContains"]
        for f, shares in contains.items():  # the bins of a feature share its non-zero activations
            assert sum(shares.values()) == pytest.approx(1.0), f

        expl = {r[0]: r[1:] for r in con.execute(
            "SELECT feature, explanation, explainer, sim_score, detection_score FROM explanations "
            "WHERE model = ? AND status = 'ok'", [model]).fetchall()}
        rows = [e for b in batches for e in _jsonl(folder / "explanations" / b.name)]
        assert {int(e["index"]) for e in rows} == set(expl) and expl
        for e in rows:
            _check(e, EXPLANATION, "explanation")
            text, explainer, sim, det = expl[int(e["index"])]
            assert e["description"] == text and e["typeName"] in config["explanation_type"]
            assert e["explanationModelName"] == explainer.removeprefix("llm:")
            assert e["explanationModelName"] in config["explanation_model_type"]
            scores = {s["explanationScoreTypeName"]: s for s in e["scores"]}
            for s in e["scores"]:
                _check(s, SCORE, "score")
                assert s["explanationId"] == e["id"] and s["explanationScoreTypeName"] in config["explanation_score_type"]
                assert s["explanationScoreModelName"] in config["explanation_score_model"]
                assert json.loads(s["jsonDetails"])["scale"]
            for name, value in (("featureflow-simulation", sim), ("featureflow-detection", det)):
                if value is None or value != value:  # no score: none exported
                    assert name not in scores
                else:
                    assert scores[name]["value"] == pytest.approx(value)
            n_scores += len(scores)
    assert n_scores > 0


# ------------------------------------------------------------------------------------ report
def _printed_persisting(text: str) -> dict[tuple[str, str], int]:
    return {(m[1], m[2]): int(m[3]) for m in re.finditer(r"^(\S+) -> (\S+)\s+(\d+)\s", text, re.M)}


def test_report_at_another_threshold_and_mode(store, con, capsys):
    from featureflow.cli import main

    modes = list(con.execute("SELECT modes FROM runs").fetchone()[0])
    mode = next(m for m in modes if m.endswith("-1to1"))
    sim = mode.removesuffix("-1to1")
    assert main(["report", "--db", str(store), "--threshold", "0.3", "--mode", mode]) == 0
    out = capsys.readouterr().out
    assert "similarity > 0.3" in out and f"mode {mode} " in out
    assert not any(f"mode {m} " in out for m in modes if m != mode)
    # persisting parent features, counted here straight from the one-to-one assignment
    expected = dict(((p, c), n) for p, c, n in con.execute("""
        SELECT a.parent, a.child, count(*) FILTER (WHERE a.r > 0.3) FROM assignments a
        JOIN features f ON f.model = a.parent AND f.feature = a.src
        WHERE a.similarity = ? AND a.direction = 'p2c' AND f.alive GROUP BY a.parent, a.child""", [sim]).fetchall())
    printed = _printed_persisting(out)
    assert printed == expected and len(printed) == 4
    assert main(["report", "--db", str(store), "--mode", mode]) == 0
    assert _printed_persisting(capsys.readouterr().out) != printed  # the run's default threshold reads differently

    assert main(["report", "--db", str(store), "--mode", "nonsense"]) == 2
    assert "pearson" in capsys.readouterr().err
    assert main(["report", "--db", str(store), "--threshold", "1.5"]) == 2
    assert "outside (-1, 1)" in capsys.readouterr().err
