"""Device and thread settings of a proxy run.

Thread count matters twice: for speed (more threads than cores thrash, badly so when other
processes compete for the cores) and for bitwise reproducibility (a CPU reduction may split
differently with another thread count). Many proxy environments run side by side under Ray, so a
worker's share is set by ``MIXAGENT_NUM_THREADS``, which wins over the spec. The setting applies
only while the proxy computes (:func:`thread_scope`): torch's thread count is process-global,
and the code around an environment (an RL library's updates) keeps its own.

Memory allocation matters for speed too: see :func:`tune_allocator`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from mixagent.errors import ConfigError
from mixagent.proxy.config import RuntimeSpec

THREADS_ENV = "MIXAGENT_NUM_THREADS"
log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 1 << 30
_allocator_tuned = False


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


def tune_allocator() -> bool:
    """Keep freed large blocks in the process heap instead of returning them to the OS (glibc).

    Why: at the shipped size the logits, their log-softmax and their gradients are ~16 MB each,
    allocated and freed several times per optimizer step. glibc serves blocks that large with
    ``mmap`` and unmaps them on free, so every step touched ~18,000 fresh pages, each a page
    fault plus zeroing by the kernel: a third of a one-thread step went to this (measured:
    18,487 minor faults per step before, 10 after; 1.5x faster steps). ``M_MMAP_MAX=0`` serves
    every block from the heap and a 1 GiB ``M_TRIM_THRESHOLD`` keeps its top mapped, so the
    blocks are reused. Which memory a tensor lives in changes no arithmetic (torch aligns every
    block to 64 bytes either way), so results stay bit-identical (``benchmarks/
    check_episode_bits.py``). Cost: the process keeps its peak heap size mapped. Process-wide and
    applied once; a no-op (False) off glibc. Turned off by ``runtime.tune_allocator: false``.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        log.debug("no mallopt: allocator left as it is")
        return False
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    _allocator_tuned = ok
    return ok


def configure_runtime(runtime: RuntimeSpec) -> Any:
    """The ``torch.device`` to run on (threads are applied per block by :func:`thread_scope`);
    on CPU, tunes the allocator (:func:`tune_allocator`) unless the spec turns that off."""
    import torch

    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device: 'cuda' requested but no CUDA device is available")
    if runtime.device == "cpu" or (runtime.device == "auto" and not torch.cuda.is_available()):
        if runtime.tune_allocator:
            tune_allocator()
        return torch.device("cpu")
    return torch.device("cuda")
