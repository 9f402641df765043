"""The explorer over the tiny run's store, through FastAPI's TestClient."""

import duckdb
import pytest
from fastapi.testclient import TestClient

from app.main import create_app, show_ws


@pytest.fixture(scope="module")
def client(tiny_pipeline):
    return TestClient(create_app(tiny_pipeline.cfg.store_path()))


@pytest.fixture(scope="module")
def con(tiny_pipeline):
    c = duckdb.connect(str(tiny_pipeline.cfg.store_path()), read_only=True)
    yield c
    c.close()


def test_overview_flows_equal_the_pipeline_flows(client, con):
    data = client.get("/api/").json()
    stored = {(r[0], r[1]): r[2:] for r in con.execute(
        "SELECT parent, child, persisting, disappearing, inherited, emerging FROM flows "
        "WHERE mode = (SELECT default_mode FROM runs)").fetchall()}
    assert len(data["flows"]) == len(stored) == 4
    for f in data["flows"]:
        assert (f["persisting"], f["disappearing"], f["inherited"], f["emerging"]) == stored[(f["parent"], f["child"])]
    sankey = data["sankey"]["data"][0]
    assert sankey["type"] == "sankey" and sum(sankey["link"]["value"]) > 0
    html = client.get("/").text
    assert 'id="sankey"' in html and "data-plot=" in html and "/vendor/plotly.min.js" in html


def test_every_mode_shows_persistence_beside_its_noise_floor(client, con):
    modes = list(con.execute("SELECT modes FROM runs").fetchone()[0])
    assert len(modes) >= 2
    for mode in modes:
        data = client.get("/api/", params={"mode": mode}).json()
        stored = {(r[0], r[1]): r[2:] for r in con.execute(
            "SELECT parent, child, persisting, floor_share FROM flows WHERE mode = ?", [mode]).fetchall()}
        assert data["mode"] == mode and data["floors"]
        for f in data["flows"]:
            assert (f["persisting"], f["floor_share"]) == pytest.approx(stored[(f["parent"], f["child"])])
            assert f["mode"] == mode and f["floor_source"]
        html = client.get("/", params={"mode": mode}).text
        assert data["mode_label"] in html and "noise floor" in html
        link_text = " ".join(data["sankey"]["data"][0]["link"]["customdata"])
        assert "noise floor" in link_text
    floors = client.get("/api/floors").json()["floors"]
    root = floors[0]
    assert root["replicas"] >= 1 and 0 <= root["share"] <= 1 and sum(h["n"] for h in root["histogram"]) == root["alive"]
    assert client.get("/floors").status_code == 200
    r = client.get("/api/?mode=nonsense")
    assert r.status_code == 422 and "pearson" in str(r.json()["detail"])


def test_threshold_redraws_from_stored_matches(client):
    lo = {(f["parent"], f["child"]): f for f in client.get("/api/?threshold=0.3").json()["flows"]}
    hi = {(f["parent"], f["child"]): f for f in client.get("/api/?threshold=0.95").json()["flows"]}
    for k in lo:
        assert lo[k]["persisting"] >= hi[k]["persisting"]
        assert lo[k]["persisting"] + lo[k]["disappearing"] == hi[k]["persisting"] + hi[k]["disappearing"]
    assert sum(f["persisting"] for f in lo.values()) > sum(f["persisting"] for f in hi.values())
    frag = client.get("/?threshold=0.5", headers={"HX-Request": "true"}).text
    assert frag.lstrip().startswith('<div id="flows"') and "<html" not in frag


def test_bad_threshold_is_422_with_reason(client):
    r = client.get("/?threshold=2")
    assert r.status_code == 422 and "threshold" in r.text
    r = client.get("/api/?threshold=abc")
    assert r.status_code == 422 and "threshold" in str(r.json()["detail"])


def _alive_feature(con, model):
    return con.execute("SELECT feature FROM features WHERE model = ? AND alive ORDER BY n_active DESC LIMIT 1",
                       [model]).fetchone()[0]


def test_feature_page_and_api(client, con):
    f = _alive_feature(con, "lua")
    data = client.get(f"/api/models/lua/features/{f}").json()
    row = con.execute("SELECT density, max_act FROM features WHERE model = 'lua' AND feature = ?", [f]).fetchone()
    assert data["feature"]["density"] == pytest.approx(row[0]) and data["feature"]["max_act"] == pytest.approx(row[1])
    ex = data["examples"]
    assert ex and ex[0]["kind"] == "top"
    top = max(t["act"] for t in ex[0]["tokens"])
    assert top == pytest.approx(row[1], rel=1e-5)  # the first top example holds the maximum
    assert {m["model"] for m in data["matches"]["parents"]} == {"babypython"}
    assert {m["model"] for m in data["matches"]["children"]} == {"luastories"}
    html = client.get(f"/models/lua/features/{f}").text
    assert 'class="tok' in html and "rgba(230, 126, 34" in html
    assert "/models/babypython/features/" in html  # match links


def test_lineage_follows_persisting_matches(client, con):
    rows = con.execute("""SELECT feature, origin_model, depth FROM features
                          WHERE model = 'luastories' AND depth > 0 LIMIT 3""").fetchall()
    for feat, origin, depth in rows:
        lin = client.get(f"/api/models/luastories/features/{feat}").json()["lineage"]
        assert len(lin["ancestors"]) == depth and lin["origin"]["model"] == origin
        assert all(a["r_to_next"] > 0.8 for a in lin["ancestors"])


def test_unknown_model_and_feature_are_404_saying_what_exists(client):
    r = client.get("/models/nosuch/features/1")
    assert r.status_code == 404 and "babypython" in r.text and "luastories" in r.text
    r = client.get("/api/models/lua/features/999999")
    assert r.status_code == 404 and "features 0 to 255" in r.json()["detail"]
    assert client.get("/models/lua/features/abc").status_code == 422


def test_compare_r_equals_the_matching_engine(client, con):
    src, dst, r = con.execute("""SELECT src, dst, r FROM matches WHERE parent = 'lua' AND child = 'luastories'
                                 AND direction = 'p2c' AND rank = 0 ORDER BY r DESC LIMIT 1""").fetchone()
    data = client.get(f"/api/compare?a=lua:{src}&b=luastories:{dst}").json()
    assert data["r"] == pytest.approx(r, abs=1e-5)
    assert data["contexts"] and all("act_a" in t and "act_b" in t for t in data["contexts"][0]["tokens"])
    assert client.get("/compare?a=lua&b=lua:1").status_code == 422
    assert client.get("/api/compare?a=nosuch:1&b=lua:1").status_code == 404


def test_merge_view(client, tiny_pipeline):
    from backend.artifacts import read_json

    curve = read_json(tiny_pipeline.member("luastories") / "merge_curve.json")
    data = client.get("/api/merge").json()
    m = data["merges"][0]
    assert m["t"] == pytest.approx(curve["t"]) and m["parent0"] == "lua" and m["parent1"] == "tinystories"
    fig = m["figure"]
    assert fig["layout"]["shapes"][0]["x0"] == pytest.approx(curve["t"])
    assert any(tr["line"].get("dash") == "dash" for tr in fig["data"])  # root baselines
    assert "chosen t" in client.get("/merge").text


def test_search_filters_sort_and_paginate(client, con):
    n_lua = con.execute("SELECT count(*) FROM features WHERE model = 'lua'").fetchone()[0]
    d = client.get("/api/features?model=lua&per_page=20&sort=max_act").json()
    assert d["total"] == n_lua and len(d["rows"]) == 20 and d["pages"] == -(-n_lua // 20)
    acts = [r["max_act"] for r in d["rows"]]
    assert acts == sorted(acts, reverse=True)
    d2 = client.get("/api/features?model=lua&per_page=20&sort=max_act&page=2").json()
    assert not {r["feature"] for r in d["rows"]} & {r["feature"] for r in d2["rows"]}
    dead = client.get("/api/features?fate=dead").json()
    assert all(r["fate"] == "dead" for r in dead["rows"])
    frag = client.get("/features?model=lua", headers={"HX-Request": "true"}).text
    assert frag.lstrip().startswith('<div id="results"')
    assert client.get("/api/features?fate=zombie").status_code == 422
    assert client.get("/api/features?model=nosuch").status_code == 404


def test_jump_schema_vendor_and_openapi(client):
    r = client.get("/jump?model=lua&feature=3", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/models/lua/features/3"
    assert client.get("/api/schema").json()["version"] >= 1
    assert client.get("/vendor/plotly.min.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/models/{model}/features/{feature}" in paths and "/api/compare" in paths


def test_tokens_are_escaped_and_whitespace_visible():
    out = str(show_ws("<b> & 'x'\t\n"))
    assert "<b>" not in out and "&lt;b&gt;" in out and "&amp;" in out and "&#39;x&#39;" in out
    assert "→" in out and "↵" in out and "·" in out


def test_store_is_opened_read_only(client):
    store = client.app.state.store
    with pytest.raises(duckdb.Error):
        store.cursor().execute("DELETE FROM features")


def test_feature_page_shows_the_labelled_offline_explanation(client, con):
    f = _alive_feature(con, "lua")
    d = client.get(f"/api/models/lua/features/{f}").json()
    e = d["explanation"]
    assert e["explainer"].startswith("offline") and e["explanation"].startswith("fires on")
    assert "pearson r" in e["sim_scale"] and "balanced accuracy" in e["detection_scale"]
    html = client.get(f"/models/lua/features/{f}").text
    assert "offline explainer" in html and "simulation score" in html


def test_every_alive_feature_is_explained(con):
    missing = con.execute("""SELECT count(*) FROM features f LEFT JOIN explanations e USING (model, feature)
                             WHERE f.alive AND e.feature IS NULL""").fetchone()[0]
    assert missing == 0


def test_search_by_explanation_text(client):
    d = client.get("/api/features?q=punctuation&per_page=200").json()
    assert d["total"] > 0 and all("punctuation" in r["explanation"] for r in d["rows"])


def test_autointerp_view_splits_scores_by_fate(client):
    d = client.get("/api/autointerp").json()
    assert {s["model"] for s in d["summary"]} == {"babypython", "lua", "tinystories", "luastories"}
    names = {t["name"] for t in d["sim_figure"]["data"]}
    assert {"persisting", "not persisting"} & names and "all (no children)" in names
    assert client.get("/autointerp").status_code == 200


def test_case_pages(client, con):
    slug, root_model, root_feature = con.execute(
        "SELECT slug, root_model, root_feature FROM cases WHERE slug = 'assignment'").fetchone()
    d = client.get("/api/cases/assignment").json()
    feats = d["features"]
    assert (feats[0]["model"], feats[0]["feature"]) == (root_model, root_feature)
    assert d["matrix"][0][0] == pytest.approx(1.0)
    hop_r = con.execute("SELECT r FROM case_hops WHERE slug = 'assignment' AND step = 1").fetchone()[0]
    assert d["matrix"][0][1] == pytest.approx(hop_r, abs=1e-5)  # exact r recomputed from stored activations
    html = client.get("/cases/assignment").text
    assert f"/models/{root_model}/features/{root_feature}" in html
    r = client.get("/cases/nosuch")
    assert r.status_code == 404 and "assignment" in r.text and "exception" in r.text
    assert "assignment" in client.get("/cases").text


def test_sankey_columns_follow_the_family_depth():
    from app.figures import sankey

    models = [{"model": m, "label": m.upper()} for m in ("root", "a", "b", "merge")]
    flows = [{"parent": p, "child": c, "persisting": 3, "disappearing": 2, "persist_share": 0.6}
             for p, c in (("root", "a"), ("root", "b"), ("a", "merge"), ("b", "merge"))]
    fig = sankey(models, flows, {"a": 1, "b": 2, "merge": 4}, 0.8)["data"][0]
    x = dict(zip(fig["node"]["customdata"], fig["node"]["x"]))
    assert x["ROOT"] < x["A"] == x["B"] < x["MERGE"]
    assert x["A"] < x["features new in MERGE"] < x["MERGE"]
    assert x["A features with no match in MERGE"] == x["MERGE"]
    assert {"lost from A", "lost from B", "lost", "new"} <= set(fig["node"]["label"])
    assert sum(fig["link"]["value"]) == 4 * 3 + 4 * 2 + 1 + 2 + 4


def test_models_pages(client, con):
    d = client.get("/api/models").json()
    assert {e["entity"] for e in d["entities"] if e["kind"] == "member"} == {"lua", "tinystories", "luastories"}
    assert d["heatmap"]["data"][0]["type"] == "heatmap" and d["additivity"]
    m = client.get("/api/models/lua").json()
    assert m["fingerprint"]["base"] == "babypython" and m["neighbours"]
    top = m["features_behind"][0]
    assert top["base"] == "babypython" and top["delta_mean"] == pytest.approx(top["child_mean"] - top["base_mean"])
    assert client.get("/api/models/babypython").json()["fingerprint"] is None
    assert client.get("/models/nosuch").status_code == 404
    assert client.get("/api/models?variant=delta-nope").status_code == 422
    assert "Nearest models" in client.get("/models/lua").text


def test_feature_page_shows_logit_effects(client, con):
    f = _alive_feature(con, "lua")
    logits = client.get(f"/api/models/lua/features/{f}").json()["feature"]["logits"]
    pos = [l["value"] for l in logits if l["sign"] == "+"]
    neg = [l["value"] for l in logits if l["sign"] == "-"]
    assert len(pos) == len(neg) == 10 and pos == sorted(pos, reverse=True) and neg == sorted(neg)
    assert min(pos) >= max(neg)
    assert "promotes" in client.get(f"/models/lua/features/{f}").text
