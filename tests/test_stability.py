"""Issue 21: seed stability per feature, reproducible persistence with intervals and its floor, PW-MCC.

Oracles: statsmodels' `proportion_confint` (Wilson), a brute force over every one-to-one pairing and
scipy's `linear_sum_assignment` called directly (PW-MCC), and numpy / duckdb counts straight from the
store's tables and the pipeline's artefacts (never through featureflow's own SQL) for the report."""

from __future__ import annotations

import itertools

import duckdb
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from statsmodels.stats.proportion import proportion_confint

from featureflow.pipeline.matching import pw_mcc
from featureflow.store.flows import wilson


# ------------------------------------------------------------------------------------------ Wilson
@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 7), (7, 7), (3, 10), (160, 319), (10, 1727), (268, 317)])
def test_wilson_interval_equals_statsmodels(k, n):
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    got = wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-12)
    assert got[0] <= k / n <= got[1]


def test_wilson_of_no_features_is_none():
    assert wilson(0, 0) is None


# ----------------------------------------------------------------------------------------- PW-MCC
def _brute_force(A: np.ndarray, B: np.ndarray) -> float:
    """Mean |cos| of the best one-to-one pairing, over every injective map of the smaller side."""
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    B = B / np.linalg.norm(B, axis=1, keepdims=True)
    cos = np.abs(A @ B.T)
    if cos.shape[0] > cos.shape[1]:
        cos = cos.T
    n, m = cos.shape
    return max(np.mean([cos[i, p[i]] for i in range(n)]) for p in itertools.permutations(range(m), n))


@pytest.mark.parametrize("fa,fb,d", [(5, 5, 3), (4, 6, 3), (6, 4, 5), (7, 7, 2)])
def test_pw_mcc_equals_brute_force_and_scipy(fa, fb, d):
    rng = np.random.default_rng(fa * 100 + fb * 10 + d)
    A, B = rng.normal(size=(fa, d)) * rng.uniform(0.1, 3, (fa, 1)), rng.normal(size=(fb, d))
    score, chance = pw_mcc(A, B)
    assert score == pytest.approx(_brute_force(A, B), abs=1e-12)
    # scipy's assignment on |cos| maximised directly (the other way round from pw_mcc's 1 - |cos|)
    cos = np.abs((A / np.linalg.norm(A, axis=1)[:, None]) @ (B / np.linalg.norm(B, axis=1)[:, None]).T)
    r, c = linear_sum_assignment(cos, maximize=True)
    assert score == pytest.approx(cos[r, c].mean(), abs=1e-12)
    assert 0 < chance < 1


def test_pw_mcc_is_one_for_a_decoder_against_a_permuted_sign_flipped_copy_and_chance_depends_on_shape_only():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(64, 16))
    perm = rng.permutation(64)
    B = A[perm] * rng.choice([-1.0, 1.0], size=(64, 1)) * 2.5
    score, chance = pw_mcc(A, B)
    assert score == pytest.approx(1.0, abs=1e-12)
    other_score, other_chance = pw_mcc(rng.normal(size=(64, 16)), rng.normal(size=(64, 16)))
    assert other_chance == chance  # random unit vectors of the same shapes, same seed
    assert other_score < 0.9
    # more dictionary than dimensions: random directions find close partners; the chance level says how close
    # (above the mean |cos| of two random unit vectors in 16 dimensions, about sqrt(2 / (pi d)) = 0.2)
    assert np.sqrt(2 / (np.pi * 16)) < chance < 1
    assert pw_mcc(A, B, seed=1)[1] != chance


def test_pw_mcc_refuses_decoders_of_different_widths():
    with pytest.raises(ValueError, match="different spaces"):
        pw_mcc(np.ones((3, 4)), np.ones((3, 5)))


# ------------------------------------------------------------------ the store against an independent count
def _script():
    """scripts/check_reproducible.py: numpy / duckdb / statsmodels over the store's tables, no featureflow SQL."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "check_reproducible.py"
    spec = importlib.util.spec_from_file_location("check_reproducible", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_report_figures_equal_an_independent_count_from_the_store(tiny_pipeline):
    script = _script()
    db = tiny_pipeline.cfg.store_path()
    for t in (0.5, None):  # None: the run's threshold
        checked, bad = script.check(db, t)
        assert not bad, bad
        assert len(checked) == len(tiny_pipeline.cfg.edges()) * len(tiny_pipeline.cfg.matching.modes)
        assert any(" persisting " in line and " of " in line for line in checked)  # some edge had reproducible features
    # the oracle can fail: a report off by one feature is caught
    con = duckdb.connect(str(db), read_only=True)
    want = next(w for w in script.independent(con, 0.5, "pearson").values() if w["persist"] and w["persist"][1])
    con.close()
    k, n = want["persist"]
    assert f"persisting {k} of {n}" in " ".join(script.expected(want))
    assert f"persisting {k + 1} of {n}" not in " ".join(script.expected(want))


def _tables(con, sim: str, rule: str):
    return _script().tables(con, sim, rule)[:3]


def _above(r: np.ndarray, t: float) -> np.ndarray:
    return np.nan_to_num(r, nan=-2.0) > t


def test_stored_pw_mcc_equals_scipy_on_the_saved_decoders(tiny_pipeline):
    """The pw_mcc table against the SAE weights as saved (safetensors), paired by scipy directly."""
    from safetensors.numpy import load_file

    pl = tiny_pipeline
    con = duckdb.connect(str(pl.cfg.store_path()), read_only=True)
    rows = con.execute("SELECT kind, model_a, replica_a, model_b, replica_b, pw_mcc, chance FROM pw_mcc").fetchall()
    con.close()
    pairs = {(a, ra, b, rb) for _, a, ra, b, rb, _, _ in rows}
    assert {(p, 0, c, 0) for p, c in pl.cfg.edges()} | {
        (n, 0, n, r) for n in pl.cfg.topological_order() for r in pl.replicas(n)[1:]} | {
        (p, 0, c, 0) for p, c in pl.cfg.control_edges()} == pairs
    chances = set()
    for kind, a, ra, b, rb, score, chance in rows:
        A, B = (load_file(str(pl.sae(m, r) / "sae_weights.safetensors"))["W_dec"].astype(np.float64)
                for m, r in ((a, ra), (b, rb)))
        A, B = A / np.linalg.norm(A, axis=1, keepdims=True), B / np.linalg.norm(B, axis=1, keepdims=True)
        cos = np.abs(A @ B.T)
        i, j = linear_sum_assignment(cos, maximize=True)
        assert score == pytest.approx(cos[i, j].mean(), abs=1e-9)
        assert kind == ("replica" if a == b else "control" if b in pl.cfg.control_members() else "edge")
        chances.add(round(chance, 12))
    assert len(chances) == 1  # every SAE has the same shape here: one chance level


def _stability_shares(pl, replicas: list[int]) -> np.ndarray:
    """Each alive feature's stability (share of replicas it reproduces in at the threshold), through the
    store's SQL over noise_floor rows made from the floor artefacts."""
    from featureflow.store.flows import STABILITY, stability_params
    from featureflow.store.schema import TABLES
    from featureflow.store.writers import insert

    root, t = pl.cfg.roots()[0], pl.cfg.matching.threshold
    alive = np.diff(pl.load_acts(root).indptr) > 0
    con = duckdb.connect()
    con.execute(f"CREATE TABLE noise_floor ({TABLES['noise_floor'][1]})")
    for rep in replicas:
        r = np.load(pl.floor(root, rep, "pearson") / "topk.npz")["p2c_r"][:, 0]
        n = len(r)
        insert(con, "noise_floor", {"model": [root] * n, "replica": [rep] * n, "similarity": ["pearson"] * n,
                                    "rule": ["best"] * n, "feature": list(range(n)), "alive": alive.tolist(),
                                    "r": [float(x) for x in r]})
    got = con.execute(f"SELECT feature, reproduced / replicas FROM ({STABILITY}) WHERE model = $model ORDER BY feature",
                      {**stability_params(t, "pearson"), "model": root}).fetchall()
    con.close()
    return np.array([s for f, s in got])[alive]


def test_stability_is_one_for_equal_seeds_and_falls_with_different_seeds(tiny_pipeline):
    from featureflow.config import parse_config
    from featureflow.pipeline.runner import Pipeline

    d = tiny_pipeline.cfg.model_dump()
    d["sae"].update(shared_init=True)
    same = Pipeline(parse_config(d), device="cpu")  # every replica of the root from one seed: the same SAE
    shares = _stability_shares(same, [1, 2])
    assert len(shares) > 0 and np.all(shares == 1.0)
    independent = _stability_shares(tiny_pipeline, [1, 2])
    assert independent.mean() < 0.8, independent.mean()


# ---------------------------------------------------------------------------------------- the explorer
@pytest.fixture(scope="module")
def client(tiny_pipeline):
    from fastapi.testclient import TestClient

    from featureflow.explorer.app import create_app

    return TestClient(create_app(tiny_pipeline.cfg.store_path()))


def test_feature_page_shows_its_seed_stability(client, tiny_pipeline):
    pl = tiny_pipeline
    root, t = pl.cfg.roots()[0], 0.5
    reps = pl.replicas(root)[1:]
    rs = np.stack([np.load(pl.floor(root, r, "pearson") / "topk.npz")["p2c_r"][:, 0] for r in reps])
    alive = np.diff(pl.load_acts(root).indptr) > 0
    k = (rs > t).sum(axis=0)
    for f in (int(np.flatnonzero(alive & (k == len(reps)))[0]), int(np.flatnonzero(alive & (k < len(reps)))[0])):
        d = client.get(f"/api/models/{root}/features/{f}", params={"threshold": t}).json()["stability"]
        assert (d["replicas"], d["reproduced"], d["stable"]) == (len(reps), int(k[f]), bool(k[f] == len(reps)))
        assert [x["r"] for x in d["rs"]] == pytest.approx(list(np.clip(rs[:, f], -1, 1)))
        html = client.get(f"/models/{root}/features/{f}", params={"threshold": t}).text
        rtext = ", ".join(f"{x:.2f}" for x in np.clip(rs[:, f], -1, 1))
        assert f"reproduces in {k[f]} of {len(reps)} seeds, r {rtext}</b>" in html


def test_stable_filters_in_search_and_edge_lists(client, tiny_pipeline):
    pl = tiny_pipeline
    con = duckdb.connect(str(pl.cfg.store_path()), read_only=True)
    t = 0.5
    for mode in ("pearson", "pearson-1to1"):
        sim, _, rule = mode.partition("-")
        alive, reps, best = _tables(con, sim, rule or "best")
        for m, rs in reps.items():
            stable = alive[m] & np.all([_above(r, t) for r in rs.values()], axis=0)
            q = {"model": m, "threshold": t, "mode": mode, "per_page": 200}
            got = client.get("/api/features", params={**q, "stable": "true"}).json()
            assert got["total"] == int(stable.sum()) and all(r["stable"] for r in got["rows"])
            got = client.get("/api/features", params={**q, "stable": "false"}).json()
            assert got["total"] == len(stable) - int(stable.sum())  # dead features are never reproducible
            assert client.get("/api/features", params={**q, "stable": ""}).json()["total"] == len(stable)
        for f in client.get("/api/", params={"threshold": t, "mode": mode}).json()["flows"]:
            p, c = f["parent"], f["child"]
            d = client.get(f"/api/edges/{p}/{c}", params={"fate": "persisting", "threshold": t, "mode": mode,
                                                          "stable": "true", "per_page": 200}).json()
            hit = alive[p] & _above(best[(p, c, "p2c")], t) & np.all([_above(r, t) for r in reps[p].values()], axis=0)
            assert d["total"] == int(hit.sum())
            assert sorted(r["feature"] for r in d["rows"]) == sorted(np.flatnonzero(hit).tolist())[:200]
            html = client.get(f"/edges/{p}/{c}", params={"fate": "persisting", "threshold": t, "mode": mode}).text
            assert f"{f['stable_persisting']} persist: <b>" in " ".join(html.split()) and "PW-MCC" in html
    assert client.get("/api/features", params={"stable": "maybe"}).status_code == 422
    con.close()


def test_floors_and_overview_show_pw_mcc_and_the_reproducible_floor(client, tiny_pipeline):
    con = duckdb.connect(str(tiny_pipeline.cfg.store_path()), read_only=True)
    mcc = con.execute("SELECT model_a, replica_b, pw_mcc, chance FROM pw_mcc WHERE kind = 'replica'").fetchall()
    con.close()
    fl = {f["model"]: f for f in client.get("/api/floors").json()["floors"]}
    for m, rep, score, chance in mcc:
        got = next(p for p in fl[m]["pw_mcc"] if p["replica"] == rep)
        assert (got["pw_mcc"], got["chance"]) == pytest.approx((score, chance))
    root = tiny_pipeline.cfg.roots()[0]
    assert fl[root]["scale"]["extra"] == 2
    # one extra replica: the leave-one-out population is every alive feature, its floor the raw floor
    for m, f in fl.items():
        if m != root:
            assert f["scale"]["extra"] == 1 and f["scale"]["n"] == f["alive"]
            assert f["scale"]["floor"]["matched"] == f["matched"]
    html = client.get("/floors").text
    assert "PW-MCC" in html and "seed floor" in html and "random-weights" in html
    over = client.get("/", params={"population": "all"}).text
    assert "reproducible persisting" in over and 'data-population="all"' in over
