"""The data side of a CPT run: a map-style dataset over all domains and a torch ``Sampler``
that walks the :class:`~mixagent.data.sampler.MixtureSampler`'s global stream.

Why this shape (see docs/CPT.md): the Trainer and accelerate handle a map-style dataset with a
custom sampler by running the sampler in the main process of every rank and handing rank ``k``
batch ``world_size·t + k`` of the sampler's output (``BatchSamplerShard``). So every rank builds
the *same* ``MixtureSampler`` with ``world_size=1`` and accelerate shards it: ranks get disjoint
batches of one global stream, and a weight change scheduled from a global sample index lands at
the same sample on every rank. The sampler's position is the only data-loader state, and it is
derived from the optimizer step on resume (``ignore_data_skip=True``: no batch replay).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mixagent.data.manifest import DataDir
from mixagent.data.sampler import MixtureSampler

log = logging.getLogger(__name__)


class MixtureDataset(Dataset):
    """Flat sample id -> ``{"input_ids", "labels"}`` (``seq_len`` tokens, labels = inputs: the
    causal LM shifts them itself). ``on_read`` sees every id read, in order (tests record the
    stream through it)."""

    def __init__(self, sampler: MixtureSampler, on_read: Callable[[np.ndarray], None] | None = None):
        self.sampler = sampler
        self.on_read = on_read
        self.read_seconds = 0.0  # time spent gathering tokens (for overhead accounting)

    def __len__(self) -> int:
        return self.sampler.num_flat

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([idx])[0]

    def __getitems__(self, ids: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """A whole batch in one gather per domain (torch's fetcher calls this when present)."""
        t0 = time.perf_counter()
        flat = np.asarray(ids, dtype=np.int64)
        if self.on_read is not None:
            self.on_read(flat)
        tokens = torch.from_numpy(self.sampler.read_flat(flat))
        self.read_seconds += time.perf_counter() - t0
        return [{"input_ids": t, "labels": t} for t in tokens]


class MixtureIndexSampler(Sampler[int]):
    """The global stream of flat sample ids, from the mixture sampler's current position up to
    ``total`` samples (the run's ``max_steps × samples_per_step``). Ids are drawn ``chunk`` at
    a time (one global micro-batch), so the draw position runs ahead of training only by what
    the data loader prefetches — which bounds how far ahead weight changes must be scheduled.

    Iterating again (a new epoch, a resumed run) continues from wherever the mixture sampler
    stands, so the stream is one sequence however the Trainer splits it into epochs.
    """

    def __init__(self, sampler: MixtureSampler, total: int, chunk: int = 1):
        if sampler.world_size != 1:
            raise ValueError("build the MixtureSampler with world_size=1: accelerate shards its batches")
        self.sampler = sampler
        self.total = int(total)
        self.chunk = max(1, int(chunk))  # ids drawn per call: keeps the draw position near consumption
        self.plan_seconds = 0.0  # time spent choosing samples (for overhead accounting)

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[int]:
        while self.sampler.position < self.total:
            n = min(self.chunk, self.total - self.sampler.position)
            t0 = time.perf_counter()
            ids = self.sampler.next_flat_indices(n).tolist()
            self.plan_seconds += time.perf_counter() - t0
            yield from ids


def make_sampler(data: DataDir, seq_len: int, domains: Sequence[str], seed: int,
                 weights: Sequence[float] | np.ndarray | None = None) -> MixtureSampler:
    """The run's mixture sampler: the same on every rank (``world_size=1``, see module doc)."""
    return MixtureSampler(data, seq_len, weights, seed=seed, domains=list(domains))


def replay(sampler: MixtureSampler, schedule: Sequence[tuple[int, Sequence[float]]], position: int,
           chunk: int = 1 << 20) -> None:
    """Bring a *fresh* sampler to ``position`` under ``schedule`` (exactly the saved stream).

    The stream is a function of the schedule alone (it is keyed by global sample index), so
    replaying the schedule and drawing ``position`` samples reproduces the state of the run
    that saved it, whatever was prefetched at save time. Cost: one vectorised plan per ``chunk``
    samples (about a second per ten million on a laptop core).
    """
    if sampler.position != 0:
        raise ValueError("replay needs a fresh sampler")
    for start, w in schedule:
        sampler.set_weights(np.asarray(w, dtype=np.float64), start=int(start))
    left = int(position)
    while left > 0:
        n = min(chunk, left)
        sampler.next_indices(n)
        left -= n


def schedule_of(sampler: MixtureSampler) -> list[list[Any]]:
    """The weight schedule as JSON: ``[[start_sample, [w...]], ...]``."""
    return [[int(s), [float(x) for x in w]] for s, w in sampler.schedule]
