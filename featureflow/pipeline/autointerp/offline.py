"""An offline explainer and simulator for runs with no LLM: built from the data, and labelled as such.

Explainer: from the explain records only, the tokens that carry most of the activation, the tokens just
before the peak, and the token classes it fires on (punctuation, indentation / newline, keyword,
identifier, capitalised word, digits). Simulator: applies that structured explanation to held-out
windows, token by token, predicting a 0-10 level. Both are deterministic; the scores use the same
statistics as the LLM path (pooled Pearson r, detection balanced accuracy).
"""

from __future__ import annotations

import keyword
from collections import Counter
from functools import lru_cache

from featureflow.pipeline.autointerp.records import Record

EXPLAINER = "offline-token-stats-v2"  # v2: a quote or backslash in a quoted token is escaped
SIMULATOR = "offline-token-sim-v1"

KEYWORDS = set(keyword.kwlist) | {
    "local", "end", "then", "elseif", "function", "nil", "repeat", "until", "do", "not", "and", "or", "self", "print",
}


@lru_cache(maxsize=1 << 16)
def token_class(text: str) -> str:
    s = text.strip()
    if not s:
        return "newline" if "\n" in text else "indentation"
    if s.isdigit():
        return "digits"
    if s in KEYWORDS:
        return "keyword"
    if not any(c.isalnum() for c in s):
        return "punctuation"
    if s[0].isupper():
        return "capitalised word"
    return "identifier or word"


def _shares(weights: Counter) -> dict[str, float]:
    total = sum(weights.values())
    return {k: v / total for k, v in weights.most_common()} if total > 0 else {}


def explain(records: list[Record], vocab: list[str]) -> tuple[str, dict]:
    """(text, structured) explanation from the explain records."""
    tok_w, prev_w, cls_w = Counter(), Counter(), Counter()
    for r in records:
        texts = [vocab[i] for i in r.token_ids]
        for i, a in enumerate(r.acts):
            if a > 0:
                tok_w[texts[i]] += a
                cls_w[token_class(texts[i])] += a
        peak = max(range(len(r.acts)), key=lambda i: r.acts[i])
        if r.acts[peak] > 0 and peak > 0:
            prev_w[texts[peak - 1]] += 1
    tokens = dict(list(_shares(tok_w).items())[:5])
    prev = dict(list(_shares(prev_w).items())[:3])
    classes = dict(list(_shares(cls_w).items())[:3])
    if not tokens:
        return "never fires", {"tokens": {}, "prev": {}, "classes": {}}
    parts = [", ".join(f"{_q(t)} ({100 * s:.0f}%)" for t, s in list(tokens.items())[:3])]
    text = f"fires on {parts[0]}"
    if prev:
        p, ps = next(iter(prev.items()))
        if ps >= 0.25:
            text += f"; the peak often follows {_q(p)}"
    c, cs = next(iter(classes.items()))
    text += f"; mostly {c} tokens ({100 * cs:.0f}% of activation)"
    return text, {"tokens": tokens, "prev": prev, "classes": classes}


def _q(t: str) -> str:
    """A token in double quotes as the explainers write it: a quote or backslash inside escaped (\\" and \\\\, so a
    reader, and the explorer's `show_ws`, can tell where it ends), newline and tab as \\n and \\t."""
    return '"' + t.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def simulate(structured: dict, record: Record, vocab: list[str]) -> list[float]:
    """Predicted 0-10 level per token of one record, from the structured explanation alone."""
    tokens, prev, classes = structured["tokens"], structured["prev"], structured["classes"]
    if not tokens:
        return [0.0] * len(record.token_ids)
    top_share = max(tokens.values())
    top_class, class_share = next(iter(classes.items()))
    out = []
    texts = [vocab[i] for i in record.token_ids]
    for i, t in enumerate(texts):
        if t in tokens:
            level = 4 + 6 * tokens[t] / top_share
            if i > 0 and texts[i - 1] in prev:
                level = min(10.0, level + 1)
        elif token_class(t) == top_class:
            level = 3 * class_share
        else:
            level = 0.0
        out.append(level)
    return out


def detect(structured: dict, record: Record, vocab: list[str], levels: list[float] | None = None) -> bool:
    """Whether the window fires at all, by the simulator's peak (`levels`: its simulation, if already made)."""
    return max(simulate(structured, record, vocab) if levels is None else levels, default=0.0) >= 4
