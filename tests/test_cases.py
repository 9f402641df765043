import numpy as np
import pytest

from featureflow.pipeline.artifacts import read_json
from featureflow.pipeline.autointerp import hypothesis_ids
from featureflow.pipeline.tokenizer import token_strings


@pytest.fixture(scope="module")
def cases(tiny_pipeline):
    return {c["slug"]: c for c in read_json(tiny_pipeline.cases() / "cases.json")}


def test_assignment_root_is_the_max_llr_feature_firing_on_the_token(tiny_pipeline, cases):
    c = cases["assignment"]
    assert c["status"] == "ok" and not tiny_pipeline.cfg.member(c["root_model"]).parents  # a root of the family
    vocab = token_strings(tiny_pipeline.hf_tokenizer)
    ids = hypothesis_ids(vocab, "=")
    assert ids and all(vocab[i].strip() == "=" for i in ids)
    A = tiny_pipeline.load_acts(c["root_model"]).toarray()
    flat = tiny_pipeline.sample_tokens().ravel()
    on = np.isin(flat, ids)
    p_s = on.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        llr = np.log((A[on].sum(0) / A.sum(0)) / p_s)
    coverage = (A[on] > 0).mean(0)
    fires = (A[on].sum(0) > 0) & (coverage >= 0.1)
    cand = np.flatnonzero(fires)
    top = llr[cand].max()
    tied = cand[np.isclose(llr[cand], top, rtol=0, atol=1e-9)]
    best = int(tied[np.argmax(coverage[tied])])
    assert c["root_feature"] == best and c["root_llr"] == pytest.approx(llr[best])
    assert c["root_coverage"] == pytest.approx(coverage[best]) and c["root_coverage"] >= 0.1


def test_every_models_llrs_for_the_token_are_stored(tiny_pipeline, cases):
    import pyarrow.parquet as pq

    vocab = token_strings(tiny_pipeline.hf_tokenizer)
    ids = hypothesis_ids(vocab, "=")
    flat = tiny_pipeline.sample_tokens().ravel()
    on = np.isin(flat, ids)
    got = pq.read_table(tiny_pipeline.cases() / "case_llrs.parquet").to_pylist()
    for m in tiny_pipeline.cfg.topological_order():
        A = tiny_pipeline.load_acts(m).toarray()
        with np.errstate(divide="ignore", invalid="ignore"):
            llr = np.log((A[on].sum(0) / A.sum(0)) / on.mean())
        rows = {r["feature"]: r["llr"] for r in got if r["slug"] == "assignment" and r["model"] == m}
        assert sorted(rows) == np.flatnonzero(np.isfinite(llr)).tolist()
        assert [rows[f] for f in sorted(rows)] == pytest.approx(llr[np.isfinite(llr)].tolist(), abs=1e-6)
    assert "hops" not in cases["assignment"]  # hops come from the explorer's lineage, never from here


def test_unknown_hypothesis_fails_with_a_reason(tiny_pipeline):
    from featureflow.pipeline.cases import find_case
    from featureflow.config import CaseConfig

    c = find_case(CaseConfig(slug="x", title="x", token="zzzqqq"), ["babypython"],
                  {"babypython": tiny_pipeline.load_acts("babypython")}, tiny_pipeline.sample_tokens().ravel(),
                  token_strings(tiny_pipeline.hf_tokenizer), "babypython")
    assert c["status"] == "failed" and "zzzqqq" in c["reason"]


def test_saturated_llr_ties_go_to_the_feature_covering_more_occurrences():
    import scipy.sparse as sp

    from featureflow.pipeline.cases import find_case
    from featureflow.config import CaseConfig

    vocab = ["a", " =", "b"]
    tokens = np.array([0, 1, 2, 1, 0, 1, 2, 1, 0, 1] * 10)
    eq = np.flatnonzero(tokens == 1)
    rows = list(eq[:1]) + list(eq) + list(eq[:5]) + list(np.flatnonzero(tokens == 0))
    cols = [0] * 1 + [1] * len(eq) + [2] * 5 + [2] * int((tokens == 0).sum())
    acts = sp.csc_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(tokens), 3))
    # feature 0 fires once on '=' (saturated LLR, 2% coverage), feature 1 on every '=' (same LLR),
    # feature 2 on some '=' and on 'a' (lower LLR)
    c = find_case(CaseConfig(slug="x", title="x", token="="), ["m"], {"m": acts}, tokens, vocab, "m")
    assert c["root_feature"] == 1 and c["root_coverage"] == 1.0
    c0 = find_case(CaseConfig(slug="x", title="x", token="=", min_coverage=0.0), ["m"], {"m": acts}, tokens,
                   vocab, "m")
    assert c0["root_feature"] == 1  # the tie still goes to coverage
