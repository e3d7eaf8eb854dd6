"""Progress of long loops: a tqdm bar on a terminal, log lines everywhere else.

Why not plain tqdm: with ``disable=None`` tqdm hides its bar when stderr is not a terminal, so a
run whose output goes to a log file (``nohup``, CI, a cluster job, ``| tee``) said nothing for
minutes. :class:`Progress` keeps tqdm's surface (``update(n)``, ``set_postfix``, a context
manager) and picks how to report once, at the start:

* ``progress=None`` (auto): a bar when ``stream`` (default ``sys.stderr``) is a terminal, else
  log lines through :mod:`logging` — every ``log_every`` items and/or every ``log_seconds``
  seconds, whichever comes first, plus a final line with the count, time and rate;
* ``progress=True``: always the bar;
* ``progress=False``: nothing.

Log lines go to the caller's logger at INFO, so the CLI (which configures the root logger at
INFO on stderr) shows them and a library caller decides with its own logging configuration. An
update costs a counter increment and one clock read; a line is formatted only when one is due.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal, TextIO, TypeVar

T = TypeVar("T")
Mode = Literal["bar", "log", "off"]
_DEFAULT_LOG = logging.getLogger("mixagent.progress")


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (closed or odd streams count as not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def resolve_mode(progress: bool | None, stream: Any = None) -> Mode:
    """``"bar"``, ``"log"`` or ``"off"`` for a ``progress`` setting (None: auto-detect)."""
    if progress is False:
        return "off"
    if progress is True:
        return "bar"
    return "bar" if is_terminal(sys.stderr if stream is None else stream) else "log"


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Progress:
    """A progress reporter with tqdm's surface; see the module docstring for the modes.

    Args:
        total: items expected (None: unknown; no percentage or ETA then).
        desc: what the loop does ("evaluating", "pre-training base").
        unit: what one item is ("episode", "step").
        progress: None auto-detects, True forces the bar, False silences.
        logger: where log lines go (default ``mixagent.progress``).
        log_every: in log mode, a line at least every this many items (None: by time only).
        log_seconds: in log mode, a line when this many seconds passed since the last one
            (None: by count only).
        stream: the terminal to draw on and to test with ``isatty`` (default ``sys.stderr``).
    """

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", *,
                 progress: bool | None = None, logger: logging.Logger | None = None,
                 log_every: int | None = None, log_seconds: float | None = 30.0,
                 stream: TextIO | None = None):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = 0
        self.log = logger or _DEFAULT_LOG
        self.log_every = log_every if log_every and log_every > 0 else None
        self.log_seconds = log_seconds if log_seconds and log_seconds > 0 else None
        self.mode: Mode = resolve_mode(progress, stream)
        self.postfix: dict[str, Any] = {}
        self.note: str | None = None
        self._t0 = time.perf_counter()
        self._last_n = 0
        self._last_t = self._t0
        self._closed = False
        self._bar: Any = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=stream or sys.stderr,
                             disable=False, dynamic_ncols=True)

    # -- tqdm's surface ------------------------------------------------------------------------------
    def update(self, n: int = 1, note: str | None = None) -> None:
        """``n`` more items done; ``note`` says what the last one was (in the log line, or after
        the bar)."""
        self.n += n
        if note is not None:
            self.note = note
        if self.mode == "bar":
            if note is not None:
                self._bar.set_postfix_str(self._postfix_text(), refresh=False)
            self._bar.update(n)
        elif self.mode == "log":
            now = time.perf_counter()
            if self.total is not None and self.n >= self.total:
                return  # the final line (close) reports the last item
            if ((self.log_every is not None and self.n - self._last_n >= self.log_every)
                    or (self.log_seconds is not None and now - self._last_t >= self.log_seconds)):
                self._emit(now)

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        """Extra numbers shown with the count (``loss=2.31``); like tqdm's ``set_postfix``."""
        self.postfix = {**(ordered_dict or {}), **kwargs}
        if self.mode == "bar":
            self._bar.set_postfix_str(self._postfix_text(), refresh=refresh)

    def close(self) -> None:
        """Finish: close the bar, or log the final line (count, time, rate)."""
        if self._closed:
            return
        self._closed = True
        if self.mode == "bar":
            self._bar.close()
        elif self.mode == "log":
            self._emit(time.perf_counter(), final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()

    def wrap(self, iterable: Iterable[T]) -> Iterator[T]:
        """Yield from ``iterable``, counting one item after each is processed."""
        for item in iterable:
            yield item
            self.update(1)

    # -- derived ---------------------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    @property
    def rate(self) -> float:
        """Items per second since the start (0 before the first item)."""
        e = self.elapsed
        return self.n / e if e > 0 else 0.0

    # -- internals ---------------------------------------------------------------------------------------
    def _postfix_text(self, note: bool = True) -> str:
        parts = [f"{k}={_fmt(v)}" for k, v in self.postfix.items()]
        if note and self.note:
            parts.append(self.note)
        return ", ".join(parts)

    def _emit(self, now: float, final: bool = False) -> None:
        with_note = not final or self.n != self._last_n  # the last item's note, unless logged
        self._last_n, self._last_t = self.n, now
        elapsed = now - self._t0
        count = f"{self.n}/{self.total} {self.unit}s" if self.total is not None else f"{self.n} {self.unit}s"
        if self.total:
            count += f" ({100.0 * self.n / self.total:.0f}%)"
        rate = self.n / elapsed if elapsed > 0 else 0.0
        if rate <= 0:
            speed = ""
        elif rate >= 1:
            speed = f", {rate:.3g} {self.unit}/s"
        else:
            speed = f", {1.0 / rate:.3g} s/{self.unit}"
        if final:
            stopped = "" if self.total is None or self.n >= self.total else " (stopped early)"
            head = f"{self.desc}: done{stopped}, {count} in {_duration(elapsed)}{speed}"
        else:
            eta = ""
            if self.total and rate > 0 and self.n < self.total:
                eta = f", ~{_duration((self.total - self.n) / rate)} left"
            head = f"{self.desc}: {count}, {_duration(elapsed)}{speed}{eta}"
        extra = self._postfix_text(note=with_note)
        self.log.info("%s%s", head, f"; {extra}" if extra else "")

