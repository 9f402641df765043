"""Serving: ETag / 304 from the store's identity, gzip, and `featureflow serve --workers N`."""

import gzip
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from featureflow.explorer.app import create_app
from featureflow.explorer.queries import NotFound

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def client(synthetic_store):  # tests/synthetic_store.py: serving needs no trained model
    return TestClient(create_app(synthetic_store.path))


def test_a_matching_if_none_match_is_304_without_running_the_view(client, monkeypatch):
    r = client.get("/?threshold=0.6")
    tag = r.headers["etag"]
    assert r.status_code == 200 and tag.startswith('W/"') and "max-age=" in r.headers["cache-control"]
    assert "HX-Request" in r.headers["vary"]

    def no_queries(*a, **k):
        raise AssertionError("the view ran")

    monkeypatch.setattr(client.app.state.store, "flows", no_queries)
    r = client.get("/?threshold=0.6", headers={"If-None-Match": f'W/"other", {tag}'})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == tag
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]  # security headers on a 304 too
    with pytest.raises(AssertionError, match="the view ran"):  # a URL not answered before: the view runs
        client.get("/?threshold=0.61", headers={"If-None-Match": tag})


def test_the_etag_names_the_url_the_fragment_and_the_store(client, synthetic_store, tmp_path):
    tags = {client.get(u, headers=h).headers["etag"] for u, h in (
        ("/", {}), ("/?threshold=0.5", {}), ("/?threshold=0.5", {"HX-Request": "true"}), ("/api/", {}))}
    assert len(tags) == 4
    assert client.get("/models/nosuch").headers.get("etag") is None  # errors are not cached
    again = TestClient(create_app(synthetic_store.path))  # another worker: the same tags
    assert again.get("/api/").headers["etag"] == client.get("/api/").headers["etag"]
    copy = tmp_path / "copy.duckdb"
    shutil.copyfile(synthetic_store.path, copy)
    os.utime(copy, ns=(1, 1))  # another file (a rebuilt store): every tag changes
    assert TestClient(create_app(copy)).get("/api/").headers["etag"] != client.get("/api/").headers["etag"]


def test_responses_are_gzipped_when_asked_and_large_enough(client):
    for url in ("/", "/api/"):
        r = client.get(url, headers={"Accept-Encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip" and int(r.headers["content-length"]) < len(r.content) / 2
        assert "Accept-Encoding" in r.headers["vary"]
        raw = client.get(url, headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in raw.headers and raw.content == r.content
    r = client.get("/api/cases/nosuch", headers={"Accept-Encoding": "gzip"})  # a short 404 stays plain
    assert r.status_code == 404 and "content-encoding" not in r.headers
    with client.stream("GET", "/api/", headers={"Accept-Encoding": "gzip"}) as s:
        assert gzip.decompress(b"".join(s.iter_raw()))[:1] == b"{"


def test_feature_examples_are_a_fragment_with_a_json_twin(client, synthetic_store):
    import duckdb

    con = duckdb.connect(str(synthetic_store.path), read_only=True)
    (f, n), = con.execute("""SELECT feature, count(*) FROM examples WHERE model = 'left'
                             GROUP BY feature ORDER BY count(*) DESC, feature LIMIT 1""").fetchall()
    kinds = {k for (k,) in con.execute("SELECT DISTINCT kind FROM examples WHERE model = 'left' AND feature = ?",
                                       [f]).fetchall()}
    dead = con.execute("SELECT feature FROM features WHERE model = 'left' AND NOT alive LIMIT 1").fetchone()
    con.close()
    page = client.get(f"/models/left/features/{f}")
    frag = client.get(f"/models/left/features/{f}/examples", headers={"HX-Request": "true"})
    data = client.get(f"/api/models/left/features/{f}/examples").json()
    assert len(data["examples"]) == n and {e["kind"] for e in data["examples"]} == kinds and len(kinds) >= 2
    assert frag.text.count('<div class="example">') == n and "Top activations" in frag.text
    assert "<html" not in frag.text and 'class="example"' not in page.text
    full = client.get(f"/models/left/features/{f}/examples")  # a link that works without JavaScript
    assert "<html" in full.text and full.text.count('<div class="example">') == n
    assert f'href="/models/left/features/{f}?' in full.text
    assert client.get("/api/models/left/features/99999/examples").status_code == 404
    if dead:
        assert "never fires" in client.get(f"/models/left/features/{dead[0]}/examples").text


def test_serve_parses_workers_and_hands_them_the_factory(synthetic_store, monkeypatch):
    import uvicorn

    import featureflow.explorer.serving
    from featureflow import cli

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.setattr(featureflow.explorer.serving, "run_workers", lambda *a: calls.append(a) or 0)
    monkeypatch.setenv("FEATUREFLOW_DB", "")  # restored when the test ends
    monkeypatch.setenv("FEATUREFLOW_DUCKDB_THREADS", "")
    db = str(synthetic_store.path)
    assert cli.main(["serve", "--db", db, "--workers", "3", "--port", "8123"]) == 0
    assert calls.pop() == ("127.0.0.1", 8123, 3)
    assert os.environ["FEATUREFLOW_DB"] == str(Path(db).resolve())  # what app_from_env opens in each worker
    assert os.environ["FEATUREFLOW_DUCKDB_THREADS"] == str(max(1, cli.cores() // 3))  # each worker's share of the cores
    assert featureflow.explorer.serving.app_from_env().state.store.path == Path(db).resolve()
    assert cli.main(["serve", "--db", db, "--workers", "1"]) == 0
    app_, kw = calls.pop()
    assert hasattr(app_, "state") and "workers" not in kw  # one worker: the app built here, in this process
    assert cli.main(["serve", "--db", db]) == 0
    got = calls.pop()
    assert (got[2] if len(got) == 3 else 1) == cli.cores()  # the default: one worker per core
    assert cli.main(["serve", "--db", db, "--workers", "0"]) == 2
    assert cli.main(["serve", "--db", db + ".missing", "--workers", "2"]) == 2 and not calls


def test_each_worker_listens_on_its_own_tcp_socket_of_one_port():
    from featureflow.explorer.serving import listening_socket, run_workers

    a = listening_socket("127.0.0.1", 0, reuse_port=True)
    port = a.getsockname()[1]
    b = listening_socket("127.0.0.1", port, reuse_port=True)  # a second worker on the same port
    try:
        for s in (a, b):
            assert s.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY on such a socket's connections
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        a.listen()
        with pytest.raises(ValueError, match=f"cannot listen on 127.0.0.1:{port}"):  # no second server on it
            run_workers("127.0.0.1", port, 2)
    finally:
        a.close()
        b.close()


def test_serve_with_two_workers_answers_and_stops(synthetic_store):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "featureflow.cli", "serve", "--db", str(synthetic_store.path),
                             "--workers", "2", "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        r = None
        for _ in range(300):
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert r is not None and r.status_code == 200 and "featureflow" in r.text and r.headers["etag"]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert out.count("Started server process") == 2, out


def test_answers_are_kept_per_request_and_errors_are_not(synthetic_store, monkeypatch):
    c = TestClient(create_app(synthetic_store.path))
    first = c.get("/api/?threshold=0.7")
    page = c.get("/?threshold=0.7")
    c.get("/api/?threshold=0.7", headers={"Accept-Encoding": "identity"})
    assert c.get("/api/models/left/features/99999").status_code == 404
    calls = []
    store = c.app.state.store
    monkeypatch.setattr(store, "flows", lambda *a, **k: calls.append(a) or [])

    def missing(*a, **k):
        calls.append(a)
        raise NotFound("no such feature")

    monkeypatch.setattr(store, "feature_row", missing)
    again = c.get("/api/?threshold=0.7")
    assert again.json() == first.json() and again.headers["etag"] == first.headers["etag"] and not calls
    assert c.get("/?threshold=0.7").text == page.text and not calls
    assert c.get("/api/?threshold=0.7", headers={"Accept-Encoding": "identity"}).json() == first.json() and not calls
    c.get("/?threshold=0.7", headers={"HX-Request": "true"})  # the fragment is another answer: computed
    assert c.get("/api/models/left/features/99999").status_code == 404  # so is an error, again
    assert len(calls) == 2


def test_memoised_store_answers_cannot_be_changed_by_a_caller(client):
    floors = client.get("/api/floors").json()["floors"]  # the floors view adds a figure to each floor it reads
    assert floors and all("figure" in f for f in floors)
    assert all("figure" not in f for f in client.get("/api/").json()["floors"])
    store = client.app.state.store
    store.flows(0.8)[0]["persisting"] = -1
    assert store.flows(0.8)[0]["persisting"] >= 0


def test_a_first_view_of_a_feature_reads_its_own_tables_once_and_never_joins_the_vocabulary(synthetic_store):
    """The first view of a feature page (nothing cached for it): every SQL statement is recorded; the feature's
    own tables (row, histogram, logits, top tokens) are read in two statements, no statement reads `vocab`
    (token texts come from memory), and the page shows the same token texts as the vocabulary table (read
    here on its own)."""
    import re as _re

    import duckdb

    db = synthetic_store.path
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("""SELECT f.model, f.feature, list(v.text ORDER BY t.rank), f.n_active FROM features f
                          JOIN feature_top_tokens t USING (model, feature) JOIN vocab v USING (token_id)
                          WHERE f.alive GROUP BY f.model, f.feature, f.n_active ORDER BY f.n_active DESC, f.model LIMIT 3""").fetchall()
    con.close()
    c = TestClient(create_app(db))
    store = c.app.state.store
    c.get(f"/models/{rows[-1][0]}/features/{rows[-1][1]}")  # the process's first page: one-time reads
    statements = []
    real = store.cursor

    class Recording:
        def __init__(self, cur):
            self.cur = cur

        def execute(self, sql, params=None):
            statements.append(" ".join(sql.split()))
            return self.cur.execute(sql, params or [])

    store.cursor = lambda: Recording(real())
    for model, feature, texts, _ in rows[:2]:
        statements.clear()
        api = c.get(f"/api/models/{model}/features/{feature}").json()
        assert [t["text"] for t in api["feature"]["top_tokens"]] == texts
        own = [s for s in statements if _re.search(r"\bfeature_(histograms|logits|top_tokens)\b|\bFROM features\b", s)]
        assert len(own) == 2, own
        assert not [s for s in statements if _re.search(r"\bvocab\b", s)], statements
