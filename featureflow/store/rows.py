"""Rows of a DuckDB cursor as dicts: the one helper the store's readers share (flows, summary, export, the
explorer's queries). Free of heavy imports."""

from __future__ import annotations

from typing import Any, Callable


def dicts(cur, clean: Callable[[Any], Any] | None = None) -> list[dict[str, Any]]:
    """The cursor's remaining rows, each as {column: value}; `clean` (if given) maps every value first (the
    explorer's turns NaN and infinities into None)."""
    cols = [d[0] for d in cur.description]
    if clean is None:
        return [dict(zip(cols, row)) for row in cur.fetchall()]
    return [{c: clean(v) for c, v in zip(cols, row)} for row in cur.fetchall()]
