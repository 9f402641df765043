"""Crosscoders (pipeline/crosscoder.py) on planted activations: a model paired with itself has no exclusive latent
beyond chance, features a child lost are parent-only, and the per-latent measures equal a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featureflow.config import CrosscoderConfig, PlantedChild, PlantedConfig
from featureflow.pipeline.crosscoder import (Crosscoder, chance_exclusive, classify, encode_pairs, latent_scaling,
                                             relative_norm, train_crosscoder)
from featureflow.pipeline.crosscoder_planted import edge_crosscoder, paired_batches
from featureflow.pipeline.planted import build_family, edge_truth, latent_truth

CC = CrosscoderConfig(expansion=4, k=3, steps=1500, batch=256, lr=3e-3)


@pytest.fixture(scope="module")
def fam():
    torch.set_num_threads(1)
    cfg = PlantedConfig(seed=3, features=48, d=16, merge=None, sample_positions=6000, train_positions=30000,
                        children=[PlantedChild(name="a", parent="root", drifted=0.0, removed=0.25, split=0.0,
                                               added=0.0)])
    f = build_family(cfg)
    return f, f.positions(11, cfg.sample_positions), f.positions(12, cfg.train_positions)


def test_relative_norm_and_cosine_equal_a_hand_computation():
    cc = Crosscoder(3, 4, seed=0)
    with torch.no_grad():
        cc.W_dec.copy_(torch.tensor([[[3., 0, 0], [0, 4, 0]], [[0, 0, 0], [1, 1, 1]], [[1, 0, 0], [0, 0, 0]],
                                     [[0, 0, 0], [0, 0, 0]]]))
    n = cc.norms()
    rho = relative_norm(n)
    hand = [4 / (3 + 4), 3 ** 0.5 / (0 + 3 ** 0.5), 0 / 1, None]
    assert rho[:3] == pytest.approx(hand[:3]) and np.isnan(rho[3])
    assert list(classify(rho, 0.2)) == ["shared", "child-only", "parent-only", "dead"]


def test_latent_scaling_equals_least_squares(fam):
    f, sample, pool = fam
    cc, _ = train_crosscoder(paired_batches(f, "root", "a", pool, 256, 0), f.cfg.d, CC.model_copy(update={"steps": 100}),
                             seed=0)
    xp, xc = f.activations("root", sample[:2000]), f.activations("a", sample[:2000])
    F = encode_pairs(cc, xp, xc)
    ls = latent_scaling(cc, xp, xc, F)
    W = cc.W_dec.detach().double().numpy()
    with torch.no_grad():
        rp, rc = (r.double().numpy() for r in cc.decode(torch.from_numpy(F)))
    j = int(np.argmax((F > 0).sum(0)))  # the latent that fires most
    d = W[j, ls["strong"][j]]
    basis = (F[:, j:j + 1].astype(np.float64) * d).ravel()[:, None]  # f_j d_j over every row, flattened
    for m, name, x, r in ((0, "parent", xp.double().numpy(), rp), (1, "child", xc.double().numpy(), rc)):
        beta_r = np.linalg.lstsq(basis, r.ravel(), rcond=None)[0][0]
        err = x - r + F[:, j:j + 1].astype(np.float64) * W[j, m]
        beta_e = np.linalg.lstsq(basis, err.ravel(), rcond=None)[0][0]
        assert ls[f"beta_r_{name}"][j] == pytest.approx(beta_r, rel=1e-6, abs=1e-9)
        assert ls[f"beta_e_{name}"][j] == pytest.approx(beta_e, rel=1e-6, abs=1e-9)


def test_a_model_paired_with_itself_has_no_exclusive_latent_beyond_chance(fam):
    f, sample, pool = fam
    m = edge_crosscoder(f, "root", "root", pool, sample, CC, seed=1)
    alive = np.isfinite(m["rho"])
    exclusive = np.isin(m["cls"], ("parent-only", "child-only")).sum() / alive.sum()
    chance = chance_exclusive(int(alive.sum()), f.cfg.d, CC.exclusive_below)
    assert alive.sum() > 20 and exclusive <= chance + 0.02, (exclusive, chance)
    assert np.nanmedian(np.abs(m["rho"] - 0.5)) < 0.05  # the two decoder norms agree


def test_features_the_child_lost_are_parent_only_latents(fam):
    f, sample, pool = fam
    m = edge_crosscoder(f, "root", "a", pool, sample, CC, seed=2)
    truth = edge_truth(f.members["root"], f.members["a"])["parent"]
    W = m["cc"].W_dec.detach().double().numpy()
    use = np.flatnonzero(np.isfinite(m["rho"]) & (m["cls"] != "child-only"))
    row = latent_truth(W[use, 0], f.members["root"].dirs, 0.8)[0]
    removed = [i for i, r in zip(use, row) if r >= 0 and truth[r] == "disappearing"]
    kept = [i for i, r in zip(use, row) if r >= 0 and truth[r] == "persisting"]
    assert len(removed) >= 6 and len(kept) >= 20
    assert np.mean(m["cls"][removed] == "parent-only") >= 0.8
    assert np.mean(m["cls"][kept] == "shared") >= 0.9


def test_planted_scorecard_scores_every_crosscoder_mode_against_the_truth(fam):
    from featureflow.pipeline.crosscoder_planted import MODES, format_crosscoders, score_crosscoders

    f, sample, pool = fam
    card = score_crosscoders(f, pool, sample, CC.model_copy(update={"steps": 300}), 0.5, seed=0)
    assert set(card["modes"]) == set(MODES)
    truth = edge_truth(f.members["root"], f.members["a"])
    for mode, fates in card["modes"].items():
        # support: the planted features of each fate, counted from the truth table
        assert fates["disappearing"]["support"] == int((truth["parent"] == "disappearing").sum()) == 12
        assert fates["persisting"]["support"] == int((truth["parent"] == "persisting").sum()) == 36
        assert fates["emerging"]["support"] == 0 and fates["inherited"]["support"] == 36
        for v in fates.values():
            assert v["recall"] is None or 0 <= v["recall"] <= 1
    text = format_crosscoders(card, {"pearson": card["modes"]["crosscoder-l1"]})
    assert "crosscoder-batchtopk+ls" in text and "pearson" in text


def test_lm_edges_crosscoders_in_the_store_api_and_report(tiny_pipeline, tmp_path, capsys):
    """The crosscoders stage on the tiny run's artefacts (copied: only the new stage and the store are built)."""
    import shutil

    import duckdb
    from fastapi.testclient import TestClient

    from conftest import tiny_dict
    from featureflow.config import parse_config
    from featureflow.explorer.app import create_app
    from featureflow.report import print_report
    from featureflow.pipeline.runner import Pipeline

    shutil.copytree(tiny_pipeline.root, tmp_path / "tiny", ignore=shutil.ignore_patterns("crosscoders"))
    cfg = parse_config(tiny_dict(tmp_path, crosscoder={"steps": 200, "expansion": 4, "k": 4, "sample_tokens": 2048}))
    pl = Pipeline(cfg, device="cpu")
    pl.run()
    assert set(pl.stage_seconds) and pl.stage_seconds["models"] < 5  # nothing upstream was rebuilt
    con = duckdb.connect(str(cfg.store_path()), read_only=True)
    try:
        edges = con.execute("SELECT parent, child, latents, shared + parent_only + child_only + dead FROM crosscoders "
                            "ORDER BY parent, child").fetchall()
        assert sorted((p, c) for p, c, *_ in edges) == sorted(cfg.edges())
        assert all(n == tot == 4 * 64 for _, _, n, tot in edges)
        # rho as the schema defines it, recomputed in SQL; calls by the rule at exclusive_below 0.2
        bad = con.execute("""SELECT count(*) FROM crosscoder_latents WHERE rho IS NOT NULL AND
                             abs(rho - norm_child / (norm_parent + norm_child)) > 1e-6""").fetchone()[0]
        assert bad == 0
        assert con.execute("""SELECT count(*) FROM crosscoder_latents WHERE (rho IS NULL) <> (call = 'dead')"""
                           ).fetchone()[0] == 0
        assert con.execute("""SELECT count(*) FROM crosscoder_latents WHERE call = 'parent-only' AND rho >= 0.2"""
                           ).fetchone()[0] == 0
        p, c = cfg.edges()[0]
        lat = con.execute("""SELECT parent_feature FROM crosscoder_latents WHERE parent = ? AND child = ?
                             AND call <> 'dead' AND parent_r >= 0.5""", [p, c]).fetchall()
    finally:
        con.close()
    client = TestClient(create_app(cfg.store_path()))
    js = client.get(f"/api/edges/{p}/{c}/crosscoder", params={"per_page": 200}).json()
    rhos = [r["rho"] for r in js["rows"]]
    assert rhos == sorted(rhos) and js["total"] >= len(rhos) > 0
    # agreement: latents whose best parent feature is persisting or disappearing on the edge (the edge's own lists)
    fated = set()
    for fate in ("persisting", "disappearing"):
        page, pages = 1, 1
        while page <= pages:
            got = client.get(f"/api/edges/{p}/{c}", params={"fate": fate, "per_page": 200, "page": page}).json()
            fated |= {r["feature"] for r in got["rows"]}
            page, pages = page + 1, got["pages"]
    assert js["agreement"]["latents"] == sum(f in fated for (f,) in lat)
    assert client.get(f"/edges/{p}/{c}/crosscoder").status_code == 200
    feature = js["rows"][0]["parent_feature"]
    page = client.get(f"/models/{p}/features/{feature}").text
    assert f"/edges/{p}/{c}/crosscoder" in page
    print_report(str(cfg.store_path()))
    assert f"{p} -> {c} (batchtopk, 256 latents" in capsys.readouterr().out


def test_auxk_revives_dead_latents(fam):
    """BatchTopK leaves latents that never fire; AuxK (trained on what the live latents leave) revives some: fewer
    latents dead on the sample than the same crosscoder, same seed and batches, without it."""
    f, sample, pool = fam
    dead = {}
    for aux in (0, 16):
        cfg = CC.model_copy(update={"expansion": 8, "aux_k": aux, "dead_after": 50})
        m = edge_crosscoder(f, "root", "a", pool, sample, cfg, seed=4)
        dead[aux] = int((~np.isfinite(m["rho"])).sum())
    assert dead[0] > 0 and dead[16] < dead[0], dead
