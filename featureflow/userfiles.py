"""Reading files a user hands in (configs, corpora): one error path for all of them.

Every fault is a `UserFileError` (a ValueError, so the CLI prints it as one line and exits 2) whose message
starts with the file and, where there is one, the line: `path: is a directory`, `path: cannot be read
(Permission denied)`, `path:3: not UTF-8: byte 0xff at byte offset 41 (line 3, column 7)`,
`path:5: field 'text' holds a lone surrogate U+D800 at character 12`.
"""

from __future__ import annotations

from pathlib import Path


class UserFileError(ValueError):
    """A user-supplied file that cannot be used; the message names the file (and line) and what is wrong."""


def check_readable(path: str | Path, what: str = "file") -> Path:
    """`path` when it is a file this process can open, or UserFileError when it is missing, a directory or
    unreadable."""
    path = Path(path)
    if not path.exists():
        raise UserFileError(f"{path}: does not exist")
    if path.is_dir():
        raise UserFileError(f"{path}: is a directory, not a {what}")
    try:
        path.open("rb").close()
    except OSError as e:
        raise UserFileError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    return path


def read_bytes(path: str | Path, what: str = "file") -> bytes:
    """The bytes of `path` (faults as in `check_readable`)."""
    path = check_readable(path, what)
    try:
        return path.read_bytes()
    except OSError as e:
        raise UserFileError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None


def decode(data: bytes, path: str | Path, first_line: int = 1, offset: int = 0) -> str:
    """`data` (a file's bytes from byte `offset`, line `first_line` on) as UTF-8, or UserFileError naming the
    line, column and byte offset of the first invalid byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise UserFileError(f"{path}:{line}: not UTF-8: byte 0x{data[e.start]:02x} at byte offset {offset + e.start} "
                            f"(line {line}, column {column})") from None


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of `path` (see `read_bytes` and `decode`)."""
    return decode(read_bytes(path, what), path)


def check_text(text: str, where: str) -> str:
    """`text` when it is valid Unicode (no lone surrogate, as JSON and YAML escapes such as \\ud800 can make);
    else UserFileError naming `where` and the character."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserFileError(f"{where} holds a lone surrogate U+{ord(text[e.start]):04X} at character {e.start} "
                            "(not valid Unicode text)") from None
    return text
