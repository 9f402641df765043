"""Issue 30: an evidence kind is one registered object. The registry's checks, transfer r's column Pearson against
numpy, and the explorer's evidence (a feature's values, /evidence's summary) on the synthetic store against the
arrays it was written from. The pipeline computing, storing, serving, reporting and scoring a kind registered in a
test file alone: tests/test_registry.py."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from featureflow.evidence import EVIDENCE, Evidence, Measure, compute, evidence, register_evidence, unregister_evidence
from featureflow.evidence.transfer import column_pearson


def test_column_pearson_is_numpys_per_column():
    rng = np.random.default_rng(0)
    A = rng.random((300, 9)) * (rng.random((300, 9)) < 0.2)
    B = 0.5 * A + rng.random((300, 9)) * (rng.random((300, 9)) < 0.3)
    A[:, 3] = 0  # never fires: no r
    B[:, 5] = 2.0  # constant: no r
    for X, Y in ((A, B), (sp.csc_matrix(A), sp.csc_matrix(B))):
        r = column_pearson(X, Y)
        for j in range(9):
            if j in (3, 5):
                assert np.isnan(r[j])
            else:
                assert r[j] == pytest.approx(np.corrcoef(A[:, j], B[:, j])[0, 1], abs=1e-9)


def test_a_model_against_itself_transfers_at_r_one():
    """Transfer of an SAE onto its own model's activations: r = 1 for every feature that varies, NaN otherwise."""
    rng = np.random.default_rng(1)
    A = sp.csc_matrix(rng.random((200, 12)) * (rng.random((200, 12)) < 0.1))
    A[:, 4] = 0
    r = column_pearson(A, A.copy())
    varies = np.asarray((A.power(2).sum(0) / 200 - np.square(A.sum(0) / 200))).ravel() > 0
    assert varies.sum() == 11 and np.allclose(r[varies], 1.0) and np.isnan(r[~varies]).all()


def _toy(**kw):
    return Evidence(**{"name": "toy-ev", "label": "toy", "side": "parent", "measures": (Measure("x", "x"),),
                       "compute": lambda edge: {"x": np.arange(4.0)}, **kw})


def test_the_registry_checks_what_it_is_given():
    assert "transfer" in EVIDENCE and evidence("transfer").side == "parent"
    assert evidence("reverse-transfer").side == "child"
    with pytest.raises(ValueError, match="unknown evidence kind 'nope'.*transfer"):
        evidence("nope")
    with pytest.raises(ValueError, match="side must be one of"):
        _toy(side="both")
    with pytest.raises(ValueError, match="already registered"):
        register_evidence(_toy(name="transfer"))
    k = _toy()
    assert compute(k, None, 4)["x"].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"measure 'x': \(4,\), expected \(5,\)"):
        compute(k, None, 5)
    with pytest.raises(ValueError, match="computed no x"):
        compute(_toy(compute=lambda edge: {}), None, 4)


def test_the_config_accepts_registered_kinds_only():
    from featureflow.config import MatchingConfig

    assert MatchingConfig().evidence_kinds == []
    assert MatchingConfig(evidence=["transfer"]).evidence_kinds == ["transfer"]
    assert MatchingConfig(**MatchingConfig().model_dump()).evidence is None  # a dumped config parses again
    with pytest.raises(ValueError, match="unknown evidence kind 'toy-ev'"):
        MatchingConfig(evidence=["toy-ev"])
    register_evidence(_toy())
    try:
        assert MatchingConfig(evidence=["toy-ev", "transfer"]).evidence_kinds == ["toy-ev", "transfer"]
        with pytest.raises(ValueError, match="listed twice"):
            MatchingConfig(evidence=["toy-ev", "toy-ev"])
    finally:
        unregister_evidence("toy-ev")


def test_a_features_evidence_is_served_as_written(synthetic_store):
    from fastapi.testclient import TestClient

    from featureflow.explorer.app import create_app

    run = synthetic_store
    client = TestClient(create_app(run.path))
    checked = 0
    for (p, c, f), r in list(run.evidence.items())[:12]:
        ev = client.get(f"/api/models/{p}/features/{f}").json()["evidence"]
        got = [e for e in ev if (e["parent"], e["child"]) == (p, c) and e["kind"] == "colr"]
        assert len(got) == 1 and got[0]["label"] == "column r"
        assert got[0]["values"] == [{"measure": "r", "label": "column r", "value": pytest.approx(r, abs=1e-12),
                                     "feature": False, "count": False}]
        # a child-side feature of that edge holds no parent-side evidence of it
        assert not [e for e in client.get(f"/api/models/{c}/features/{f}").json()["evidence"]
                    if (e["parent"], e["child"]) == (p, c) and e["kind"] == "colr"]
        checked += 1
    assert checked
    # a feature with no value on an edge (never varies) gets no row for it
    silent = [(p, c, f) for p, c in run.edges for f in range(run.acts[p].shape[1]) if (p, c, f) not in run.evidence]
    for p, c, f in silent[:5]:
        ev = client.get(f"/api/models/{p}/features/{f}").json()["evidence"]
        assert not [e for e in ev if (e["parent"], e["child"]) == (p, c) and e["kind"] == "colr"]
    html = client.get("/models/base/features/1").text
    assert "Evidence beside matching" in html


def test_the_evidence_summary_is_numpys(synthetic_store):
    from fastapi.testclient import TestClient

    from featureflow.explorer.app import create_app

    run = synthetic_store
    client = TestClient(create_app(run.path))
    summary = client.get("/api/evidence").json()["summary"]
    rows = [r for r in summary if r["kind"] == "colr"]
    assert {(r["parent"], r["child"]) for r in rows} == {(p, c) for p, c, _ in run.evidence}
    # the split evidence: every measure but the parts' feature ids, summarised from the arrays it was written from
    for r in (r for r in summary if r["kind"] in ("split", "absorption")):
        assert not r["measure"].startswith("part_")
        v = run.split_ev[(r["kind"], r["parent"], r["child"])][r["measure"]]
        v = v[np.isfinite(v)]
        assert r["n"] == len(v) and r["mean"] == pytest.approx(v.mean(), abs=1e-9)
    assert {r["measure"] for r in summary if r["kind"] == "split"} == {"fit_r", "single_r", "parts", "overlap"}
    for r in rows:
        v = np.array([x for (p, c, _), x in run.evidence.items() if (p, c) == (r["parent"], r["child"])])
        assert r["n"] == len(v) and r["mean"] == pytest.approx(v.mean(), abs=1e-12)
        for key, q in (("p10", 0.1), ("median", 0.5), ("p90", 0.9)):
            assert r[key] == pytest.approx(np.quantile(v, q), abs=1e-12)
    html = client.get("/evidence").text
    assert "synthetic &lt;b&gt;evidence&lt;/b&gt;" in html and "<b>evidence</b>" not in html
    csv = client.get("/csv/evidence").text
    assert csv.count("\n") == len(summary) + 1


@pytest.mark.parametrize("modes,evidence,refused", [(["pearson"], None, False), (["pearson"], ["transfer"], True),
                                                    (["pearson", "pearson+transfer"], None, True),
                                                    (["pearson", "decoder"], None, True)])
def test_validate_refuses_cross_encodes_and_decoders_across_hook_widths(tmp_path, modes, evidence, refused):
    """`featureflow validate`'s comparison check on specs whose hook widths differ across an edge: an evidence kind
    that runs one member's SAE on the other's activations (listed, or read by a +transfer mode) is refused, as a
    decoder similarity is; activation Pearson alone compares nothing across widths."""
    from conftest import tiny_dict
    from featureflow.config import parse_config
    from featureflow.pipeline.validate import ModelSpec, Validation, _check_comparisons

    d = tiny_dict(tmp_path)
    d["matching"] = {**d["matching"], "modes": modes, "evidence": evidence}
    d["fingerprints"] = {**d.get("fingerprints", {}), "base": {}}
    cfg = parse_config(d)
    hook = cfg.sae.hook
    widths = {n: 64 if i == 0 else 96 for i, n in enumerate(cfg.topological_order())}
    v = Validation(specs={n: ModelSpec("M", {"hidden": 32, "layers": 1, "d_mlp": w}, {hook: w}, None)
                          for n, w in widths.items()})
    _check_comparisons(cfg, v)
    cross = [e for e in v.errors if "runs one member's SAE on the other's activations" in e]
    decoder = [e for e in v.errors if "compares decoder directions" in e]
    assert bool(cross or decoder) == refused
    if refused and "decoder" not in modes:
        p, c = cfg.edges()[0]
        assert any(f"edge {p} -> {c} joins hook widths 64 and 96" in e for e in cross)


def test_sparse_codes_health_is_the_reconstruction_computed_directly():
    """`sparse_codes(..., health)`: explained variance, MSE and L0 of the SAE's reconstruction over every row,
    against the same quantities computed at once in torch."""
    import torch

    from featureflow.pipeline.features import sparse_codes

    class Toy:
        d_sae = 6

        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.W, self.D = torch.randn(4, 6, generator=g), torch.randn(6, 4, generator=g) * 0.3

        def encode(self, x):
            return torch.relu(x @ self.W - 0.5)

        def decode(self, f):
            return f @ self.D

    sae, X = Toy(), torch.randn(100, 4, generator=torch.Generator().manual_seed(1)) + 2.0
    health: dict = {}
    A = sparse_codes(sae, (X[i:i + 30] for i in range(0, 100, 30)), health)
    rec, x = sae.decode(sae.encode(X)).double(), X.double()
    # the error is formed in float32, the activations' precision, and summed in float64: equal to float32 rounding
    assert health["explained_variance"] == pytest.approx(
        float(1 - ((rec - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()), rel=1e-6)
    assert health["mse"] == pytest.approx(float(((rec - x) ** 2).mean()), rel=1e-6)
    assert health["l0"] == pytest.approx(float((sae.encode(X) > 0).sum(1).double().mean())) == A.nnz / 100
    assert health["rows"] == 100

    class DenseOnly(Toy):  # a decoder that cannot take sparse codes gets them dense: the same health
        def decode(self, f):
            if f.layout != torch.strided:
                raise NotImplementedError("dense codes only")
            return f @ self.D

    again: dict = {}
    B = sparse_codes(DenseOnly(), (X[i:i + 30] for i in range(0, 100, 30)), again)
    assert again == pytest.approx(health) and (A != B).nnz == 0
