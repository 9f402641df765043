"""How the explorer is served: headers on every response, ETag / 304 from the store's identity, answers kept
per request, and the worker processes of `featureflow serve --workers N` with the app factory they import.

The store is read-only and never changes while it is served, so a response is a function of the store, the
explorer's code and the request (its URL and whether htmx asked for a fragment). `identity()` hashes the
first two once at startup; `ServeHeaders` adds the request and answers a matching `If-None-Match` with 304
before any view runs.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import socket
import threading
from collections import OrderedDict
from pathlib import Path

from starlette.datastructures import Headers, MutableHeaders

DB_ENV = "FEATUREFLOW_DB"
THREADS_ENV = "FEATUREFLOW_DUCKDB_THREADS"  # DuckDB threads per worker: the cores over the workers
APP = Path(__file__).resolve().parent
FRONTEND = APP  # templates/ and static/ sit beside the code
# The store never changes while served, but a restart may serve a rebuilt one: browsers keep a page a minute,
# then revalidate it with its ETag (a 304 costs no query).
CACHE_CONTROL = "public, max-age=60"


def identity(db_path: str | Path, run: dict) -> str:
    """A hash of what every response depends on besides the request: the store (its `runs` row, file size and
    mtime) and the explorer's code (featureflow/explorer/*.py and routers/*.py, templates, static files). Equal in
    every worker process."""
    st = os.stat(db_path)
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(run, sort_keys=True, default=str).encode())
    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    code = sorted([*APP.glob("*.py"), *(APP / "routers").glob("*.py"), *(FRONTEND / "templates").rglob("*"),
                   *(FRONTEND / "static").rglob("*")])
    for p in code:
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()



def wants_fragment(headers) -> bool:
    """Whether a request gets a page's htmx fragment: an htmx request, except the one htmx sends to restore
    a page missing from its history cache (HX-History-Restore-Request), which needs the whole page."""
    return bool(headers.get("hx-request")) and not headers.get("hx-history-restore-request")

class ServeHeaders:
    """Pure ASGI middleware: the security headers on every response; on each 200 answer to a GET a weak ETag
    of (store identity, URL, HX-Request) with Cache-Control and `Vary: HX-Request`; a GET whose
    `If-None-Match` holds that tag gets 304 without running the view. Responses that set their own ETag or
    Cache-Control (static and vendored files) keep them."""

    def __init__(self, app, security: dict[str, str], seed: str):
        self.app = app
        self.security = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in security.items()]
        self.seed = seed.encode()

    def etag(self, scope: dict, headers: Headers) -> str:
        h = hashlib.blake2b(self.seed, digest_size=12)
        h.update(scope["path"].encode() + b"?" + scope.get("query_string", b""))
        if wants_fragment(headers):
            h.update(b"|hx")
        return f'W/"{h.hexdigest()}"'

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        tag = None
        if scope["method"] in ("GET", "HEAD"):
            headers = Headers(scope=scope)
            tag = self.etag(scope, headers)
            match = headers.get("if-none-match", "")
            if tag in (t.strip() for t in match.split(",")):
                await send({"type": "http.response.start", "status": 304, "headers": [
                    *self.security, (b"etag", tag.encode()), (b"cache-control", CACHE_CONTROL.encode()),
                    (b"vary", b"HX-Request, Accept-Encoding")]})
                await send({"type": "http.response.body", "body": b""})
                return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                h = MutableHeaders(scope=message)
                for k, v in self.security:
                    h[k.decode()] = v.decode()
                if tag and message["status"] == 200 and "etag" not in h and "cache-control" not in h:
                    h["etag"] = tag
                    h["cache-control"] = CACHE_CONTROL
                    h.add_vary_header("HX-Request")
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ResponseCache:
    """Pure ASGI middleware: the store never changes while served, so a 200 answer to a GET is kept (per
    process, least recently used first out, at most `max_bytes` in all) and replayed for the same request:
    path, query, HX-Request and whether gzip was accepted. Requests with a Range or a conditional header go
    through (the layers around answer those); so do answers over `max_item` bytes."""

    def __init__(self, app, max_bytes: int = 64 << 20, max_item: int = 4 << 20):
        self.app = app
        self.max_bytes, self.max_item = max_bytes, max_item
        self.entries: OrderedDict[tuple, tuple[dict, bytes]] = OrderedDict()
        self.size = 0

    def key(self, scope: dict) -> tuple | None:
        if scope["type"] != "http" or scope["method"] != "GET":
            return None
        headers = Headers(scope=scope)
        if any(h in headers for h in ("range", "if-none-match", "if-modified-since")):
            return None
        return (scope["path"], scope.get("query_string", b""), wants_fragment(headers),
                "gzip" in headers.get("accept-encoding", ""))

    async def __call__(self, scope, receive, send):
        key = self.key(scope)
        if key is None:
            return await self.app(scope, receive, send)
        hit = self.entries.get(key)
        if hit is not None:
            self.entries.move_to_end(key)
            start, body = hit
            await send({**start, "headers": list(start["headers"])})
            await send({"type": "http.response.body", "body": body})
            return
        start, chunks, size = None, [], 0

        async def keep(message):
            nonlocal start, size
            if message["type"] == "http.response.start":
                start = {**message, "headers": list(message["headers"])} if message["status"] == 200 else None
            elif start is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > self.max_item:
                    start = None
                elif not message.get("more_body"):
                    self.put(key, start, b"".join(chunks))
            await send(message)

        await self.app(scope, receive, keep)

    def put(self, key: tuple, start: dict, body: bytes) -> None:
        self.entries[key] = (start, body)
        self.size += len(body)
        while self.size > self.max_bytes:
            _, (_, old) = self.entries.popitem(last=False)
            self.size -= len(old)


def app_from_env():
    """The app factory each uvicorn worker imports (`featureflow.explorer.serving:app_from_env`): the store named by
    $FEATUREFLOW_DB, which `featureflow serve` sets after checking that the app starts on it, with the DuckDB threads
    of $FEATUREFLOW_DUCKDB_THREADS (its share of the cores)."""
    from featureflow.explorer.app import create_app

    path = os.environ.get(DB_ENV)
    if not path:
        raise RuntimeError(f"${DB_ENV} names no store (start the explorer with `featureflow serve --db ...`)")
    return create_app(path, duckdb_threads=int(os.environ.get(THREADS_ENV) or 0) or None)


def listening_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to (host, port), as IPPROTO_TCP: asyncio sets TCP_NODELAY only on connections of such a
    socket, and without it every answer on a kept-alive connection waits ~40 ms for the client's delayed ACK
    (uvicorn's own sockets for workers are protocol 0: 52 ms a feature page over one connection, not 11 ms)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(host: str, port: int, log_level: str) -> None:
    import uvicorn

    config = uvicorn.Config("featureflow.explorer.serving:app_from_env", factory=True, host=host, port=port, log_level=log_level)
    uvicorn.Server(config).run(sockets=[listening_socket(host, port, reuse_port=True)])


def run_workers(host: str, port: int, workers: int, log_level: str = "info") -> int:
    """`workers` processes, each a uvicorn server building the app with `app_from_env` on a socket of its own
    (SO_REUSEPORT), so the kernel spreads connections over them. (On uvicorn's one shared socket the first
    worker awake accepts every connection that is waiting: 8 connections opened together all went to one
    worker, leaving the other core idle.) Returns when SIGINT / SIGTERM arrives or a worker stops; 1 if one
    failed."""
    try:
        listening_socket(host, port, reuse_port=False).close()  # free, and no server shares it already
    except OSError as e:
        raise ValueError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(host, port, log_level)) for _ in range(workers)]
    stop = threading.Event()
    before = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for p in procs:
            p.start()
        while not stop.wait(0.5) and all(p.is_alive() for p in procs):
            pass
    finally:
        for p in procs:
            p.terminate()  # each uvicorn finishes the requests in flight
        for p in procs:
            p.join(30)
        for sig, handler in before.items():
            signal.signal(sig, handler)
    return 0 if stop.is_set() else 1  # else a worker stopped by itself (it could not start, or crashed)
