"""Real text loaders: the Python standard library, local files, and `datasets` (the paper's data).

Local files may be `.txt` / `.lua` / `.py` / any text (one document per file), `.jsonl` (one JSON
object per line, text under `text_field`) or `.parquet` (a `text_field` column, read by DuckDB).
Paths may be glob patterns; every error names the path at fault.
"""

from __future__ import annotations

import glob
import json
import random
import sysconfig
from pathlib import Path
from typing import Iterable, Iterator

from featureflow.userfiles import UserFileError, check_readable, check_text, decode, read_text


class CorpusError(UserFileError):
    """A corpus that cannot be read; the message names the file (and line) or the dataset at fault."""


def _take(docs: Iterable[str], chars: int) -> Iterator[str]:
    n = 0
    for d in docs:
        if not d.strip():
            continue
        yield d
        n += len(d)
        if n >= chars:
            return


def stdlib_python(chars: int, seed: int) -> Iterator[str]:
    """The standard library's own `.py` files, in a seeded order (tests and vendored code excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in root.rglob("*.py")
        if not any(part in ("test", "tests", "idle_test", "site-packages", "lib2to3") for part in p.parts)
    )
    if not files:
        raise CorpusError(f"no .py files under the standard library at {root}")
    random.Random(f"python:{seed}").shuffle(files)

    def read() -> Iterator[str]:
        for f in files:
            try:
                text = f.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if len(text) < 100_000:  # skip giant generated tables
                yield text

    return _take(read(), chars)


def expand_paths(patterns: list[str]) -> list[Path]:
    out: list[Path] = []
    for pat in patterns:
        hits = sorted(glob.glob(pat, recursive=True))
        if not hits:
            raise CorpusError(f"path '{pat}' matches no file")
        if len(hits) == 1 and hits[0] == pat and Path(pat).is_dir():
            raise CorpusError(f"{pat}: is a directory, not a corpus file (name its files, e.g. '{pat}/*.txt')")
        out += [Path(h) for h in hits if Path(h).is_file()]
    if not out:
        raise CorpusError(f"paths {patterns} hold no files")
    return out


def _read_jsonl(path: Path, field: str) -> Iterator[str]:
    with check_readable(path, "corpus file").open("rb") as f:
        offset = 0
        for i, raw in enumerate(f, 1):  # bytes: a bad byte is found with its line and offset
            line = decode(raw, path, i, offset)
            offset += len(raw)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}:{i}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise CorpusError(f"{path}:{i}: not a JSON object (a {type(obj).__name__})")
            if field not in obj:
                raise CorpusError(f"{path}:{i}: no field '{field}' (fields: {', '.join(obj)})")
            # a JSON escape such as "\ud800" makes a string no tokenizer or file can hold
            yield check_text(str(obj[field]), f"{path}:{i}: field '{field}'")


def _read_parquet(path: Path, field: str) -> Iterator[str]:
    import duckdb

    check_readable(path, "corpus file")
    con = duckdb.connect()
    try:
        cols = [r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()]
    except duckdb.Error as e:
        raise CorpusError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    if field not in cols:
        raise CorpusError(f"{path}: no column '{field}' (columns: {', '.join(cols)})")
    cur = con.execute(f'SELECT "{field}" FROM read_parquet(?)', [str(path)])
    while rows := cur.fetchmany(1024):
        for (text,) in rows:
            if text is not None:
                yield str(text)


def local_files(patterns: list[str], text_field: str, chars: int) -> Iterator[str]:
    def read() -> Iterator[str]:
        for p in expand_paths(patterns):
            suffix = p.suffix.lower()
            try:
                if suffix == ".jsonl":
                    yield from _read_jsonl(p, text_field)
                elif suffix == ".parquet":
                    yield from _read_parquet(p, text_field)
                else:
                    yield read_text(p, "corpus file")
            except CorpusError:
                raise
            except UserFileError as e:  # the one message of every user file (userfiles), as a corpus fault
                raise CorpusError(str(e)) from None

    return _take(read(), chars)


def hf_dataset(name: str, config: str | None, split: str, text_field: str, chars: int,
               data_dir: str | None = None, data_files: list[str] | None = None) -> Iterator[str]:
    """A `datasets` dataset (e.g. roneneldan/TinyStories, bigcode/the-stack-smol with data_dir).

    Streams, so only what is taken is read. Needs the hub or a local cache / local dataset folder.
    """
    import datasets

    ds = datasets.load_dataset(name, config, split=split, streaming=True, data_dir=data_dir, data_files=data_files)

    def rows() -> Iterator[str]:
        for i, row in enumerate(ds):
            if text_field not in row:
                raise CorpusError(f"dataset '{name}' row {i} has no field '{text_field}' (fields: {', '.join(row)})")
            try:  # its JSON files may hold escapes such as "\ud800" too
                yield check_text(str(row[text_field]), f"dataset '{name}' row {i}: field '{text_field}'")
            except UserFileError as e:
                raise CorpusError(str(e)) from None

    return _take(rows(), chars)
