"""What one re-weighting step means: an evaluation in; scores, observation and reward out.

Three places turn evaluations into what a policy sees — the proxy environment's ``step``, the
production CPT run's decisions (:class:`~mixagent.cpt.controller.MixtureController`) and batched
branching in trajectory collection, which trains K branches at once and must report exactly what
K ``step`` calls would. If each built its own observation, a policy trained on one could see
other numbers in another, and nothing would notice; so all three use :class:`MixingTransition`
(``tests/test_transition.py`` feeds the same evaluations through all three and compares).

The state is an immutable :class:`StepState`: a step returns a new one, so snapshotting is
keeping a reference, branches can start from one state without copying it, and restoring is
putting it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from mixagent.envs.observation import make_observation
from mixagent.envs.scoring import Scores, score
from mixagent.envs.spec import ObservationSpec, RewardSpec

TaskMetrics = dict[str, dict[str, float]]


def _tasks_copy(tasks: Mapping[str, Mapping[str, float]]) -> TaskMetrics:
    return {name: dict(metrics) for name, metrics in tasks.items()}


@dataclass(frozen=True)
class StepState:
    """The evaluation after ``t`` steps, from which the next observation and reward are measured.

    Never mutated (its arrays are private copies): a snapshot is the object itself.
    """

    t: int
    weights: np.ndarray  # applied in step t (zeros before the first step)
    losses: np.ndarray  # per-domain held-out loss after step t
    prev_losses: np.ndarray  # ... after step t-1 (the base's at t=0)
    tasks: TaskMetrics
    scores: Scores


@dataclass(frozen=True)
class Step:
    """The outcome of one step: the state after it, what the policy sees, and the reward."""

    state: StepState
    observation: dict[str, np.ndarray]
    reward: float
    terminated: bool


class MixingTransition:
    """Scores, observation and reward of a mixing run, measured against its base evaluation.

    Args:
        base_losses, base_tasks: the evaluation every score is normalised against (the proxy's
            base; a CPT run's model at step 0).
        is_target: per domain, whether it belongs to the target field.
        reward: how scores and the reward are computed (the env spec's ``reward``).
        observation: the observation's clip ranges (the env spec's ``observation``).
        num_steps: steps in a run (an episode's ``cpt.num_steps``; a CPT run's decisions), the
            denominator of ``progress``.

    The stateful part (:attr:`state`, :meth:`advance`, :meth:`snapshot`, :meth:`restore`) is
    what a single run uses; :meth:`step` is the pure function behind it, for callers that try
    several steps from one state (branching).
    """

    def __init__(self, base_losses: np.ndarray, base_tasks: Mapping[str, Mapping[str, float]],
                 is_target: np.ndarray, reward: RewardSpec, observation: ObservationSpec,
                 num_steps: int):
        self.base_losses = np.array(base_losses, dtype=np.float64)
        self.base_tasks = _tasks_copy(base_tasks)
        self.is_target = np.asarray(is_target, dtype=bool).copy()
        self.reward_spec = reward
        self.obs_spec = observation
        self.num_steps = int(num_steps)
        self.base_scores = self.score(self.base_losses, self.base_tasks)
        self.state = self.start()

    # -- the definition --------------------------------------------------------------------------
    def score(self, losses: np.ndarray, tasks: Mapping[str, Mapping[str, float]]) -> Scores:
        """Scores of an evaluation against the base (0 = the base, higher is better)."""
        return score(np.asarray(losses, dtype=np.float64), tasks, self.base_losses,
                     self.base_tasks, self.is_target, self.reward_spec)

    def start(self) -> StepState:
        """The state before the first step: the base evaluation, no weights applied yet."""
        return StepState(0, np.zeros(self.is_target.size), self.base_losses.copy(),
                         self.base_losses.copy(), _tasks_copy(self.base_tasks), self.base_scores)

    def observe(self, state: StepState) -> dict[str, np.ndarray]:
        """The observation of ``state`` (fresh arrays)."""
        o, s = self.obs_spec, state.scores
        return make_observation(state.weights, state.losses, self.base_losses, state.prev_losses,
                                self.is_target, state.t / self.num_steps, s.source, s.target,
                                s.balanced, o.loss_max, o.score_max)

    def step(self, state: StepState, weights: np.ndarray, losses: np.ndarray,
             tasks: Mapping[str, Mapping[str, float]]) -> Step:
        """From ``state``, a step that applied ``weights`` and then evaluated to ``losses`` and
        ``tasks``. Pure: ``state`` is not changed and nothing of ``self`` is."""
        scores = self.score(losses, tasks)
        after = StepState(state.t + 1, np.array(weights, dtype=np.float64),
                          np.array(losses, dtype=np.float64), state.losses, _tasks_copy(tasks),
                          scores)
        reward = self.reward_spec.scale * (scores.balanced - state.scores.balanced)
        return Step(after, self.observe(after), float(reward), after.t >= self.num_steps)

    # -- one run ---------------------------------------------------------------------------------
    def reset(self) -> dict[str, np.ndarray]:
        """Back to the base; returns its observation."""
        self.state = self.start()
        return self.observe(self.state)

    def advance(self, weights: np.ndarray, losses: np.ndarray,
                tasks: Mapping[str, Mapping[str, float]]) -> Step:
        """:meth:`step` from the current state, which becomes the step's end state."""
        out = self.step(self.state, weights, losses, tasks)
        self.state = out.state
        return out

    def observation(self) -> dict[str, np.ndarray]:
        """The observation of the current state."""
        return self.observe(self.state)

    def snapshot(self) -> StepState:
        """The current state (immutable, so no copy is needed); :meth:`restore` returns to it."""
        return self.state

    def restore(self, state: StepState) -> dict[str, np.ndarray]:
        """Return to a snapshot (repeatably) and give its observation."""
        self.state = state
        return self.observe(state)
