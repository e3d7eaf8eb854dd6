"""``ProxyCPTEnv`` (``mixagent/ProxyCPT-v0``): choosing the data mixture of a proxy CPT run.

The environment is a thin Gymnasium layer over :class:`~mixagent.proxy.engine.ProxyEngine`:
the action becomes domain weights (:mod:`mixagent.envs.actions`), the engine trains one
re-weighting step under them and evaluates, and the evaluation becomes an observation and a
reward through :class:`~mixagent.envs.transition.MixingTransition` — the one definition of a
step that production CPT runs and batched branching use too.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from mixagent.envs.actions import check_action, check_weights, weights_from_action
from mixagent.envs.errors import ResetNeededError
from mixagent.envs.observation import feature_layout, observation_space
from mixagent.envs.scoring import Scores
from mixagent.envs.setup import build_engine, resolve_spec
from mixagent.envs.spec import EnvSpec
from mixagent.envs.transition import MixingTransition, StepState, alignment_objectives

log = logging.getLogger(__name__)


class Seconds(float):
    """A wall-clock measurement in ``info``: a float in every respect except equality.

    Timings belong to the machine, not to the transition, so two ``Seconds`` always compare
    equal (``==`` True, ``!=`` False); compared with a plain float they behave as floats. That
    keeps the ``info`` of two identical transitions equal — Gymnasium's determinism check
    compares infos — while ``info["wall_time"]`` stays a number for logging and arithmetic.
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return True if isinstance(other, Seconds) else float.__eq__(self, other)  # type: ignore[arg-type]

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = float.__hash__


@dataclass
class EnvSnapshot:
    """Everything needed to branch from the current step (see :meth:`ProxyCPTEnv.snapshot`)."""

    engine: Any  # EngineSnapshot
    state: StepState  # the evaluation the next observation and reward are measured from
    started: bool  # reset() has been called
    rng_state: dict[str, Any] | None


class ProxyCPTEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Set the domain weights of a small proxy's continual pre-training, one step at a time.

    Args:
        spec: an :class:`~mixagent.envs.spec.EnvSpec` or the path of its YAML file.
        progress: show a progress bar if the base must be pre-trained (default: on a terminal).

    **Episode.** ``reset`` restores the cached base model exactly (parameters and optimizer)
    and draws a new data order from the env's seeded ``np_random``. Each ``step`` trains
    ``cpt.tokens_per_step`` tokens under the chosen weights, then evaluates. After
    ``cpt.num_steps`` steps the episode terminates (the CPT budget is spent); stepping again
    raises :class:`~mixagent.envs.errors.ResetNeededError`.

    **Action.** ``Box(-1, 1, (K,), float32)``, one logit per domain, mapped onto the simplex by
    ``w = (1 - K·floor)·softmax(scale·a) + floor`` (:func:`~mixagent.envs.actions.
    weights_from_action`; its inverse is ``action_from_weights``). Out-of-range values are
    clipped; a wrong shape, NaN, inf, or anything but real numbers (strings, complex numbers,
    booleans) raises :class:`~mixagent.envs.errors.InvalidActionError`.
    :meth:`step_weights` applies exact weights instead (baselines, fixed mixtures).

    **Observation.** ``Dict(domains=Box(K, 5), global=Box(4))`` — per-domain features
    ``weight, loss, loss_change_base, loss_change_step, is_target`` and global features
    ``progress, source_score, target_score, balanced_score``, all clipped into finite
    documented ranges (:mod:`mixagent.envs.observation`). ``observation.features`` adds the
    per-domain ``align_source, align_target`` (gradient cosines with each field's benchmark
    loss) and the global ``source_benchmark, target_benchmark``.

    **Reward.** ``reward.scale × (balanced_t − balanced_{t−1})`` where the balanced score
    aggregates a source score (retention) and a target score (gain), each normalised so the
    base scores 0 (:class:`~mixagent.envs.spec.RewardSpec`). The return of an episode is
    therefore ``scale ×`` its final balanced score.

    **Info.** ``weights`` (applied), ``losses`` (per domain), ``scores`` (source, target,
    balanced), ``terms``, ``task_metrics``, ``tokens`` (trained this episode), ``train_loss``,
    ``wall_time`` / ``train_time`` / ``eval_time`` (seconds of this step, as :class:`Seconds`:
    timings compare equal so identical transitions have equal infos), ``step``.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - Gymnasium's convention

    def __init__(self, spec: EnvSpec | str | Path, *, progress: bool | None = None):
        self.resolved = resolve_spec(spec)
        self.env_spec: EnvSpec = self.resolved.spec
        self.engine = build_engine(self.resolved, progress=progress)
        self.domain_names: list[str] = list(self.resolved.domains)
        self.is_target: np.ndarray = self.resolved.is_target.copy()
        self.num_domains = len(self.domain_names)
        self.num_steps = self.env_spec.cpt.num_steps
        obs_spec = self.env_spec.observation
        #: the observation's feature names (v1's unless ``observation.features`` adds groups)
        self.layout = feature_layout(obs_spec.features)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.num_domains,), np.float32)
        self.observation_space = observation_space(self.num_domains, obs_spec.loss_max,
                                                   obs_spec.score_max, self.layout)
        base = self.engine.base_eval
        base_alignment = None
        if self.layout.alignment:
            base_alignment = self.engine.attach_alignment(
                alignment_objectives(self.env_spec.reward, self.is_target),
                obs_spec.alignment.sequences, obs_spec.alignment.params)
        #: what a step means (scores, observation, reward), shared with CPT runs and branching
        self.transitions = MixingTransition(base.losses, base.tasks, self.is_target,
                                            self.env_spec.reward, obs_spec, self.num_steps,
                                            base_alignment)
        self.base_losses: np.ndarray = self.transitions.base_losses
        self.base_tasks: dict[str, dict[str, float]] = self.transitions.base_tasks
        self.base_scores: Scores = self.transitions.base_scores
        self._started = False

    # -- Gymnasium API ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        data_seed = int(self.np_random.integers(0, 2**31 - 1))
        self.engine.reset(data_seed)
        self._started = True
        obs = self.transitions.reset()
        info = self.info(self.transitions.state, tokens=self.engine.tokens, wall=0.0, train=0.0,
                         evaluation=0.0, train_loss=float("nan"))
        info["data_seed"] = data_seed
        return obs, info

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool,
                                                 dict[str, Any]]:
        self._check_running()
        a = check_action(action, self.num_domains)
        act = self.env_spec.action
        return self._advance(weights_from_action(a, act.scale, act.floor))

    def step_weights(self, weights: np.ndarray | list[float]) -> tuple[
            dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Like :meth:`step` but with exact domain weights (normalised; no action map, no floor).

        For fixed mixtures and baselines that must apply e.g. target-only weights exactly. Bad
        weights (not K finite non-negative real numbers, all zero) raise the same
        :class:`~mixagent.envs.errors.InvalidActionError` as a bad action.
        """
        self._check_running()
        return self._advance(check_weights(weights, self.num_domains, self.domain_names))

    # -- branching -------------------------------------------------------------------------------
    def snapshot(self) -> EnvSnapshot:
        """The full state after the current step; :meth:`restore` continues from it exactly."""
        rng = copy.deepcopy(self._np_random.bit_generator.state) if self._np_random else None
        return EnvSnapshot(self.engine.snapshot(), self.transitions.snapshot(), self._started, rng)

    def restore(self, snap: EnvSnapshot) -> dict[str, np.ndarray]:
        """Return to a snapshot (repeatably) and give its observation."""
        self.engine.restore(snap.engine)
        self._started = snap.started
        if snap.rng_state is not None:
            self.np_random.bit_generator.state = copy.deepcopy(snap.rng_state)
        return self.transitions.restore(snap.state)

    # -- internals -------------------------------------------------------------------------------
    def _check_running(self) -> None:
        if not self._started:
            raise ResetNeededError("call reset() before step()")
        if self.transitions.state.t >= self.num_steps:
            raise ResetNeededError(f"the episode ended after {self.num_steps} steps (terminated="
                                   "True); call reset() to start a new one")

    def _advance(self, weights: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool,
                                                      dict[str, Any]]:
        t0 = time.perf_counter()
        stats = self.engine.train(weights)
        t1 = time.perf_counter()
        result = self.engine.evaluate()
        alignment = self.engine.evaluate_alignment()
        evaluation = time.perf_counter() - t1
        step = self.transitions.advance(weights, result.losses, result.tasks, alignment)
        info = self.info(step.state, tokens=self.engine.tokens, wall=time.perf_counter() - t0,
                         train=stats.seconds, evaluation=evaluation, train_loss=stats.loss)
        return step.observation, step.reward, step.terminated, False, info

    def info(self, state: StepState, *, tokens: int, wall: float, train: float,
             evaluation: float, train_loss: float) -> dict[str, Any]:
        """The ``info`` of a step that ended in ``state`` (batched branching builds its rows'
        infos with it, so they are the env's own)."""
        s = state.scores
        return {
            "step": state.t,
            "weights": state.weights.copy(),
            "losses": state.losses.copy(),
            "scores": {"source": s.source, "target": s.target, "balanced": s.balanced},
            "terms": dict(s.terms),
            "task_metrics": copy.deepcopy(state.tasks),
            "tokens": tokens,
            "train_loss": train_loss,
            "wall_time": Seconds(wall),
            "train_time": Seconds(train),
            "eval_time": Seconds(evaluation),
        }
