"""Device and thread settings of a proxy run.

Thread count matters twice: for speed (more threads than cores thrash, badly so when other
processes compete for the cores) and for bitwise reproducibility (a CPU reduction may split
differently with another thread count). Many proxy environments run side by side under Ray, so a
worker's share is set by ``MIXAGENT_NUM_THREADS``, which wins over the spec. The setting applies
only while the proxy computes (:func:`thread_scope`): torch's thread count is process-global,
and the code around an environment (an RL library's updates) keeps its own.

Memory allocation matters for speed too: see :func:`tune_allocator`; and so does compiling the
training loss (opt in: ``runtime.compile`` or ``MIXAGENT_COMPILE=1``, see :func:`compile_loss`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from mixagent.errors import ConfigError
from mixagent.proxy.config import RuntimeSpec

THREADS_ENV = "MIXAGENT_NUM_THREADS"
COMPILE_ENV = "MIXAGENT_COMPILE"
_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 1 << 30
_allocator_tuned = False
_compile_warned = False


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


def resolve_compile(runtime: RuntimeSpec) -> bool:
    """Compile the training loss? ``$MIXAGENT_COMPILE`` (``1``/``0``, also true/false, yes/no,
    on/off) when set and not empty, else the spec's ``compile``."""
    raw = os.environ.get(COMPILE_ENV, "").strip()
    if raw.lower() in _ON:
        return True
    if raw.lower() in _OFF:
        return False
    if raw:
        raise ConfigError(f"{COMPILE_ENV}={raw!r}: must be 1 or 0 (or true/false, yes/no, on/off)")
    return runtime.compile


def compile_loss(model: Any, tokens: Any, threads: int | None) -> tuple[Callable[..., Any], str]:
    """``torch.compile(lm_loss)`` (inductor, ``dynamic=False``) for ``model``, compiled *now*:
    one forward and backward on ``tokens`` (a dummy batch of the training shape, dtype and
    device), so the compile time counts as setup, not as the first episode's, and a failure is
    found here. Changes no state: the gradients are dropped and the caller's RNG is restored.

    Returns ``(loss function, state)``: ``state`` is ``"compiled"``, or ``"fallback"`` when
    compiling failed (no C++ compiler, an unsupported platform or model): the loss is then the
    eager :func:`~mixagent.proxy.training.lm_loss`, with one warning per process. A speed
    setting should not stop a collection or evaluation on a node that cannot compile; the state
    is recorded in provenance (workers' ``compile``) so a run says what it used.
    """
    import torch

    from mixagent.proxy.training import lm_loss

    global _compile_warned
    training = model.training
    devices = [tokens.device] if tokens.device.type == "cuda" else []
    try:
        fn = torch.compile(lm_loss, dynamic=False)
        with torch.random.fork_rng(devices=devices), thread_scope(threads):
            model.train()
            fn(model, tokens).backward()
    except Exception as err:  # torch raises many types (BackendCompilerFailed, InductorError, ...)
        msg = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        if not _compile_warned:
            log.warning("runtime.compile / %s: torch.compile of the training loss failed (%s); "
                        "training eagerly (same results up to float rounding, slower). Install "
                        "a C++ compiler or unset the setting to silence this.", COMPILE_ENV, msg)
            _compile_warned = True
        else:
            log.debug("torch.compile of the training loss failed again (%s): eager", msg)
        return lm_loss, "fallback"
    finally:
        model.zero_grad(set_to_none=True)
        model.train(training)
    return fn, "compiled"


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
