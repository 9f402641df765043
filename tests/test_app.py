"""The explorer over the tiny run's store, through FastAPI's TestClient."""

import re
import unicodedata

import duckdb
import pytest
from fastapi.testclient import TestClient

from featureflow.explorer.app import create_app
from featureflow.explorer.rendering import show_ws
from oracles import stored_pearson


@pytest.fixture(scope="module")
def client(tiny_pipeline):
    return TestClient(create_app(tiny_pipeline.cfg.store_path()))


@pytest.fixture(scope="module")
def synthetic_client(synthetic_store):
    """The explorer on the synthetic store (tests/synthetic_store.py): no trained model, for what any store shows."""
    return TestClient(create_app(synthetic_store.path))


@pytest.fixture(scope="module")
def con(tiny_pipeline):
    c = duckdb.connect(str(tiny_pipeline.cfg.store_path()), read_only=True)
    yield c
    c.close()


def test_overview_draws_the_sankey_with_the_vendored_plotly(client):
    # the counts themselves: tests/test_explorer_fast.py, against numpy on the synthetic store's arrays
    data = client.get("/api/").json()
    assert len(data["flows"]) == 4
    sankey = data["sankey"]["data"][0]
    assert sankey["type"] == "sankey" and sum(sankey["link"]["value"]) > 0
    html = client.get("/").text
    assert 'id="sankey"' in html and "data-plot=" in html


def test_every_mode_shows_persistence_beside_its_noise_floor(client, con):
    modes = list(con.execute("SELECT modes FROM runs").fetchone()[0])
    assert len(modes) >= 2
    for mode in modes:
        data = client.get("/api/", params={"mode": mode, "population": "all"}).json()  # junctions of all features
        assert data["mode"] == mode and data["floors"]
        for f in data["flows"]:  # the counts and floors themselves: tests/test_explorer_fast.py
            assert f["mode"] == mode and f["floor_source"] and 0 <= f["floor_share"] <= 1
        html = client.get("/", params={"mode": mode}).text
        assert data["mode_label"] in html and "noise floor" in html
        # a junction is drawn for every edge with flow through it, the others are named beside the Sankey
        junctions = [text for text, _, key in data["sankey"]["data"][0]["node"]["customdata"] if key.startswith("edge:")]
        flowing = [f for f in data["flows"] if f["persisting"] or f["inherited"]]
        assert len(junctions) == len(flowing) and all("noise floor" in text for text in junctions)
        assert len(data["sankey"]["undrawn"]) == 4 - len(flowing)
    floors = client.get("/api/floors").json()["floors"]
    root = floors[0]
    assert root["replicas"] >= 1 and 0 <= root["share"] <= 1 and sum(h["n"] for h in root["histogram"]) == root["alive"]
    assert client.get("/floors").status_code == 200
    r = client.get("/api/?mode=nonsense")
    assert r.status_code == 422 and "pearson" in str(r.json()["detail"])


def test_threshold_redraws_from_stored_matches(synthetic_client):
    lo = {(f["parent"], f["child"]): f for f in synthetic_client.get("/api/?threshold=0.3").json()["flows"]}
    hi = {(f["parent"], f["child"]): f for f in synthetic_client.get("/api/?threshold=0.95").json()["flows"]}
    for k in lo:
        assert lo[k]["persisting"] >= hi[k]["persisting"]
        assert sum(lo[k][f] for f in ("persisting", "split", "absorbed", "disappearing")) == lo[k]["parent_alive"]
        assert lo[k]["parent_alive"] == hi[k]["parent_alive"]
    assert sum(f["persisting"] for f in lo.values()) > sum(f["persisting"] for f in hi.values())
    frag = synthetic_client.get("/?threshold=0.5", headers={"HX-Request": "true"}).text
    assert frag.lstrip().startswith('<div id="flows"') and "<html" not in frag


def test_bad_threshold_is_422_with_reason(synthetic_client):
    r = synthetic_client.get("/?threshold=2")
    assert r.status_code == 422 and "threshold" in r.text
    r = synthetic_client.get("/api/?threshold=abc")
    assert r.status_code == 422 and "threshold" in str(r.json()["detail"])


def _alive_feature(con, model):
    return con.execute("SELECT feature FROM features WHERE model = ? AND alive ORDER BY n_active DESC LIMIT 1",
                       [model]).fetchone()[0]


def test_feature_page_and_api(client, con):
    f = _alive_feature(con, "lua")
    data = client.get(f"/api/models/lua/features/{f}").json()
    row = con.execute("SELECT density, max_act FROM features WHERE model = 'lua' AND feature = ?", [f]).fetchone()
    assert data["feature"]["density"] == pytest.approx(row[0]) and data["feature"]["max_act"] == pytest.approx(row[1])
    assert "examples" not in data  # loaded on demand: the page's fragment and its JSON twin
    ex = client.get(f"/api{data['examples_url']}").json()["examples"]
    assert ex and ex[0]["kind"] == "top"
    top = max(t["act"] for t in ex[0]["tokens"])
    assert top == pytest.approx(row[1], rel=1e-5)  # the first top example holds the maximum
    assert {m["model"] for m in data["matches"]["parents"]} == {"babypython"}
    assert {m["model"] for m in data["matches"]["children"]} == {"luastories"}
    html = client.get(f"/models/lua/features/{f}").text
    assert f'hx-get="/models/lua/features/{f}/examples"' in html and 'class="ctx"' not in html
    assert "/models/babypython/features/" in html  # match links
    frag = client.get(f"/models/lua/features/{f}/examples", headers={"HX-Request": "true"}).text
    assert 'class="tok' in frag and "rgba(230, 126, 34" in frag and "<html" not in frag


def _chains(con, threshold: float | None = None, similarity: str = "pearson") -> dict:
    """Every feature's chain of best persisting parent matches at `threshold` (default: the run's), walked in
    Python over the stored rank-0 match rows (`oracles.lineage_chains`; the default mode is pearson, best
    match)."""
    from oracles import lineage_chains

    t = con.execute("SELECT default_threshold FROM runs").fetchone()[0] if threshold is None else threshold
    rows = con.execute("""SELECT parent, child, src, dst, r FROM matches
                          WHERE rank = 0 AND direction = 'c2p' AND similarity = ?""", [similarity]).fetchall()
    return lineage_chains(rows, [m for (m,) in con.execute("SELECT model FROM models ORDER BY idx").fetchall()], t)


def _inherited(con, model: str = "luastories", n: int = 1) -> list[tuple[int, list]]:
    """`n` features of `model` whose chain of persisting parent matches (at the run's default threshold) starts
    in another model, with it."""
    return sorted((f, ch) for (m, f), ch in _chains(con).items() if m == model and ch)[:n]


def test_lineage_follows_persisting_matches(client, con):
    rows = _inherited(con, n=3)
    assert rows
    t = con.execute("SELECT default_threshold FROM runs").fetchone()[0]
    for feat, chain in rows:
        lin = client.get(f"/api/models/luastories/features/{feat}").json()["lineage"]
        assert len(lin["ancestors"]) == len(chain) and lin["origin"]["model"] == chain[-1][0]
        assert [(a["model"], a["feature"]) for a in lin["ancestors"]] == [(m, f) for m, f, _ in reversed(chain)]
        assert all(a["r_to_next"] > t for a in lin["ancestors"])


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


def test_compare_labels_colours_and_scatter(client, tiny_pipeline):
    import numpy as np

    A, B = tiny_pipeline.load_acts("lua").toarray(), tiny_pipeline.load_acts("luastories").toarray()
    fa = int(np.argmax((A > 0).sum(0)))
    fb = int(np.argmax([abs(np.corrcoef(A[:, fa], B[:, j])[0, 1]) if B[:, j].std() else 0 for j in range(B.shape[1])]))
    d = client.get(f"/api/compare?a=lua:{fa}&b=luastories:{fb}").json()
    either = (A[:, fa] > 0) | (B[:, fb] > 0)
    fig = d["scatter"]
    pts = fig["data"][0]
    assert pts["type"] == "scatter" and len(pts["x"]) == len(pts["y"]) == min(int(either.sum()), len(pts["x"]))
    step = -(-int(either.sum()) // 4000)
    idx = np.flatnonzero(either)[::step]
    assert pts["customdata"] == idx.tolist()
    assert np.allclose(pts["x"], A[idx, fa], atol=1e-6) and np.allclose(pts["y"], B[idx, fb], atol=1e-6)
    assert f"r = {d['r']:.3f}" in fig["layout"]["title"]["text"]
    assert f"{len(A) - int(either.sum()):,} where neither fires" in fig["layout"]["title"]["text"]
    assert d["colors"]["a"] != d["colors"]["b"]
    html = client.get(f"/compare?a=lua:{fa}&b=luastories:{fb}").text
    h1 = re.search(r"<h1>(.*?)</h1>", html, re.S).group(1)
    assert f"lua:{fa}" not in h1 and f"#{fa}" in h1 and f"#{fb}" in h1
    assert f"lua:{fa}" not in re.sub(r'(href|value)="[^"]*"', "", html)  # no raw model:feature name anywhere shown
    rows_a = re.findall(r'<div class="shared-row row-a"><span class="rowlabel">(.*?)</span><div class="ctx">(.*?)</div>',
                        html, re.S)
    rows_b = re.findall(r'<div class="shared-row row-b"><span class="rowlabel">(.*?)</span><div class="ctx">(.*?)</div>',
                        html, re.S)
    assert rows_a and len(rows_a) == len(rows_b) == len(d["contexts"])
    assert all(f"lua #{fa}" in label for label, _ in rows_a) and all(f"luastories #{fb}" in label for label, _ in rows_b)
    a_rgb, b_rgb = d["colors"]["a"], d["colors"]["b"]
    assert any(f"rgba({a_rgb}," in t for _, t in rows_a) and not any(f"rgba({b_rgb}," in t for _, t in rows_a)
    assert any(f"rgba({b_rgb}," in t for _, t in rows_b) and not any(f"rgba({a_rgb}," in t for _, t in rows_b)
    assert 'id="scatter"' in html and "class=\"legend\"" in html


def test_compare_picker_opens_the_chosen_features(client):
    html = client.get("/compare").text
    assert 'action="/compare/pick"' in html and 'name="a_model"' in html and 'name="b_feature"' in html
    assert 'href="/features?' in html  # the search link carries the view state
    r = client.get("/compare/pick?a_model=lua&a_feature=3&b_model=tinystories&b_feature=4&threshold=0.5"
                   "&mode=pearson-1to1", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/compare?a=lua%3A3&b=tinystories%3A4&threshold=0.5&mode=pearson-1to1"
    page = client.get(r.headers["location"]).text
    assert re.search(r'<option value="lua" selected>', page) and re.search(r'<option value="tinystories" selected>', page)
    assert 'name="a_feature" type="number" min="0" step="1" required value="3"' in page
    assert 'name="threshold" value="0.5"' in page
    assert client.get("/compare/pick?a_model=nosuch&a_feature=1&b_model=lua&b_feature=1").status_code == 404
    assert client.get("/compare/pick?a_model=lua&a_feature=99999&b_model=lua&b_feature=1").status_code == 404
    assert client.get("/api/compare?a=lua:3").json()["scatter"] is None


def test_merge_view(client, tiny_pipeline):
    from featureflow.pipeline.artifacts import read_json

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


def _fates_by_hand(con, mode: str, t: float, edge: tuple[str, str] | None = None) -> dict:
    """(model, fate) -> number of features, from the raw matches: an independent check of the search SQL."""
    sim, rule = mode.split("-")[0], "1to1" if mode.endswith("-1to1") else "best"
    table = "assignments" if rule == "1to1" else "matches WHERE rank = 0 AND"
    rows = con.execute(f"SELECT parent, child, direction, src, r FROM {table} "
                       f"{'WHERE' if rule == '1to1' else ''} similarity = ?", [sim]).fetchall()
    alive = {(m, f) for m, f in con.execute("SELECT model, feature FROM features WHERE alive").fetchall()}
    up, down = {}, {}
    for parent, child, direction, src, r in rows:
        if edge and (parent, child) != edge:
            continue
        key = (parent if direction == "p2c" else child, src)
        side = down if direction == "p2c" else up
        side[key] = side.get(key, False) or (r is not None and r > t)
    out: dict = {}
    for side, yes, no in ((down, "persisting", "disappearing"), (up, "inherited", "emerging")):
        for key, above in side.items():
            if key in alive:
                out[(key[0], yes if above else no)] = out.get((key[0], yes if above else no), 0) + 1
    return out


def test_search_fates_follow_threshold_mode_and_edge(client, con):
    models = [m for (m,) in con.execute("SELECT model FROM models ORDER BY idx").fetchall()]
    for mode, t in (("pearson", 0.6), ("pearson-1to1", 0.8)):
        state = {"threshold": t, "mode": mode}
        overview = client.get("/api/", params=state).json()
        by_hand = _fates_by_hand(con, mode, t)
        for m in models:
            for fate in ("persisting", "disappearing", "inherited", "emerging"):
                d = client.get("/api/features", params={**state, "model": m, "fate": fate, "per_page": 200}).json()
                assert d["total"] == by_hand.get((m, fate), 0), (mode, m, fate)
                assert all(fate in r["fate"].split(", ") and r["model"] == m for r in d["rows"])
            if m in overview["emerged"]:  # the Sankey's "new" count of a model over all its parents
                em = client.get("/api/features", params={**state, "model": m, "fate": "emerging"}).json()
                assert em["total"] == overview["emerged"][m]
        for f in overview["flows"]:  # per edge: exactly the flow counts and the features of the edge lists
            edge_hand = _fates_by_hand(con, mode, t, (f["parent"], f["child"]))
            for fate in ("persisting", "disappearing", "inherited", "emerging"):
                q = {**state, "edge": f"{f['parent']}>{f['child']}", "fate": fate, "sort": "feature",
                     "per_page": 200}
                d = client.get("/api/features", params=q).json()
                side = f["parent"] if fate in ("persisting", "disappearing") else f["child"]
                assert d["total"] == f[fate] == edge_hand.get((side, fate), 0)
                listed = client.get(f"/api/edges/{f['parent']}/{f['child']}",
                                    params={**state, "fate": fate, "sort": "feature", "order": "asc",
                                            "per_page": 200}).json()["rows"]
                assert [r["feature"] for r in d["rows"]] == [r["feature"] for r in listed]
                assert all(r["model"] == side and r["fate"] == fate for r in d["rows"])
    # a lower threshold persists at least as many; the default state is the run's
    lo = client.get("/api/features", params={"fate": "persisting", "threshold": 0.3}).json()["total"]
    hi = client.get("/api/features", params={"fate": "persisting", "threshold": 0.9}).json()["total"]
    assert lo > hi
    html = client.get("/features", params={"fate": "emerging", "threshold": 0.6, "mode": "pearson-1to1"}).text
    assert "similarity &gt; 0.60" in html and "selected>emerging</option>" in html
    assert "threshold=0.6&amp;mode=pearson-1to1" in html  # links carry the view state


def test_search_sorts_both_ways_and_bounds_its_parameters(client):
    for sort in ("parent_r", "density", "feature"):
        q = {"model": "lua", "sort": sort, "per_page": 30}
        key = {"parent_r": "parent_r", "density": "density", "feature": "feature"}[sort]
        down = [r[key] for r in client.get("/api/features", params={**q, "order": "desc"}).json()["rows"]]
        up = [r[key] for r in client.get("/api/features", params={**q, "order": "asc"}).json()["rows"]]
        assert down == sorted(down, reverse=True) and up == sorted(up) and up[0] < down[0]
    natural = [r["feature"] for r in client.get("/api/features", params={"model": "lua", "sort": "feature"}).json()["rows"]]
    assert natural == sorted(natural)
    for bad in ({"order": "sideways"}, {"threshold": 1.5}, {"edge": "lua"}, {"page": 0}, {"per_page": 201},
                {"fate": "zombie"}, {"mode": "vibes"}):
        r = client.get("/api/features", params=bad)
        assert r.status_code == 422 and r.json()["detail"], bad
    r = client.get("/api/features", params={"edge": "lua>babypython"})
    assert r.status_code == 404 and "babypython -> lua" in r.json()["detail"]


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


def test_hidden_characters_render_as_visible_escapes():
    # a right-to-left override cannot reverse what follows: it is drawn as text, never emitted
    out = str(show_ws("\u202eevil"))
    assert "\u202e" not in out and "‹U+202E›" in out and out.endswith("evil")
    assert "right-to-left override" in out  # its name on hover
    for ch in ("\u200b", "\u200f", "\u2066", "\u2069", "\ufeff", "\x00", "\x1b", "\x85", "\xa0", "\u2028",
               "\U000e0041", "\ufe0f", "\u3164"):
        assert f"‹U+{ord(ch):04X}›" in str(show_ws("a" + ch + "b")) and ch not in str(show_ws("a" + ch + "b"))
    assert "‹empty›" in str(show_ws("")) and str(show_ws(None)) == ""
    assert "‹U+0301›" in str(show_ws("\u0301a")) and "a\u0301" in str(show_ws("a\u0301"))  # a mark joins its own token only
    # nothing invisible survives: every control, format, separator or unassigned code point of the BMP and
    # the tag block, in one string, comes out as printable HTML
    hostile = "".join(chr(i) for i in [*range(0x10000), *range(0xE0000, 0xE0080)]
                      if (unicodedata.category(chr(i))[0] in "CZ" and chr(i) not in " \t\n"))
    out = str(show_ws(hostile + "<script>"))
    assert not [c for c in out if unicodedata.category(c)[0] in "CZ" and c != " "]
    assert "<script>" not in out and "&lt;script&gt;" in out
    # prose: words keep their spaces; quoted tokens, runs of spaces, tabs and newlines show
    prose = str(show_ws('fires on " the" (9%),  "a\\"b"\nnext\u202e', prose=True))
    assert prose.startswith("fires on &#34;<span class=\"ws-space\">·</span>the&#34; (9%),")
    assert prose.count("ws-space") == 3 and "ws-nl" in prose and "‹U+202E›" in prose and "<br>" not in prose


def test_feature_page_escapes_hidden_tokens_and_keeps_newline_chips_whole(client, con):
    model, feat = con.execute("""SELECT l.model, l.feature FROM feature_logits l JOIN vocab v USING (token_id)
                                 WHERE v.text BETWEEN chr(0) AND chr(8) ORDER BY l.model, l.feature LIMIT 1""").fetchone()
    html = client.get(f"/models/{model}/features/{feat}").text
    assert "‹U+000" in html and not [c for c in html if unicodedata.category(c) == "Cc" and c not in "\n\t"]
    # a newline token is one chip: the line break comes after its span closes, never inside it
    model, feat = con.execute("""SELECT e.model, e.feature FROM examples e JOIN sample_tokens s
                                   ON s.token_index >= e.start AND s.token_index < e."end"
                                 WHERE s.token_id = (SELECT token_id FROM vocab WHERE text = chr(10)) AND e.kind = 'top'
                                 ORDER BY e.model, e.feature LIMIT 1""").fetchone()
    html = client.get(f"/models/{model}/features/{feat}/examples").text
    assert '<span class="ws-nl">↵</span></span><br>' in html and '↵</span><br></span>' not in html

def test_pages_name_models_by_label(tiny_pipeline, con):
    app = create_app(tiny_pipeline.cfg.store_path())
    for m in app.state.store.models:  # the tiny run's labels equal its names: relabel in memory only
        m["label"] = f"Label of {m['model']}"
    c = TestClient(app)
    [(feat, _)] = _inherited(con)
    html = c.get(f"/models/luastories/features/{feat}").text
    assert re.search(r'<span>origin</span><b><a href="[^"]*">Label of \w+ #', html)
    assert "<td>Label of babypython → Label of lua</td>" in c.get("/").text
    rows = c.get("/features", params={"model": "luastories", "per_page": 200, "edge": "lua>luastories"}).text
    assert re.search(r"<td>Label of \w+</td>", rows) and "on the edge Label of lua → Label of luastories" in rows


def test_store_is_opened_read_only(synthetic_client):
    store = synthetic_client.app.state.store
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


def test_autointerp_at_threshold_06_differs_from_the_default_where_fates_differ(client, tiny_pipeline):
    """The tiny run: /autointerp?threshold=0.6 splits explained features by their fate at 0.6 (counted in numpy
    from the raw match rows, tests/test_explorer_fast.py), and differs from the default page exactly when those
    counts differ."""
    from test_explorer_fast import _persisting_from_rows

    db = tiny_pipeline.cfg.store_path()
    got = {}
    for t in (None, 0.6):
        d = client.get("/api/autointerp", params={} if t is None else {"threshold": t}).json()
        counts: dict = {}
        for row in d["scores"]:
            counts[(row["model"], row["persisting"])] = counts.get((row["model"], row["persisting"]), 0) + 1
        assert counts == _persisting_from_rows(db, d["state"]["threshold"], d["state"]["mode"])
        got[t] = counts
    default = tiny_pipeline.cfg.matching.threshold
    mode = tiny_pipeline.cfg.matching.modes[0]
    assert (got[None] != got[0.6]) == (_persisting_from_rows(db, default, mode) != _persisting_from_rows(db, 0.6, mode))


def test_case_pages(client, con):
    slug, root_model, root_feature = con.execute(
        "SELECT slug, root_model, root_feature FROM cases WHERE slug = 'assignment'").fetchone()
    d = client.get("/api/cases/assignment").json()
    feats = d["features"]
    assert (feats[0]["model"], feats[0]["feature"]) == (root_model, root_feature)
    # every cross-correlation (the root with itself included) is numpy's r on the stored activations
    assert len(feats) > 1 and len({(f["model"], f["feature"]) for f in feats}) > 1
    for i, a in enumerate(feats):
        for j, b in enumerate(feats):
            want, got = stored_pearson(con, (a["model"], a["feature"]), (b["model"], b["feature"])), d["matrix"][i][j]
            assert got is None if want is None else got == pytest.approx(want, abs=1e-9), (a, b)
    first = d["case"]["hops"][0]
    j = next(i for i, f in enumerate(feats) if (f["model"], f["feature"]) == (first["model"], first["feature"]))
    assert d["matrix"][0][j] == pytest.approx(first["r"], abs=1e-5)  # exact r recomputed from stored activations
    html = client.get("/cases/assignment").text
    assert f"/models/{root_model}/features/{root_feature}" in html
    r = client.get("/cases/nosuch")
    assert r.status_code == 404 and "assignment" in r.text and "exception" in r.text
    assert "assignment" in client.get("/cases").text


def _descendant_hops(con, tiny_pipeline, slug, root_model, root_feature, threshold, mode):
    """The case's hops by brute force over the stored match rows (`oracles.descendant_hops`): the root
    feature's partners in each child model (rank 0, or the assigned partner under 1to1), followed down while
    r > threshold, kept to the descendants the case's config names."""
    from oracles import descendant_hops

    sim, one = (mode[:-len("-1to1")], True) if mode.endswith("-1to1") else (mode, False)
    rows = con.execute("SELECT parent, child, src, dst, r FROM assignments WHERE direction = 'p2c' AND similarity = ?"
                       if one else
                       "SELECT parent, child, src, dst, r FROM matches WHERE direction = 'p2c' AND similarity = ? "
                       "AND rank = 0", [sim]).fetchall()
    keep = next(c.descendants for c in tiny_pipeline.cfg.cases if c.slug == slug)
    return descendant_hops(rows, root_model, root_feature, threshold, keep)


@pytest.mark.parametrize("slug", ["assignment", "exception"])
@pytest.mark.parametrize("state", ["", "threshold=0.3&mode=pearson-1to1", "threshold=0.2&mode=pearson"])
def test_case_hops_are_the_root_features_lineage(client, con, tiny_pipeline, state, slug):
    body = client.get(f"/api/cases/{slug}?{state}").json()
    c = body["case"]
    status = con.execute("SELECT status FROM cases WHERE slug = ?", [slug]).fetchone()[0]
    if status != "ok":  # no root found on the tiny family (its reason is stored): no hops to follow
        assert c["root_model"] is None and c["hops"] == []
        return
    want = _descendant_hops(con, tiny_pipeline, slug, c["root_model"], c["root_feature"], body["state"]["threshold"],
                            body["state"]["mode"])
    got = [(h["model"], h["feature"], h["parent_model"], h["parent_feature"], h["r"], h["persists"]) for h in c["hops"]]
    assert want and sorted(got) == sorted(want)
    assert c["mean_r"] == pytest.approx(sum(h["r"] for h in c["hops"]) / len(c["hops"]))
    assert c["persists_everywhere"] == all(h["persists"] for h in c["hops"])
    llr = dict(((m, f), v) for m, f, v in con.execute(
        "SELECT model, feature, llr FROM case_llrs WHERE slug = ?", [slug]).fetchall())
    assert [h["llr"] for h in c["hops"]] == [llr.get((h["model"], h["feature"])) for h in c["hops"]]
    html = client.get(f"/cases/{slug}?{state}").text
    for m, f, *_ in want:
        assert f'href="/models/{m}/features/{f}?' in html
    listed = next(x for x in client.get(f"/api/cases?{state}").json()["cases"] if x["slug"] == slug)
    assert [(h["model"], h["feature"], h["parent_feature"], h["r"], h["llr"]) for h in listed["hops"]] == \
        [(h["model"], h["feature"], h["parent_feature"], h["r"], h["llr"]) for h in c["hops"]]


def test_case_follows_the_view_state(client):
    deep = client.get("/api/cases/assignment?threshold=0.2&mode=pearson").json()["case"]["hops"]
    default = client.get("/api/cases/assignment").json()["case"]["hops"]
    assert {h["model"] for h in deep} == {"lua", "tinystories", "luastories"}  # every descendant reached
    assert len(deep) > len(default)  # at 0.8 the tiny run's hops do not persist, so the tree stops early
    assert "threshold=0.2&amp;mode=pearson" in client.get("/cases?threshold=0.2&mode=pearson").text


def test_case_rows_show_every_feature_on_the_same_tokens(client, tiny_pipeline):
    d = client.get("/api/cases/assignment?threshold=0.2&mode=pearson").json()
    acts = {f["model"]: tiny_pipeline.load_acts(f["model"]).tocsc() for f in d["features"]}
    root = d["features"][0]
    exs = client.get(f"/api/models/{root['model']}/features/{root['feature']}/examples").json()["examples"]
    tops = [c["start"] for c in d["contexts"] if c["kind"].startswith("top")]
    rand = [c["start"] for c in d["contexts"] if c["kind"].startswith("random")]
    assert tops == [e["start"] for e in exs if e["kind"] == "top"][:4]
    assert rand and set(rand) <= {e["start"] for e in exs if e["kind"] != "top"}
    for c in d["contexts"]:
        assert [(r["model"], r["feature"]) for r in c["rows"]] == [(f["model"], f["feature"]) for f in d["features"]]
        for r in c["rows"]:
            idx = [t["index"] for t in r["tokens"]]
            assert idx == list(range(c["start"], c["end"]))
            col = acts[r["model"]][:, r["feature"]].toarray().ravel()
            assert [t["act"] for t in r["tokens"]] == pytest.approx(col[idx].tolist(), abs=1e-5)
        assert len({tuple(t["text"] for t in r["tokens"]) for r in c["rows"]}) == 1


def test_score_histograms_bin_each_score_over_its_own_range():
    from featureflow.explorer.figures import score_histograms

    rows = [{"model": "m", "persisting": True, "sim_score": v, "detection_score": d}
            for v, d in ((-0.5, 0.5), (0.2, 1.0), (1.0, 1.0), (0.97, 0.02))]
    det = score_histograms(rows, [("m", "M")], "detection_score")
    bar = det["data"][0]
    assert det["layout"]["xaxis"]["range"] == [0.0, 1] and min(bar["x"]) == pytest.approx(0.025)
    assert sum(bar["customdata"]) == 4 and bar["customdata"][-1] == 2  # the two perfect scores count, in the top bin
    assert sum(bar["y"]) == pytest.approx(1.0)
    sim = score_histograms(rows, [("m", "M")])
    assert sim["layout"]["xaxis"]["range"] == [-1.0, 1] and sum(sim["data"][0]["customdata"]) == 4
    assert sim["data"][0]["customdata"][5] == 1  # -0.5 falls in [-0.5, -0.4)


def test_score_histogram_legend_names_every_group_once(synthetic_client):
    d = synthetic_client.get("/api/autointerp").json()
    shown = [t["name"] for t in d["det_figure"]["data"] if t["showlegend"]]
    assert sorted(shown) == sorted({t["name"] for t in d["det_figure"]["data"]})


def test_heatmap_colours_span_the_data_not_a_fixed_range():
    from featureflow.explorer.figures import heatmap

    sims = [{"a": a, "b": b, "cos": c} for a, b, c in (("x", "x", 1.0), ("x", "y", 0.31), ("y", "x", 0.31),
                                                       ("y", "y", 1.0))]
    t = heatmap(["x", "y"], sims, "t")["data"][0]
    assert (t["zmin"], t["zmax"]) == (0.31, 1.0) and "zmid" not in t
    t = heatmap(["x", "y"], sims + [{"a": "x", "b": "y", "cos": -0.2}], "t")["data"][0]
    assert (t["zmin"], t["zmax"], t["zmid"]) == (-0.2, 1.0, 0)


def test_slerp_chosen_t_label_sits_beside_its_line_above_the_plot(synthetic_client):
    for m in synthetic_client.get("/api/merge").json()["merges"]:
        note = m["figure"]["layout"]["annotations"][0]
        assert note["x"] == m["t"] and note["text"] == f"chosen t = {m['t']:.3f}"
        assert note["yanchor"] == "bottom" and note["y"] >= 1  # above the plot area, over no curve
        assert (note["xanchor"], note["xshift"] > 0) in (("left", True), ("right", False))


def test_sankey_columns_follow_the_family_depth():
    from featureflow.explorer.figures import sankey

    models = [{"model": m, "label": m.upper()} for m in ("root", "a", "b", "merge")]
    flows = [{"parent": p, "child": c, "persisting": 3, "disappearing": 2, "inherited": 3, "emerging": 2,
              "parent_alive": 5, "persist_share": 0.6} for p, c in (("root", "a"), ("root", "b"), ("a", "merge"),
                                                                   ("b", "merge"))]
    nodes = [{"side": "out", "model": "root", "via": "a", "n": 2}, {"side": "out", "model": "root", "via": "b", "n": 1},
             {"side": "out", "model": "root", "via": None, "n": 2},
             {"side": "in", "model": "a", "via": "root", "n": 3}, {"side": "in", "model": "a", "via": None, "n": 2},
             {"side": "in", "model": "b", "via": "root", "n": 3}, {"side": "in", "model": "b", "via": None, "n": 2},
             {"side": "out", "model": "a", "via": "merge", "n": 3}, {"side": "out", "model": "a", "via": None, "n": 2},
             {"side": "out", "model": "b", "via": "merge", "n": 1}, {"side": "out", "model": "b", "via": None, "n": 4},
             {"side": "in", "model": "merge", "via": "a", "n": 2}, {"side": "in", "model": "merge", "via": "b", "n": 1},
             {"side": "in", "model": "merge", "via": None, "n": 2}]
    fig = sankey(models, flows, nodes, 0.8, state="threshold=0.8")["data"][0]
    x = {c[0].split(":")[0]: xx for c, xx in zip(fig["node"]["customdata"], fig["node"]["x"])}
    assert x["ROOT"] < x["ROOT → A"] < x["A"] == x["B"] < x["A → MERGE"] < x["MERGE"]
    assert x["A"] < x["2 MERGE features match no feature of any parent above the threshold"] < x["MERGE"]
    assert x["2 ROOT features match no feature of any child above the threshold"] == x["A"]
    labels = fig["node"]["label"]
    assert {"ROOT · 5", "A · 5", "B · 5", "MERGE · 5", "lost · 2", "new · 2"} <= set(labels)
    assert "60.0% persist" in " ".join(labels)
    # every count of `nodes` is drawn exactly once, as one band
    assert sorted(fig["link"]["value"]) == sorted(n["n"] for n in nodes)
    hrefs = {c[1] for c in fig["link"]["customdata"]}
    assert "/edges/root/a?fate=persisting&threshold=0.8" in hrefs and "/edges/root/a?fate=inherited&threshold=0.8" in hrefs
    assert "/features?model=root&fate=disappearing&threshold=0.8" in hrefs  # lost over two children


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


def test_edge_lists_hold_exactly_the_flow_counts(client):
    for mode, t in (("pearson", 0.6), ("pearson-1to1", 0.8)):
        flows = client.get("/api/", params={"threshold": t, "mode": mode}).json()["flows"]
        for f in flows:
            for fate in ("persisting", "disappearing", "inherited", "emerging"):
                d = client.get(f"/api/edges/{f['parent']}/{f['child']}",
                               params={"fate": fate, "threshold": t, "mode": mode, "per_page": 200}).json()
                assert d["total"] == f[fate] and len(d["rows"]) == min(200, f[fate])
                side = f["parent"] if fate in ("persisting", "disappearing") else f["child"]
                assert all(r["model"] == side for r in d["rows"])
                above = [r["r"] is not None and r["r"] > t for r in d["rows"]]
                assert all(above) if fate in ("persisting", "inherited") else not any(above)


def test_edge_list_sorts_both_ways_and_paginates(client):
    q = {"fate": "disappearing", "per_page": 10}
    down = client.get("/api/edges/babypython/lua", params={**q, "sort": "density"}).json()["rows"]
    up = client.get("/api/edges/babypython/lua", params={**q, "sort": "density", "order": "asc"}).json()["rows"]
    assert [r["density"] for r in down] == sorted((r["density"] for r in down), reverse=True)
    assert [r["density"] for r in up] == sorted(r["density"] for r in up) and up[0]["density"] < down[0]["density"]
    p2 = client.get("/api/edges/babypython/lua", params={**q, "sort": "density", "page": 2}).json()["rows"]
    assert not {r["feature"] for r in down} & {r["feature"] for r in p2}
    top = down[0]
    assert top["snippet"] and any(t["center"] for t in top["snippet"])  # its top context, peak marked
    html = client.get("/edges/babypython/lua", params={**q, "sort": "density"}).text
    assert "order=asc" in html and 'class="tok' in html and "noise floor" in html
    r = client.get("/api/edges/lua/babypython")
    assert r.status_code == 404 and "babypython -> lua" in r.json()["detail"]
    assert client.get("/api/edges/babypython/lua?fate=lost").status_code == 422
    assert client.get("/api/edges/babypython/lua?sort=vibes").status_code == 422


def test_sankey_counts_each_alive_feature_once_per_model(client, con):
    for (mode, t), population in zip((("pearson", 0.8), ("pearson-1to1", 0.5)) * 2, ["all"] * 2 + ["reproducible"] * 2):
        data = client.get("/api/", params={"threshold": t, "mode": mode, "population": population}).json()
        assert data["population"] == population
        fig = data["sankey"]["data"][0]
        labels, (src, dst, val) = fig["node"]["label"], (fig["link"][k] for k in ("source", "target", "value"))
        alive = dict(con.execute("SELECT model, count(*) FROM features WHERE alive GROUP BY model").fetchall())
        if population == "reproducible":  # alive features matched above t in every seed replica of their member
            sim, _, rule = mode.partition("-")
            alive = dict(con.execute("""
                SELECT f.model, count(*) FROM features f JOIN (
                    SELECT model, feature, bool_and(coalesce(r > ?, false)) AS ok FROM noise_floor
                    WHERE similarity = ? AND rule = ? GROUP BY ALL) s USING (model, feature)
                WHERE f.alive AND s.ok GROUP BY f.model""", [t, sim, rule or "best"]).fetchall())
        for m in data["models_overview"]:
            i = next(j for j, lab in enumerate(labels) if lab.startswith(m["label"] + " ·"))
            into = sum(v for d, v in zip(dst, val) if d == i)
            out = sum(v for s, v in zip(src, val) if s == i)
            n = alive.get(m["model"], 0)
            assert labels[i].endswith(f"{n:,}")
            assert into in (0, n) and out in (0, n) and (into + out > 0 or n == 0)
        hrefs = [c[1] for c in fig["link"]["customdata"] + fig["node"]["customdata"]]
        assert all(f"threshold={t}" in h and f"mode={mode}" in h for h in hrefs)
        for h in {h for h in hrefs if h.startswith("/edges/")}:
            assert client.get(h).status_code == 200


def test_feature_page_honours_and_carries_threshold_and_mode(client, con):
    [(feat, _)] = _inherited(con)
    q = {"threshold": 0.55, "mode": "pearson-1to1"}
    d = client.get(f"/api/models/luastories/features/{feat}", params=q).json()
    assert d["state"]["threshold"] == 0.55 and d["state"]["mode"] == "pearson-1to1"
    assigned = dict(((p, r) for p, r in con.execute(
        """SELECT parent, r FROM assignments WHERE child = 'luastories' AND direction = 'c2p' AND src = ?
           AND similarity = 'pearson' AND r IS NOT NULL""", [feat]).fetchall()))
    lin = d["lineage"]
    if lin["ancestors"]:  # the nearest ancestor is the assigned partner with the highest r, above 0.55
        assert lin["ancestors"][-1]["r_to_next"] == pytest.approx(max(assigned.values())) and max(assigned.values()) > 0.55
    else:
        assert not assigned or max(assigned.values()) <= 0.55
    html = client.get(f"/models/luastories/features/{feat}", params=q).text
    assert "similarity &gt; 0.55" in html and "one-to-one assignment" in html and "r &gt; 0.80" not in html
    links = [h for h in html.split('href="')[1:] if h.startswith("/models/") and "/features/" in h]
    assert links and all("threshold=0.55&amp;mode=pearson-1to1" in h.split('"')[0] for h in links)
    assert "threshold=0.55" in client.get("/jump", params={"model": "lua", "feature": 1, **q},
                                          follow_redirects=False).headers["location"]
    assert 'href="/features?threshold=0.55&amp;mode=pearson-1to1"' in client.get("/merge", params=q).text
    assert client.get("/merge", params={"mode": "nonsense"}).status_code == 422


def test_security_headers_favicon_and_docs_from_packaged_assets(synthetic_client):
    for url in ("/", "/api/", "/static/app.css", "/vendor/htmx.min.js", "/models/nosuch", "/docs", "/favicon.ico"):
        h = synthetic_client.get(url).headers
        assert "script-src 'self';" in h["content-security-policy"] and "frame-ancestors 'none'" in h[
            "content-security-policy"], url
        assert h["x-content-type-options"] == "nosniff" and h["referrer-policy"] == "same-origin", url
    assert synthetic_client.get("/favicon.ico").headers["content-type"].startswith("image/svg+xml")
    for url, asset in (("/docs", "/vendor/swagger-ui-bundle.js"), ("/redoc", "/vendor/redoc.standalone.js")):
        html = synthetic_client.get(url).text
        assert asset in html and "cdn" not in html.lower() and "<script>" not in html
        assert synthetic_client.get(asset).status_code == 200
    assert synthetic_client.get("/vendor/swagger-ui.css").headers["content-type"].startswith("text/css")
    html = synthetic_client.get("/").text
    assert "<script>" not in html and " oninput=" not in html  # no inline script for the CSP to block


def test_serve_refuses_to_start_without_the_vendored_scripts(synthetic_store, tmp_path, monkeypatch, capsys):
    import featureflow.explorer.app as main_mod
    from featureflow.cli import main

    monkeypatch.setitem(main_mod.VENDOR, "htmx.min.js", tmp_path / "gone" / "htmx.min.js")
    assert main(["serve", "--db", str(synthetic_store.path), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "htmx.min.js" in err and "npm --prefix featureflow/explorer ci" in err and len(err.splitlines()) == 1


def test_overview_shows_the_stage_timings_and_hardware_of_the_build(client, tiny_pipeline):
    data = client.get("/api/").json()
    stages = {s["stage"]: s["seconds"] for s in data["timings"]["stages"]}
    built = {k: v for k, v in tiny_pipeline.stage_seconds.items() if k != "store"}  # written before it finished
    assert list(stages) == list(built) and len(built) >= 10  # every stage the run went through, in order
    assert stages == pytest.approx(built)
    assert data["timings"]["hardware"]["cores"] >= 1 and data["timings"]["hardware"]["device"] == "cpu"
    html = client.get("/").text
    assert f"Built in {data['timings']['total']:.0f} s" in html and "fingerprints" in html
