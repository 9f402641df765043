"""Content-addressed, atomically written artefacts.

Every stage writes into `data/<run>/<stage>/<name>-<key>/`, where `key` hashes the stage's config
section and the keys of its inputs. A folder is built under a temporary name and renamed into place
only when complete (a `DONE` marker is the last file written), so a killed run leaves no half
artefact behind and a rerun skips every folder that is already done.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

DONE = "DONE"


def _jsonable(x: Any) -> Any:
    # None-valued fields are left out, so adding an optional config field keeps every existing key
    if isinstance(x, BaseModel):
        return x.model_dump(mode="json", exclude_none=True)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in sorted(x.items())}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def key_of(*parts: Any) -> str:
    """A short stable hash of config sections and upstream keys."""
    blob = json.dumps(_jsonable(list(parts)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def is_done(path: Path) -> bool:
    return (path / DONE).exists()


def build_dir(path: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp)` into a temporary sibling folder, then rename it to `path`.

    Skipped when `path` is already complete. A stale temp folder from a killed run is removed first.
    """
    path = Path(path)
    if is_done(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    t0 = time.time()
    try:
        build(tmp)
        (tmp / DONE).write_text(json.dumps({"seconds": round(time.time() - t0, 3), "finished": time.time()}))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():  # an incomplete folder left by hand or an old version: replace it
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file in the same folder, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_jsonable(obj), indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
