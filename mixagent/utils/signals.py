"""Stopping a long job on SIGTERM the way Ctrl-C stops it.

``kill PID``, a batch scheduler's time limit and ``docker stop`` send SIGTERM. Its default action
ends the process at once, so no ``finally`` runs: a collection stopped that way keeps its shards
but loses its card and the record of the compute it spent. In a Ray driver, ``ray.init``
installs handlers of its own (a native one that prints a stack, a Python one that calls
``sys.exit``); under them a SIGTERM to a 486-episode family collection left no card, whose
cleanup takes tens of seconds (a micro collection's took under one and survived). And a job
started in the background from a script cannot be stopped with SIGINT at all (the shell starts
it with SIGINT ignored), so SIGTERM is the way a script stops it.

Inside :func:`terminate_as_interrupt`, SIGTERM raises :class:`KeyboardInterrupt` in the main
thread, so the cleanup written for Ctrl-C runs for it too. Enter it *after* ``ray.init`` (which
would replace it). A collection writes its card inside :func:`sigterm_deferred`: a second
``kill`` while the card of a large collection is written (tens of seconds) would otherwise end
the process half-way and lose the card after all; there SIGTERM is logged and the write
finishes. SIGKILL still stops it at once. (The seconds between the two — Ray's shutdown — are
still under Ray's own handler.)
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

log = logging.getLogger(__name__)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt while inside; the previous handler is back afterwards
    (the default action if the previous one was installed outside Python, as Ray's is).
    Does nothing off the main thread, where Python cannot install signal handlers."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.warning("SIGTERM received: stopping as on Ctrl-C (finished work is kept)")
        raise KeyboardInterrupt(f"signal {signum}")

    with _on_sigterm(handler):
        yield


@contextlib.contextmanager
def sigterm_deferred(what: str) -> Iterator[None]:
    """SIGTERM is logged, not obeyed, while inside: for short cleanup that must finish (``what``
    names it in the log). The previous handler is back afterwards. Does nothing off the main
    thread."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.warning("SIGTERM received while %s: finishing that first (SIGKILL stops at once)", what)

    with _on_sigterm(handler):
        yield


@contextlib.contextmanager
def _on_sigterm(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
