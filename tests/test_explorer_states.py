"""Issue 25: dead features unmatched, a merge child's lineage with every parent, one number formatter, the
feature page's examples (values, quantile ranges, byte tokens, indentation, folded repeats), CSV twins."""

import csv
import io
import re
import shutil

import duckdb
import numpy as np
import pytest
from fastapi.testclient import TestClient

from featureflow.explorer import numbers
from featureflow.explorer.app import create_app
from featureflow.explorer.rendering import chips, show_ws


@pytest.fixture(scope="module")
def client(tiny_pipeline):
    return TestClient(create_app(tiny_pipeline.cfg.store_path()))


@pytest.fixture(scope="module")
def con(tiny_pipeline):
    c = duckdb.connect(str(tiny_pipeline.cfg.store_path()), read_only=True)
    yield c
    c.close()


def _pearson_dense(A, B):
    """Brute force: every Pearson r between the columns of A and of B (dense, float64)."""
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    za = (A - A.mean(0)) / A.std(0)
    zb = (B - B.mean(0)) / B.std(0)
    return za.T @ zb / A.shape[0]


def test_a_feature_that_never_fires_has_no_match_and_no_feature_matches_it(tiny_pipeline, tmp_path, monkeypatch):
    """The cause: the matching stage matched a never-firing feature (r = 0 with everything, so its 'best'
    match was feature 0). Kill lua #7 in the activations, rerun the matching of both its edges and the store's
    row writer, and read the feature's page from a store holding those rows."""
    from featureflow.store.writers import insert, side_rows

    pl, dead = tiny_pipeline, 7
    real = pl.load_acts

    def load_acts(name, replica=0):
        acts = real(name, replica).tocsc(copy=True)
        if name == "lua" and replica == 0:
            acts.data[acts.indptr[dead]:acts.indptr[dead + 1]] = 0
            acts.eliminate_zeros()
        return acts

    monkeypatch.setattr(pl, "load_acts", load_acts)
    k = pl.cfg.matching.top_k
    tops = {}
    for edge in (("babypython", "lua"), ("lua", "luastories")):
        for sim in ("pearson", "decoder"):
            out = tmp_path / f"{edge[0]}-{edge[1]}-{sim}"
            out.mkdir()
            pl._match_pair((edge[0], 0), (edge[1], 0), sim, "test", out)
            tops[edge, sim] = dict(np.load(out / "topk.npz"))
    # lua #7 as a child (babypython -> lua) and as a parent (lua -> luastories): no match either way, in every mode
    for sim in ("pearson", "decoder"):
        t = tops[("babypython", "lua"), sim]
        assert (t["c2p_idx"][dead] == -1).all() and np.isnan(t["c2p_r"][dead]).all()
        assert dead not in t["p2c_idx"]
        t = tops[("lua", "luastories"), sim]
        assert (t["p2c_idx"][dead] == -1).all() and np.isnan(t["p2c_r"][dead]).all()
        assert dead not in t["c2p_idx"]
    # the others' matches are the brute-force top-k over the alive features
    A, B = load_acts("babypython").toarray(), load_acts("lua").toarray()
    alive_b = B.std(0) > 0
    r = _pearson_dense(A[:, A.std(0) > 0], B[:, alive_b])
    pos = {j: n for n, j in enumerate(np.flatnonzero(alive_b))}
    t = tops[("babypython", "lua"), "pearson"]
    assert (A.std(0) > 0).all()  # babypython's features all fire: row i of r is parent i
    for i in range(r.shape[0]):
        assert t["p2c_r"][i] == pytest.approx(np.sort(r[i])[::-1][:k], abs=1e-9)  # the k largest r
        assert [r[i, pos[j]] for j in t["p2c_idx"][i]] == pytest.approx(t["p2c_r"][i], abs=1e-9)  # of those features

    # the store's row writer keeps real matches only; the page of the dead feature lists none
    db = tmp_path / "store.duckdb"
    shutil.copy(pl.cfg.store_path(), db)
    w = duckdb.connect(str(db))
    for (p, c), sim in ((e, "pearson") for e in (("babypython", "lua"), ("lua", "luastories"))):
        w.execute("DELETE FROM matches WHERE parent = ? AND child = ? AND similarity = ?", [p, c, sim])
        for d in ("p2c", "c2p"):
            rows = side_rows(tops[(p, c), sim][f"{d}_idx"], tops[(p, c), sim][f"{d}_r"], True, similarity=sim,
                             parent=p, child=c, direction=d)
            insert(w, "matches", rows)
    w.execute("UPDATE features SET alive = false, n_active = 0, density = 0 WHERE model = 'lua' AND feature = ?", [dead])
    w.execute("DELETE FROM activation_values WHERE model = 'lua' AND feature = ?", [dead])
    assert w.execute("""SELECT count(*) FROM matches WHERE similarity = 'pearson' AND
                          ((child = 'lua' AND direction = 'c2p' AND src = $f) OR (parent = 'lua' AND direction = 'p2c' AND src = $f)
                        OR (child = 'lua' AND direction = 'p2c' AND dst = $f) OR (parent = 'lua' AND direction = 'c2p' AND dst = $f))""",
                     {"f": dead}).fetchone()[0] == 0
    w.close()
    c = TestClient(create_app(db))
    d = c.get(f"/api/models/lua/features/{dead}", params={"mode": "pearson"}).json()
    assert d["matches"] == {"parents": [], "children": []} and d["lineage"]["fate"] == "dead"
    assert not d["lineage"]["parents"] and not d["lineage"]["descendants"]
    html = c.get(f"/models/lua/features/{dead}", params={"mode": "pearson"}).text
    assert 'class="matches"' not in html and "never fires on the shared sample" in html


def test_a_merged_feature_lists_every_parent_that_matches_above_the_threshold(client, con):
    # oracle: the stored rank-0 matches, read here with SQL (the feature whose weaker parent match is strongest)
    row = con.execute("""
        SELECT src, min(r) AS low, arg_max(dst, r) FILTER (WHERE parent = 'lua'), arg_max(dst, r) FILTER (WHERE parent = 'tinystories')
        FROM matches WHERE child = 'luastories' AND direction = 'c2p' AND rank = 0 AND similarity = 'pearson'
        GROUP BY src HAVING count(DISTINCT parent) = 2 ORDER BY low DESC LIMIT 1""").fetchone()
    feat, low, lua_f, tiny_f = row
    t = round(low - 0.005, 3)
    assert t > 0.1  # both parents genuinely match
    d = client.get(f"/api/models/luastories/features/{feat}", params={"threshold": t, "mode": "pearson"}).json()
    ups = {(n["model"], n["feature"]): n for n in d["lineage"]["parents"]}
    assert set(ups) == {("lua", lua_f), ("tinystories", tiny_f)} and all(n["persists"] for n in ups.values())
    for (m, f), n in ups.items():  # each followed further up to the root when it persists there
        up = con.execute("""SELECT dst, r FROM matches WHERE child = ? AND src = ? AND direction = 'c2p' AND rank = 0
                            AND similarity = 'pearson'""", [m, f]).fetchone()
        assert [(p["feature"], p["r"]) for p in n["parents"]] == [(up[0], pytest.approx(up[1]))]
    html = client.get(f"/models/luastories/features/{feat}", params={"threshold": t, "mode": "pearson"}).text
    lineage = html.split('class="lineage"')[1].split("</section>")[0]
    assert f"/models/lua/features/{lua_f}?" in lineage and f"/models/tinystories/features/{tiny_f}?" in lineage


def test_every_percentage_on_the_overview_and_the_sankey_comes_from_one_formatter(tiny_pipeline, monkeypatch):
    real = numbers.pct
    monkeypatch.setattr(numbers, "pct", lambda x, digits=1: "⟦" + real(x, digits) + "⟧")
    c = TestClient(create_app(tiny_pipeline.cfg.store_path()))
    for q in ({}, {"threshold": 0.5, "mode": "pearson-1to1"}, {"threshold": 0.99, "mode": "decoder"},
              {"threshold": 0.5, "population": "all"}, {"threshold": 0.99, "population": "all"}):
        html = c.get("/", params=q).text.replace("\\u27e6", "⟦").replace("\\u27e7", "⟧")  # as tojson escapes them
        sankey = c.get("/api/", params=q).json()["sankey"]
        trace = sankey["data"][0] if sankey["data"] else {"node": {"label": [], "customdata": []},
                                                         "link": {"customdata": []}}  # nothing to draw
        texts = [html, *trace["node"]["label"], *(x[0] for x in trace["node"]["customdata"]),
                 *(x[0] for x in trace["link"]["customdata"])]
        marked = 0
        for text in texts:
            marked += text.count("⟦")
            bare = re.sub(r"95% (CI|Wilson|confidence)", "", re.sub(r"⟦[^⟧]*⟧", "", text))  # an interval's name, not a figure
            assert not re.search(r"\d\s*%", bare), re.search(r".{40}\d\s*%.{10}", bare)
        assert marked > 20  # the overview does show percentages, every one of them marked
    # the Sankey's junction and the table beside it write one share identically
    d = c.get("/api/", params={"threshold": 0.5, "population": "all"}).json()
    f = next(f for f in d["flows"] if f["persisting"])
    assert any(lab.startswith(real(f["persist_share"]) + "⟧ persist") or real(f["persist_share"]) in lab
               for lab in d["sankey"]["data"][0]["node"]["label"])
    assert numbers.corr(0.98234) == "0.982" and numbers.quantile("q0") == 1 and real(0.156) == "15.6%"


def test_feature_examples_show_values_quantile_ranges_and_fold_repeats(client, con, tiny_pipeline):
    model, feat = con.execute("""SELECT model, feature FROM examples WHERE kind <> 'top'
                                 GROUP BY ALL ORDER BY count(*) DESC, model, feature LIMIT 1""").fetchone()
    d = client.get(f"/api/models/{model}/features/{feat}/examples").json()
    # every example's value is its centre token's activation in the sample (the sparse matrix, read directly)
    col = tiny_pipeline.load_acts(model)[:, feat].toarray().ravel()
    for ex in d["examples"]:
        assert ex["act"] == pytest.approx(col[ex["center"]], rel=1e-6)
    # quantile ranges: the non-zero activations sorted and cut into equal-count groups, as numpy cuts them
    vals = np.sort(col[col > 0])
    groups = [g for g in np.array_split(vals, d["quantile_bins"]) if len(g)]
    ranges = {g["kind"]: g["range"] for g in d["groups"] if g["kind"] != "top"}
    for kind, r in ranges.items():
        g = groups[int(kind[1:])]
        assert (r["lo"], r["hi"], r["n"]) == (pytest.approx(g[0]), pytest.approx(g[-1]), len(g))
    for ex in d["examples"]:
        if ex["kind"] != "top":
            assert ranges[ex["kind"]]["lo"] - 1e-6 <= ex["act"] <= ranges[ex["kind"]]["hi"] + 1e-6
    # folding: every example appears once, a folded one reads the same around its peak as the one it is under
    seen = []
    for g in d["groups"]:
        for item in g["items"]:
            seen += [item["index"], *item["repeats"]]
            head = d["examples"][item["index"]]
            for j in item["repeats"]:
                ex = d["examples"][j]
                around = [[t["text"] for t in e["tokens"][max(0, e["center"] - e["start"] - 3):e["center"] - e["start"] + 4]]
                          for e in (head, ex)]
                assert around[0] == around[1] and ex["kind"] == head["kind"]
    assert sorted(seen) == list(range(len(d["examples"])))
    html = client.get(f"/models/{model}/features/{feat}/examples").text
    assert "Quantile 1 of" in html and "(1 = lowest)" in html and "Quantile 0" not in html
    assert html.count('class="act"') == len(d["examples"])


def test_byte_tokens_and_indentation_render_readably():
    from featureflow.pipeline.tokenizer import _hex_bytes  # noqa: F401  (registers the codec handler)

    # bytes that are only part of a character: <0xE2> chips, not replacement characters; a real U+FFFD stays
    assert "\u00e9<0xE2>" == b"\xc3\xa9\xe2".decode("utf-8", errors="featureflow-hexbytes")
    assert "\ufffd" == b"\xef\xbf\xbd".decode("utf-8", errors="featureflow-hexbytes")
    out = str(show_ws("<0xE2><0x80>"))
    assert out.count('class="ws-byte"') == 2 and "&lt;0xE2&gt;" in out and "\ufffd" not in out
    # a token "\n    " breaks after its ↵ and draws the indentation at the start of the next line
    html = str(chips([{"text": "x", "id": 1, "act": 0.0}, {"text": "\n    ", "id": 2, "act": 1.0},
                      {"text": "end", "id": 3, "act": 0.0}], 1.0))
    first, rest = html.split("<br>", 1)
    assert first.endswith('<span class="ws-nl">↵</span></span>') and "ws-space" not in first
    assert rest.startswith('<span class="tok cont"') and rest.count("ws-space") == 4
    assert html.count('title="1.0000 · id 2"') == 2  # both pieces are the same token


def test_every_list_view_has_a_csv_twin_equal_to_its_json(client):
    for path, key in (("/", "flows"), ("/features?model=lua&per_page=20", "rows"), ("/edges/babypython/lua?fate=disappearing", "rows"),
                      ("/autointerp", "scores"), ("/models/lua", "features_behind")):
        page = client.get(path).text
        csv_url = "/csv" + path
        assert f'href="{csv_url.replace("&", "&amp;")}"' in page
        r = client.get(csv_url)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        want = client.get("/api" + path).json()[key]
        assert len(rows) == len(want) and want
        for got, w in zip(rows, want):
            for k, v in w.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    assert float(got[k]) == pytest.approx(v)
                elif isinstance(v, str):
                    assert got[k] == v
    assert client.get("/csv/features?sort=vibes").status_code == 422


def test_plotly_loads_only_where_a_chart_is_drawn(client):
    js = client.get("/static/app.js").text
    assert "/vendor/plotly.min.js" in js and "[data-plot]" in js
    for path in ("/", "/features", "/cases", "/edges/babypython/lua", "/docs"):
        assert "plotly.min.js" not in client.get(path).text
    assert "data-plot=" in client.get("/").text and "data-plot=" not in client.get("/features").text
    assert '<a href="/"' in client.get("/docs").text and '<a href="/"' in client.get("/redoc").text
