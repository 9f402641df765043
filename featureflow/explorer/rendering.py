"""How the explorer's pages are rendered: the Jinja2 environment of an app (its filters, and its globals read
from the store), the HTML of tokens (`show_ws`, `chips`, `heat`: nothing hidden in a token, each shaded by its
activation) and the CSV of a page's main list (`csv_text`).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import unicodedata
from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from featureflow.explorer import figures, numbers
from featureflow.explorer.queries import Store
from featureflow.explorer.text import escape_form, field_value, finalize, hidden, visible_json
from featureflow.modes import mode_label

TEMPLATES = Path(__file__).resolve().parent / "templates"


def templates_for(store: Store) -> Jinja2Templates:
    """The Jinja2 templates of one app over `store`: the number and text filters, and the store's run, models and
    matching modes as globals."""
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.auto_reload = False  # templates are part of the code: no stat() per render
    # One text rule for the pages (featureflow/explorer/text.py): every string a template prints and every string
    # of a figure shows its hidden characters (bidi controls, zero-width ...) as escapes; set before any
    # template compiles (finalize is compiled in).
    templates.env.finalize = finalize
    templates.env.policies["json.dumps_function"] = visible_json
    templates.env.filters.update(show_ws=show_ws, show_text=functools.partial(show_ws, prose=True), heat=heat,
                                 chips=chips, fmt=lambda x, d=3: numbers.num(x, d),
                                 pct=lambda x, d=1: numbers.pct(x, d), corr=lambda x: numbers.corr(x),
                                 thr=lambda x: numbers.thr(x), quantile=lambda k: numbers.quantile(k),
                                 field_value=field_value)
    templates.env.globals.update(run=store.run, models=store.models,
                                 models_by_name={m["model"]: m for m in store.models}, modes=store.modes,
                                 mode_labels={m: mode_label(m) for m in store.modes})
    return templates


def render(request: Request, name: str, context: dict, status_code: int = 200):
    """The template `name` rendered with `context` by the templates of the request's app."""
    return request.app.state.templates.TemplateResponse(request, name, context, status_code=status_code)


_WS = {" ": ("ws-space", "·"), "\t": ("ws-tab", "→"), "\n": ("ws-nl", "↵")}
_BYTE = re.compile(r"<0x[0-9A-F]{2}>")  # how `token_strings` writes a byte that is not a whole character


def _escape_chip(ch: str) -> str:
    name = unicodedata.name(ch, "") or ("control character" if unicodedata.category(ch) == "Cc" else "")
    return f'<span class="ws-esc" title="{escape(name.lower())}">{escape_form(ch)}</span>'


@functools.lru_cache(maxsize=1 << 16)  # a pure function of a vocabulary's few thousand token texts
def show_ws(text: str | None, prose: bool = False) -> Markup:
    """Escape text for HTML with nothing hidden in it.

    Tokens (default): · space, → tab, ↵ newline (no line break: the `tokens` macro breaks after a token that holds one),
    and every hidden character (see `hidden`) as a visible escape such as ‹U+202E›, so no token can
    reverse, hide or join its neighbours; an empty token reads ‹empty›. Prose (`prose=True`, explanations):
    the same escapes, ↵ and →, but spaces stay spaces except inside double quotes (the explainers quote
    tokens: "·the") and in runs of two or more, which HTML would otherwise collapse. None renders as nothing."""
    if text is None:
        return Markup("")
    if text == "" and not prose:
        return Markup('<span class="ws-esc" title="empty token">‹empty›</span>')
    if "<0x" in text and _BYTE.search(text):  # bytes of a character split across tokens (see token_strings)
        parts, pos = [], 0
        for m in _BYTE.finditer(text):
            if m.start() > pos:
                parts.append(show_ws(text[pos:m.start()], prose))
            parts.append(f'<span class="ws-byte" title="byte {m.group(0)[1:-1]}: part of a UTF-8 character that '
                         f'spans several tokens">{escape(m.group(0))}</span>')
            pos = m.end()
        return Markup("".join(parts) + (show_ws(text[pos:], prose) if pos < len(text) else ""))
    out, quoted, backslash = [], False, False
    for i, ch in enumerate(text):
        if ch == '"' and not backslash:  # \" inside a quoted token neither opens nor closes
            quoted = not quoted
        backslash = ch == "\\" and not backslash
        if ch == " " and prose and not quoted and text[i - 1:i] != " " and text[i + 1:i + 2] != " ":
            out.append(" ")
        elif ch in _WS:
            cls, sym = _WS[ch]
            out.append(f'<span class="{cls}">{sym}</span>')
        elif hidden(ch, i == 0):
            out.append(_escape_chip(ch))
        else:
            out.append(str(escape(ch)))
    return Markup("".join(out))


HEAT, COMPARE_B = figures.HEAT_A, figures.HEAT_B  # orange: a feature's activations; /compare draws B in blue


def heat(act: float, top: float, rgb: str = HEAT) -> str:
    """Background colour for a token: a darker `rgb` = higher activation relative to `top`."""
    if act <= 0 or top <= 0:
        return "transparent"
    return f"rgba({rgb}, {min(1.0, 0.12 + 0.88 * act / top):.3f})"


def chips(toks: list[dict], top: float, key: str = "act", rgb: str | None = None, breaks: bool = True) -> Markup:
    """A context as one chip per token, shaded by `key` relative to `top` in `rgb` (default: orange), the value
    and token id on hover; a token with an `index` (its sample token index) carries it as data-i. After a
    token that holds a newline a line break (after its chip, which never breaks inside), unless
    `breaks=False` (rows of one window stacked for comparison stay one line each); elsewhere a <wbr>, so a
    long window wraps between tokens. The `tokens` macro's HTML, made here: a Jinja loop took ~5 ms for a
    feature's 1,280 example tokens."""
    out = ['<div class="ctx">']
    for t in toks:
        index = f' data-i="{int(t["index"])}"' if "index" in t else ""
        colour = heat(t[key], top, rgb) if rgb else heat(t[key], top)
        attrs = f'{index} style="background: {colour}" title="{numbers.num(float(t[key]), 4)} · id {int(t["id"])}"'
        center = " center" if t.get("center") else ""
        text = t["text"]
        if not (breaks and "\n" in text):
            out.append(f'<span class="tok{center}"{attrs}>{show_ws(text)}</span><wbr>')
            continue
        # a token that holds a newline: the line breaks after its ↵, and what follows the newline (a code
        # line's indentation) starts the next line, drawn as a continuation of the same chip (same value,
        # id and colour; class "cont")
        lines = text.split("\n")
        for i, line in enumerate(lines):
            if i == len(lines) - 1 and not line:
                break
            body = (show_ws(line) if line else "") + (show_ws("\n") if i < len(lines) - 1 else "")
            out.append(f'<span class="tok{center}{" cont" if i else ""}"{attrs}>{body}</span>')
            out.append("<br>" if i < len(lines) - 1 else "<wbr>")
    out.append("</div>")
    return Markup("".join(out))


def csv_text(rows: list[dict]) -> str:
    """Rows as CSV: one column per key (in first-seen order), a nested value (list, dict) as its JSON,
    None as an empty cell."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else json.dumps(r[c], default=str) if isinstance(r.get(c), (list, dict))
                    else r[c] for c in cols])
    return buf.getvalue()
