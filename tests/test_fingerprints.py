import numpy as np
import pytest
import torch

from featureflow.pipeline.fingerprints import (additivity, delta, encode_probes, probe_states, probe_texts, silhouette_cosine,
                                  VARIANTS)


@pytest.fixture(scope="module")
def base(tiny_pipeline):
    from featureflow.pipeline.family.model import load_model

    return load_model(tiny_pipeline.member("babypython"))


@pytest.fixture(scope="module")
def probes(tiny_pipeline):
    return encode_probes(tiny_pipeline.hf_tokenizer, probe_texts(None, "neutral"))


def test_identical_child_gives_zero(base, probes):
    a = probe_states(base, *probes)
    b = probe_states(base, *probes)
    for v, vec in delta(a, b).items():
        assert np.all(vec == 0), v


def test_known_change_to_the_final_norm(tiny_pipeline, base, probes):
    from featureflow.pipeline.family.model import load_model

    child = load_model(tiny_pipeline.member("babypython"))
    with torch.no_grad():
        child.model.norm.weight.mul_(2.0)  # RMSNorm output doubles: h_child = 2 h_base
    sb, sc = probe_states(base, *probes), probe_states(child, *probes)
    d = delta(sc, sb)
    np.testing.assert_allclose(d["delta-hidden"], sb["delta-hidden"], rtol=1e-6, atol=1e-8)
    assert np.all(d["delta-mlp"] == 0)  # the norm comes after the MLP


def test_padding_does_not_leak_into_probe_states(tiny_pipeline, base):
    tok = tiny_pipeline.hf_tokenizer
    short, long_ = "The", "Here is a short example."
    alone = probe_states(base, *encode_probes(tok, [short]))["per_probe_hidden"][0]
    padded = probe_states(base, *encode_probes(tok, [short, long_]))["per_probe_hidden"][0]
    np.testing.assert_allclose(alone, padded, atol=1e-5)


def _silhouette_by_definition(X, labels):
    """The silhouette written out (the hand-written version fingerprints.py had before it called sklearn):
    d = 1 - cos; s = (b - a) / max(a, b); a sample alone in its cluster scores 0."""
    labels = np.asarray(labels)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    D = np.clip(1.0 - U @ U.T, 0.0, 2.0)
    np.fill_diagonal(D, 0.0)
    s = np.zeros(len(labels))
    for i, li in enumerate(labels):
        same = labels == li
        if same.sum() == 1:
            continue
        a = D[i, same].sum() / (same.sum() - 1)
        b = min(D[i, labels == lj].mean() for lj in np.unique(labels) if lj != li)
        s[i] = (b - a) / max(a, b)
    return float(s.mean())


def test_silhouette_is_unchanged_from_the_definition():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(1, 0.5, (5, 6)), rng.normal(-1, 0.5, (4, 6)), rng.normal(0, 1, (3, 6))])
    labels = ["a"] * 5 + ["b"] * 4 + ["c"] * 3
    assert silhouette_cosine(X, labels) == pytest.approx(_silhouette_by_definition(X, labels), abs=1e-12)
    labels2 = ["a"] * 5 + ["b"] * 6 + ["solo"]  # a singleton cluster scores 0
    assert silhouette_cosine(X, labels2) == pytest.approx(_silhouette_by_definition(X, labels2), abs=1e-12)
    assert silhouette_cosine(X, ["a"] * 12) is None and silhouette_cosine(X[:3], ["a", "b", "c"]) is None


def test_pca_map_is_unchanged_from_the_svd_up_to_each_axis_sign():
    """The map equals the projection on the first two right singular vectors of the centred data (what
    fingerprints.py computed with numpy before it called sklearn's PCA), each axis up to its sign."""
    from featureflow.pipeline.fingerprints import pca_2d

    rng = np.random.default_rng(1)
    for shape in ((9, 6), (5, 40), (3, 1)):
        X = rng.normal(size=shape) * np.linspace(3, 0.5, shape[1])
        coords, ratio = pca_2d(X)
        U, S, _ = np.linalg.svd(X - X.mean(0), full_matrices=False)
        want = np.pad(U[:, :2] * S[:2], ((0, 0), (0, max(0, 2 - len(S[:2])))))
        for k in range(2):
            sign = 1.0 if coords[:, k] @ want[:, k] >= 0 else -1.0
            np.testing.assert_allclose(coords[:, k], sign * want[:, k], atol=1e-10)
        var = S ** 2
        assert ratio == pytest.approx((var[:2] / var.sum()).tolist() + [0.0] * (2 - len(var[:2])), abs=1e-12)
    assert pca_2d(np.ones((4, 3))) == (pytest.approx(np.zeros((4, 2))), [0.0, 0.0])  # no variance


def test_additivity_exact_for_same_direction_deltas():
    u = np.array([1.0, -2.0, 0.5])
    d0, d1, t = 2 * u, 5 * u, 0.3
    a = additivity((1 - t) * d0 + t * d1, d0, d1, t)
    assert a["cos_interp"] == pytest.approx(1.0) and a["rel_norm_interp"] == pytest.approx(1.0)
    assert a["cos_sum"] == pytest.approx(1.0) and a["rel_norm_sum"] == pytest.approx(((1 - t) * 2 + t * 5) / 7)


def test_fingerprint_run_writes_each_members_shift_against_its_untouched_base(tiny_pipeline, tmp_path, base, probes):
    """Probing changes no weight, and the vectors fingerprint_run writes (vectors.npz) are each member's probe
    states minus its base's, both read again here from the model folders on disk."""
    from featureflow.pipeline.family.model import load_model
    from featureflow.pipeline.fingerprints import fingerprint_run

    before = {k: v.clone() for k, v in base.state_dict().items()}
    probe_states(base, *probes)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    pl, order = tiny_pipeline, tiny_pipeline.cfg.topological_order()
    fingerprint_run(pl.cfg, {n: pl.member(n) for n in order}, pl.load_acts, pl.load_cross_acts, pl.hf_tokenizer,
                    pl.device, pl.pool_members(), pl.member_inputs(), tmp_path)
    vecs = np.load(tmp_path / "vectors.npz")
    fcfg, root = pl.cfg.fingerprints, pl.cfg.roots()[0]
    ids, mask = encode_probes(pl.hf_tokenizer, probe_texts(fcfg.probes, fcfg.probe_set))
    states = {n: probe_states(load_model(pl.member(n)), ids, mask, pl.cfg.sae.hook) for n in order}
    members = [n for n in order if n != fcfg.base.get(n, root)]
    assert members
    for n in members:
        for v in VARIANTS:
            want = states[n][v] - states[fcfg.base.get(n, root)][v]
            assert np.any(want != 0), (n, v)
            np.testing.assert_allclose(vecs[f"{n}|{v}"], want, rtol=0, atol=1e-9, err_msg=f"{n} {v}")
    # the features behind each fingerprint come from one encode shared with transfer evidence (the runner's cross
    # activations): equal to encoding the member afresh with its base's SAE (encode_sample) and `feature_shift`
    from featureflow.pipeline.artifacts import read_json
    from featureflow.pipeline.features import encode_sample
    from featureflow.pipeline.fingerprints import feature_shift
    from featureflow.pipeline.sae import load_sae

    behind = read_json(tmp_path / "fingerprints.json")["features_behind"]
    for n in members:
        b = fcfg.base.get(n, root)
        fresh = encode_sample(load_model(pl.member(n)), load_sae(pl.sae(b)), pl.sample_tokens(), pl.cfg.sae.hook)
        sh = feature_shift(pl.load_acts(b), fresh)
        rows = [x for x in behind if x["model"] == n]
        assert rows
        for x in rows:
            assert x["delta_mean"] == pytest.approx(float(sh["delta_mean"][x["feature"]]), abs=1e-6)


def test_store_holds_every_member_and_sweep_point(tiny_pipeline):
    import duckdb

    from featureflow.pipeline.artifacts import read_json

    con = duckdb.connect(str(tiny_pipeline.cfg.store_path()), read_only=True)
    ents = con.execute("SELECT DISTINCT entity, kind FROM fingerprints").fetchall()
    kinds = {k: {e for e, kk in ents if kk == k} for k in ("member", "pool", "sweep")}
    assert kinds["member"] == {"lua", "tinystories", "luastories"}
    assert len(kinds["pool"]) == 2 * 2  # two per fine-tune domain
    n_t = len({p["t"] for p in read_json(tiny_pipeline.member("luastories") / "merge_curve.json")["points"]})
    assert len(kinds["sweep"]) == n_t
    assert {r[0] for r in con.execute("SELECT DISTINCT variant FROM fingerprints").fetchall()} == set(VARIANTS)
    # each variant's silhouette: sklearn's on the stored member and pool vectors, cosine distance, domain labels
    from sklearn.metrics import silhouette_score

    for v in VARIANTS:
        rows = con.execute("SELECT vector, label FROM fingerprints WHERE variant = ? AND kind IN ('member', 'pool')",
                           [v]).fetchall()
        X, labels = np.array([r[0] for r in rows]), [r[1] for r in rows]
        sil, n, n_labels = con.execute("SELECT silhouette, n, n_labels FROM fingerprint_stats WHERE variant = ?",
                                       [v]).fetchone()
        assert (n, n_labels) == (len(rows), len(set(labels))) and 2 <= n_labels < n
        assert sil == pytest.approx(silhouette_score(X, labels, metric="cosine"), abs=1e-9)
    n_behind = con.execute("SELECT count(*) FROM fingerprint_features WHERE model = 'lua' AND rank_by = 'mean'").fetchone()[0]
    assert n_behind == 5
    con.close()


def test_tsne_only_with_enough_fingerprints():
    from featureflow.pipeline.fingerprints import TSNE_MIN, tsne_2d

    rng = np.random.default_rng(0)
    assert tsne_2d(rng.normal(size=(TSNE_MIN - 1, 8))) is None
    X = np.concatenate([rng.normal(0, 0.1, (12, 8)) + 3 * np.eye(8)[0], rng.normal(0, 0.1, (12, 8)) + 3 * np.eye(8)[1]])
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="openmp"):  # after torch has loaded its own OpenMP, two runtimes spinning
        Y = tsne_2d(X)                               # on 2 shared cores took 40 s instead of 3
    assert Y.shape == (24, 2)
    # two clean clusters stay apart: every point is nearer its own cluster's centre
    c0, c1 = Y[:12].mean(0), Y[12:].mean(0)
    d = np.linalg.norm(Y[:, None] - np.stack([c0, c1])[None], axis=2)
    assert (d[:12, 0] < d[:12, 1]).all() and (d[12:, 1] < d[12:, 0]).all()
