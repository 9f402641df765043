"""Issue 32: features along a merge's interpolation path. On the tiny pipeline's SLERP merge, every parent feature's
survival r is 1 at the parent's own end of the path (the merge there is the parent); the shares `/api/merge` serves
equal a count made here in numpy from the stage's artefact; the crossing and a feature's interval equal hand
computations."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
from fastapi.testclient import TestClient

from featureflow.explorer.app import create_app
from featureflow.pipeline.survival import survival_ts
from featureflow.store import flows as F


def test_the_sweep_takes_every_step_both_ends_and_the_chosen_t():
    assert survival_ts(0.25, 0.4143) == [0.0, 0.25, 0.4143, 0.5, 0.75, 1.0]
    assert survival_ts(0.1, None)[:3] == [0.0, 0.1, 0.2] and survival_ts(0.1, None)[-1] == 1.0
    assert len(survival_ts(0.1, 0.5)) == 11  # a chosen t on the grid is not repeated


def test_crossing_is_linear_between_sweep_points():
    rows = [{"model": "m", "parent": p, "t": t, "share": s} for p, pts in
            (("a", ((0.0, 1.0), (0.5, 0.6), (1.0, 0.1))), ("b", ((0.0, 0.0), (0.5, 0.4), (1.0, 1.0))))
            for t, s in pts]
    # d = a - b: 1.0, 0.2, -0.9: the sign changes between 0.5 and 1.0, at 0.5 + 0.5 * 0.2 / 1.1
    assert F.survival_crossing(rows)["m"] == pytest.approx(0.5 + 0.5 * 0.2 / 1.1)
    rows_never = [dict(r, share=1.0) if r["parent"] == "a" else dict(r, share=0.0) for r in rows]
    assert F.survival_crossing(rows_never)["m"] is None


@pytest.fixture(scope="module")
def sweep(tiny_pipeline):
    (name, folder), = tiny_pipeline.survival().items()
    with np.load(folder / "survival.npz") as z:
        return name, z["ts"], {k[2:]: z[k] for k in z.files if k.startswith("r/")}


def test_every_feature_survives_at_its_parents_own_end(tiny_pipeline, sweep):
    name, ts, r = sweep
    p0, p1 = tiny_pipeline.cfg.member(name).parents
    assert ts[0] == 0.0 and ts[-1] == 1.0
    for parent, end in ((p0, 0), (p1, -1)):
        fires = np.isfinite(r[parent][end])
        assert fires.sum() > 10 and np.allclose(r[parent][end][fires], 1.0, atol=1e-5)
    client = TestClient(create_app(tiny_pipeline.cfg.store_path()))
    (m,) = client.get("/api/merge").json()["merges"]
    assert m["survival"][p0][0]["t"] == 0.0 and m["survival"][p0][0]["share"] == 1.0
    assert m["survival"][p1][-1]["t"] == 1.0 and m["survival"][p1][-1]["share"] == 1.0
    assert 0 <= m["survival_crossing"] <= 1 and "Features along the path" in client.get("/merge").text


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.9])
def test_shares_equal_a_count_from_the_artefact(tiny_pipeline, sweep, threshold):
    """Over all alive features that fire at the parent's own end: the count whose r exceeds the threshold at each
    t, made in numpy from survival.npz and the store's `features` rows."""
    name, ts, r = sweep
    p0, p1 = tiny_pipeline.cfg.member(name).parents
    con = duckdb.connect(str(tiny_pipeline.cfg.store_path()), read_only=True)
    got = {(x["parent"], round(x["t"], 9)): (x["n"], x["survived"])
           for x in F.merge_survival(con, threshold, "pearson", reproducible=False)}
    repro = {(x["parent"], round(x["t"], 9)): x["n"] for x in F.merge_survival(con, threshold, "pearson")}
    for parent, end in ((p0, 0), (p1, -1)):
        alive = np.array([a for (a,) in con.execute("SELECT alive FROM features WHERE model = ? ORDER BY feature",
                                                    [parent]).fetchall()])
        pop = alive & np.isfinite(r[parent][end])
        for i, t in enumerate(ts):
            survived = int((pop & (np.nan_to_num(r[parent][i], nan=-1) > threshold)).sum())
            assert got[(parent, round(float(t), 9))] == (int(pop.sum()), survived)
            assert repro.get((parent, round(float(t), 9)), 0) <= pop.sum()  # none reproduce at 0.9: no row
    con.close()


def test_a_features_page_shows_its_interval_along_the_path(tiny_pipeline, sweep):
    name, ts, r = sweep
    p0 = tiny_pipeline.cfg.member(name).parents[0]
    client = TestClient(create_app(tiny_pipeline.cfg.store_path()))
    checked = 0
    for f in np.flatnonzero(np.isfinite(r[p0][0]))[:8]:
        (s,) = client.get(f"/api/models/{p0}/features/{f}", params={"threshold": 0.7}).json()["survival"]
        above = np.nan_to_num(r[p0][:, f], nan=-1) > 0.7
        last = int(np.argmin(above)) - 1 if not above.all() else len(ts) - 1  # the run of survival from t = 0
        assert s["survives"] == [0.0, pytest.approx(float(ts[last]))]
        assert [p["r"] for p in s["points"]] == pytest.approx([None if not np.isfinite(x) else float(x)
                                                               for x in r[p0][:, f]], abs=1e-6)
        checked += 1
    assert checked


@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_inheritance_counts_equal_a_count_from_the_match_rows(tiny_pipeline, threshold):
    """The merged model's alive features by the parents whose best match exceeds the threshold, counted here from
    the raw `matches` rows (rank 0, child to parent) of its two edges; the store's rule, `/api/merge` and the
    report agree."""
    name = next(m.name for m in tiny_pipeline.cfg.family if m.make == "merge")
    con = duckdb.connect(str(tiny_pipeline.cfg.store_path()), read_only=True)
    first, second = (p for (p,) in con.execute("""SELECT e.parent FROM model_edges e JOIN models m ON m.model = e.parent
                                                  WHERE e.child = ? ORDER BY m.idx""", [name]).fetchall())
    alive = np.array([a for (a,) in con.execute("SELECT alive FROM features WHERE model = ? ORDER BY feature",
                                                [name]).fetchall()])

    def persists(parent):
        out = np.zeros(len(alive), dtype=bool)
        for src, r in con.execute("""SELECT src, r FROM matches WHERE similarity = 'pearson' AND rank = 0
                                     AND direction = 'c2p' AND parent = ? AND child = ?""", [parent, name]).fetchall():
            out[src] = r is not None and r > threshold
        return out
    a, b = persists(first), persists(second)
    want = {"both": int((alive & a & b).sum()), "first": int((alive & a & ~b).sum()),
            "second": int((alive & ~a & b).sum()), "new": int((alive & ~a & ~b).sum())}
    (got,) = F.inheritance_counts(F.merge_inheritance(con, threshold, "pearson"))
    assert {k: got[k] for k in want} == want and got["n"] == alive.sum() and got["uncertain"] == got["split"] == 0
    assert (got["first_parent"], got["second_parent"]) == (first, second)
    con.close()
    client = TestClient(create_app(tiny_pipeline.cfg.store_path()))
    (m,) = client.get("/api/merge", params={"threshold": threshold, "mode": "pearson"}).json()["merges"]
    repro = m["inheritance"]  # the tiny run has seed replicas: its reproducible features, a subset
    assert repro["n"] <= got["n"] and all(repro[k] <= got[k] for k in want)
    over = client.get("/api/", params={"threshold": threshold, "mode": "pearson", "population": "all"}).json()
    assert over["inheritance"] == [got]  # the overview's sentence reads the same counts
    # the three-way Sankey on /merge: one band per class into the merged node, as wide as its count
    fig = m["inheritance_figure"]["data"][0]
    keys = [c[2] for c in fig["node"]["customdata"]]
    widths = {keys[s].split(":")[1]: v for s, v in zip(fig["link"]["source"], fig["link"]["value"])}
    assert widths == {k: repro[k] for k in ("both", "first", "second", "uncertain", "split", "new") if repro[k]}
    assert sum(widths.values()) == repro["n"] and set(fig["link"]["target"]) == {len(keys) - 1}
    # each class lists its features: /features?inherits= over all alive features holds the counted ones, and the
    # merge page's links (its population: reproducible) hold as many as the band is wide
    for k in ("both", "first", "second", "new"):
        q = {"model": name, "inherits": k, "threshold": threshold, "mode": "pearson", "per_page": 200}
        listed = client.get("/api/features", params=q).json()
        assert listed["total"] == want[k] and all(r["model"] == name for r in listed["rows"])
    links = {c[2].split(":")[1]: c[1] for c in fig["node"]["customdata"][:-1]}
    for k, href in links.items():
        assert f"inherits={k}" in href and "stable=true" in href
        assert client.get("/api" + href).json()["total"] == repro[k]
    assert client.get("/api/features", params={"inherits": "neither"}).status_code == 422


def test_the_curves_bottom_is_each_parents_random_weights_control(tiny_pipeline, sweep):
    """The survival curves' lower anchor: each parent feature's r into its root's random-weights control over the
    sweep's tokens equals a brute-force Pearson r in numpy (dense codes of the parent's SAE on the parent and on the
    control); the shares the store, `/api/merge`, `/merge` and the report give equal a count from those r over the
    curves' own population."""
    import contextlib
    import io

    from featureflow.cli import main

    name, ts, r = sweep
    cfg = tiny_pipeline.cfg
    parents = cfg.member(name).parents
    with np.load(tiny_pipeline.survival()[name] / "survival.npz") as z:
        names = dict(x.split("=", 1) for x in z["control_names"].tolist())
        anchor = {p: z[f"control/{p}"] for p in parents}
    assert names == {p: cfg.control_of(p) for p in parents} and all(names.values())
    windows = max(1, -(-cfg.merge.survival_tokens // cfg.sample.context))
    rows = tiny_pipeline.sample_tokens()[:windows].size
    own = tiny_pipeline.load_acts(parents[0])[:rows].toarray()
    ctl = tiny_pipeline.load_cross_acts(parents[0], names[parents[0]])[:rows].toarray()
    checked = 0
    for f in np.flatnonzero(np.isfinite(anchor[parents[0]]))[:40]:
        assert np.corrcoef(own[:, f], ctl[:, f])[0, 1] == pytest.approx(float(anchor[parents[0]][f]), abs=1e-4)
        checked += 1
    assert checked >= 10 and (~np.isfinite(anchor[parents[0]]) == ((own.std(0) == 0) | (ctl.std(0) == 0))).all()
    con = duckdb.connect(str(cfg.store_path()), read_only=True)
    got = {c["parent"]: c for c in F.survival_control(con, 0.5, "pearson", reproducible=False)}
    for parent, end in zip(parents, (0, -1)):
        alive = np.array([a for (a,) in con.execute("SELECT alive FROM features WHERE model = ? ORDER BY feature",
                                                    [parent]).fetchall()])
        pop = alive & np.isfinite(r[parent][end])
        survived = int((pop & (np.nan_to_num(anchor[parent], nan=-1) > 0.5)).sum())
        assert (got[parent]["n"], got[parent]["survived"], got[parent]["control"]) == (
            int(pop.sum()), survived, names[parent])
    # the pages read the curves' population, the reproducible features: a subset, the same for curve and control
    rep = {c["parent"]: c for c in F.survival_control(con, 0.5, "pearson")}
    curve = {(x["parent"], x["t"]): x["n"] for x in F.merge_survival(con, 0.5, "pearson")}
    assert all(rep[p]["n"] == curve[(p, float(ts[end]))] <= got[p]["n"] for p, end in zip(parents, (0, -1)))
    default = {c["parent"]: c for c in F.survival_control(con, cfg.matching.threshold, tiny_pipeline.default_mode)}
    con.close()
    client = TestClient(create_app(cfg.store_path()))
    (m,) = client.get("/api/merge", params={"threshold": 0.5, "mode": "pearson"}).json()["merges"]
    assert {p: m["survival_control"][p]["survived"] for p in parents} == {p: rep[p]["survived"] for p in parents}
    dashed = [tr for tr in m["survival_figure"]["data"] if tr.get("line", {}).get("dash") == "dash"]
    assert [tr["y"][0] for tr in dashed] == pytest.approx([rep[p]["share"] for p in parents])
    assert f"into its root's random-weights control ({names[parents[0]]})" in client.get("/merge").text
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["report", "--db", str(cfg.store_path())]) == 0
    line = next(x for x in buf.getvalue().splitlines() if "at chosen t" in x and f" {parents[0]} features" in x)
    c = default[parents[0]]
    assert f"control {c['survived']} of {c['n']} " in line and names[parents[0]] in line
