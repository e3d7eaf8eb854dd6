"""The proxy CPT engine: base restore, training under given domain weights, evaluation, snapshots.

This is what the Gymnasium environment drives, and what trajectory collection uses directly to
branch several actions from one trained prefix (:meth:`ProxyEngine.snapshot` /
:meth:`ProxyEngine.restore`). It knows nothing about actions, observations or rewards.

Reproducibility: the data order is seeded by :meth:`reset`'s ``data_seed``; torch's RNG (only
used if the model config enables dropout) is kept per engine and swapped in around training,
so the engine neither depends on nor disturbs the caller's global RNG (an RL library sampling
actions in the same process).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mixagent.data.manifest import DataDir
from mixagent.data.sampler import MixtureSampler
from mixagent.errors import MixagentError
from mixagent.proxy.alignment import Aligner, AlignmentParams, FieldObjective
from mixagent.proxy.base_model import BaseCheckpoint, moments_to_state
from mixagent.proxy.config import CPTSpec, EvalSpec, RuntimeSpec
from mixagent.proxy.evaluation import EvalResult, Evaluator
from mixagent.proxy.runtime import (
    compile_loss,
    configure_runtime,
    resolve_compile,
    resolve_threads,
    thread_scope,
)
from mixagent.proxy.schedule import lr_table
from mixagent.proxy.training import lm_loss, make_optimizer, train_steps


class BudgetExhaustedError(MixagentError, RuntimeError):
    """Training past the CPT budget of an episode (call reset first)."""


@dataclass
class TrainStats:
    """What one :meth:`ProxyEngine.train` call did."""

    loss: float  # mean training loss over its optimizer steps
    steps: int
    tokens: int
    domain_sequences: np.ndarray  # sequences drawn per domain
    seconds: float


@dataclass
class EngineSnapshot:
    """The complete in-memory state of a CPT run: restoring it continues bit for bit."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    sampler: dict[str, Any]
    step: int
    tokens: int
    rng: dict[str, torch.Tensor]


class ProxyEngine:
    """Continual pre-training of a cached base under changing domain weights.

    Args:
        data: the data directory.
        domains: the domains that get weights, in action order.
        base: the cached base (see :func:`mixagent.proxy.base_model.ensure_base`).
        cpt: the CPT budget and optimizer; the LR schedule spans ``cpt.total_steps``.
        evaluation: what :meth:`evaluate` measures.
        runtime: device, threads, allocator tuning and ``compile`` (the training loss compiled
            once here, at construction: :func:`~mixagent.proxy.runtime.compile_loss`).

    ``compile_state``: ``"off"`` (eager, as asked), ``"compiled"`` or ``"fallback"`` (compiling
    was asked for but failed: eager). Recorded in collection cards and evaluation reports.
    """

    def __init__(self, data: DataDir, domains: list[str], base: BaseCheckpoint, cpt: CPTSpec,
                 evaluation: EvalSpec, runtime: RuntimeSpec | None = None):
        self.data = data
        self.domains = list(domains)
        self.cpt = cpt
        runtime = runtime or RuntimeSpec()
        self.device = configure_runtime(runtime)
        self.threads = resolve_threads(runtime)
        self.model, moments = base.load(self.device)
        self.base_path = base.path
        self._base_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._base_moments = moments if cpt.optimizer_state == "restored" else None
        if cpt.optimizer_state == "restored" and not moments:
            raise MixagentError(f"{base.path}: the base has no optimizer state to restore")
        self.lrs = lr_table(cpt.lr, cpt.total_steps)
        self.evaluator = Evaluator(data, self.domains, evaluation, cpt.seq_len, self.device)
        self.loss_fn = lm_loss
        self.compile_state = "off"
        if resolve_compile(runtime):
            dummy = torch.zeros(cpt.batch_size, cpt.seq_len, dtype=torch.long, device=self.device)
            self.loss_fn, self.compile_state = compile_loss(self.model, dummy, self.threads)
        self.base_eval: EvalResult = self.evaluate()
        self.aligner: Aligner | None = None  # see attach_alignment
        self.base_alignment: np.ndarray | None = None
        self.sampler: MixtureSampler
        self.optimizer: torch.optim.Optimizer
        self.step = 0
        self.tokens = 0
        self._rng: dict[str, torch.Tensor] = {}
        self.reset(0)

    # -- episode ---------------------------------------------------------------------------------
    def reset(self, data_seed: int) -> None:
        """Restore the base exactly (parameters, optimizer) and start a new data order."""
        self.model.load_state_dict(self._base_state)
        self.optimizer = make_optimizer(self.model, self.cpt.optimizer)
        if self._base_moments is not None:
            moments_to_state(self.model, self.optimizer, self._base_moments)
        self.sampler = MixtureSampler(self.data, self.cpt.seq_len, seed=int(data_seed),
                                      domains=self.domains)
        self.step = 0
        self.tokens = 0
        self._rng = self._fresh_rng(int(data_seed))

    @property
    def steps_left(self) -> int:
        return len(self.lrs) - self.step

    def train(self, weights: np.ndarray, num_steps: int | None = None) -> TrainStats:
        """Train ``num_steps`` optimizer steps (default: one re-weighting step) under ``weights``."""
        steps = self.cpt.steps_per_action if num_steps is None else int(num_steps)
        if steps > self.steps_left:
            raise BudgetExhaustedError(
                f"the CPT budget has {self.steps_left} optimizer steps left, {steps} requested; "
                "call reset() to start a new run")
        t0 = time.perf_counter()
        b, seq = self.cpt.batch_size, self.cpt.seq_len
        self.sampler.set_weights(weights)
        tokens, doms = self.sampler.next_batch(steps * b)
        batches = torch.from_numpy(tokens).view(steps, b, seq).to(self.device)
        lrs = self.lrs[self.step : self.step + steps]
        with self._own_rng(), thread_scope(self.threads):
            losses = train_steps(self.model, self.optimizer, batches, lrs,
                                 self.cpt.optimizer.grad_clip, self.loss_fn)
            loss = float(losses.mean())
        self.step += steps
        self.tokens += steps * b * seq
        counts = np.bincount(doms, minlength=len(self.domains))
        return TrainStats(loss, steps, steps * b * seq, counts, time.perf_counter() - t0)

    def evaluate(self) -> EvalResult:
        """Per-domain held-out losses and task metrics of the current model."""
        with thread_scope(self.threads):
            return self.evaluator(self.model)

    def attach_alignment(self, objectives: list[FieldObjective], sequences: int,
                         params: AlignmentParams) -> np.ndarray:
        """Measure gradient alignment from now on (:meth:`evaluate_alignment`); returns the
        base's, measured on the base parameters whatever the current step (restored after)."""
        self.aligner = Aligner(self.data, self.domains, self.evaluator, objectives, sequences,
                               params, self.cpt.seq_len, self.evaluator.batch_size)
        at_base = self.step == 0 and all(torch.equal(v, self._base_state[k])
                                         for k, v in self.model.state_dict().items())
        live = None if at_base else {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if live is not None:
            self.model.load_state_dict(self._base_state)
        try:
            self.base_alignment = self.evaluate_alignment()
        finally:
            if live is not None:
                self.model.load_state_dict(live)
        return self.base_alignment

    def evaluate_alignment(self) -> np.ndarray | None:
        """Per-domain gradient cosines with each field objective on the current model
        (``[K, 2]``), or None without :meth:`attach_alignment`. Changes no state."""
        if self.aligner is None:
            return None
        with thread_scope(self.threads):
            return self.aligner(self.model)

    # -- state -----------------------------------------------------------------------------------
    def snapshot(self) -> EngineSnapshot:
        """A deep copy of the run's state (model, optimizer, sampler, counters, RNG)."""
        return EngineSnapshot(
            model={k: v.detach().clone() for k, v in self.model.state_dict().items()},
            optimizer=copy.deepcopy(self.optimizer.state_dict()),
            sampler=copy.deepcopy(self.sampler.state_dict()),
            step=self.step,
            tokens=self.tokens,
            rng={k: v.clone() for k, v in self._rng.items()},
        )

    def restore(self, snap: EngineSnapshot) -> None:
        """Continue from a snapshot; the snapshot itself stays unchanged (restore it again)."""
        self.model.load_state_dict(snap.model)
        self.optimizer = make_optimizer(self.model, self.cpt.optimizer)
        self.optimizer.load_state_dict(copy.deepcopy(snap.optimizer))
        self.sampler = MixtureSampler(self.data, self.cpt.seq_len, seed=snap.sampler["seed"],
                                      domains=self.domains)
        self.sampler.load_state_dict(snap.sampler)
        self.step = snap.step
        self.tokens = snap.tokens
        self._rng = {k: v.clone() for k, v in snap.rng.items()}

    def base_state(self) -> dict[str, torch.Tensor]:
        """The base parameters (read-only view; for checks such as "reset restores the base")."""
        return self._base_state

    # -- RNG -------------------------------------------------------------------------------------
    def _fresh_rng(self, seed: int) -> dict[str, torch.Tensor]:
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            state = {"cpu": torch.get_rng_state()}
            if devices:
                state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Run a block on this engine's torch RNG stream, leaving the global one untouched."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self._rng["cpu"])
            if devices:
                torch.cuda.set_rng_state(self._rng["cuda"], self.device)
            try:
                yield
            finally:
                self._rng["cpu"] = torch.get_rng_state()
                if devices:
                    self._rng["cuda"] = torch.cuda.get_rng_state(self.device)
