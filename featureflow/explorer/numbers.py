"""The one home of how the explorer writes a number: pages (Jinja filters), Plotly labels and hovers
(figures.py) all call these, so one figure reads the same everywhere it appears.

- `pct`: a share in [0, 1] as a percentage, one decimal ("15.6%").
- `num`: any other real (activations, LLRs, losses), three decimals by default; None / NaN as "–".
- `corr`: a correlation or cosine, never a percentage: three decimals ("0.982").
- `thr`: a threshold, two decimals ("0.80").
- `quantile`: an activation-quantile example group ("q0", "q1", ...) as its 1-based number (1 = lowest).
"""

from __future__ import annotations

import math

MISSING = "–"


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def pct(x, digits: int = 1) -> str:
    return MISSING if _missing(x) else f"{100 * x:.{digits}f}%"


def num(x, digits: int = 3) -> str:
    if _missing(x):
        return MISSING
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def corr(x) -> str:
    return MISSING if _missing(x) else f"{x:.3f}"


def thr(x) -> str:
    return MISSING if _missing(x) else f"{x:.2f}"


def quantile(kind: str) -> int:
    """'q0' -> 1: quantile groups are numbered from 1 (the lowest activations) on every page."""
    return int(kind[1:]) + 1
