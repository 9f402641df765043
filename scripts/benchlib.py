"""What the benchmarks share: loading an older copy of a module to run against the current one in the same run."""

from __future__ import annotations

import importlib.util
import sys


def load_baseline(path: str, name: str):
    """The module in the file `path` (e.g. `git show REV:featureflow/pipeline/sae.py > /tmp/sae_old.py`), imported as
    `featureflow.pipeline.<name>` so that its relative names resolve as the current module's do."""
    spec = importlib.util.spec_from_file_location(f"featureflow.pipeline.{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod
