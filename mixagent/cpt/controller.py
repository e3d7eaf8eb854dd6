"""The decision logic of a CPT run: evaluate, observe, ask the policy, schedule the weights.

:class:`MixtureController` is the part of the run that is not the Trainer: the callback
(:mod:`mixagent.cpt.callback`) only tells it *when*. It builds the policy's observation and the
scores with the environment's own definition of a step
(:class:`~mixagent.envs.transition.MixingTransition`): the step-0 evaluation is the base, each
interval between decisions is one step that applied the last decision's weights, progress =
decisions made / decisions in the run — so a policy trained on the proxy environment sees the
same numbers here.

With the ``alignment`` observation features, rank 0 also measures the per-domain gradient
alignment on the Trainer's model with the engine's own :class:`~mixagent.proxy.alignment.Aligner`
(built from the run's data, domains and evaluator), so the numbers mean what they mean in the
environment.

In a multi-process run only rank 0 evaluates and asks the policy; the weights, losses, task
metrics (and alignment) go to every rank in one tensor broadcast (no pickling), and every rank
then derives the same observation, scores and schedule from them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mixagent.cpt.dataset import replay, schedule_of
from mixagent.cpt.state import Decision, MixtureState
from mixagent.data.sampler import MixtureSampler
from mixagent.data.space import DomainSpace
from mixagent.envs.observation import ALIGNMENT_FEATURES, DOMAIN_FEATURES, feature_layout
from mixagent.envs.scoring import Scores
from mixagent.envs.spec import ObservationSpec, RewardSpec
from mixagent.envs.transition import MixingTransition, StepState, alignment_objectives
from mixagent.policies.protocol import MixingPolicy
from mixagent.proxy.alignment import Aligner
from mixagent.proxy.evaluation import Evaluator
from mixagent.proxy.runtime import thread_scope

log = logging.getLogger(__name__)


@dataclass
class DecisionPlan:
    """When decisions happen and from which sample their weights apply."""

    max_steps: int
    reweight_every: int
    samples_per_step: int
    lead_steps: int

    @property
    def num_decisions(self) -> int:
        return math.ceil(self.max_steps / self.reweight_every)

    def is_decision_step(self, step: int) -> bool:
        return step < self.max_steps and step % self.reweight_every == 0

    def start_sample(self, step: int) -> int:
        """Step 0 decides before any sample is drawn; later decisions apply ``lead_steps`` ahead,
        past what the data loader may already have prefetched."""
        return 0 if step == 0 else (step + self.lead_steps) * self.samples_per_step


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class MixtureController:
    """Owns the sampler's schedule, the policy and the mixture state of one run."""

    def __init__(self, *, sampler: MixtureSampler, policy: MixingPolicy, space: DomainSpace,
                 plan: DecisionPlan, reward: RewardSpec, observation: ObservationSpec,
                 evaluator_factory: Any, task_keys: list[tuple[str, str]], policy_seed: int,
                 policy_name: str, policy_id: str | None = None,
                 batch: dict[str, int] | None = None,
                 process_timing: Callable[[], dict[str, float]] | None = None,
                 aligner_factory: Callable[[Any], Callable[[torch.nn.Module], np.ndarray]]
                 | None = None):
        self.sampler = sampler
        self.policy = policy
        self.space = space
        self.plan = plan
        self.reward = reward
        self.obs_spec = observation
        self._evaluator_factory = evaluator_factory
        self._evaluator: Evaluator | None = None
        self.layout = feature_layout(observation.features)
        #: evaluator -> alignment function (the default builds an Aligner on the sampler's data;
        #: tests script it)
        self._aligner_factory = aligner_factory or self._default_aligner
        self._aligner: Callable[[torch.nn.Module], np.ndarray] | None = None
        self.task_keys = task_keys  # (task, metric) pairs, in broadcast order
        self.policy_seed = policy_seed
        self.is_target = space.is_target
        #: the environment's step definition, measured against the step-0 evaluation (set then)
        self.transition: MixingTransition | None = None
        self.state = MixtureState(domains=list(space.names), seed=sampler.seed,
                                  seq_len=sampler.seq_len, samples_per_step=plan.samples_per_step,
                                  policy=policy_name, reweight_every=plan.reweight_every,
                                  policy_id=policy_id, batch=batch)
        self.policy.reset(space, policy_seed)
        self.decision_seconds = 0.0  # policy + observation + broadcast (not evaluation)
        self.eval_seconds = 0.0
        #: this process's time counters (run_cpt's clock); saved as run totals at each checkpoint
        self.process_timing = process_timing
        #: the run's totals at the checkpoint this process resumed from (empty for a fresh run)
        self.timing_before: dict[str, float] = {}

    # -- decisions ---------------------------------------------------------------------------------
    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            self._evaluator = self._evaluator_factory()
        return self._evaluator

    def _default_aligner(self, evaluator: Evaluator) -> Aligner:
        a = self.obs_spec.alignment
        return Aligner(self.sampler.data, list(self.space.names), evaluator,
                       alignment_objectives(self.reward, np.asarray(self.is_target)), a.sequences,
                       a.params, self.sampler.seq_len, evaluator.batch_size)

    def alignment(self, model: torch.nn.Module) -> np.ndarray | None:
        """The alignment features of ``model`` (``[K, 2]``), or None when not observed."""
        if not self.layout.alignment:
            return None
        if self._aligner is None:
            self._aligner = self._aligner_factory(self.evaluator())
        return np.asarray(self._aligner(model), dtype=np.float64)

    def decide(self, step: int, model: torch.nn.Module, device: torch.device,
               train_loss: float | None) -> Decision:
        """Evaluate (rank 0), ask the policy (rank 0), share, and schedule on every rank."""
        rank, world = _rank_world()
        k = self.space.num_domains
        first = self.state.base_losses is None
        t_eval = 0.0
        n_tasks = len(self.task_keys)
        n_align = 2 * k if self.layout.alignment else 0
        packed = torch.zeros(2 * k + n_tasks + n_align, dtype=torch.float64)
        align: np.ndarray | None = None
        if rank == 0:
            t0 = time.perf_counter()
            result = self.evaluator()(model)
            align = self.alignment(model)
            t_eval = time.perf_counter() - t0
            losses, tasks = result.losses, result.tasks
            t1 = time.perf_counter()
            if first:
                self._set_base(losses, tasks, align)
            obs, _, _ = self._observe(losses, tasks, align)
            # one thread: a policy network is tiny, and torch's thread pool contending with
            # the training threads made one act() ~100x slower (180 ms vs 1.2 ms measured)
            with thread_scope(1):
                if train_loss is not None and math.isfinite(train_loss):
                    self.policy.feedback(train_loss=train_loss)
                w = self.policy.act(obs)
            packed[:k] = torch.from_numpy(np.asarray(w, dtype=np.float64))
            packed[k : 2 * k] = torch.from_numpy(np.asarray(losses, dtype=np.float64))
            for i, (t, m) in enumerate(self.task_keys):
                packed[2 * k + i] = tasks[t][m]
            if align is not None:
                packed[2 * k + n_tasks :] = torch.from_numpy(align.reshape(-1))
            t_policy = time.perf_counter() - t1
        else:
            t1, t_policy = time.perf_counter(), 0.0
        if world > 1:
            t2 = time.perf_counter()
            buf = packed.to(device)
            torch.distributed.broadcast(buf, src=0)
            packed = buf.cpu()
            t_policy += time.perf_counter() - t2
        w = packed[:k].numpy().copy()
        losses = packed[k : 2 * k].numpy().copy()
        tasks: dict[str, dict[str, float]] = {}
        for i, (t, m) in enumerate(self.task_keys):
            tasks.setdefault(t, {})[m] = float(packed[2 * k + i])
        align = packed[2 * k + n_tasks :].numpy().reshape(k, 2).copy() if n_align else None
        if rank != 0 and first:
            self._set_base(losses, tasks, align)
        t3 = time.perf_counter()
        obs, scores, state = self._observe(losses, tasks, align)
        start = self.plan.start_sample(step)
        if start < self.sampler.position:
            raise RuntimeError(
                f"the data loader has already drawn sample {self.sampler.position}, past sample {start} "
                f"where the weights decided at step {step} should start; raise lead_steps (now "
                f"{self.plan.lead_steps}) to cover the loader's prefetching")
        self.sampler.set_weights(w, start=start)
        dec = Decision(step=step, start_sample=start,
                       observation={"domains": obs["domains"].tolist(), "global": obs["global"].tolist()},
                       train_loss=None if train_loss is None or not math.isfinite(train_loss) else float(train_loss),
                       weights=[float(x) for x in w], losses=[float(x) for x in losses], tasks=tasks,
                       scores={"source": scores.source, "target": scores.target, "balanced": scores.balanced},
                       decision_seconds=t_policy + time.perf_counter() - t3, eval_seconds=t_eval)
        self.state.decisions.append(dec)
        assert self.transition is not None
        self.transition.restore(state)
        self.decision_seconds += dec.decision_seconds
        self.eval_seconds += t_eval
        return dec

    def evaluate(self, model: torch.nn.Module) -> dict[str, Any]:
        """A final evaluation on rank 0 (losses, tasks, scores against the base)."""
        t0 = time.perf_counter()
        result = self.evaluator()(model)
        self.eval_seconds += time.perf_counter() - t0
        assert self.transition is not None
        s = self.transition.score(result.losses, result.tasks)
        return {"losses": dict(zip(self.space.names, (float(x) for x in result.losses), strict=True)),
                "tasks": result.tasks,
                "scores": {"source": s.source, "target": s.target, "balanced": s.balanced},
                "terms": dict(s.terms)}

    # -- observation (the environment's definition) ---------------------------------------------
    def _set_base(self, losses: np.ndarray, tasks: dict[str, dict[str, float]],
                  alignment: np.ndarray | None) -> None:
        self.state.base_losses = [float(x) for x in losses]
        self.state.base_tasks = {t: dict(m) for t, m in tasks.items()}
        self.transition = self._transition_of(self.state, alignment)

    def _transition_of(self, state: MixtureState, alignment: np.ndarray | None) -> MixingTransition:
        assert state.base_losses is not None
        return MixingTransition(np.asarray(state.base_losses), state.base_tasks, self.is_target,
                                self.reward, self.obs_spec, self.plan.num_decisions, alignment)

    def _recorded_alignment(self, dec: Decision) -> np.ndarray | None:
        """A decision's alignment, read back from its recorded observation. Exact for rebuilding
        observations: the observation holds the cosines as float32 (in [-1, 1], never clipped),
        and observing them again rounds to the same float32."""
        if not self.layout.alignment:
            return None
        cols = [self.layout.domains.index(f) for f in ALIGNMENT_FEATURES]
        dom = np.asarray(dec.observation["domains"], dtype=np.float32)
        if dom.ndim != 2 or dom.shape[1] != len(self.layout.domains):
            raise RuntimeError(
                f"the checkpoint's observations have {dom.shape[-1]} per-domain features; this run "
                f"observes {len(self.layout.domains)} ({', '.join(self.layout.domains)}): resume "
                f"with the observation settings it was written with (v1: "
                f"{len(DOMAIN_FEATURES)} features)")
        return dom[:, cols].astype(np.float64)

    def _observe(self, losses: np.ndarray, tasks: dict[str, dict[str, float]],
                 alignment: np.ndarray | None
                 ) -> tuple[dict[str, np.ndarray], Scores, StepState]:
        """Observation, scores and end state of the interval since the last decision (nothing
        is committed: rank 0 observes once before the broadcast and once after)."""
        tr = self.transition
        assert tr is not None
        decs = self.state.decisions
        if not decs:  # the step-0 evaluation is the base: the state before any step
            return tr.observe(tr.state), tr.state.scores, tr.state
        out = tr.step(tr.state, np.asarray(decs[-1].weights), losses, tasks, alignment)
        return out.observation, out.state.scores, out.state

    # -- state ---------------------------------------------------------------------------------------
    def total_timing(self, process: dict[str, float]) -> dict[str, float]:
        """Run totals: what the processes before the last resume spent up to its checkpoint,
        plus ``process`` (this process's counters). Time a killed process spent past its last
        checkpoint is lost work and not counted."""
        keys = dict.fromkeys([*self.timing_before, *process])
        return {k: float(self.timing_before.get(k, 0.0)) + float(process.get(k, 0.0)) for k in keys}

    def capture(self, global_step: int) -> MixtureState:
        """The state at a checkpoint after ``global_step`` optimizer steps."""
        self.state.schedule = schedule_of(self.sampler)
        self.state.global_step = int(global_step)
        self.state.consumed = int(global_step) * self.plan.samples_per_step
        self.state.policy_state = self.policy.state_dict()
        if self.process_timing is not None:
            self.state.timing = self.total_timing(self.process_timing())
        return self.state

    def restore(self, saved: MixtureState, where: str) -> None:
        """Continue a saved run: replay the sampler to the consumed samples, load the policy's
        saved run state (or, from a checkpoint written before policies had one, replay the
        policy through its recorded decisions) and rebuild the step state from the decisions."""
        saved.check_compatible(self.state, where)
        if self.sampler.position != 0:
            raise RuntimeError("restore() needs a sampler that has not drawn yet")
        replay(self.sampler, [(s, w) for s, w in saved.schedule], saved.consumed)
        self.policy.reset(self.space, self.policy_seed)
        if saved.policy_state is not None:
            self.policy.load_state_dict(saved.policy_state)
            how = "policy state loaded"
        else:
            self._replay_policy(saved.decisions)
            how = "policy replayed through its decisions (a checkpoint without policy state)"
        if saved.base_losses is not None:
            first = self._recorded_alignment(saved.decisions[0]) if saved.decisions else None
            self.transition = self._transition_of(saved, first)
            for before, dec in zip(saved.decisions, saved.decisions[1:], strict=False):
                self.transition.advance(np.asarray(before.weights), np.asarray(dec.losses), dec.tasks,
                                        self._recorded_alignment(dec))
            self._check_observation(saved.decisions)
        if saved.policy != self.state.policy:
            log.info("resuming with policy %s: the checkpoint was written under %s, the same policy "
                     "(identical parameters and weights)", self.state.policy, saved.policy)
        saved.policy = self.state.policy
        # a state written before these were recorded: record them from now on
        saved.policy_id = self.state.policy_id
        saved.reweight_every = self.state.reweight_every
        saved.batch = self.state.batch
        self.timing_before = {k: float(v) for k, v in saved.timing.items()}
        self.state = saved
        log.info("resumed mixture at step %d: %d samples consumed, %d decisions, %s",
                 saved.global_step, saved.consumed, len(saved.decisions), how)

    def _replay_policy(self, decisions: list[Decision]) -> None:
        """Rebuild a deterministic policy's online state by feeding it its recorded decisions."""
        for i, dec in enumerate(decisions):
            obs = {k: np.asarray(v, dtype=np.float32) for k, v in dec.observation.items()}
            with thread_scope(1):
                if dec.train_loss is not None:
                    self.policy.feedback(train_loss=dec.train_loss)
                w = self.policy.act(obs)
            if not np.allclose(w, dec.weights, atol=1e-6):
                # check_compatible has established that this is the same policy (same fingerprint)
                log.warning("policy replay: decision %d (step %d) gives %s, the run recorded %s; the "
                            "same policy replays differently, so it is not deterministic and its "
                            "online state may differ from the original run's (the recorded "
                            "schedule is kept)", i, dec.step,
                            np.round(w, 4).tolist(), np.round(dec.weights, 4).tolist())

    def _check_observation(self, decisions: list[Decision]) -> None:
        """Warn if the rebuilt step state does not give the last recorded observation: the run
        was resumed with other ``reward`` / ``observation`` settings, so later observations are
        not those the original run would have seen."""
        assert self.transition is not None
        if not decisions:
            return
        obs = self.transition.observation()
        rec = decisions[-1].observation
        if any(not np.array_equal(obs[k], np.asarray(rec[k], dtype=np.float32)) for k in obs):
            log.warning("resume: the observation rebuilt from the checkpoint's decisions differs from "
                        "the recorded one (were the reward or observation settings changed?); the "
                        "run continues with this run's settings")
