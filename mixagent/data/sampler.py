"""The mixture sampler: fixed-length training sequences drawn from domain shards by weights.

Design (see docs/DECISIONS.md for the alternatives rejected):

* **A global stream, indexed by sample.** Every sample has a global index ``g = 0, 1, 2, ...``.
  Which domain serves ``g`` depends only on the *weight schedule* — a list of
  ``(start_index, weights)`` segments — never on wall time or on how requests were batched. With
  ``world_size`` ranks, rank ``r`` takes the indices ``g ≡ r (mod world_size)``, so ranks draw
  disjoint samples from one shared plan without talking to each other.
* **Exact proportions, no RNG in the domain choice.** Inside a segment the domain sequence is the
  Webster / stride-scheduling merge: the ``k``-th pick of domain ``d`` is due at time
  ``(k + 0.5) / w_d`` and picks are served in order of due time (ties by domain index). After ``n``
  picks every domain has ``n·w_d`` of them to within one sample — proportions hold exactly over
  any prefix of a segment, not only in expectation. The merge is memoryless given the per-domain
  counts, so it is computed for a whole block at once in numpy (no per-sample Python).
* **Order inside a domain** is a permutation of the domain's non-overlapping sequence chunks,
  seeded by ``(seed, hash(domain name), epoch)``: no chunk repeats before the domain is exhausted,
  and a domain's order does not change when other domains are added or removed.
* **State is small JSON**: the schedule, the global position and per-domain counters. It is the
  same on every rank, so one ``state_dict()`` restores all ranks and the continuation is identical.
"""

from __future__ import annotations

import hashlib
import numbers
import reprlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from mixagent.data.manifest import DataDir, Split
from mixagent.errors import DataError

STATE_FORMAT = "mixagent.sampler/1"


def _describe(values: object) -> str:
    """A short description of a rejected input, so the error says what was given."""
    text = reprlib.repr(values)
    dtype = getattr(values, "dtype", None)
    return f"{type(values).__name__} {text}" + (f" of dtype {dtype}" if dtype is not None else "")


def real_vector(values: object, num_domains: int, what: str) -> np.ndarray:
    """``values`` as float64 ``(K,)``, accepting only finite real numbers (ints and floats).

    ``np.asarray(x, dtype=float64)`` alone would turn ``"0.5"`` into 0.5 and drop the imaginary
    part of ``0.5+1j`` (with only a warning), so a string or complex input would run as some
    other mixture than the caller meant; booleans are not numbers here either.
    """
    expected = (f"{what} must be {num_domains} real number{'s' if num_domains != 1 else ''} "
                "(one per domain)")
    if isinstance(values, str | bytes):
        raise DataError(f"{expected}, got the text {values!r}; pass numbers, not a string")
    try:
        raw = np.asarray(values)
    except (TypeError, ValueError):
        raise DataError(f"{expected}, got {_describe(values)}") from None
    kind = raw.dtype.kind
    if kind == "O":  # e.g. a list mixing numbers with None, or Fraction/Decimal objects
        flat = raw.reshape(-1)
        if not all(isinstance(x, numbers.Real) and not isinstance(x, bool | np.bool_)
                   for x in flat):
            raise DataError(f"{expected}, got {_describe(values)}")
        raw = np.array([float(x) for x in flat], dtype=np.float64).reshape(raw.shape)
        kind = "f"
    if kind == "c":
        raise DataError(f"{expected}, got complex numbers {_describe(values)}; the "
                "imaginary part has no meaning here, pass the real part")
    if kind in "US":
        raise DataError(f"{expected}, got text {_describe(values)}; pass numbers, not "
                "strings (e.g. float(x))")
    if kind not in "iuf":
        raise DataError(f"{expected}, got {_describe(values)}")
    a = raw.astype(np.float64)
    if a.shape != (num_domains,):
        raise DataError(f"{what} has shape {a.shape}, expected ({num_domains},): one "
                "value per domain")
    bad = ~np.isfinite(a)
    if bad.any():
        nan = np.flatnonzero(np.isnan(a)).tolist()
        inf = np.flatnonzero(np.isinf(a)).tolist()
        parts = ([f"NaN at positions {nan}"] if nan else []) + \
                ([f"inf at positions {inf}"] if inf else [])
        raise DataError(f"{what} contains {' and '.join(parts)}")
    return a


def validate_weights(weights: object, num_domains: int, names: Sequence[str] | None = None) -> np.ndarray:
    """Check a weight vector and normalise it onto the simplex.

    Non-negative weights that do not sum to one are rescaled (a ratio like ``[3, 1]`` is a valid
    way to say 75/25); anything else that is not a usable mixture is an error naming the problem.
    Weights are divided by their maximum before summing, so large finite weights such as
    ``1e308`` normalise correctly instead of overflowing the sum to inf (and every weight to 0).
    This is the one weight check: the environment's ``step_weights`` calls it too.
    """
    where = f" ({', '.join(names)})" if names else ""
    try:
        w = real_vector(weights, num_domains, "weights")
    except DataError as err:
        raise DataError(f"{err}{where}") from None
    if (w < 0).any():
        bad = np.flatnonzero(w < 0).tolist()
        raise DataError(f"weights must be non-negative; negative at positions {bad}: {w.tolist()}")
    if w.max() <= 0:
        raise DataError("weights are all zero: at least one domain needs a positive weight")
    with np.errstate(over="ignore"):
        total = w.sum()
    if not np.isfinite(total):  # huge finite weights: rescale first (only then, so normal
        w = w / w.max()         # inputs keep bit-identical weights and sampling plans)
        total = w.sum()
    return w / total


def _name_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


class MixtureSampler:
    """Draws ``seq_len``-token sequences from a data directory's domains by a weight schedule.

    Args:
        data: the data directory.
        seq_len: tokens per sequence; each domain's shard is cut into ``tokens // seq_len``
            non-overlapping chunks.
        weights: initial weights (defaults to uniform); see :func:`validate_weights`.
        seed: seeds the order of chunks inside each domain.
        rank, world_size: this process's share of the global stream.
        split: ``"train"`` or ``"eval"``.
        domains: a subset (and order) of the data directory's domains; default all of them.
    """

    def __init__(
        self,
        data: DataDir,
        seq_len: int,
        weights: Sequence[float] | np.ndarray | None = None,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        split: Split = "train",
        domains: Sequence[str] | None = None,
    ):
        if seq_len < 1:
            raise DataError(f"seq_len must be at least 1, got {seq_len}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not valid for world_size {world_size}")
        self.data = data
        self.seq_len = int(seq_len)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.split = split
        self.domains = list(domains) if domains is not None else data.domain_names
        if not self.domains:
            raise DataError("the sampler needs at least one domain")
        if len(set(self.domains)) != len(self.domains):
            raise DataError(f"domains are listed more than once: {self.domains}")
        self._tokens = [data.tokens(d, split) for d in self.domains]
        self._arrays = [np.asarray(t) for t in self._tokens]  # plain ndarray views: cheaper gathers
        self.num_chunks = np.array([t.shape[0] // self.seq_len for t in self._tokens], dtype=np.int64)
        for name, t, n in zip(self.domains, self._tokens, self.num_chunks, strict=True):
            if n == 0:
                raise DataError(
                    f"domain {name!r} has {t.shape[0]} {split} tokens, fewer than one sequence of "
                    f"{self.seq_len}; use a shorter seq_len, add data to the domain, or leave it out"
                )
        self._name_keys = [_name_key(d) for d in self.domains]
        self._perm_cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._offsets = np.concatenate([[0], np.cumsum(self.num_chunks)])
        k = len(self.domains)
        w0 = validate_weights(np.ones(k) if weights is None else weights, k, self.domains)
        self.schedule: list[tuple[int, np.ndarray]] = [(0, w0)]
        self.plan_ahead = max(1024, 4 * self.world_size)
        self.position = 0  # next global sample index handed out
        # The planner runs ahead of `position` in blocks (amortising numpy call overhead); its state
        # is (position it has planned up to, segment index, picks per domain in that segment,
        # picks per domain since the start). `_snap` is the planner state at the buffer's start.
        self._plan: _PlanState = _PlanState(0, 0, np.zeros(k, np.int64), np.zeros(k, np.int64))
        self._snap = self._plan.copy()
        self._buf_doms = np.empty(0, np.int64)
        self._buf_chunks = np.empty(0, np.int64)

    # -- weights -------------------------------------------------------------------------------
    @property
    def num_domains(self) -> int:
        return len(self.domains)

    def _segment_at(self, pos: int) -> int:
        seg = 0
        while seg + 1 < len(self.schedule) and self.schedule[seg + 1][0] <= pos:
            seg += 1
        return seg

    @property
    def weights(self) -> np.ndarray:
        """The weights in force at the current position."""
        return self.schedule[self._segment_at(self.position)][1].copy()

    def set_weights(self, weights: Sequence[float] | np.ndarray, start: int | None = None) -> int:
        """Schedule new weights from global sample index ``start`` (default: the next sample).

        Scheduling ahead of the current position is how a multi-process run changes the mixture
        at the same sample on every rank even though data-loader workers prefetch. Returns the
        start index. Later scheduled segments at or after ``start`` are replaced.
        """
        w = validate_weights(weights, self.num_domains, self.domains)
        start = self.position if start is None else int(start)
        if start < self.position:
            raise DataError(f"cannot change weights at sample {start}: the sampler is already at sample {self.position}")
        if start < self._plan.pos:  # the change falls inside the planned buffer: re-plan from here
            self._plan = self._state_at(self.position)
            self._snap = self._plan.copy()
            self._buf_doms = self._buf_doms[:0]
            self._buf_chunks = self._buf_chunks[:0]
        keep = [s for s in self.schedule if s[0] < start]
        self.schedule = [*keep, (start, w)]
        for st in (self._plan, self._snap):
            if st.seg >= len(keep):  # the segment this state is in began at `start`: replaced
                st.seg = len(keep)
                st.seg_counts[:] = 0
        return start

    # -- planning --------------------------------------------------------------------------------
    def _merge(self, n: int, w: np.ndarray, seg_counts: np.ndarray) -> np.ndarray:
        """The next ``n`` domain picks of a segment (Webster merge, vectorised); updates counts."""
        active = np.nonzero(w > 0)[0]
        times, doms = [], []
        for d in active:
            m = int(np.ceil(n * w[d])) + 3  # a domain never takes more than n*w+2 of n picks
            c = seg_counts[d]
            with np.errstate(over="ignore"):  # denormal weights: due times overflow to inf (never due)
                times.append((np.arange(c, c + m, dtype=np.float64) + 0.5) / w[d])
            doms.append(np.full(m, d, dtype=np.int64))
        order = np.argsort(np.concatenate(times), kind="stable")[:n]  # ties -> lower domain index
        picks = np.concatenate(doms)[order]
        seg_counts += np.bincount(picks, minlength=self.num_domains)
        return picks

    def _plan_more(self, n: int) -> None:
        """Extend the buffer by ``n`` global indices (domains and chunks), advancing the planner."""
        p = self._plan
        doms = np.empty(n, dtype=np.int64)
        filled = 0
        while filled < n:
            seg = self._segment_at(p.pos)
            if seg != p.seg:
                p.seg, p.seg_counts[:] = seg, 0
            end = self.schedule[seg + 1][0] if seg + 1 < len(self.schedule) else None
            take = n - filled if end is None else min(n - filled, end - p.pos)
            doms[filled : filled + take] = self._merge(take, self.schedule[seg][1], p.seg_counts)
            filled += take
            p.pos += take
        draws = np.empty(n, dtype=np.int64)
        order = np.argsort(doms, kind="stable")
        bounds = np.searchsorted(doms[order], np.arange(self.num_domains + 1))
        for d in range(self.num_domains):
            idx = order[bounds[d] : bounds[d + 1]]
            draws[idx] = p.draws[d] + np.arange(idx.size)
            p.draws[d] += idx.size
        self._buf_doms = np.concatenate([self._buf_doms, doms])
        self._buf_chunks = np.concatenate([self._buf_chunks, self._chunks(doms, draws, order, bounds)])

    def _state_at(self, pos: int) -> _PlanState:
        """Planner state at a buffered position, derived from the snapshot and the buffered picks."""
        off = pos - self._snap.pos
        if not 0 <= off <= self._buf_doms.size:
            raise AssertionError(f"position {pos} is outside the planned buffer")
        taken = self._buf_doms[:off]
        draws = self._snap.draws + np.bincount(taken, minlength=self.num_domains)
        seg = self._segment_at(pos)
        seg_start = self.schedule[seg][0]
        if seg == self._snap.seg and seg_start <= self._snap.pos:
            counts = self._snap.seg_counts + np.bincount(taken, minlength=self.num_domains)
        else:
            counts = np.bincount(taken[max(seg_start - self._snap.pos, 0) :], minlength=self.num_domains)
        return _PlanState(pos, seg, counts.astype(np.int64), draws.astype(np.int64))

    def _perm(self, d: int, epoch: int) -> np.ndarray:
        key = (d, epoch)
        p = self._perm_cache.get(key)
        if p is None:
            rng = np.random.default_rng([self.seed, self._name_keys[d], epoch])
            p = rng.permutation(int(self.num_chunks[d]))
            self._perm_cache[key] = p
            if len(self._perm_cache) > 2 * self.num_domains + 8:
                self._perm_cache.popitem(last=False)
        else:
            self._perm_cache.move_to_end(key)
        return p

    def _chunks(self, doms: np.ndarray, draws: np.ndarray, order: np.ndarray, bounds: np.ndarray) -> np.ndarray:
        chunks = np.empty_like(draws)
        for d in range(self.num_domains):
            idx = order[bounds[d] : bounds[d + 1]]
            if idx.size == 0:
                continue
            n = self.num_chunks[d]
            dr = draws[idx]  # increasing: at most a few epochs per block
            e0, e1 = int(dr[0] // n), int(dr[-1] // n)
            for e in range(e0, e1 + 1):
                sel = (dr >= e * n) & (dr < (e + 1) * n)
                chunks[idx[sel]] = self._perm(d, e)[dr[sel] - e * n]
        return chunks

    # -- drawing ----------------------------------------------------------------------------------
    def next_indices(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's next ``n`` samples as (domain index, chunk index) arrays."""
        if self.position % self.world_size:
            raise DataError(f"sampler position {self.position} is not aligned to world_size {self.world_size}")
        need = n * self.world_size
        if self.position + need > self._plan.pos:
            # drop the consumed part of the buffer, then plan a fresh block
            self._snap = self._state_at(self.position)
            left = self._plan.pos - self.position
            self._buf_doms = self._buf_doms[self._buf_doms.size - left :]
            self._buf_chunks = self._buf_chunks[self._buf_chunks.size - left :]
            self._plan_more(max(self.position + need - self._plan.pos, self.plan_ahead))
        off = self.position - self._snap.pos
        doms = self._buf_doms[off + self.rank : off + need : self.world_size]
        chunks = self._buf_chunks[off + self.rank : off + need : self.world_size]
        self.position += need
        return doms.copy(), chunks.copy()

    def next_flat_indices(self, n: int) -> np.ndarray:
        """This rank's next ``n`` samples as flat ids (see :meth:`read_flat`), for map-style datasets."""
        doms, chunks = self.next_indices(n)
        return self._offsets[doms] + chunks

    @property
    def num_flat(self) -> int:
        """Number of distinct flat sample ids (all chunks of all domains)."""
        return int(self._offsets[-1])

    def split_flat(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat ids back to (domain index, chunk index)."""
        flat = np.asarray(flat, dtype=np.int64)
        doms = np.searchsorted(self._offsets, flat, side="right") - 1
        return doms, flat - self._offsets[doms]

    def read(self, doms: np.ndarray, chunks: np.ndarray) -> np.ndarray:
        """Token ids ``[n, seq_len]`` (int64) for (domain, chunk) pairs.

        Two ways to gather, picked by shape (measured, 30 domains, 64 x 256 tokens: 53 µs per
        batch by row slices vs 213 µs grouped): a slice per row when a batch holds few sequences
        per domain (each numpy call costs more than a slice), one fancy-index gather per domain
        when it holds many.
        """
        n = doms.shape[0]
        out = np.empty((n, self.seq_len), dtype=np.int64)
        L = self.seq_len
        if n <= 16 * self.num_domains:
            arrays = self._arrays
            for i, (d, start) in enumerate(zip(doms.tolist(), (chunks * L).tolist(), strict=True)):
                out[i] = arrays[d][start : start + L]
            return out
        ar = np.arange(L, dtype=np.int64)
        order = np.argsort(doms, kind="stable")
        bounds = np.searchsorted(doms[order], np.arange(self.num_domains + 1))
        for d in range(self.num_domains):
            idx = order[bounds[d] : bounds[d + 1]]
            if idx.size:
                starts = chunks[idx] * L
                out[idx] = self._arrays[d][starts[:, None] + ar[None, :]]
        return out

    def read_flat(self, flat: np.ndarray) -> np.ndarray:
        return self.read(*self.split_flat(flat))

    def next_batch(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's next batch: token ids ``[batch_size, seq_len]`` and their domain indices."""
        doms, chunks = self.next_indices(batch_size)
        return self.read(doms, chunks), doms

    def iter_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Endless batches under the current schedule (domains cycle through epochs)."""
        while True:
            yield self.next_batch(batch_size)

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state; identical on every rank of a run."""
        st = self._state_at(self.position)
        return {
            "format": STATE_FORMAT,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "split": self.split,
            "domains": list(self.domains),
            "num_chunks": self.num_chunks.tolist(),
            "position": int(self.position),
            "schedule": [[int(s), w.tolist()] for s, w in self.schedule],
            "segment_index": st.seg,
            "segment_counts": st.seg_counts.tolist(),
            "draws": st.draws.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state so the next draws continue exactly where the saved sampler stopped."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise DataError(f"not a mixagent sampler state (expected format {STATE_FORMAT!r})")
        for key, mine in (("seed", self.seed), ("seq_len", self.seq_len), ("split", self.split), ("domains", list(self.domains))):
            if state[key] != mine:
                raise DataError(f"sampler state was saved with {key}={state[key]!r}, but this sampler has {key}={mine!r}")
        if list(state["num_chunks"]) != self.num_chunks.tolist():
            raise DataError("sampler state was saved on a data directory with different domain sizes; the shards have changed since")
        if state["position"] % self.world_size:
            raise DataError(f"sampler state position {state['position']} cannot be split over world_size {self.world_size}")
        self.position = int(state["position"])
        self.schedule = [(int(s), np.asarray(w, dtype=np.float64)) for s, w in state["schedule"]]
        self._plan = _PlanState(
            self.position,
            int(state["segment_index"]),
            np.asarray(state["segment_counts"], dtype=np.int64),
            np.asarray(state["draws"], dtype=np.int64),
        )
        self._snap = self._plan.copy()
        self._buf_doms = np.empty(0, np.int64)
        self._buf_chunks = np.empty(0, np.int64)


class _PlanState:
    """Where the Webster merge stands: everything needed to continue the plan exactly."""

    __slots__ = ("draws", "pos", "seg", "seg_counts")

    def __init__(self, pos: int, seg: int, seg_counts: np.ndarray, draws: np.ndarray):
        self.pos = pos
        self.seg = seg
        self.seg_counts = seg_counts
        self.draws = draws

    def copy(self) -> _PlanState:
        return _PlanState(self.pos, self.seg, self.seg_counts.copy(), self.draws.copy())
