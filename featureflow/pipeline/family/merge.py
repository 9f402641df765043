"""Merges through mergekit's own merge pipeline, and the search for the t where two accuracy curves meet.

Every merge here is a `mergekit.merge.run_merge(MergeConfiguration, out_path, MergeOptions)` call: the
function `mergekit-yaml` runs on its YAML file. A `MergeRecipe` is one merge with t left open; at each t
it writes the YAML text a user could give `mergekit-yaml`, and runs that same configuration in-process.
mergekit's pipeline merges each tensor as one group, so SLERP has one angle per WHOLE tensor (mergekit's
`slerp` kernel, called directly on a 2-D weight, would instead treat its rows as a batch).

Methods (t = 0 is `parents[0]`'s side, t = 1 is `parents[1]`'s) are registered objects, one per file in
`featureflow/merges/`, each mapped onto one of mergekit's own merge methods:
- `slerp`: `base_model` = parents[0], `parameters.t` = t; t = 0 gives parents[0] exactly, t = 1 parents[1].
- `linear`: weights (1 - t, t).
- `ties`: task vectors of both parents against `base`, weights (1 - t, t), `density` kept per vector.

Only local folders are merged, with the Hugging Face hub switched off while mergekit runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from scipy.optimize import bisect

from featureflow import merges
from featureflow.pipeline.family.load import weights_folder


class MergeError(ValueError):
    pass


# ------------------------------------------------------------------------------------ the merge
def _tensor_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a model folder's tensors, from the safetensors headers (no tensor is read)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise MergeError(f"'{folder}' holds no .safetensors weights: mergekit merges safetensors checkpoints")
    shapes = {}
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for k in fh.keys():
                shapes[k] = tuple(fh.get_slice(k).get_shape())
    return shapes


def check_mergeable(models: dict[str, Path]) -> None:
    """Raise MergeError unless every model is a local folder with the same tensors of the same shapes.

    `models` maps a label (a member name) to its folder; messages name the labels."""
    shapes = {}
    for label, folder in models.items():
        folder = Path(folder)
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise MergeError(f"model '{label}': '{folder}' is not a local model folder (no config.json); "
                             "merges run offline on local folders only")
        shapes[label] = _tensor_shapes(folder)
    (l0, s0), *rest = shapes.items()
    for label, s in rest:
        if set(s) != set(s0):
            only0, only1 = sorted(set(s0) - set(s)), sorted(set(s) - set(s0))
            raise MergeError(f"models '{l0}' and '{label}' hold different tensors: only in '{l0}' {only0[:5]}, "
                             f"only in '{label}' {only1[:5]}")
        for k in s0:
            if s[k] != s0[k]:
                raise MergeError(f"models '{l0}' and '{label}' have different shapes (tensor '{k}': {s0[k]} vs "
                                 f"{s[k]}): models of different shapes cannot be merged")


def _ref(path: Path) -> str | dict:
    """A model reference in mergekit's YAML: the plain path, unless '+' / '@' would be parsed as LoRA / revision."""
    s = str(path)
    return {"model": {"path": s}} if ("+" in s or "@" in s) else s


@contextlib.contextmanager
def _hub_offline():
    """HF_HUB_OFFLINE=1 for the process's hub client while mergekit runs (it reads the flag at call time)."""
    import huggingface_hub.constants as hub

    old_env, old_flag = os.environ.get("HF_HUB_OFFLINE"), hub.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], hub.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = old_flag
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def _which(methods: list[str]) -> str:
    """"method 'ties' takes" / "methods 'a', 'b' take" / "no method takes"."""
    if not methods:
        return "no method takes"
    quoted = ", ".join(f"'{m}'" for m in methods)
    return f"method {quoted} takes" if len(methods) == 1 else f"methods {quoted} take"


@dataclass(frozen=True)
class MergeRecipe:
    """One merge of two local model folders, with t left open. `labels` only name things in messages."""

    method: str  # a registered merge method's name (`merges.names()`)
    parents: tuple[Path, Path]
    base: Path | None = None  # methods that take a base (ties) only
    density: float | None = None  # methods that take a density (ties) only (default: the method's, 0.5)
    labels: tuple[str, ...] = ()  # names of parents[0], parents[1] (and base)

    def __post_init__(self):
        try:
            spec = merges.get(self.method)
            merges.check_mergekit(spec)
        except ValueError as e:
            raise MergeError(str(e)) from None
        if len(self.parents) != 2:
            raise MergeError(f"a merge takes exactly two parents, got {len(self.parents)}")
        # a `copy: false` member's weights live where its weights_at.json says
        object.__setattr__(self, "parents", tuple(weights_folder(p).resolve() for p in self.parents))
        if spec.takes_base:
            if self.base is None:
                raise MergeError(f"method '{self.method}' needs a base model: the parents {self._names()[:2]} share "
                                 "no common ancestor; name one with `base:`")
            object.__setattr__(self, "base", weights_folder(self.base).resolve())
        elif self.base is not None:
            raise MergeError(f"only {_which(merges.with_base())} a base and a density (method is '{self.method}')")
        if spec.takes_density:
            if self.density is None:
                object.__setattr__(self, "density", spec.default_density)
            if not 0.0 < float(self.density) <= 1.0:
                raise MergeError(f"density must lie in (0, 1], got {self.density}")
        elif self.density is not None:
            takes = [n for n in merges.names() if merges.get(n).takes_density]
            raise MergeError(f"only {_which(takes)} a base and a density (method is '{self.method}')")
        names = self._names()
        check_mergeable(dict(zip(names, self.models())))

    def _names(self) -> list[str]:
        paths = self.models()
        return [self.labels[i] if i < len(self.labels) else str(p) for i, p in enumerate(paths)]

    def models(self) -> list[Path]:
        return list(self.parents) + ([self.base] if self.base is not None else [])

    def config(self, t: float) -> dict:
        """The mergekit configuration (what `mergekit-yaml` reads) at this t."""
        t = float(t)
        if not 0.0 <= t <= 1.0:
            raise MergeError(f"t must lie in [0, 1], got {t}")
        p0, p1 = (_ref(p) for p in self.parents)
        base = _ref(self.base) if self.base is not None else None
        return merges.get(self.method).mergekit_config(t, p0, p1, base=base, density=self.density)

    @property
    def label(self) -> str:
        """The method's label: 'SLERP', 'linear merge', ..."""
        return merges.get(self.method).label

    def yaml(self, t: float) -> str:
        return yaml.safe_dump(self.config(t), sort_keys=False)

    def write(self, t: float, out: Path, model_card: bool = True) -> str:
        """Run mergekit's pipeline (`run_merge`, what `mergekit-yaml` runs) at t into `out`; return the YAML."""
        text = self.yaml(t)
        run_mergekit(text, out, model_card=model_card)
        return text

    def state_dict(self, t: float) -> dict[str, torch.Tensor]:
        """The merged tensors at t: mergekit's pipeline run into a scratch folder and read back."""
        from safetensors.torch import load_file

        with tempfile.TemporaryDirectory(prefix="ff-merge-") as tmp:
            self.write(t, Path(tmp), model_card=False)
            sd = {}
            for f in sorted(Path(tmp).glob("*.safetensors")):
                sd.update(load_file(str(f)))
        return sd


@contextlib.contextmanager
def _quiet_root_logger():
    """mergekit logs five INFO lines per merge on the root logger (a sweep is dozens of merges): muted."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def run_mergekit(config_text: str, out: Path, model_card: bool = True) -> None:
    """`mergekit-yaml CONFIG OUT --no-copy-tokenizer`, in-process: mergekit.merge.run_merge on the parsed YAML.

    Offline: every model must be a local folder, and the hub client is switched off while it runs.
    With `model_card`, mergekit also writes README.md and mergekit_config.yml (this YAML) into `out`."""
    from mergekit.config import MergeConfiguration
    from mergekit.io.tasks import LoaderCache
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    merge_config = MergeConfiguration.model_validate(yaml.safe_load(config_text))
    refs = merge_config.referenced_models()
    for r in refs:
        if r.lora is not None or not Path(r.model.path).is_dir():
            raise MergeError(f"'{r}' is not a local model folder: merges run offline on local folders only")
    options = MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=model_card)
    Path(out).mkdir(parents=True, exist_ok=True)
    try:
        with _hub_offline(), _quiet_root_logger():
            run_merge(merge_config, str(out), options=options, config_source=config_text)
    except MergeError:
        raise
    except Exception as e:  # mergekit's own message, under the project's error type
        raise MergeError(f"mergekit could not merge ({type(e).__name__}): {e}") from e
    finally:
        # mergekit caches one open loader per model path for the whole process; a folder rebuilt at the
        # same path later must not be read through a stale one
        cache = LoaderCache()
        for r in refs:
            cache.loaders.pop(r, None)


# ------------------------------------------------------------------------------------ the sweep
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
    evaluations (`scipy.optimize.bisect`) until it is narrower than `tolerance`; return the linear
    interpolation inside the final bracket. `evaluate_at(t)` returns (a, b).
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
    if hi - lo > tolerance:
        # scipy's bisection on the bracket, every step a real evaluation (recorded by `ev`), until the bracket is
        # narrower than `tolerance`; it returns its last midpoint, one end of the final bracket
        end = float(round(bisect(lambda t: ev(t, "bisection"), lo, hi, xtol=tolerance), 10))
        if seen[end][0] == seen[end][1]:
            return Crossing(end, True, t_interp, sorted(points, key=lambda p: p["t"]))
        inside = sorted(t for t in seen if lo <= t <= hi)  # no evaluation lies inside the final bracket
        i = inside.index(end)
        d_end = ev(end, "bisection")
        other = next(t for t in (inside[i - 1] if i else None, inside[i + 1] if i + 1 < len(inside) else None)
                     if t is not None and ev(t, "bisection") * d_end < 0)
        (lo, d_lo), (hi, d_hi) = sorted([(end, d_end), (other, ev(other, "bisection"))])
    t_star = lo + (hi - lo) * d_lo / (d_lo - d_hi)
    return Crossing(float(t_star), True, float(t_interp), sorted(points, key=lambda p: p["t"]))
