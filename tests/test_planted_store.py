"""The planted scorecard in a run: the Pipeline's `planted` stage, the store's planted_* tables and the explorer's
/method page (and its JSON twin) showing it, linked from the overview's persistence figures."""

from __future__ import annotations

import html
import shutil

import duckdb
import pytest
from fastapi.testclient import TestClient

from featureflow.pipeline.artifacts import read_json

PLANTED = {"features": 16, "d": 8, "firing_min": 0.03, "firing_max": 0.1, "sample_positions": 3000,
           "train_positions": 10000, "children": [{"name": "a", "drifted": 0.25, "removed": 0.25, "split": 0.125,
                                                  "added": 0.25}],
           "merge": None, "sae": {"architecture": "topk", "k": 2, "expansion": 3, "lr": 0.005, "block_tokens": 1,
                                  "blocks_per_batch": 128, "tokens": 40000}}


@pytest.fixture(scope="module")
def planted_store(tiny_pipeline, tmp_path_factory):
    """The tiny run's config with a planted section: its `planted` stage's scorecard, filled into a copy of the
    tiny store by the store's own writer `insert_planted` (what the store stage calls)."""
    from featureflow.config import parse_config
    from featureflow.pipeline.runner import Pipeline
    from featureflow.store.writers import insert_planted

    from conftest import tiny_dict

    data = tmp_path_factory.mktemp("planted")
    cfg = parse_config(tiny_dict(data, planted=PLANTED))
    pl = Pipeline(cfg, device="cpu")
    folder = pl.planted()
    assert folder is not None and pl.planted() == folder  # built once, then found
    card = read_json(folder / "planted.json")
    # the run's matching (tiny.yaml: threshold 0.8, every default mode) and the section's own SAE
    assert card["threshold"] == cfg.matching.threshold and set(card["modes"]) == set(cfg.matching.modes)
    assert card["config"]["sae"]["architecture"] == "topk"
    db = data / "with_planted.duckdb"
    shutil.copy(tiny_pipeline.cfg.store_path(), db)
    con = duckdb.connect(str(db))
    insert_planted(con, card)
    con.close()
    return db, card


def test_planted_tables_hold_the_scorecard(planted_store):
    db, card = planted_store
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute('SELECT mode, population, fate, calls, correct, support, "precision", recall '
                       "FROM planted_scores").fetchall()
    assert len(rows) == 2 * 4 * len(card["modes"])
    for mode, pop, fate, calls, correct, support, p, r in rows:
        s = card["modes" if pop == "all" else "reproducible"][mode][fate]
        assert (calls, correct, support) == (s["calls"], s["correct"], s["support"])
        assert p == (correct / calls if calls else None) and r == (correct / support if support else None)
    for mode, pop, fate, n in con.execute("SELECT mode, population, fate, sum(n) FROM planted_calls GROUP BY ALL"
                                          ).fetchall():
        assert n == card["modes" if pop == "all" else "reproducible"][mode][fate]["calls"]
    assert con.execute("SELECT count(*) FROM planted_saes").fetchone()[0] == 2 * 2  # root, a; two replicas each
    con.close()


def test_method_page_renders_the_scorecard(planted_store):
    from featureflow.explorer.app import create_app

    db, card = planted_store
    client = TestClient(create_app(db))
    api = client.get("/api/method", params={"mode": "pearson"}).json()
    assert api["focus"] == "pearson"
    head = api["headline"]["all"]
    s = card["modes"]["pearson"]["persisting"]
    assert (head["calls"], head["correct"], head["support"]) == (s["calls"], s["correct"], s["support"])
    page = html.unescape(client.get("/method", params={"mode": "pearson"}).text)
    assert "finds persisting features" in page
    fmt = lambda x: "–" if x is None else f"{x:.2f}"  # noqa: E731
    fmt3 = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
    assert f"precision {fmt(s['precision'])} and recall {fmt(s['recall'])}" in " ".join(
        page.replace("<b>", "").replace("</b>", "").split())
    for mode in card["modes"]:
        for fate, sc in card["modes"][mode].items():
            assert f"{sc['support']}" in page
    for n, reps in card["mcc"].items():
        assert f"{reps['0']:.3f}" in page
    # why disappearing calls go wrong, counted from the scorecard file (not the store's tables)
    rep = card["reproducible"]["pearson"]
    S, D = rep["persisting"]["support"], rep["disappearing"]["support"]
    from_persisting = card["calls_by_truth"]["pearson"]["reproducible"]["disappearing"].get("persisting", 0)
    why = " ".join(page.replace("<b>", "").replace("</b>", "").split())
    assert (f"of the {rep['disappearing']['calls']} disappearing calls on reproducible features, {from_persisting} "
            f"were planted-persisting") in why
    assert f"needs persisting recall of at least {fmt3(1 - D / (9 * S))}; it is {fmt3(rep['persisting']['recall'])}" in why
    # every persistence figure of the overview (the Sankey and the flow table share one block) links to it
    overview = client.get("/", params={"mode": "decoder"}).text
    assert 'href="/method?mode=decoder"' in overview


def test_method_page_without_a_planted_section(tiny_pipeline):
    from featureflow.explorer.app import create_app

    client = TestClient(create_app(tiny_pipeline.cfg.store_path()))
    assert client.get("/api/method").json()["planted"] is None
    assert "no <code>planted</code> section" in client.get("/method").text


def test_a_feature_page_says_how_often_calls_like_its_own_were_right(planted_store):
    """The feature page's 'calls like this one' line: for each scored fate in the feature's label, the planted
    scorecard's precision for that mode, fate and population (reproducible when the feature is, else all), read
    from the scorecard file itself; nothing at a threshold the scorecard was not computed at."""
    from featureflow.explorer.app import create_app

    db, card = planted_store
    client = TestClient(create_app(db))
    mode, t = card["config"]["matching"]["modes"][0], card["threshold"]
    con = duckdb.connect(str(db), read_only=True)
    feats = [f for (f,) in con.execute("SELECT feature FROM features WHERE model = 'babypython' AND alive "
                                       "ORDER BY feature LIMIT 12").fetchall()]
    con.close()
    seen = set()
    for f in feats:
        d = client.get(f"/api/models/babypython/features/{f}", params={"mode": mode, "threshold": t}).json()
        pop = "reproducible" if d["stability"] and d["stability"]["stable"] else "all"
        fates = [x.strip() for x in d["lineage"]["fate"].split(",")]
        want = [(x, card["modes" if pop == "all" else "reproducible"][mode][x]) for x in fates
                if x in card["modes"][mode] and card["modes" if pop == "all" else "reproducible"][mode][x]["calls"]]
        got = d["call_precision"]
        assert [(c["fate"], c["population"], c["correct"], c["calls"]) for c in got] == \
            [(x, pop, s["correct"], s["calls"]) for x, s in want]
        for c, (_, s) in zip(got, want):
            assert c["precision"] == pytest.approx(s["correct"] / s["calls"])
        seen |= {(c["fate"], c["population"]) for c in got}
        if got:
            assert "call-precision" in client.get(f"/models/babypython/features/{f}",
                                                  params={"mode": mode, "threshold": t}).text
    assert seen  # some feature's call was scored
    other = client.get(f"/api/models/babypython/features/{feats[0]}", params={"mode": mode, "threshold": 0.31}).json()
    assert other["call_precision"] == []
