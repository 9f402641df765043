"""LLM explainer and scorers through the `openai` client, for any OpenAI-compatible server.

- Explainer: one concise explanation from the explain records (Bills et al. 2023 style prompt).
- Simulator: given only the explanation, predict every token's 0-10 level of one held-out window in one
  call with a JSON answer; when the endpoint returns logprobs, each level is the expected value over
  the alternatives offered for that number.
- Detector: given the explanation and all held-out windows, say which windows fire at all.

Every call is cached on disk by a hash of (model, request), so a rerun pays nothing twice. Retries on
429 / 5xx are the client's own (exponential backoff with jitter, Retry-After honoured, bounded by
`max_retries`). Spend (tokens and USD from `usage`) is tracked and the run stops cleanly at the limit.
The key comes from OPENAI_API_KEY only and is never logged, stored or shown: servers and proxies may echo
it in their error bodies, so every text that leaves this module (failure reasons, explanations) goes
through `redact`, which removes the key itself and anything shaped like a secret. A 401 / 403 stops the
run (`LLMAuthError`) instead of failing every feature one by one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import threading
from pathlib import Path
from typing import Any

from featureflow.pipeline.artifacts import PipelineError
from featureflow.pipeline.autointerp.records import Record

REDACTED = "[redacted]"
# An LLM cache entry holds the format it was redacted under; entries of an older format (or none) are
# redacted again and rewritten when read (`LLM.chat`).
CACHE_FORMAT = 2
# Shapes of secrets, each replaced by REDACTED (a named prefix such as "Bearer " or "api_key=" is kept):
_SECRET_SHAPES = [
    (re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{8,}"), REDACTED),  # OpenAI-style keys (sk-..., sk-proj-...)
    (re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=\-]{6,}"), rf"\1\2{REDACTED}"),
    (re.compile(r"(?i)\b((?:x-)?api[ _-]?key(?: provided)?|apikey|access[_-]?token|secret|password|authorization)"
                r"([\"']?\s*[:=]\s*[\"']?)(?!(?:bearer|basic|token)\s|\[redacted\])[^\s\"',;&}]{6,}"),
     rf"\1\2{REDACTED}"),
    (re.compile(r"(://[^/\s:@]+:)[^/\s@]+@"), rf"\1{REDACTED}@"),  # credentials in a URL
    (re.compile(r"\b[0-9a-fA-F]{32,}\b"), REDACTED),  # long hex
    # long base64 / url-safe runs with both letters and digits (paths are left alone: no '/')
    (re.compile(r"(?<![A-Za-z0-9_\-])(?=[A-Za-z0-9_\-]*[0-9])(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{32,}={0,2}"),
     REDACTED),
]


def _char_forms(ch: str) -> str:
    """A regex for one character of a secret as a proxy may echo it: itself, percent-encoded (either case of
    hex), JSON-escaped (\\uXXXX, and \\/ for '/') or as an HTML character reference."""
    forms = [re.escape(ch), "(?i:" + "".join(f"%{b:02x}" for b in ch.encode()) + ")"]
    if ord(ch) < 0x10000:
        forms.append(f"(?i:\\\\u{ord(ch):04x})")
    forms.append(f"(?i:&#x0*{ord(ch):x};|&#0*{ord(ch)};)")
    if ch == "/":
        forms.append(r"\\/")
    if ch == " ":
        forms.append(r"\+")
    return "(?:" + "|".join(forms) + ")"


# What may split a secret that a proxy or a model echoes over several lines or tokens: whitespace (a
# token boundary joined back with spaces, a wrapped line), JSON-escaped line breaks and tabs.
_SPLIT = r"(?:\s|\\[nrt]|%0[aAdD]|%09|%20)*"
_B64 = "A-Za-z0-9+/_\\-"  # both base64 alphabets (standard and url-safe)


def _base64_cores(secret: bytes) -> list[str]:
    """What every base64 encoding of any text holding `secret` (e.g. Basic credentials `user:key`) must hold:
    for each of the three alignments of the secret in 3-byte groups, the encoding of the whole groups
    inside it, in the standard and the url-safe alphabet."""
    import base64

    cores = []
    for skip in range(3):
        rest = secret[skip:]
        whole = rest[: len(rest) - len(rest) % 3]
        if len(whole) >= 6:  # shorter runs would match ordinary base64 by chance
            std = base64.b64encode(whole).decode()
            cores += [std, base64.urlsafe_b64encode(whole).decode()]
    return list(dict.fromkeys(cores))


@functools.lru_cache(maxsize=16)
def _secret_pattern(secret: str) -> re.Pattern:
    """One regex for `secret` in every encoding a server may echo it in (see `redact`)."""
    spelled = _SPLIT.join(_char_forms(ch) for ch in secret)
    b64 = "|".join(f"[{_B64}]*{re.escape(core)}[{_B64}]*={{0,2}}" for core in _base64_cores(secret.encode()))
    return re.compile(spelled + (f"|{b64}" if b64 else ""))


def secret_spans(text: str, secrets: tuple[str, ...] = ()) -> list[tuple[int, int]]:
    """Where the API key (OPENAI_API_KEY, and any of `secrets`) occurs in `text`, in any encoding `redact`
    knows, as sorted (start, end) spans."""
    spans = []
    for s in (os.environ.get("OPENAI_API_KEY") or "", *secrets):
        if len(s) >= 6:  # shorter 'keys' would redact ordinary words; the shapes below still apply
            spans += [m.span() for m in _secret_pattern(s).finditer(text)]
    return sorted(spans)


def redact(text: str | None, secrets: tuple[str, ...] = ()) -> str | None:
    """`text` without the API key (OPENAI_API_KEY, and any of `secrets`) or anything shaped like a secret.

    The key is found as itself and as a proxy or a model may echo it: percent-encoded (upper- or
    lower-case hex, also only in part), JSON-escaped (\\uXXXX, \\/), as HTML character references, split over
    lines or tokens by whitespace or escaped line breaks, and inside base64 (Basic credentials `user:key`,
    in any alignment, either alphabet: the whole base64 run goes)."""
    if not text:
        return text
    for start, end in reversed(_merge(secret_spans(text, secrets))):
        text = text[:start] + REDACTED + text[end:]
    for pattern, repl in _SECRET_SHAPES:
        text = pattern.sub(repl, text)
    return text


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in spans:
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def redact_answer(answer: dict) -> dict:
    """An LLM answer {content, logprobs, usage} redacted as a whole before it is cached or used: the content,
    and the logprob tokens joined back into the text they spell (a key spread over tokens is found there):
    every token a key overlaps gives up its part of it (the first such token reads REDACTED), and its
    alternatives that are not numbers are redacted. Every token (and alternative) is also redacted alone.
    Carries CACHE_FORMAT, so entries cached before this redaction are known and rebuilt (`LLM.chat`)."""
    out = {**answer, "content": redact(answer.get("content") or ""), "format": CACHE_FORMAT}
    lps = answer.get("logprobs")
    if lps:
        toks = [p["token"] for p in lps]
        joined, starts = "".join(toks), []
        pos = 0
        for t in toks:
            starts.append(pos)
            pos += len(t)
        spans = _merge(secret_spans(joined) + [m.span() for pat, _ in _SECRET_SHAPES for m in pat.finditer(joined)])
        new_tokens, covered = list(toks), [False] * len(toks)
        for a, b in spans:
            first = True
            for i, t in enumerate(toks):
                s, e = starts[i], starts[i] + len(t)
                if e <= a or s >= b or s == e:
                    continue
                keep_head, keep_tail = t[: max(0, a - s)], t[max(0, b - s):]
                new_tokens[i] = keep_head + (REDACTED if first else "") + keep_tail
                covered[i], first = True, False
        out["logprobs"] = [
            {"token": redact(new_tokens[i]) if new_tokens[i] else new_tokens[i],
             "top": [{"token": (alt["token"] if alt["token"].strip().isdigit() else REDACTED) if covered[i]
                      else redact(alt["token"]) or alt["token"], "logprob": alt["logprob"]}
                     for alt in (p.get("top") or [])]}
            for i, p in enumerate(lps)]
    return out


class AutointerpError(PipelineError):
    """The autointerp stage cannot go on (no key, key refused, most features failed); the message says why."""


class LLMAuthError(AutointerpError):
    """The server refused the key (401) or the model (403): every further call would fail the same way."""


class LLMCallError(RuntimeError):
    """A call failed after the client's retries; the message (the error's type and text) is redacted."""


class SpendLimitReached(RuntimeError):
    pass


class MalformedAnswer(ValueError):
    pass


class Spend:
    def __init__(self, max_usd: float, price_in: float, price_out: float):
        self.max_usd, self.price_in, self.price_out = max_usd, price_in, price_out
        self.prompt_tokens = self.completion_tokens = self.calls = self.cached_calls = 0
        self._lock = threading.Lock()

    @property
    def usd(self) -> float:
        return self.prompt_tokens * self.price_in + self.completion_tokens * self.price_out

    def check(self) -> None:
        if self.usd >= self.max_usd:
            raise SpendLimitReached(f"spend limit of ${self.max_usd:.4f} reached (spent ${self.usd:.4f})")

    def add(self, usage: dict | None) -> None:
        with self._lock:
            self.calls += 1
            if usage:
                self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                self.completion_tokens += int(usage.get("completion_tokens") or 0)

    def as_dict(self) -> dict:
        return {"calls": self.calls, "cached_calls": self.cached_calls, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "usd": self.usd}


class LLM:
    """A cached, spend-limited chat client."""

    def __init__(self, model: str, base_url: str | None, cache_dir: Path, spend: Spend, max_retries: int = 4,
                 timeout: float = 60.0, logprobs: bool = True):
        import openai

        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise AutointerpError("autointerp.mode 'llm' needs the OPENAI_API_KEY environment variable")
        self.client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=max_retries, timeout=timeout)
        self.model, self.cache_dir, self.spend, self.logprobs = model, Path(cache_dir), spend, logprobs
        self.server = redact(base_url) or "the OpenAI API"
        self.fatal: LLMAuthError | None = None  # set on a 401 / 403: every later call raises it at once
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def chat(self, messages: list[dict], json_answer: bool = False, logprobs: bool = False) -> dict:
        """One chat completion as a plain dict {content, logprobs, usage}; cached by (model, request)."""
        import openai

        request: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0}
        if json_answer:
            request["response_format"] = {"type": "json_object"}
        if logprobs and self.logprobs:
            request.update(logprobs=True, top_logprobs=5)
        h = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        path = self.cache_dir / f"{h}.json"
        if path.exists():
            self.spend.cached_calls += 1
            out = json.loads(path.read_text())
            if out.get("format") != CACHE_FORMAT:  # cached before the current redaction: redact and rewrite it
                out = redact_answer(out)
                self._write(path, out)
            return out
        if self.fatal is not None:
            raise self.fatal
        self.spend.check()
        try:
            resp = self.client.chat.completions.create(**request)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            what = "the API key" if e.status_code == 401 else f"access to model '{self.model}'"
            self.fatal = LLMAuthError(
                f"the LLM server {self.server} refused {what} (HTTP {e.status_code}); check OPENAI_API_KEY, "
                f"autointerp.model and autointerp.base_url. The run stopped: no further calls were made")
            raise self.fatal from None  # the server's message may echo the key: keep it out of tracebacks
        except openai.OpenAIError as e:  # its message quotes the error body, which may echo the key
            raise LLMCallError(redact(f"{type(e).__name__}: {e}")) from None
        choice = resp.choices[0]
        out = redact_answer({  # a model (or a proxy) can be made to echo a key too
            "content": choice.message.content or "",
            "logprobs": [{"token": c.token, "top": [{"token": t.token, "logprob": t.logprob} for t in (c.top_logprobs or [])]}
                         for c in (choice.logprobs.content or [])] if getattr(choice, "logprobs", None) else None,
            "usage": resp.usage.model_dump() if resp.usage else None,
        })
        self.spend.add(out["usage"])
        self._write(path, out)
        return out

    @staticmethod
    def _write(path: Path, out: dict) -> None:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        tmp.write_text(json.dumps(out))
        os.replace(tmp, path)


# ------------------------------------------------------------------------------------- prompts
EXPLAIN_SYSTEM = (
    "We study neurons (features) of a small language model trained on simple English, children's stories, "
    "Python and Lua code. You see text excerpts, one token per line, each followed by a tab and the "
    "feature's activation level in angle brackets, 0-10 (0 = silent). Explain in one short "
    "sentence what the feature responds to: which tokens and in what context. Do not quote the excerpts "
    "verbatim beyond single tokens. Answer with the explanation only."
)

SIMULATE_SYSTEM = (
    "You predict a language-model feature's activation from its explanation. For each numbered token of "
    "the excerpt, give an integer level 0-10 (0 = silent, 10 = strongest). Answer in JSON: "
    '{"activations": [level for token 0, level for token 1, ...]} with exactly one level per token.'
)

DETECT_SYSTEM = (
    "You decide from a feature's explanation which text excerpts make the feature fire at all. Answer in "
    'JSON: {"firing": [indices of the excerpts that fire]}.'
)


def _fmt_token(t: str) -> str:
    return json.dumps(t)[1:-1]  # visible escapes for newlines and tabs


def explain_messages(records: list[Record], vocab: list[str]) -> list[dict]:
    blocks = []
    for i, r in enumerate(records):
        lines = [f"{_fmt_token(vocab[t])}\t<{lv}>" for t, lv in zip(r.token_ids, r.levels)]
        blocks.append(f"Excerpt {i + 1}:\n" + "\n".join(lines))
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": "\n\n".join(blocks)}]


def simulate_messages(explanation: str, record: Record, vocab: list[str]) -> list[dict]:
    toks = "\n".join(f"{i}\t{_fmt_token(vocab[t])}" for i, t in enumerate(record.token_ids))
    return [{"role": "system", "content": SIMULATE_SYSTEM},
            {"role": "user", "content": f"Explanation: {explanation}\n\nTokens:\n{toks}"}]


def detect_messages(explanation: str, records: list[Record], vocab: list[str]) -> list[dict]:
    ex = "\n".join(f"{i}: {json.dumps(''.join(vocab[t] for t in r.token_ids))}" for i, r in enumerate(records))
    return [{"role": "system", "content": DETECT_SYSTEM},
            {"role": "user", "content": f"Explanation: {explanation}\n\nExcerpts:\n{ex}"}]


# -------------------------------------------------------------------------------------- parsing
def parse_explanation(content: str) -> str:
    text = " ".join(content.strip().split())
    if not text:
        raise MalformedAnswer("empty explanation")
    return text[:500]


def parse_levels(answer: dict, n_tokens: int) -> list[float]:
    """The predicted levels of one window; expected values when logprobs came back."""
    try:
        levels = json.loads(answer["content"])["activations"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise MalformedAnswer(f"simulator answer is not JSON with 'activations': {str(e)[:80]}") from None
    if not isinstance(levels, list) or len(levels) != n_tokens:
        got = len(levels) if isinstance(levels, list) else type(levels).__name__
        raise MalformedAnswer(f"simulator gave {got} levels for {n_tokens} tokens")
    try:
        levels = [min(10.0, max(0.0, float(x))) for x in levels]
    except (TypeError, ValueError):
        raise MalformedAnswer("simulator levels are not numbers") from None
    expected = expected_levels(answer.get("logprobs"))
    if expected is not None and len(expected) == n_tokens:
        return expected
    return levels


def expected_levels(logprobs: list[dict] | None) -> list[float] | None:
    """E[level] for every number token of the answer, from its top alternatives that are levels 0-10."""
    if not logprobs:
        return None
    out = []
    for pos in logprobs:
        if not pos["token"].strip().isdigit():
            continue
        weights = {}
        for alt in pos["top"] or [{"token": pos["token"], "logprob": 0.0}]:
            s = alt["token"].strip()
            if s.isdigit() and 0 <= int(s) <= 10:
                weights[int(s)] = weights.get(int(s), 0.0) + math.exp(alt["logprob"])
        total = sum(weights.values())
        out.append(sum(k * w for k, w in weights.items()) / total if total > 0 else float(pos["token"].strip()))
    return out


def parse_detection(answer: dict, n_windows: int) -> list[bool]:
    try:
        firing = json.loads(answer["content"])["firing"]
        idx = {int(i) for i in firing}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise MalformedAnswer(f"detector answer is not JSON with 'firing': {str(e)[:80]}") from None
    if any(i < 0 or i >= n_windows for i in idx):
        raise MalformedAnswer(f"detector named windows outside 0..{n_windows - 1}")
    return [i in idx for i in range(n_windows)]
