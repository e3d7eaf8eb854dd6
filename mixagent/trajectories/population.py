"""Population batching: P independent episodes of one environment trained as one batched model.

Why: a proxy on a CPU (and far more so on a GPU) is too small to use the hardware; much of a
training step is per-operation overhead that does not grow with the batch. Branching already
folds K *branches* of one snapshot into one model (:mod:`mixagent.trajectories.replicas`);
a population folds P whole *episodes*: each member keeps its own state for the whole episode
and all P continue, so every batched step yields P transitions that plain episodes would have
produced one by one.

How the state is stacked (:class:`PopulationStepper`):

* **model and optimizer** — one :class:`~mixagent.trajectories.replicas.ReplicaTrainer` of size P:
  parameters with a leading member axis ``[P, ...]`` (batched matmuls), one AdamW over the stacked
  parameters (AdamW is element-wise, so it is P independent AdamWs with their own moments),
  gradient clipping per member. At reset every member is the env's cached base with a fresh
  optimizer (the engine's own ``reset``), so the stack is the base repeated P times;
* **LR schedule position** — members advance in lockstep (every episode has ``cpt.num_steps``
  steps of ``steps_per_action`` optimizer steps), so one position and one LR table serve all;
* **data** — one :class:`~mixagent.data.sampler.MixtureSampler` per member, the very object the
  engine built in ``env.reset(seed=member's seed)`` (so its data seed is the env's own draw);
  each member's batch comes from its own sampler under its own weights;
* **evaluation history** — one immutable :class:`~mixagent.envs.transition.StepState` per member,
  advanced with the env's own :class:`~mixagent.envs.transition.MixingTransition`
  (``env.transitions.step``) and turned into ``info`` by :meth:`ProxyCPTEnv.info` — the
  definitions ``env.step`` uses, exactly as batched branching does.

Members must share the scenario (the env): scenarios of a family differ in domains, data and
evaluation, so the worker groups a population's episodes by scenario and batches each group.

The result equals P sequential env episodes up to floating-point reassociation (``bmm`` vs ``mm``;
tests/test_population.py bounds it). Nothing is trusted blindly: the first batched step of every
stepper is compared with a real ``env.reset``/``env.step`` of member 0, and a mismatch raises
:class:`PopulationMismatch` (the worker then falls back to sequential episodes with a warning).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from mixagent.envs.actions import check_action, weights_from_action
from mixagent.trajectories.branching import Transition, compare_transition
from mixagent.trajectories.replicas import FoldError, ReplicaTrainer

log = logging.getLogger(__name__)

__all__ = ["FoldError", "PopulationMismatch", "PopulationStepper"]


class PopulationMismatch(RuntimeError):
    """The batched population does not reproduce the sequential environment."""


class PopulationStepper:
    """P members of one :class:`~mixagent.envs.proxy_env.ProxyCPTEnv`, stepped as one computation.

    ``reset(seeds)`` starts P episodes (member ``i`` is ``env.reset(seed=seeds[i])``);
    ``step(actions)`` applies member ``i``'s action to member ``i`` and returns P transitions.
    Raises :class:`~mixagent.trajectories.replicas.FoldError` when the model cannot be folded.
    The env itself is used as a tool (resets, its definitions, the verification step): its own
    episode state is not meaningful while a population runs.
    """

    def __init__(self, env: Any, size: int, *, verify: bool = True):
        if size < 1:
            raise ValueError("a population needs at least one member")
        self.env = env
        self.size = int(size)
        self.trainer = ReplicaTrainer(env.engine, self.size)
        self.verified = not verify
        self._seeds: list[int] = []
        self._samplers: list[Any] = []
        self._states: list[Any] = []
        self._step = 0  # optimizer steps done (the LR schedule position, shared)
        self._tokens = 0

    # -- episode -----------------------------------------------------------------------------------
    def reset(self, seeds: list[int]) -> list[tuple[dict[str, np.ndarray], dict[str, Any]]]:
        """Start one episode per seed; returns each member's ``(obs, info)`` of ``env.reset``."""
        if len(seeds) != self.size:
            raise ValueError(f"{len(seeds)} seeds for a population of {self.size}")
        env = self.env
        out, samplers = [], []
        for s in seeds:
            obs, info = env.reset(seed=int(s))
            # the sampler the engine just built for this data seed becomes the member's own
            samplers.append(env.engine.sampler)
            out.append((obs, info))
        if len({id(s) for s in samplers}) != len(samplers):  # the engine would have to change
            raise PopulationMismatch("the engine reuses one sampler across resets; members "
                                     "need their own")
        self._seeds = [int(s) for s in seeds]
        self._samplers = samplers
        self._states = [env.transitions.state] * self.size  # immutable: sharing is safe
        self._step = env.engine.step
        self._tokens = env.engine.tokens
        self.trainer.load_live()  # the engine holds the base and a fresh optimizer after reset
        return out

    @property
    def t(self) -> int:
        """Re-weighting steps done by every member."""
        return int(self._states[0].t) if self._states else 0

    def step(self, actions: list[np.ndarray]) -> list[Transition]:
        """Member ``i`` takes ``actions[i]``; returns the P transitions (in member order)."""
        from mixagent.envs.errors import ResetNeededError
        from mixagent.proxy.runtime import thread_scope

        env, eng = self.env, self.env.engine
        if not self._states:
            raise ResetNeededError("call reset() before step()")
        if self.t >= env.num_steps:
            raise ResetNeededError(f"the episodes ended after {env.num_steps} steps; reset first")
        if len(actions) != self.size:
            raise ValueError(f"{len(actions)} actions for a population of {self.size}")
        t0 = time.perf_counter()
        act = env.env_spec.action
        steps = eng.cpt.steps_per_action
        b, seq = eng.cpt.batch_size, eng.cpt.seq_len
        if self._step + steps > len(eng.lrs):
            raise RuntimeError("no CPT budget left for a population step")
        checked = [check_action(a, env.num_domains) for a in actions]
        weights, batches = [], []
        for a, sampler in zip(checked, self._samplers, strict=True):
            w = weights_from_action(a, act.scale, act.floor)
            sampler.set_weights(w)  # the engine's train(): set_weights, then one next_batch
            tokens, _ = sampler.next_batch(steps * b)
            weights.append(w)
            batches.append(torch.from_numpy(tokens).view(steps, b, seq))
        lrs = eng.lrs[self._step : self._step + steps]
        with thread_scope(eng.threads):
            losses = self.trainer.train(torch.stack(batches).to(eng.device), lrs)
            losses = losses.cpu()
            # each member's 1-D mean, as the engine's float(losses.mean()) (same rounding)
            train_loss = [float(losses[i].mean()) for i in range(self.size)]
            t_train = time.perf_counter() - t0
            results = self.trainer.evaluate()
            alignments = self.trainer.alignment()
        self._step += steps
        self._tokens += steps * b * seq
        t_total = time.perf_counter() - t0
        p = self.size
        out = []
        for i in range(p):
            res = results[i]
            st = env.transitions.step(self._states[i], weights[i], res.losses, res.tasks,
                                      alignments[i])
            info = env.info(st.state, tokens=self._tokens, wall=t_total / p, train=t_train / p,
                            evaluation=(t_total - t_train) / p, train_loss=float(train_loss[i]))
            self._states[i] = st.state
            out.append(Transition(np.asarray(actions[i], np.float32), st.observation, st.reward,
                                  st.terminated, False, info, batched=True))
        if not self.verified:
            self._verify(out[0], actions[0])
        return out

    # -- checks ------------------------------------------------------------------------------------
    def _verify(self, mine: Transition, action: np.ndarray) -> None:
        """Member 0's first batched transition == a real ``env.reset``/``env.step`` (only valid
        before the population's first step, which is when it is called)."""
        env = self.env
        if self.t != 1:
            raise PopulationMismatch("verification must run on a population's first step")
        env.reset(seed=self._seeds[0])
        problem = compare_transition(mine, env.step(action))
        if problem:
            raise PopulationMismatch(f"batched population does not reproduce env.step ({problem})")
        self.verified = True
        log.info("population batching verified against env.step (P=%d)", self.size)
