"""The one rule for text the explorer shows: nothing in it may hide, reverse or join other text.

`hidden` says which characters would (bidi controls, zero-width and other format characters, unassigned
and private-use code points, odd spaces, invisible letters, a leading combining mark); tokens show them as
chips (`app.show_ws`), and every other text the pages render (labels, descriptions, case titles, error
messages, table cells, <option>s: the templates' `finalize` hook) and every string of a Plotly figure
(`visible_json`) shows them as the same visible escape, ‹U+202E›, as plain text.
"""

from __future__ import annotations

import json
import unicodedata

# Drawn as nothing (or as plain space) though they are letters or marks: Hangul fillers, braille blank,
# the combining grapheme joiner, Mongolian and Unicode variation selectors.
INVISIBLE = frozenset({0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800, 0x034F, 0x180B, 0x180C, 0x180D, 0x180F,
                       *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)})


def hidden(ch: str, first: bool) -> bool:
    """Whether `ch` would be invisible, move other text (bidi controls) or merge into its neighbour: control
    and format characters (C0/C1, U+200B-U+200F, U+202A-U+202E, U+2066-U+2069, U+FEFF, ...), unassigned,
    private-use and surrogate code points, line/paragraph separators, every space but U+0020, the
    invisible letters above, and a combining mark that starts a token (it would join the previous token)."""
    cat = unicodedata.category(ch)
    return (cat[0] == "C" or cat in ("Zl", "Zp") or (cat == "Zs" and ch != " ") or ord(ch) in INVISIBLE
            or (first and cat in ("Mn", "Me", "Mc")))


def escape_form(ch: str) -> str:
    """How a hidden character reads on a page: ‹U+202E›."""
    return f"‹U+{ord(ch):04X}›"


def visible(text: str) -> str:
    """`text` with every hidden character (see `hidden`) as its visible escape; line breaks and tabs stay
    (prose may hold them). Plain text: the caller escapes it for HTML (Jinja's autoescape does)."""
    if text.isascii() and text.isprintable():  # the common case: nothing to look at
        return text
    return "".join(ch if ch in "\n\t" or not hidden(ch, i == 0) else escape_form(ch) for i, ch in enumerate(text))


def field_value(text: str | None):
    """A form field's value="...": escaped for HTML with hidden characters as character references (&#x202E;),
    so the page holds none raw and the browser still submits the text as typed."""
    from markupsafe import Markup, escape

    if text is None:
        return Markup("")
    return Markup("".join(f"&#x{ord(ch):X};" if hidden(ch, False) and ch not in "\n\t" else str(escape(ch))
                          for ch in text))


def finalize(value):
    """Jinja's `finalize` hook: every `{{ ... }}` that yields a plain string (not Markup, which a filter such
    as `show_ws` already made safe) passes through `visible` before autoescape."""
    if type(value) is str:  # Markup is a str subclass: left alone
        return visible(value)
    return value


def visible_strings(obj):
    """`obj` (a Plotly figure: dicts, lists, strings, numbers) with `visible` applied to every string."""
    if isinstance(obj, str):
        return visible(obj)
    if isinstance(obj, dict):
        return {visible_strings(k): visible_strings(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [visible_strings(v) for v in obj]
    return obj


def visible_json(obj, **kwargs) -> str:
    """json.dumps of `obj` with every string visible: the templates' `tojson` (figures drawn by Plotly, which
    would draw a U+202E in a label as the reversal it is)."""
    return json.dumps(visible_strings(obj), **kwargs)
