"""Progress a person can read, on a terminal and in a log file.

On a terminal (stderr is a TTY) `progress` is a tqdm bar. Anywhere else (a log file, CI, a pipe) there are no
carriage-return frames: one log line when the work starts, a progress line at most every `every` seconds
(count, total, share, rate, the bar's postfix), and one line when it ends. `quiet_other_bars()` turns off the
bars third-party libraries draw (tqdm's own environment switch, Hugging Face hub and datasets), for the same
reason.

Free of heavy imports: tqdm is imported only on a terminal (it is part of the pipeline extra; the explorer's
commands run without it).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator

log = logging.getLogger("featureflow")
EVERY = 30.0  # seconds between progress lines off a terminal


def on_terminal(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def quiet_other_bars() -> None:
    """Off a terminal, switch off the progress bars other libraries draw (set before they import tqdm)."""
    if not on_terminal():
        for var in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
            os.environ.setdefault(var, "1")


def _count(n: float) -> str:
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.1f}"


class LogProgress:
    """tqdm's interface as far as featureflow uses it (iterate, update, set_postfix, close, `with`), writing
    log lines instead of a bar."""

    def __init__(self, iterable: Iterable | None = None, total: float | None = None, desc: str | None = None,
                 unit: str = "it", disable: bool = False, every: float = EVERY, clock=time.monotonic, **_: Any):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc or "progress", unit
        self.disable, self.every, self.clock = disable, every, clock
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.start = self.last = clock()
        self.closed = False
        if not disable:
            log.info("%s: started%s", self.desc, f" ({_count(total)} {unit})" if total else "")

    def line(self, verb: str) -> str:
        elapsed = self.clock() - self.start
        done = _count(self.n) + (f"/{_count(self.total)}" if self.total else "") + f" {self.unit}"
        if self.total:
            done += f" ({100 * self.n / self.total:.0f}%)"
        rate = f", {self.n / elapsed:,.1f} {self.unit}/s" if elapsed > 0 and self.n else ""
        post = "".join(f", {k} {v}" for k, v in self.postfix.items())
        return f"{self.desc}: {verb} {done} in {elapsed:.1f} s{rate}{post}"

    def update(self, n: float = 1) -> None:
        self.n += n
        now = self.clock()
        if not self.disable and now - self.last >= self.every:
            self.last = now
            log.info("%s", self.line("at"))

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kw: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **kw}

    def close(self) -> None:
        if not self.closed and not self.disable:
            log.info("%s", self.line("done"))
        self.closed = True

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable | None = None, **kw: Any):
    """A tqdm bar on a terminal, else a `LogProgress` (log lines). Takes tqdm's arguments."""
    if on_terminal():
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            kw.pop("every", None)
            return tqdm(iterable, **kw)
    return LogProgress(iterable, **kw)
