import json
import logging

import numpy as np
import pytest
import scipy.sparse as sp

from featureflow.pipeline.autointerp import explain_model, hypothesis_ids, llr_for_tokens, unigram
from featureflow.pipeline.autointerp.llm import expected_levels
from featureflow.pipeline.autointerp.records import balanced_accuracy, build_records, quantise, simulation_score
from featureflow.config import AutointerpConfig
from fake_openai import FakeOpenAI, completion

VOCAB = ["x", " =", " 1", "\n", " y", " (", " )", " if", "\t", " foo"]
KEY = "sk-test-SECRET-do-not-leak-1234"


def synthetic(n_windows=120, C=24, seed=0):
    """Feature 0 fires on ' =' (strength varies), feature 1 on ' if' weakly, feature 2 never fires."""
    rng = np.random.default_rng(seed)
    p = np.array([20, 1, 10, 8, 20, 10, 10, 1, 5, 15], float)  # ' =' and ' if' are rare
    tokens = rng.choice(len(VOCAB), size=(n_windows, C), p=p / p.sum())
    flat = tokens.ravel()
    rows, cols, vals = [], [], []
    for t in np.flatnonzero(flat == 1):
        rows.append(t), cols.append(0), vals.append(1.0 + rng.random() * 4)
    for t in np.flatnonzero(flat == 7):
        rows.append(t), cols.append(1), vals.append(0.5)
    acts = sp.csc_matrix((vals, (rows, cols)), shape=(len(flat), 3))
    return acts, tokens


def test_records_are_disjoint_and_quantised():
    acts, tokens = synthetic()
    a, b = acts.indptr[0], acts.indptr[1]
    fr = build_records(acts.indices[a:b], acts.data[a:b], tokens, 0, n_top=10, n_quantiles=3, per_quantile=2, length=12)
    ex_w, sc_w = {r.window for r in fr.explain}, {r.window for r in fr.score}
    assert not ex_w & sc_w  # explain and score sets never share a sample window
    kinds = [r.kind for r in fr.score]
    assert kinds.count("top") == kinds.count("random") == 5
    assert all(len(r.token_ids) == 12 for r in fr.explain + fr.score)
    top = fr.explain[0]
    assert max(top.levels) == 10 and top.levels == quantise(np.array(top.acts), fr.max_act).tolist()
    assert quantise(np.array([0.0, 0.099, 0.1, 0.55, 1.0]), 1.0).tolist() == [0, 0, 1, 5, 10]


def test_scores():
    acts, tokens = synthetic()
    a, b = acts.indptr[0], acts.indptr[1]
    fr = build_records(acts.indices[a:b], acts.data[a:b], tokens, 0, n_top=10, length=12)
    perfect = [r.levels for r in fr.score]
    assert simulation_score(fr.score, perfect) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="predictions"):
        simulation_score(fr.score, perfect[:-1])
    assert balanced_accuracy([True, True, False, False], [True, False, False, False]) == 0.75
    assert balanced_accuracy([True, True], [True, True]) is None  # undefined without negatives


def test_offline_explainer_finds_the_token_and_scores_well(tmp_path):
    acts, tokens = synthetic()
    rows, spend = explain_model(acts, tokens, VOCAB, np.array([0, 1]), AutointerpConfig(n_top=10), 0, tmp_path)
    eq, iff = rows
    assert '" ="' in eq["explanation"] and eq["explainer"].startswith("offline")
    assert eq["sim_score"] > 0.6 and eq["detection_score"] == pytest.approx(1.0)
    assert '" if"' in iff["explanation"] and "keyword" in iff["explanation"]
    # negative control: the ' if' explanation applied to the ' =' feature's held-out windows scores ~0
    from featureflow.pipeline.autointerp import offline, records_for

    fr = records_for(acts, tokens, 0, AutointerpConfig(n_top=10), 0)
    wrong = json.loads(iff["explanation_json"])
    r = simulation_score(fr.score, [offline.simulate(wrong, rec, VOCAB) for rec in fr.score])
    assert r is None or r < 0.2
    assert spend["calls"] == 0 and spend["mode"] == "offline"


def test_llr_matches_hand_computation():
    acts, tokens = synthetic()
    flat = tokens.ravel()
    p = unigram(flat, len(VOCAB))
    llr, on_s = llr_for_tokens(acts, flat, [1], p)
    # feature 0 fires only on ' =': P(s | f) = 1, so LLR = -log P(s)
    assert llr[0] == pytest.approx(-np.log((flat == 1).mean()))
    assert np.isneginf(llr[1]) and on_s[1] == 0
    assert hypothesis_ids(VOCAB, "=") == [1] and hypothesis_ids(VOCAB, "if") == [7]


def test_expected_value_from_logprobs():
    lp = [{"token": '{"', "top": []}, {"token": "7", "top": [{"token": "7", "logprob": np.log(0.5)},
                                                            {"token": "9", "logprob": np.log(0.5)}]},
          {"token": ",", "top": []}, {"token": "0", "top": [{"token": "0", "logprob": 0.0}]}]
    assert expected_levels(lp) == pytest.approx([8.0, 0.0])


def _llm_cfg(url, **kw):
    base = dict(mode="llm", model="fake-model", base_url=url, n_top=6, n_quantiles=2, per_quantile=1, window=10,
                concurrency=2, max_retries=3, timeout=10, max_usd=10.0)
    return AutointerpConfig(**{**base, **kw})


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def test_llm_prompts_parsing_and_cache(tmp_path, key):
    acts, tokens = synthetic()
    with FakeOpenAI() as fake:
        rows, spend = explain_model(acts, tokens, VOCAB, np.array([0]), _llm_cfg(fake.url), 0, tmp_path / "cache")
        n_first = len(fake.requests)
        row = rows[0]
        assert row["status"] == "ok" and row["explanation"] == "fires on the assignment sign ="
        assert row["explainer"] == "llm:fake-model"
        assert row["sim_score"] > 0.9 and row["detection_score"] == pytest.approx(1.0)
        explain_req = fake.requests[0]
        assert "<10>" in explain_req["messages"][1]["content"] and "\\n" in explain_req["messages"][1]["content"]
        sims = [r for r in fake.requests if r["messages"][0]["content"].startswith("You predict")]
        assert len(sims) == row["n_score"] == 6
        assert all(r["response_format"] == {"type": "json_object"} and r["logprobs"] for r in sims)
        assert {k.lower(): v for k, v in fake.headers[0].items()}["authorization"] == f"Bearer {KEY}"
        assert spend["calls"] == n_first == 1 + 6 + 1 and spend["prompt_tokens"] == 100 * n_first
        assert spend["usd"] == pytest.approx(100 * n_first * 1.5e-7 + 20 * n_first * 6e-7)
        # a second run pays nothing: every call comes from the disk cache
        rows2, spend2 = explain_model(acts, tokens, VOCAB, np.array([0]), _llm_cfg(fake.url), 0, tmp_path / "cache")
        assert len(fake.requests) == n_first and spend2["calls"] == 0 and spend2["cached_calls"] == n_first
        assert rows2 == rows


@pytest.mark.parametrize("status", [429, 500])
def test_retries_on_429_and_5xx(tmp_path, key, status):
    acts, tokens = synthetic()
    failures = {0, 1}  # the first two requests fail, then the server recovers
    script = lambda body, n: (status, {"Retry-After": "0"}, {"error": {"message": "busy"}}) if n in failures else None
    with FakeOpenAI(script) as fake:
        rows, _ = explain_model(acts, tokens, VOCAB, np.array([0]), _llm_cfg(fake.url, concurrency=1), 0, tmp_path)
    assert rows[0]["status"] == "ok"
    assert len(fake.requests) == 2 + 8  # two failed attempts retried, then every call once


def test_retries_are_bounded_and_fail_the_feature(tmp_path, key):
    acts, tokens = synthetic()
    with FakeOpenAI(lambda body, n: (503, {"Retry-After": "0"}, {"error": {"message": "down"}})) as fake:
        rows, _ = explain_model(acts, tokens, VOCAB, np.array([0]), _llm_cfg(fake.url, max_retries=2), 0, tmp_path)
    reason = rows[0]["reason"]
    assert rows[0]["status"] == "failed" and ("503" in reason or "InternalServerError" in reason)
    assert len(fake.requests) == 3


def test_malformed_answer_fails_that_feature_and_the_run_goes_on(tmp_path, key):
    acts, tokens = synthetic()
    # sequential: feature 0 takes requests 0-7 (explain, 6 simulations, detect); feature 1's first
    # simulation (request 9) gets an answer with the wrong number of levels
    script = lambda body, n: (200, {}, completion('{"activations": [1, 2]}')) if n == 9 else None
    with FakeOpenAI(script) as fake:
        rows, _ = explain_model(acts, tokens, VOCAB, np.array([0, 1]), _llm_cfg(fake.url, concurrency=1), 0, tmp_path)
    assert rows[0]["status"] == "ok"
    assert rows[1]["status"] == "failed" and "malformed answer" in rows[1]["reason"] and "2 levels" in rows[1]["reason"]


def test_spend_limit_stops_cleanly(tmp_path, key):
    acts, tokens = synthetic()
    per_call = 100 * 1.5e-7 + 20 * 6e-7
    cfg = _llm_cfg(None, concurrency=1, max_usd=per_call * 3.5)
    with FakeOpenAI() as fake:
        cfg = cfg.model_copy(update={"base_url": fake.url})
        rows, spend = explain_model(acts, tokens, VOCAB, np.array([0, 1]), cfg, 0, tmp_path)
    assert len(fake.requests) == 4 and spend["usd"] <= per_call * 4 + 1e-12
    assert all(r["status"] == "skipped" and "spend limit" in r["reason"] for r in rows)


def test_key_never_logged_stored_or_shown(tmp_path, key, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    acts, tokens = synthetic()
    with FakeOpenAI() as fake:
        rows, spend = explain_model(acts, tokens, VOCAB, np.array([0, 1]), _llm_cfg(fake.url), 0, tmp_path)
    out = capsys.readouterr()
    assert KEY not in caplog.text and KEY not in out.out and KEY not in out.err
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert KEY not in f.read_text(errors="ignore"), f
    assert KEY not in json.dumps(rows) and KEY not in json.dumps(spend)


def test_missing_key_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    acts, tokens = synthetic()
    with pytest.raises(RuntimeError, match="OPENAI_API_KEY"):
        explain_model(acts, tokens, VOCAB, np.array([0]), _llm_cfg("http://127.0.0.1:9/v1"), 0, tmp_path)


@pytest.mark.slow
def test_the_features_autointerp_picks_as_persisting_follow_the_fate_rule(tiny_pipeline):
    """`Pipeline.persisting` (which features autointerp treats as persisting) is the store's fate rule run over the
    run's own match files; counted again here in numpy from the same files (`topk.npz` rank 0, or the one-to-one
    assignment): a feature persists when its match in some child has r above the threshold."""
    import pyarrow.parquet as pq

    from featureflow.config import parse_mode
    from featureflow.pipeline.matching import read_rule_matches

    pl = tiny_pipeline
    sim, rule = parse_mode(pl.default_mode)
    t = pl.cfg.matching.threshold
    for name in pl.cfg.topological_order():
        kids = [c for p, c in pl.cfg.edges() if p == name]
        n = pq.read_table(pl.activation(name) / "features.parquet").num_rows
        want = np.zeros(n, dtype=bool)
        for c in kids:
            want |= np.nan_to_num(read_rule_matches(pl.match(name, c, sim), rule)["p2c_r"], nan=-1.0) > t
        got = pl.persisting(name, n)
        assert (got == want).all(), name
        assert got.any() if kids else not got.any()  # a model with children has persisting features; a leaf none


@pytest.mark.parametrize("token", [' "', '"', 'a\\b', '\\', '\n"'])
def test_an_offline_explanation_quoting_a_quote_renders_the_prose_after_it_as_prose(token):
    """The offline explainer escapes a quote or backslash inside a quoted token, so the explorer (`show_ws`,
    prose) finds where the token ends: the words after it keep plain spaces, no whitespace markers."""
    from featureflow.explorer.rendering import show_ws
    from featureflow.pipeline.autointerp.offline import _q

    html = str(show_ws(f"fires on {_q(token)} (8%); the peak often follows it", prose=True))
    assert html.endswith(" (8%); the peak often follows it")
    assert html.count("&#34;") == 2 + token.count('"')  # the two quotes around it, and its own (escaped)
