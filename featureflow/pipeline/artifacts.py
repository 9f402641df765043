"""Content-addressed, atomically written artefacts.

Every stage writes into `data/<run>/<stage>/<name>-<key>/`, where `key` hashes the stage's config
section and the keys of its inputs. A folder is built under a temporary name and renamed into place
only when complete (a `DONE` marker is the last file written), so a killed run leaves no half
artefact behind and a rerun skips every folder that is already done.

Temporary names end in `.tmp-<pid>` (optionally `-<thread>`, or `.wal` for DuckDB's log): `sweep_temps`
removes those whose process is gone, never a live run's. Under `planning()` nothing is built: `build_dir`
only records the folder a stage would use, which is how `featureflow gc` learns the live artefacts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import BaseModel

DONE = "DONE"
TEMP = re.compile(r"^\..+\.tmp-(\d+)(?:-\d+)?(?:\.wal)?$")  # .<name>.tmp-<pid>[-<thread>][.wal]
ARTEFACT = re.compile(r"^.+-[0-9a-f]{12}$")  # <name>-<key>
_planned: ContextVar[list[Path] | None] = ContextVar("planned", default=None)
_observer: ContextVar[Callable[[Path], None] | None] = ContextVar("observer", default=None)


class PipelineError(RuntimeError):
    """A stage cannot go on for a reason the user must fix (the message says which); the CLI prints it
    without a traceback and exits 1."""


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (a process of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_temps(folder: Path) -> list[Path]:
    """Temp files / folders directly in `folder` left by processes that no longer run."""
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.iterdir()):
        m = TEMP.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            out.append(p)
    return out


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_temps(folder: Path, recursive: bool = False) -> list[Path]:
    """Remove the temp debris of dead processes in `folder` (and, with `recursive`, in its sub-folders,
    without entering finished artefacts). Returns what was removed."""
    folder = Path(folder)
    gone = dead_temps(folder)
    for p in gone:
        remove(p)
    if recursive and folder.is_dir():
        for sub in sorted(folder.iterdir()):
            if sub.is_dir() and not TEMP.match(sub.name) and not is_done(sub):
                gone += sweep_temps(sub, recursive=True)
    return gone


def size_of(path: Path) -> int:
    """Bytes in a file or folder (symlinks not followed)."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir() or p.is_symlink())


@contextlib.contextmanager
def observing(callback: Callable[[Path], None]) -> Iterator[None]:
    """Within this block every `build_dir` first calls `callback(path)` (built or not, planned or not): how the
    task plan (`pipeline/plan.py`) learns which stage call owns which artefact, and how an executor's worker
    refuses to build an artefact its task does not own."""
    token = _observer.set(callback)
    try:
        yield
    finally:
        _observer.reset(token)


@contextlib.contextmanager
def planning() -> Iterator[list[Path]]:
    """Within this block `build_dir` builds nothing: it appends the folder it would use to the list
    yielded and returns that folder."""
    paths: list[Path] = []
    token = _planned.set(paths)
    try:
        yield paths
    finally:
        _planned.reset(token)


def stale_artefacts(root: Path, live: set[Path]) -> list[Path]:
    """Artefact folders `<stage>/<name>-<key>` under `root` that are not in `live`, with the temp debris of
    dead processes. Other entries (the LLM cache, files) are never listed."""
    live = {Path(p).resolve() for p in live}
    out = []
    for stage in sorted(p for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []:
        if not any(ARTEFACT.match(p.name) or TEMP.match(p.name) for p in stage.iterdir()):
            continue  # not a stage folder (e.g. llm_cache)
        out += dead_temps(stage)
        out += [p for p in sorted(stage.iterdir()) if p.is_dir() and ARTEFACT.match(p.name) and p.resolve() not in live]
    return out


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

    Skipped when `path` is already complete. Temp folders of dead processes beside it are removed first.
    """
    path = Path(path)
    observer = _observer.get()
    if observer is not None:
        observer(path)
    planned = _planned.get()
    if planned is not None:
        planned.append(path)
        return path
    if is_done(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    sweep_temps(path.parent)  # debris of killed runs (of this folder or any other); a live run's is kept
    shutil.rmtree(tmp, ignore_errors=True)
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
