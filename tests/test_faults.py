"""Faults and bad input (issue 15): no secret stored or served, no server error, no debris.

- Secrets: a server that echoes the API key in its errors (proxies do) leaves no trace of it in reasons,
  logs, artefacts, the store or any served page; a refused key stops the run; most features failing
  exits non-zero with a summary.
- HTTP: schemathesis over /openapi.json (in-process ASGI, bounded examples) finds no server error and
  no answer outside the schema; wildcards search literally; correlations are deterministic and in [-1, 1];
  a view state a page cannot use (nan, inf, 1e309, -1) is refused on every page, never written into a link;
  labels, descriptions, case titles, explanations and error echoes holding bidi controls or zero-width
  characters reach no page raw, nor any Plotly figure's text.
- User files: every config or corpus the user hands in that cannot be used (a directory, unreadable, not
  UTF-8, a lone surrogate) is one line on stderr naming the file and line or field, exit 2, no traceback.
- Debris: temp stores and temp artefact folders of dead processes are swept; `featureflow gc` lists and
  removes artefacts the config no longer reaches.
"""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import schemathesis
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from featureflow.explorer.app import ErrorBody, create_app
from featureflow.pipeline import autointerp
from featureflow.pipeline.autointerp import AutointerpError, LLMAuthError, check_failures, explain_model
from featureflow.pipeline.autointerp.llm import REDACTED, redact
from featureflow.cli import main
from featureflow.config import parse_config
from featureflow.pipeline.runner import Pipeline, RedactingFilter
from fake_openai import FakeOpenAI, echo_key_answer, echo_key_error, key_encodings
from test_autointerp import KEY, VOCAB, _llm_cfg, synthetic

FRAGMENT = KEY[3:15]  # a piece of the key: a cut-off key must not survive either


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def _no_key(text: str, where: str = "") -> None:
    assert KEY not in text and FRAGMENT not in text, f"the key leaked {where}"


# ------------------------------------------------------------------------------------ secrets
def test_redact_removes_the_key_and_key_shaped_text(key):
    assert redact(f"401: Incorrect API key provided: {KEY}") == f"401: Incorrect API key provided: {REDACTED}"
    other = "sk-proj-AbCdEf0123456789xyz"
    hexkey, b64 = "0123456789abcdef" * 3, "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0MTIz"
    text = redact(f"k={other} h={hexkey} b={b64} Authorization: Bearer tok123456 https://u:pw123456@h/v1")
    for secret in (other, hexkey, b64, "tok123456", "pw123456"):
        assert secret not in text
    assert "Bearer [redacted]" in text and "https://u:[redacted]@h/v1" in text
    plain = "fires on the assignment sign = in data/tiny/autointerp/lua-0123456789ab"
    assert redact(plain) == plain  # ordinary text and artefact paths are left alone


def test_echoed_key_is_redacted_from_failure_reasons_and_logs(tmp_path, key, caplog):
    caplog.set_level(logging.DEBUG)
    acts, tokens = synthetic()

    def leaky(body, n, headers):  # feature 1's explanation request gets a 400 that quotes the key
        if body["messages"][0]["content"].startswith("We study") and n > 0:
            return echo_key_error(400, headers)
        return None

    with FakeOpenAI(leaky) as fake:
        rows, _ = explain_model(acts, tokens, VOCAB, np.array([0, 1]), _llm_cfg(fake.url, concurrency=1), 0, tmp_path)
    assert rows[0]["status"] == "ok"
    assert rows[1]["status"] == "failed" and "BadRequestError" in rows[1]["reason"] and REDACTED in rows[1]["reason"]
    _no_key(json.dumps(rows), "in the rows")
    _no_key(caplog.text, "in the log")


def test_a_key_in_an_answer_is_neither_cached_nor_kept(tmp_path, key):
    acts, tokens = synthetic()
    from fake_openai import completion

    def echo(body, n):
        return (200, {}, completion(f"fires on = (debug: key {KEY})")) if body["messages"][0]["content"].startswith(
            "We study") else None

    with FakeOpenAI(echo) as fake:
        rows, _ = explain_model(acts, tokens, VOCAB, np.array([0]), _llm_cfg(fake.url), 0, tmp_path)
    assert rows[0]["status"] == "ok" and rows[0]["explanation"] == f"fires on = (debug: key {REDACTED})"
    files = [f for f in tmp_path.rglob("*.json")]
    assert files and not any(KEY in f.read_text() for f in files)


# a key with the characters percent-encoding and base64 change ('/', '+', '='), so every encoding differs
ODD_KEY = "sk-proj-Ab/cD+ef12=GhIj34/KlMnOp=="


def _leaks(text: str, key: str) -> list[str]:
    """The encodings of `key` (made by the standard library: urllib, base64, json) found in `text`, also after
    dropping every whitespace and escaped line break (a key split over tokens or lines, joined back)."""
    squeezed = "".join(text.replace("\\n", "").split())
    return [name for name, enc in key_encodings(key).items()
            if enc in text or "".join(enc.replace("\\n", "").split()) in squeezed]


def _answer_texts(entry: dict) -> list[str]:
    """Every text of a cached answer: its content, its logprob tokens joined back, each alternative."""
    lps = entry.get("logprobs") or []
    return [entry["content"], "".join(p["token"] for p in lps), *(a["token"] for p in lps for a in p["top"])]


@pytest.mark.parametrize("encoding", sorted(key_encodings(ODD_KEY)))
def test_redact_finds_the_key_in_every_encoding_a_proxy_echoes(monkeypatch, encoding):
    monkeypatch.setenv("OPENAI_API_KEY", ODD_KEY)
    leaked = key_encodings(ODD_KEY)[encoding]
    text = redact(f"400: Incorrect API key provided: {leaked}. Request had Authorization {leaked}")
    assert not _leaks(text, ODD_KEY) and text.count(REDACTED) >= 2, text
    assert text.startswith("400: Incorrect API key provided: ")


def test_a_key_a_model_echoes_split_and_encoded_is_nowhere_cached_or_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", ODD_KEY)
    acts, tokens = synthetic()
    with FakeOpenAI(lambda body, n, headers: (200, {}, echo_key_answer(body, headers))) as fake:
        rows, _ = explain_model(acts, tokens, VOCAB, np.array([0, 1]), _llm_cfg(fake.url), 0, tmp_path)
    assert fake.requests and all(r["status"] == "ok" for r in rows), rows
    assert all("(debug:" in r["explanation"] for r in rows)  # the answer was used, the key cut out of it
    assert not _leaks(json.dumps(rows), ODD_KEY)
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == len(fake.requests)
    for f in files:
        entry = json.loads(f.read_text())
        assert entry["logprobs"], f  # the tokens were kept, redacted
        for text in [f.read_text(), *_answer_texts(entry)]:
            assert not _leaks(text, ODD_KEY), (f, _leaks(text, ODD_KEY))


def test_cache_entries_written_before_the_redaction_are_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", ODD_KEY)
    acts, tokens = synthetic()
    with FakeOpenAI() as fake:
        first, _ = explain_model(acts, tokens, VOCAB, np.array([0]), _llm_cfg(fake.url), 0, tmp_path)
    files = list(tmp_path.rglob("*.json"))
    for f in files:  # as an older version cached them: no format, the key spread over the logprob tokens
        entry = json.loads(f.read_text())
        entry.pop("format", None)
        pieces = [ODD_KEY[i:i + 4] for i in range(0, len(ODD_KEY), 4)]
        entry["logprobs"] = (entry["logprobs"] or []) + [{"token": p, "top": [{"token": p, "logprob": -0.1}]}
                                                          for p in pieces]
        f.write_text(json.dumps(entry))
        assert ODD_KEY in "".join(p["token"] for p in entry["logprobs"])

    def refuse(body, n):  # any call that reaches the server would fail: the answers must come from the cache
        return 500, {}, {"error": {"message": "down"}}

    with FakeOpenAI(refuse) as down:
        again, _ = explain_model(acts, tokens, VOCAB, np.array([0]), _llm_cfg(down.url, max_retries=0), 0, tmp_path)
    assert not down.requests and again == first
    for f in files:
        entry = json.loads(f.read_text())
        assert entry["format"] >= 2 and not any(_leaks(t, ODD_KEY) for t in [f.read_text(), *_answer_texts(entry)])


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_stops_the_run_with_a_clear_message(tmp_path, key, status):
    acts, tokens = synthetic()
    with FakeOpenAI(lambda body, n, headers: echo_key_error(status, headers)) as fake:
        with pytest.raises(LLMAuthError) as err:
            explain_model(acts, tokens, VOCAB, np.arange(3), _llm_cfg(fake.url, concurrency=1), 0, tmp_path,
                          name="lua")
    msg = str(err.value)
    assert f"HTTP {status}" in msg and "OPENAI_API_KEY" in msg and "'lua'" in msg
    assert len(fake.requests) == 1  # no retry, no further feature
    _no_key("".join(traceback.format_exception(err.value)), "in the traceback")


def test_most_features_failing_is_an_error_with_a_summary():
    ok = {"status": "ok", "reason": None}
    bad = {"status": "failed", "reason": "APIConnectionError: Connection error."}
    check_failures([ok, bad], "lua")  # half failed: the stage goes on
    check_failures([], "lua")
    with pytest.raises(AutointerpError, match=r"2 of 3 features failed.*2 x APIConnectionError"):
        check_failures([ok, bad, bad], "lua")


def test_log_records_are_redacted_whoever_logs_them(key):
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("openai.fake-test")
    logger.addHandler(handler)
    try:
        logger.error("request headers %s", {"Authorization": f"Bearer {KEY}"})
        try:
            raise RuntimeError(f"server said: bad key {KEY}")
        except RuntimeError:
            logger.exception("call failed")
    finally:
        logger.removeHandler(handler)
    assert "request headers" in out.getvalue() and "RuntimeError" in out.getvalue()
    _no_key(out.getvalue(), "in a log line")


# ---------------------------------------------------------------------- a run against a leaky server
def _linked_copy(src: Path, dst: Path) -> None:
    """A run folder whose finished artefacts are symlinks to `src`'s: new artefacts land in `dst` only."""
    for stage in src.iterdir():
        if stage.is_dir() and stage.name != "llm_cache":
            (dst / stage.name).mkdir(parents=True)
            for art in stage.iterdir():
                if (art / "DONE").exists():
                    (dst / stage.name / art.name).symlink_to(art)


def _llm_run(tiny_pipeline, tmp_path, url: str) -> dict:
    d = tiny_pipeline.cfg.model_dump(mode="json")
    d["data_dir"] = str(tmp_path / "data")
    d["autointerp"].update(mode="llm", model="fake-model", base_url=url, n_top=4, n_quantiles=1, per_quantile=1,
                           window=8, concurrency=1, max_retries=0)
    _linked_copy(tiny_pipeline.root, tmp_path / "data" / d["name"])
    return d


@pytest.fixture
def few_features(monkeypatch):
    """Explain four alive features per model (the selection rule itself is tested in test_autointerp)."""
    monkeypatch.setattr(autointerp, "select_features", lambda cfg, alive, persisting, seed: np.flatnonzero(alive)[:4])


def test_leaked_key_is_nowhere_stored_or_served(tiny_pipeline, tmp_path, key, few_features, caplog):
    caplog.set_level(logging.DEBUG)
    explains = []

    def leaky(body, n, headers):  # every fourth explanation request: a 400 quoting the key
        if body["messages"][0]["content"].startswith("We study"):
            explains.append(n)
            if len(explains) % 4 == 1:
                return echo_key_error(400, headers)
        return None

    with FakeOpenAI(leaky) as fake:
        d = _llm_run(tiny_pipeline, tmp_path, fake.url)
        pl = Pipeline(parse_config(d), device="cpu")
        pl.run()
    _no_key(caplog.text, "in the log")
    for f in [*pl.root.joinpath("autointerp").rglob("*"), *pl.root.joinpath("llm_cache").rglob("*")]:
        if f.is_file() and not f.is_symlink():
            _no_key(f.read_bytes().decode("utf-8", "replace"), f"in {f}")
    reasons = [r for n in pl.cfg.topological_order()
               for r in pq.read_table(pl.explain(n) / "explanations.parquet").column("reason").to_pylist() if r]
    assert len(reasons) == len(pl.cfg.topological_order()) and all(REDACTED in r for r in reasons)

    db = pl.cfg.store_path()
    con = duckdb.connect(str(db), read_only=True)
    text_columns = con.execute("""SELECT table_name, column_name FROM information_schema.columns
                                  WHERE data_type = 'VARCHAR'""").fetchall()
    for table, column in text_columns:
        hits = con.execute(f'SELECT count(*) FROM "{table}" WHERE contains("{column}", ?) OR contains("{column}", ?)',
                           [KEY, FRAGMENT]).fetchone()[0]
        assert hits == 0, f"the key is in {table}.{column}"
    failed = con.execute("SELECT model, feature FROM explanations WHERE status = 'failed'").fetchall()
    explained = con.execute("SELECT model, feature FROM explanations").fetchall()
    con.close()
    assert len(failed) == 4 and len(explained) == 16

    client = TestClient(create_app(db))
    urls = ["/", "/autointerp", "/features?q=fires", "/cases", "/cases/assignment", "/models"]
    urls += [f"/models/{m}/features/{f}" for m, f in explained]
    for url in urls:
        for u in (url, "/api" + url):
            r = client.get(u)
            assert r.status_code == 200, u
            _no_key(r.text, f"on {u}")
    page = client.get(f"/api/models/{failed[0][0]}/features/{failed[0][1]}").json()
    assert page["explanation"]["status"] == "failed" and REDACTED in page["explanation"]["reason"]


def test_cli_exits_nonzero_on_a_refused_key_and_when_most_features_fail(tiny_pipeline, tmp_path, key, few_features,
                                                                          capsys):
    for status, expect in ((401, "refused the API key (HTTP 401)"), (400, "4 of 4 features failed")):
        with FakeOpenAI(lambda body, n, headers: echo_key_error(status, headers)) as fake:
            d = _llm_run(tiny_pipeline, tmp_path / str(status), fake.url)
            cfg = tmp_path / f"{status}.yaml"
            cfg.write_text(yaml.safe_dump(d))
            assert main(["run", "--config", str(cfg)]) == 1
        err = capsys.readouterr().err
        line = [l for l in err.splitlines() if l.startswith("featureflow: error:")]
        assert len(line) == 1 and expect in line[0] and "Traceback" not in err, err[-2000:]
        _no_key(err, "on stderr")
        assert len(fake.requests) <= (1 if status == 401 else 4)
        run = Path(d["data_dir"]) / d["name"]
        made = [p for p in (run / "autointerp").glob("babypython-*") if not p.is_symlink()]
        assert not made  # nothing half-explained was kept (the linked ones are the offline run's)
        assert not Path(d["data_dir"], f"{d['name']}.duckdb").exists()


# ------------------------------------------------------------------------------------ user files
def _cli_error(argv: list[str], capsys) -> str:
    """The one stderr line of a CLI run that must fail with exit 2 and no traceback."""
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (rc, err[-2000:])
    assert lines[0].startswith("featureflow: error: ")
    return lines[0]


def _unreadable(path: Path, monkeypatch) -> None:
    """Make `path` unreadable: no permissions, and (root ignores them) the OS's refusal to open it."""
    path.chmod(0)
    if os.geteuid() == 0:
        real = Path.open

        def refuse(self, *a, **kw):
            if Path(self) == path:
                raise PermissionError(13, "Permission denied", str(path))
            return real(self, *a, **kw)

        monkeypatch.setattr(Path, "open", refuse)


def _bad_utf8(path: Path, head: bytes, tail: bytes = b"\n") -> str:
    """Write `head` + an invalid byte + `tail` and return the position the error must name, counted here."""
    data = head + b"\xff" + tail
    path.write_bytes(data)
    at = data.index(b"\xff")
    line, column = data[:at].count(b"\n") + 1, at - data.rfind(b"\n", 0, at)
    return f"{path}:{line}: not UTF-8: byte 0xff at byte offset {at} (line {line}, column {column})"


def test_a_config_that_cannot_be_read_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    from conftest import tiny_dict

    good = yaml.safe_dump(tiny_dict(tmp_path / "data")).encode()
    folder = tmp_path / "configs"
    folder.mkdir()
    for cmd in ("run", "validate", "gc"):
        assert _cli_error([cmd, "--config", str(folder)], capsys) == \
            f"featureflow: error: {folder}: is a directory, not a config file"
    bad = tmp_path / "latin1.yaml"
    where = _bad_utf8(bad, good + b"description: caf", b"\n")
    assert _cli_error(["validate", "--config", str(bad)], capsys) == f"featureflow: error: {where}"
    lone = tmp_path / "surrogate.yaml"
    lone.write_bytes(good + b'description: "a \\ud800 b"\n')
    line = _cli_error(["validate", "--config", str(lone)], capsys)
    assert line == f"featureflow: error: {lone}: description holds a lone surrogate U+D800 at character 2 " \
                   "(not valid Unicode text)"
    locked = tmp_path / "locked.yaml"
    locked.write_bytes(good)
    _unreadable(locked, monkeypatch)
    assert _cli_error(["run", "--config", str(locked)], capsys) == \
        f"featureflow: error: {locked}: cannot be read (Permission denied)"


@pytest.mark.parametrize("fault", ["surrogate", "not-utf8-jsonl", "not-utf8-text", "directory", "unreadable",
                                   "not-parquet"])
def test_a_corpus_that_cannot_be_read_is_one_line_naming_file_and_line(tmp_path, capsys, monkeypatch, fault):
    from conftest import tiny_dict

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    good = "".join(json.dumps({"text": f"local x{i} = {i}"}) + "\n" for i in range(3)).encode()
    if fault == "surrogate":  # valid JSON and valid UTF-8; the escape makes a string no tokenizer can encode
        path = corpus / "a.jsonl"
        path.write_bytes(good + b'{"text": "local s = \\ud83d"}\n')
        expect = f"{path}:4: field 'text' holds a lone surrogate U+D83D at character 10 (not valid Unicode text)"
    elif fault == "not-utf8-jsonl":
        path = corpus / "a.jsonl"
        expect = _bad_utf8(path, good + b'{"text": "caf', b'"}\n')
    elif fault == "not-utf8-text":
        path = corpus / "a.lua"
        expect = _bad_utf8(path, b"local a = 1\nlocal b = '", b"'\n")
    elif fault == "directory":
        path = corpus / "sub"
        path.mkdir()
        expect = f"{path}: is a directory, not a corpus file (name its files, e.g. '{path}/*.txt')"
    elif fault == "unreadable":
        path = corpus / "a.jsonl"
        path.write_bytes(good)
        _unreadable(path, monkeypatch)
        expect = f"{path}: cannot be read (Permission denied)"
    else:
        path = corpus / "a.parquet"
        path.write_bytes(b"PAR1 this is no parquet file")
        expect = f"{path}: not a readable Parquet file"
    d = tiny_dict(tmp_path / "data")
    d["corpora"]["domains"]["lua"] = {"source": "files", "paths": [str(path)], "chars": 60000}
    cfg = tmp_path / "files.yaml"
    cfg.write_text(yaml.safe_dump(d))
    line = _cli_error(["run", "--config", str(cfg), "--stage", "corpora"], capsys)
    assert line.startswith(f"featureflow: error: {expect}"), line


# ------------------------------------------------------------------------------------ debris
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_temp_stores_of_dead_builds_are_swept_and_live_ones_kept(tiny_pipeline):
    db = tiny_pipeline.cfg.store_path()
    dead, live = _dead_pid(), os.getppid()
    debris = [db.with_name(f".{db.name}.tmp-{dead}"), db.with_name(f".{db.name}.tmp-{dead}.wal")]
    keep = db.with_name(f".{db.name}.tmp-{live}")
    for p in debris + [keep]:
        p.write_bytes(b"half a store")
    try:
        Pipeline(tiny_pipeline.cfg, device="cpu").store()  # up to date: no rebuild, but the sweep runs
        assert not any(p.exists() for p in debris)
        assert keep.exists()  # a build that is still running is left alone
    finally:
        keep.unlink(missing_ok=True)


def test_temp_artefacts_of_dead_runs_are_swept(tiny_pipeline, tmp_path):
    d = tiny_pipeline.cfg.model_dump(mode="json")
    d["data_dir"] = str(tmp_path / "data")
    root = tmp_path / "data" / d["name"]
    _linked_copy(tiny_pipeline.root, root)
    dead, live = _dead_pid(), os.getppid()
    stale = [root / "saes" / f".lua-0123456789ab.tmp-{dead}", root / "llm_cache" / f".abc.json.tmp-{dead}-7"]
    kept = root / "saes" / f".lua-0123456789ab.tmp-{live}"
    for p in (stale[0], kept):
        p.mkdir(parents=True)
        (p / "half").write_text("x")
    stale[1].parent.mkdir()
    stale[1].write_text("{")
    Pipeline(parse_config(d), device="cpu").run("corpora")
    assert not any(p.exists() for p in stale) and kept.exists()


def test_gc_lists_then_removes_artefacts_no_key_reaches(tiny_pipeline, tmp_path, capsys):
    d = tiny_pipeline.cfg.model_dump(mode="json")
    d["data_dir"] = str(tmp_path / "data")
    root = tmp_path / "data" / d["name"]
    _linked_copy(tiny_pipeline.root, root)
    old = root / "matching" / "lua--luastories.pearson-0123456789ab"  # a superseded key
    old.mkdir()
    (old / "topk.npz").write_bytes(b"\0" * 3_000_000)
    (old / "DONE").write_text("{}")
    cache = root / "llm_cache" / "x.json"  # paid-for answers are never garbage
    cache.parent.mkdir()
    cache.write_text("{}")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(d))
    live = Pipeline(parse_config(d), device="cpu").live_artefacts()
    assert live and all(p.exists() for p in live)  # every live artefact of the copy is there

    assert main(["gc", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    listed = [Path(line.split("MB", 1)[1].strip()) for line in out.splitlines() if "MB  " in line]
    assert old in listed and "3.0 MB" in out and "pass --delete" in out
    assert not set(listed) & live
    assert old.exists()  # a dry run removes nothing

    originals = sorted(tiny_pipeline.root.rglob("DONE"))
    assert main(["gc", "--config", str(cfg), "--delete"]) == 0
    assert not any(p.exists() or p.is_symlink() for p in listed)
    assert all(p.exists() for p in live) and cache.exists()
    assert sorted(tiny_pipeline.root.rglob("DONE")) == originals  # removing a link leaves its target alone
    capsys.readouterr()
    main(["gc", "--config", str(cfg)])
    assert "would remove 0 folder(s)" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ HTTP
@pytest.fixture(scope="module")
def client(tiny_pipeline):
    return TestClient(create_app(tiny_pipeline.cfg.store_path()))


def test_api_keeps_its_schema(tiny_pipeline):
    """Every documented operation: no 5xx, and every answer (4xx included) has a documented status and body.

    Driven through schemathesis's Python API (one hypothesis run per operation) rather than its pytest plugin,
    whose `from_fixture` breaks on pytest 9."""
    from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                     status_code_conformance)

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    api = schemathesis.openapi.from_asgi("/openapi.json", create_app(tiny_pipeline.cfg.store_path()))
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 12, f"the schema lost its operations: {len(operations)}"
    failures = []
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(checks=checks)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, not just the first
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:800]}")
    assert not failures, "\n\n".join(failures)


def test_huge_integers_are_422_in_the_error_schema(client):
    for url in ("/api/features?page=9223372036854775807", "/api/features?page=1000001",
                "/api/models/lua/features/9223372036854775807", "/api/compare?a=&b=",
                "/api/compare?a=lua:99999999999&b=lua:1", "/api/?threshold=NaN", "/api/features?min_density=nan"):
        r = client.get(url)
        assert r.status_code == 422, url
        body = ErrorBody.model_validate(r.json())
        assert body.errors and body.detail, url
    assert "finite" in client.get("/api/?threshold=NaN").json()["detail"]
    assert client.get("/features?page=9223372036854775807").status_code == 422
    r = client.get("/api/models/lua/features/99999")
    assert r.status_code == 404 and ErrorBody.model_validate(r.json()).errors == []
    schema_doc = client.get("/openapi.json").json()
    for path, ops in schema_doc["paths"].items():
        for op in ops.values():
            assert {"404", "422"} <= set(op["responses"]), path
            assert op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


@pytest.mark.parametrize("term", ["%", "_", "\\"])
def test_token_search_is_literal(client, tiny_pipeline, term):
    con = duckdb.connect(str(tiny_pipeline.cfg.store_path()), read_only=True)
    tops = con.execute("SELECT v.text FROM features f JOIN vocab v ON v.token_id = f.top_token_id").fetchall()
    con.close()
    expected = sum(term in t.lower() for (t,) in tops)
    got = client.get("/api/features", params={"token": term, "min_density": 0}).json()["total"]
    assert got == expected and got < len(tops)
    assert client.get("/api/features", params={"q": "%%%"}).json()["total"] == 0


def test_correlations_are_numpys_on_the_stored_activations_and_clamped(client, tiny_pipeline):
    """/api/compare and a case's matrix against numpy's corrcoef on the activations densified from the store's
    `activation_values` rows (`oracles.stored_pearson`): a feature with its best child match, with another
    feature of its own model, and with itself; every r within [-1, 1]."""
    from oracles import stored_pearson

    con = duckdb.connect(str(tiny_pipeline.cfg.store_path()), read_only=True)
    try:
        f, g = (x for (x,) in con.execute("SELECT feature FROM features WHERE model = 'lua' AND alive "
                                          "ORDER BY n_active DESC, feature LIMIT 2").fetchall())
        (c,) = con.execute("""SELECT dst FROM matches WHERE parent = 'lua' AND direction = 'p2c' AND rank = 0
                              AND similarity = 'pearson' AND src = ?""", [f]).fetchone()
        bounds = con.execute("SELECT min(r), max(r) FROM matches").fetchone()
        assert -1 <= bounds[0] and bounds[1] <= 1
        for a, b in ((("lua", f), ("luastories", c)), (("lua", f), ("lua", g)), (("lua", f), ("lua", f))):
            want = stored_pearson(con, a, b)
            got = client.get(f"/api/compare?a={a[0]}:{a[1]}&b={b[0]}:{b[1]}").json()["r"]
            assert want is not None and got == pytest.approx(want, abs=1e-9), (a, b)
        for row in client.get("/api/cases/assignment").json()["matrix"]:  # its values: tests/test_app.py
            assert all(r is None or -1 <= r <= 1 for r in row)
    finally:
        con.close()


def test_correlation_matrix_equals_pairwise_correlation_and_numpy(client, tiny_pipeline):
    store = client.app.state.store
    feats = [("babypython", 0), ("lua", 1), ("lua", 1), ("luastories", 2), ("tinystories", 3)]
    matrix = store.correlations(feats)
    dense = {m: tiny_pipeline.load_acts(m).tocsc() for m, _ in feats}
    for i, (ma, fa) in enumerate(feats):
        for j, (mb, fb) in enumerate(feats):
            x, y = dense[ma][:, fa].toarray().ravel(), dense[mb][:, fb].toarray().ravel()
            if x.std() > 0 and y.std() > 0:
                assert matrix[i][j] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-6)
    joint = store.joint_activations("lua", 1, "luastories", 2)
    x, y = dense["lua"][:, 1].toarray().ravel(), dense["luastories"][:, 2].toarray().ravel()
    assert joint["r"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-6)


# ------------------------------------------------------------------------------------ view state
@pytest.fixture(scope="module")
def synthetic_client(synthetic_store):  # tests/synthetic_store.py: the views need no trained model
    return TestClient(create_app(synthetic_store.path))


def _pages(con) -> list[str]:
    """One URL of every HTML page of the explorer, on the store `con` reads."""
    m, f = con.execute("SELECT model, feature FROM features WHERE alive ORDER BY n_active DESC LIMIT 1").fetchone()
    p, c = con.execute("SELECT parent, child FROM model_edges LIMIT 1").fetchone()
    (slug,) = con.execute("SELECT slug FROM cases LIMIT 1").fetchone()
    return ["/", "/floors", "/features", f"/features?model={m}", "/cases", f"/cases/{slug}", "/models", f"/models/{m}",
            f"/models/{m}/features/{f}", f"/models/{m}/features/{f}/examples", "/compare", f"/compare?a={m}:{f}&b={m}:{f}",
            "/merge", "/autointerp", f"/edges/{p}/{c}"]


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e309", "-1", "1", "2", "abc"])
def test_a_view_state_no_page_can_use_is_refused_on_every_page(synthetic_client, synthetic_store, value):
    client = synthetic_client
    con = duckdb.connect(str(synthetic_store.path), read_only=True)
    pages = _pages(con)
    con.close()
    for url in pages:
        for u in (url, "/api" + url):
            r = client.get(u + ("&" if "?" in u else "?") + f"threshold={value}")
            # refused, or (a JSON twin that has no view state) the value dropped: never echoed back
            assert r.status_code == 422 or (u.startswith("/api") and r.status_code == 200), (u, r.status_code)
            links = re.findall(r'(?:href|hx-get|action|value)="([^"]*)"', r.text)
            assert not [a for a in links if f"threshold={value.lower()}" in html.unescape(a).lower()], u
            if r.status_code == 422 and u.startswith("/api"):
                assert ErrorBody.model_validate(r.json()).errors[0].loc == "query.threshold"
    ok = client.get("/merge?threshold=0.5")  # a usable one still travels
    assert ok.status_code == 200 and "threshold=0.5" in ok.text


# ------------------------------------------------------------------------------------ hostile text
# Characters that reorder or hide text: the Unicode Bidi_Control set and the zero-width ones.
BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
ZERO_WIDTH = {0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF}
HOSTILE = "\u202eevil\u200b\u2066x\u2069\u200d"


def _raw(text: str) -> list[str]:
    """The bidi and zero-width characters in `text`, counted one by one (the brute scan)."""
    return [f"U+{ord(ch):04X}" for ch in text if ord(ch) in BIDI | ZERO_WIDTH]


def _figure_strings(page: str) -> list[str]:
    """Every string of every Plotly figure a page embeds (data-plot='json'), as Plotly would draw it."""
    out = []

    def walk(x):
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(k), walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    for blob in re.findall(r"data-plot='([^']*)'", page):
        walk(json.loads(html.unescape(blob)))
    return out


@pytest.fixture(scope="module")
def hostile(synthetic_store, tmp_path_factory):
    """A copy of the synthetic store (tests/synthetic_store.py) whose labels, run description, case titles and explanations hold bidi controls
    and zero-width characters."""
    db = tmp_path_factory.mktemp("hostile") / "hostile.duckdb"
    shutil.copy(synthetic_store.path, db)
    con = duckdb.connect(str(db))
    con.execute("UPDATE models SET label = label || ?", [HOSTILE])
    con.execute("UPDATE runs SET description = ?", [f"the run {HOSTILE} described"])
    con.execute("UPDATE cases SET title = title || ?, description = coalesce(description, '') || ?", [HOSTILE, HOSTILE])
    con.execute("UPDATE explanations SET explanation = explanation || ?", [HOSTILE])
    con.close()
    return TestClient(create_app(db))


def test_hostile_text_reaches_no_page_raw(hostile, synthetic_store):
    """Crawl every page reachable from / (links, htmx fragments), plus 404s echoing a hostile URL and a search
    echoing a hostile term: no raw bidi or zero-width character in the HTML nor in any figure's text."""
    con = duckdb.connect(str(synthetic_store.path), read_only=True)
    todo, seen, scanned = _pages(con), set(), 0
    con.close()
    while todo and scanned < 150:
        url = todo.pop(0)
        if url in seen:
            continue
        seen.add(url)
        for headers in ({}, {"HX-Request": "true"}):
            r = hostile.get(url, headers=headers)
            assert r.status_code == 200, url
            assert not _raw(r.text), (url, _raw(r.text)[:5])
            assert not [s for s in _figure_strings(r.text) if _raw(s)], url
            scanned += 1
        for link in re.findall(r'(?:href|hx-get)="(/[^"]*)"', r.text):
            link = html.unescape(link)
            # data twins (JSON, CSV) hold the text as stored; pages render it
            if not link.startswith(("/static", "/vendor", "/api", "/csv", "/docs", "/redoc", "/jump", "/compare/pick")):
                todo.append(link)
    assert scanned >= 60, scanned
    shown = hostile.get("/").text
    assert "‹U+202E›" in shown and "‹U+200B›" in shown  # the labels were rendered, their hidden characters shown
    assert any("‹U+202E›" in s for s in _figure_strings(shown))  # the Sankey's node labels too
    for url in ("/models/%E2%80%AEevil", "/models/lua/features/99999999", "/cases/%E2%80%AEx%E2%80%8B",
                "/edges/lua%E2%80%AE/x", "/compare?a=%E2%80%AE:1&b=lua:1", "/features?model=%E2%80%AE"):
        r = hostile.get(url)
        assert r.status_code in (404, 422) and not _raw(r.text), (url, r.status_code, _raw(r.text))
    r = hostile.get("/features?token=%E2%80%AE&q=%E2%80%8Bx")
    assert r.status_code == 200 and not _raw(r.text)
    assert 'value="&#x202E;"' in r.text  # the search field still holds what was typed
