"""SLERP merges with mergekit's semantics, and the search for the t where two accuracy curves meet.

`slerp_state_dicts` applies mergekit's own `slerp` to every tensor (mergekit 0.1.5 interpolates each
output row of a weight on its own great circle, falls back to linear interpolation when
|cos| > 0.9995, and gives the first input at t = 0). Direction: t = 0 is `parents[0]`, t = 1 is
`parents[1]` (the paper's merge used mergekit with its Lua model as the base, t = 0.58).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from mergekit.merge_methods.slerp import slerp as mergekit_slerp


class MergeError(ValueError):
    pass


def slerp_state_dicts(sd0: dict[str, torch.Tensor], sd1: dict[str, torch.Tensor], t: float) -> dict[str, torch.Tensor]:
    if not 0.0 <= t <= 1.0:
        raise MergeError(f"t must lie in [0, 1], got {t}")
    if set(sd0) != set(sd1):
        only0, only1 = sorted(set(sd0) - set(sd1)), sorted(set(sd1) - set(sd0))
        raise MergeError(f"models hold different tensors: only in first {only0[:5]}, only in second {only1[:5]}")
    tt = torch.tensor(float(t))
    out = {}
    for name, a in sd0.items():
        b = sd1[name]
        if a.shape != b.shape:
            raise MergeError(f"tensor '{name}' has shape {tuple(a.shape)} in the first model and "
                             f"{tuple(b.shape)} in the second: models of different shapes cannot be merged")
        if not a.is_floating_point() or a.ndim == 0:
            out[name] = a.clone() if t < 0.5 else b.clone()
            continue
        out[name] = mergekit_slerp(tt, a, b).to(a.dtype)
    return out


@dataclass
class Crossing:
    t_star: float
    crossed: bool  # False when the curves never meet on [0, 1]: t_star is then the closest approach
    t_grid_interpolated: float | None
    points: list[dict] = field(default_factory=list)  # every evaluation: t, a, b, source (grid / bisection)


def find_crossing(
    evaluate_at: Callable[[float], tuple[float, float]], grid_step: float = 0.05, tolerance: float = 0.005
) -> Crossing:
    """Find t in [0, 1] where a(t) = b(t).

    Evaluate on a grid; take the first bracket where a - b changes sign; bisect it with real
    evaluations until it is narrower than `tolerance`; return the linear interpolation inside the
    final bracket. `evaluate_at(t)` returns (a, b).
    """
    grid = list(np.round(np.arange(0.0, 1.0 + 1e-9, grid_step), 10))
    if grid[-1] < 1.0:
        grid.append(1.0)
    seen: dict[float, tuple[float, float]] = {}
    points: list[dict] = []

    def ev(t: float, source: str) -> float:
        t = float(round(t, 10))
        if t not in seen:
            seen[t] = evaluate_at(t)
            points.append({"t": t, "a": seen[t][0], "b": seen[t][1], "source": source})
        a, b = seen[t]
        return a - b

    diffs = [ev(t, "grid") for t in grid]
    bracket = None
    for i in range(len(grid) - 1):
        if diffs[i] == 0:
            return Crossing(grid[i], True, grid[i], sorted(points, key=lambda p: p["t"]))
        if diffs[i] * diffs[i + 1] < 0:
            bracket = i
            break
    if bracket is None:
        if diffs[-1] == 0:
            return Crossing(grid[-1], True, grid[-1], sorted(points, key=lambda p: p["t"]))
        j = int(np.argmin(np.abs(diffs)))
        return Crossing(grid[j], False, None, sorted(points, key=lambda p: p["t"]))

    lo, hi = grid[bracket], grid[bracket + 1]
    d_lo, d_hi = diffs[bracket], diffs[bracket + 1]
    t_interp = lo + (hi - lo) * d_lo / (d_lo - d_hi)
    while hi - lo > tolerance:
        mid = (lo + hi) / 2
        d_mid = ev(mid, "bisection")
        if d_mid == 0:
            return Crossing(mid, True, t_interp, sorted(points, key=lambda p: p["t"]))
        if d_lo * d_mid < 0:
            hi, d_hi = mid, d_mid
        else:
            lo, d_lo = mid, d_mid
    t_star = lo + (hi - lo) * d_lo / (d_lo - d_hi)
    return Crossing(float(t_star), True, float(t_interp), sorted(points, key=lambda p: p["t"]))
