"""Issue 30: a similarity and an evidence kind are one registered object each. A toy similarity registered in this
file alone (uncentred cosine of activation columns) and a toy evidence kind (each child feature's best parent r) are
computed by the pipeline, stored, served with their labels, reported and scored on a planted family, with no other
file touched; the matches equal a brute force over the stored activations, the evidence the stored matches, and the
built-in transfer evidence numpy's r over the parent SAE's activations on parent and child."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import duckdb
import numpy as np
import pytest

from featureflow.evidence import Evidence, Measure, register_evidence, unregister_evidence
from featureflow.modes import (RULES, SIMILARITIES, Similarity, mode_label, parse_mode, register_similarity,
                               split_mode, unregister_similarity)

NAME = "act-cosine"


def _cosine_topk(A, B, ia, ib, top_k, block_size, device, desc):
    """Top-k uncentred cosine of activation columns, both ways: the decoder engine on the columns as rows."""
    from featureflow.pipeline.matching import decoder_topk

    return decoder_topk(A[:, ia].T.toarray(), B[:, ib].T.toarray(), top_k, block_size)


TOY_EV = "best-parent-r"


def _best_parent_r(edge) -> dict:
    return {"r": edge.matches("pearson")["c2p_r"]}


def _score_best_parent_r(values: dict, truth) -> dict:
    r, truth = values["r"], np.asarray(truth)
    inherited, emerging = r[truth == "inherited"], r[truth == "emerging"]
    return {"median_inherited": float(np.nanmedian(inherited)) if len(inherited) else None,
            "median_emerging": float(np.nanmedian(emerging)) if len(emerging) else None}


@pytest.fixture
def toy_evidence():
    kind = register_evidence(Evidence(name=TOY_EV, label="best parent r", side="child",
                                      measures=(Measure("r", "best parent r"),), reads=("matches",),
                                      compute=_best_parent_r, score=_score_best_parent_r))
    yield kind
    unregister_evidence(TOY_EV)


@pytest.fixture
def toy():
    sim = register_similarity(Similarity(name=NAME, label="activation cosine", reads=("activations",),
                                         inputs=lambda side: side.acts(), width=lambda A: A.shape[1],
                                         topk=_cosine_topk))
    yield sim
    unregister_similarity(NAME)


def test_the_mode_grammar_reads_the_registry(toy):
    assert parse_mode(NAME + "-1to1") == (NAME, "1to1") and mode_label(NAME) == "activation cosine, best match"
    assert split_mode("mine-1to1") == ("mine", "1to1") and mode_label("mine") == "mine, best match"
    with pytest.raises(ValueError, match="unknown matching mode 'mine'.*act-cosine"):
        parse_mode("mine")
    with pytest.raises(ValueError, match="already registered"):
        register_similarity(toy)
    assert list(SIMILARITIES)[:3] == ["pearson", "decoder", "token-type"] and set(RULES) == {"best", "1to1", "best+transfer", "1to1+transfer"}
    from featureflow.config import MatchingConfig

    assert MatchingConfig(modes=[NAME, "pearson"]).similarities == [NAME, "pearson"]


def test_a_similarity_registered_here_is_computed_stored_served_reported_and_scored(toy, toy_evidence, tiny_pipeline):
    from fastapi.testclient import TestClient

    from conftest import tiny_dict
    from featureflow.cli import main
    from featureflow.config import parse_config
    from featureflow.explorer.app import create_app
    from featureflow.pipeline.features import load_acts
    from featureflow.pipeline.runner import Pipeline

    d = tiny_dict(Path(tiny_pipeline.cfg.data_dir))
    d["name"] = "toy-similarity"
    evidence = ["transfer", "reverse-transfer", TOY_EV]
    d["matching"] = {**d["matching"], "modes": ["pearson", NAME, f"{NAME}-1to1", "pearson+transfer"],
                     "evidence": evidence}
    d["planted"] = {"features": 12, "d": 6, "firing_min": 0.04, "firing_max": 0.1, "sample_positions": 2000,
                    "train_positions": 5000, "merge": None,
                    "children": [{"name": "a", "drifted": 0.25, "removed": 0.25, "split": 0, "added": 0.25}],
                    "sae": {"architecture": "topk", "k": 2, "expansion": 3, "lr": 5e-3, "block_tokens": 1,
                            "blocks_per_batch": 128, "tokens": 20000},
                    "matching": {"modes": ["pearson", NAME], "top_k": 3, "evidence": evidence}}
    pl = Pipeline(parse_config(d), device="cpu")
    pl.run()
    db = pl.cfg.store_path()
    # computed and stored: every edge's best match under the toy similarity equals a brute force
    con = duckdb.connect(str(db), read_only=True)
    assert NAME in con.execute("SELECT modes FROM runs").fetchone()[0]
    p, c = pl.cfg.edges()[0]
    A, B = (load_acts(pl.activation(m)).toarray() for m in (p, c))
    alive_a, alive_b = A.any(0), B.any(0)
    na, nb = A / np.maximum(np.linalg.norm(A, axis=0), 1e-300), B / np.maximum(np.linalg.norm(B, axis=0), 1e-300)
    cos = na.T @ nb
    cos[:, ~alive_b] = -np.inf
    rows = dict(con.execute("""SELECT src, r FROM matches WHERE similarity = ? AND parent = ? AND child = ?
                               AND direction = 'p2c' AND rank = 0""", [NAME, p, c]).fetchall())
    for f in np.flatnonzero(alive_a)[:40]:
        # the matching artefact keeps r as float32
        assert rows[int(f)] == pytest.approx(min(1.0, cos[f].max()), abs=1e-6)
    assert con.execute("SELECT count(*) FROM control_matches WHERE similarity = ?", [NAME]).fetchone()[0] > 0
    assert con.execute("SELECT count(*) FROM noise_floor WHERE similarity = ?", [NAME]).fetchone()[0] > 0
    planted = con.execute("SELECT DISTINCT mode FROM planted_scores").fetchall()
    def stored_transfer_is_numpys(kind: str, child: str, own, sae_of: str, data_of: str) -> None:
        """A transfer kind's stored r per feature (edge p -> child) is numpy's r of the SAE's activations on its own
        model (`own`) and on the other (`sae_of`'s SAE on `data_of`, the cross activations); no row where either
        never varies."""
        cross = load_acts(pl.cross_activation(sae_of, data_of)).toarray()
        stored = dict(con.execute("""SELECT feature, value FROM evidence WHERE kind = ? AND parent = ? AND child = ?
                                     AND measure = 'r'""", [kind, p, child]).fetchall())
        varies = [f for f in range(own.shape[1]) if own[:, f].std() > 0 and cross[:, f].std() > 0]
        assert sorted(stored) == varies and varies
        for f in varies[:60]:
            assert stored[f] == pytest.approx(np.corrcoef(own[:, f], cross[:, f])[0, 1], abs=1e-6), (kind, f)

    stored_transfer_is_numpys("transfer", c, A, p, c)  # the parent's SAE on the child
    stored_transfer_is_numpys("reverse-transfer", c, B, c, p)  # the child's SAE on the parent
    # transfer's lower anchor: the parent's SAE on its random-weights control, for parent-side kinds only
    (ctl,) = [k for e, k in pl.cfg.control_edges() if e == p]
    stored_transfer_is_numpys("transfer", ctl, A, p, ctl)
    assert not con.execute("SELECT count(*) FROM evidence WHERE child = ? AND kind <> 'transfer'", [ctl]).fetchone()[0]
    # the stage graph reaches every encode the evidence read: `featureflow gc` keeps them
    live = Pipeline(pl.cfg, device="cpu").live_artefacts()  # a fresh one: the walk goes through no memo
    assert {pl.cross_activation(a, b) for a, b in pl.cross_pairs()} <= live
    assert all(pl.edge_evidence(*k) in live for k in pl.evidence())
    # each cross encode's health: one row per pair the evidence read, L0 counted again from its activations
    health = {(a, b): (l0, n) for a, b, l0, n in con.execute(
        "SELECT sae_of, data_of, l0, rows FROM cross_health").fetchall()}
    assert set(health) == {(p, c), (c, p), (p, ctl)} | {x for x in pl.cross_pairs()}
    for (a, b), (l0, n) in health.items():
        X = load_acts(pl.cross_activation(a, b))
        assert n == X.shape[0] == A.shape[0] and l0 == pytest.approx(X.nnz / X.shape[0])
    # a member's SAE on its own model through the cross path is its own activations
    np.testing.assert_allclose(load_acts(pl.cross_activation(p, p)).toarray(), A, rtol=0, atol=1e-6)
    # the toy (child side): each child feature's best parent r, as the store's matches hold it
    toy_rows = dict(con.execute("SELECT feature, value FROM evidence WHERE kind = ? AND parent = ? AND child = ?",
                                [TOY_EV, p, c]).fetchall())
    best = dict(con.execute("""SELECT src, r FROM matches WHERE similarity = 'pearson' AND parent = ? AND child = ?
                               AND direction = 'c2p' AND rank = 0 AND r IS NOT NULL""", [p, c]).fetchall())
    assert toy_rows and toy_rows == pytest.approx(best, abs=1e-6)
    scored = {k for (k,) in con.execute("SELECT DISTINCT kind FROM planted_evidence").fetchall()}
    assert scored == set(evidence)
    auc = con.execute("SELECT value FROM planted_evidence WHERE kind = 'transfer' AND metric = 'auc'").fetchall()
    assert auc and all(v is None or 0 <= v <= 1 for (v,) in auc)
    con.close()
    # scored on the planted family
    assert (NAME,) in planted
    # served: its mode in every menu, with its label; its flows
    client = TestClient(create_app(db))
    assert "activation cosine, one-to-one assignment" in client.get("/").text
    flows = client.get("/api/", params={"mode": NAME, "threshold": 0.5}).json()["flows"]
    assert flows and all(f["mode_label"] == "activation cosine, best match" for f in flows)
    assert "activation cosine" in client.get("/method", params={"mode": NAME}).text
    # reported
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["report", "--db", str(db), "--mode", NAME]) == 0
    assert f"mode {NAME} (activation cosine, best match)" in buf.getvalue()
    assert f"{TOY_EV} {p}->{c} best parent r: n {len(toy_rows)}" in buf.getvalue()
    # served: a child feature's page carries the toy value, /api/evidence both kinds, /method the planted scores
    f = next(iter(toy_rows))
    ev = client.get(f"/api/models/{c}/features/{f}").json()["evidence"]
    assert [v["value"] for e in ev if e["kind"] == TOY_EV and e["parent"] == p for v in e["values"]] == \
        [pytest.approx(toy_rows[f])]
    summary = client.get("/api/evidence").json()["summary"]
    assert {r["kind"] for r in summary} == set(evidence)
    assert {(r["parent"], r["child"]) for r in summary if r["control"]} == set(pl.cfg.control_edges())
    assert "Evidence kinds on the planted truth" in client.get("/method").text

    # the fate that admits doubt (issue 31) end to end: pearson+transfer keeps pearson's persisting (inherited)
    # features and splits its disappearing (emerging) ones into persisting (transfer r above KEEP), uncertain and
    # disappearing, by what transfer r says of the other model
    plain, doubt = ({(f["parent"], f["child"]): f for f in client.get("/api/", params={"mode": m}).json()["flows"]}
                    for m in ("pearson", "pearson+transfer"))
    assert sum(f["uncertain"] for f in doubt.values()) > 0
    assert sum(f["persisting"] - plain[e]["persisting"] for e, f in doubt.items()) > 0
    for e, f in doubt.items():
        assert f["persisting"] >= plain[e]["persisting"] and plain[e]["uncertain"] == 0
        assert f["persisting"] + f["disappearing"] + f["uncertain"] == plain[e]["persisting"] + plain[e]["disappearing"]
        assert f["inherited"] + f["emerging"] + f["uncertain_origin"] == plain[e]["inherited"] + plain[e]["emerging"]
    con = duckdb.connect(str(db), read_only=True)
    tr = dict(con.execute("SELECT feature, value FROM evidence WHERE kind = 'transfer' AND parent = ? AND child = ?",
                          [p, c]).fetchall())
    events = dict(con.execute("SELECT feature, n_active FROM features WHERE model = ?", [p]).fetchall())
    con.close()
    from featureflow.evidence.transfer import KEEP, MIN_EVENTS, TAU

    q = {"mode": "pearson+transfer", "per_page": 200}
    unsure = client.get(f"/api/edges/{p}/{c}", params={**q, "fate": "uncertain"}).json()
    gone = client.get(f"/api/edges/{p}/{c}", params={**q, "fate": "disappearing"}).json()
    kept = client.get(f"/api/edges/{p}/{c}", params={**q, "fate": "persisting"}).json()
    assert unsure["total"] == doubt[(p, c)]["uncertain"] and gone["total"] == doubt[(p, c)]["disappearing"]
    assert all(x["r"] is None or x["r"] <= 0.7 for x in unsure["rows"] + gone["rows"])
    assert all(tr[x["feature"]] > TAU or events[x["feature"]] < MIN_EVENTS for x in unsure["rows"])
    assert all(tr.get(x["feature"], -1) <= TAU and events[x["feature"]] >= MIN_EVENTS for x in gone["rows"])
    assert all(x["r"] > 0.7 or (tr[x["feature"]] > KEEP and events[x["feature"]] >= MIN_EVENTS)
               for x in kept["rows"])
    # a feature kept by transfer alone: its lineage names the child as carrying it and follows no latent further
    carried = [x for x in kept["rows"] if x["r"] is not None and x["r"] <= 0.7]
    assert carried
    f = carried[0]["feature"]
    lin = client.get(f"/api/models/{p}/features/{f}", params={"mode": "pearson+transfer"}).json()["lineage"]
    node = next(n for n in lin["descendants"] if n["model"] == c)
    assert node["carried"] and node["persists"] and node["children"] == [] and node["r"] <= 0.7
    html = client.get(f"/models/{p}/features/{f}", params={"mode": "pearson+transfer"}).text
    assert "carries it (transfer" in html
    # a child feature inherited by reverse transfer alone: its chain ends in the parent, with no latent named, on
    # its page, in search and in SQL (`flows.origins`) alike
    got = client.get(f"/api/edges/{p}/{c}", params={**q, "fate": "inherited"}).json()["rows"]
    carried_in = [x["feature"] for x in got if x["r"] is None or x["r"] <= 0.7]
    assert carried_in
    g = carried_in[0]
    o = client.get(f"/api/models/{c}/features/{g}", params={"mode": "pearson+transfer"}).json()["lineage"]["origin"]
    assert (o["model"], o["feature"], o["carried"]) == (p, None, True)
    assert "carried (no latent)" in client.get(f"/models/{c}/features/{g}", params={"mode": "pearson+transfer"}).text
    con = duckdb.connect(str(db), read_only=True)
    from featureflow.store import flows

    sql = flows.origins(con, [(c, g)], 0.7, "pearson+transfer")[(c, g)]
    con.close()
    assert (sql["origin_model"], sql["origin_feature"], sql["carried"]) == (p, None, True)
    page = client.get(f"/edges/{p}/{c}", params={"mode": "pearson+transfer", "fate": "uncertain"}).text
    assert f"uncertain · {doubt[(p, c)]['uncertain']}" in page
    assert f"transfer r exceeds {KEEP}" in page and f"fewer than {MIN_EVENTS} times" in page  # the rule, stated
    assert f"exceeds {KEEP}" in client.get("/", params={"mode": "pearson+transfer"}).text
    from oracles import sankey_node_mismatches  # each Sankey node counts what its link lists, under the keep rule too

    for m in ("pearson", "pearson+transfer"):
        for pop in ("all", "reproducible"):
            assert sankey_node_mismatches(client, {"mode": m, "population": pop}) == [], (m, pop)
    # each side's fates partition its alive features, and the overview's table and the edge page show every one
    for f in client.get("/api/", params={"mode": "pearson+transfer"}).json()["flows"]:
        assert sum(f[k] for k in ("persisting", "disappearing", "uncertain", "split", "absorbed")) == f["parent_alive"]
        assert sum(f[k] for k in ("inherited", "emerging", "uncertain_origin", "split_part", "absorbing")) == \
            f["child_alive"]
    chips = client.get(f"/edges/{p}/{c}", params={"mode": "pearson+transfer"}).text
    assert f"uncertain · {doubt[(p, c)]['uncertain']}" in chips and "uncertain / split / absorbed" in \
        client.get("/", params={"mode": "pearson+transfer"}).text
    # the flow table's reproducible emergence counts the features whose fate is emerging (not of uncertain origin),
    # as many as its link lists
    rows = [f for f in client.get("/api/", params={"mode": "pearson+transfer"}).json()["flows"]
            if f.get("stable_child") is not None]
    assert rows
    for f in rows:
        listed = client.get(f"/api/edges/{f['parent']}/{f['child']}", params={
            "mode": "pearson+transfer", "fate": "emerging", "stable": "true", "per_page": 1}).json()["total"]
        assert f["stable_emerging"] == listed, f
    assert f"exceeds {KEEP}" not in client.get(f"/edges/{p}/{c}", params={"mode": "pearson"}).text
    for x in unsure["rows"]:  # the note on a page whose fate label is uncertain (not persisting into another child)
        f = x["feature"]
        fate = client.get(f"/api/models/{p}/features/{f}", params={"mode": "pearson+transfer"}).json()["lineage"]["fate"]
        html = client.get(f"/models/{p}/features/{f}", params={"mode": "pearson+transfer"}).text
        assert ("uncertain-note" in html) == ("uncertain" in fate), fate
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["report", "--db", str(db), "--mode", "pearson+transfer"]) == 0
    assert f"uncertain {doubt[(p, c)]['uncertain']:6d} of" in buf.getvalue()
