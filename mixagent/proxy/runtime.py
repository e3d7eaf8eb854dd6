"""Device and thread settings of a proxy run.

Thread count matters twice: for speed (more threads than cores thrash, badly so when other
processes compete for the cores) and for bitwise reproducibility (a CPU reduction may split
differently with another thread count). Many proxy environments run side by side under Ray, so a
worker's share is set by ``MIXAGENT_NUM_THREADS``, which wins over the spec. The setting applies
only while the proxy computes (:func:`thread_scope`): torch's thread count is process-global,
and the code around an environment (an RL library's updates) keeps its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from mixagent.errors import ConfigError
from mixagent.proxy.config import RuntimeSpec

THREADS_ENV = "MIXAGENT_NUM_THREADS"
log = logging.getLogger(__name__)


def resolve_threads(runtime: RuntimeSpec) -> int | None:
    """Threads to use: ``$MIXAGENT_NUM_THREADS``, else the spec, else None (torch's default)."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(f"{THREADS_ENV}={raw!r}: must be a positive integer")
        return n
    return runtime.num_threads


@contextlib.contextmanager
def thread_scope(threads: int | None) -> Iterator[None]:
    """Run a block with ``threads`` torch threads (None: unchanged), then restore the count."""
    import torch

    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def configure_runtime(runtime: RuntimeSpec) -> Any:
    """The ``torch.device`` to run on (threads are applied per block by :func:`thread_scope`)."""
    import torch

    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device: 'cuda' requested but no CUDA device is available")
    if runtime.device == "cpu" or (runtime.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")
