"""A fake OpenAI-compatible chat-completions server on 127.0.0.1 for tests.

`FakeOpenAI(script)` serves POST /v1/chat/completions. Each request is recorded (body and headers);
`script(body, n)` (or `script(body, n, headers)`) returns (status, headers, json_body) for the n-th
request, or None for the default answer, which plays a sensible model: the explainer says the feature
fires on "=", the simulator predicts 10 for tokens holding "=" and 0 otherwise, the detector names
excerpts holding "=". `echo_key_error(status)` is a leaky proxy's error: it quotes the caller's
Authorization header (the API key) in its body, as some proxies do. `echo_key_answer(body, headers)` is a
model made to leak the key: its answer (and its logprob tokens) spell the key split over tokens and lines and
encoded as a proxy might (percent-encoded in either case, base64 Basic credentials, JSON-escaped).
"""

from __future__ import annotations

import base64
import inspect
import json
import re
from urllib.parse import quote
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def completion(content: str, logprobs=None, prompt_tokens=100, completion_tokens=20) -> dict:
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake-model",
            "choices": [choice], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                           "total_tokens": prompt_tokens + completion_tokens}}


def default_answer(body: dict) -> dict:
    system = body["messages"][0]["content"]
    user = body["messages"][1]["content"]
    if system.startswith("We study neurons"):
        return completion("fires on the assignment sign =")
    if system.startswith("You predict"):
        toks = re.findall(r"^\d+\t(.*)$", user.split("Tokens:\n", 1)[1], flags=re.M)
        return completion(json.dumps({"activations": [10 if "=" in t else 0 for t in toks]}))
    if system.startswith("You decide"):
        lines = user.split("Excerpts:\n", 1)[1].splitlines()
        return completion(json.dumps({"firing": [i for i, l in enumerate(lines) if "=" in l.split(": ", 1)[1]]}))
    return completion("?")


def echo_key_error(status: int, headers: dict) -> tuple[int, dict, dict]:
    """An error answer that echoes the request's key, in the message and in a field of its own."""
    auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
    key = key_of(headers)
    kind = {401: "invalid_api_key", 403: "permission_denied"}.get(status, "invalid_request_error")
    return status, {}, {"error": {"message": f"Incorrect API key provided: {key}. Request had {auth}.",
                                  "type": kind, "code": kind, "param": key}}


def key_of(headers: dict) -> str:
    auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
    return auth.removeprefix("Bearer ")


def key_encodings(key: str) -> dict[str, str]:
    """The key as a leaky proxy or model may echo it, each encoded by the standard library."""
    pct = quote(key, safe="")
    return {"raw": key, "percent": pct, "percent-lower": re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), pct),
            "basic": base64.b64encode(f"user:{key}".encode()).decode(),
            "basic-2": base64.b64encode(f"me:{key}".encode()).decode(),
            "json": json.dumps(key, ensure_ascii=True).replace("/", "\\/")[1:-1],
            "json-u": "".join(f"\\u{ord(c):04x}" for c in key),
            "lines": "\n".join(key[i:i + 7] for i in range(0, len(key), 7))}


def _tokens(text: str, size: int = 3) -> list[dict]:
    """`text` as logprob tokens of `size` characters, each with itself and one other as alternatives."""
    return [{"token": text[i:i + size], "logprob": -0.1, "bytes": None,
             "top_logprobs": [{"token": text[i:i + size], "logprob": -0.1, "bytes": None},
                              {"token": text[i + size:i + 2 * size] or "x", "logprob": -3.0, "bytes": None}]}
            for i in range(0, len(text), size)]


def echo_key_answer(body: dict, headers: dict) -> dict:
    """The default answer with the key leaked into it in every encoding of `key_encodings`: after the explanation,
    or in an extra JSON field of a simulator / detector answer; the logprob tokens (3 characters each) spell
    the whole answer, so the key is split across them."""
    leak = " ".join(f"{k}={v}" for k, v in key_encodings(key_of(headers)).items())
    answer = default_answer(body)
    message = answer["choices"][0]["message"]
    if message["content"].startswith("{"):
        message["content"] = json.dumps({**json.loads(message["content"]), "debug": leak})
    else:
        message["content"] += f" (debug: {leak})"
    answer["choices"][0]["logprobs"] = {"content": _tokens(message["content"])}
    return answer


class FakeOpenAI:
    def __init__(self, script=None):
        self.script = script or (lambda body, n: None)
        with_headers = len(inspect.signature(self.script).parameters) >= 3
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    n = len(outer.requests)
                    outer.requests.append(body)
                    outer.headers.append(dict(self.headers))
                got = outer.script(body, n, dict(self.headers)) if with_headers else outer.script(body, n)
                status, headers, payload = got if got is not None else (200, {}, default_answer(body))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
