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

With the optional observation groups (``observation.features``) the transition also carries
each field's benchmark score (from the scores' benchmark terms) and the per-domain gradient
alignment, which is an *input* like the losses: whoever evaluated the model computes it with
:class:`~mixagent.proxy.alignment.Aligner` (the engine, the CPT controller, batched branching),
and the transition only places it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mixagent.envs.observation import FeatureLayout, feature_layout, make_observation
from mixagent.envs.scoring import Scores, score
from mixagent.envs.spec import ObservationSpec, RewardSpec

if TYPE_CHECKING:
    from mixagent.proxy.alignment import FieldObjective

TaskMetrics = dict[str, dict[str, float]]


def _tasks_copy(tasks: Mapping[str, Mapping[str, float]]) -> TaskMetrics:
    return {name: dict(metrics) for name, metrics in tasks.items()}


def _benchmark_terms(terms: Mapping[str, float]) -> dict[str, float]:
    """The benchmark terms of a field's reward terms: every ``<task>.<metric>``, i.e. all but
    the domain-loss term ``loss``."""
    return {name: w for name, w in terms.items() if name != "loss"}


def benchmark_scores(scores: Scores, reward: RewardSpec) -> tuple[float, float]:
    """(source, target) benchmark scores: each field's score restricted to its benchmark terms —
    their weighted mean with the reward's weights, each term already normalised against the
    base (0 = base, higher is better). 0 for a field without a benchmark term (or with zero
    weights), which then reads as "no change", the same as the base."""
    out = []
    for role, terms in (("source", reward.source_terms), ("target", reward.target_terms)):
        bench = _benchmark_terms(terms)
        total = sum(bench.values())
        out.append(sum(w * scores.terms[f"{role}.{n}"] for n, w in bench.items()) / total
                   if total > 0 else 0.0)
    return out[0], out[1]


def objective_features(reward: RewardSpec) -> tuple[float, float, float, float]:
    """The ``objective`` observation group: what the reward asks for, as numbers a policy can
    condition on — the source field's weight in the balanced score (``mean`` and ``min`` weigh
    the fields alike: 0.5), whether the balanced score is the worse field's (``min``), and each
    field's share of its term weights on benchmark terms (the rest is the domain-loss term).

    Why observed: a scenario family varies these, and which mixture is best depends on them (how
    much forgetting the source field may pay for the target); without them a policy sees only
    scores, from which the weighting is a ratio of differences, and nothing at reset."""
    weight = reward.source_weight if reward.aggregator == "weighted" else 0.5
    shares = []
    for terms in (reward.source_terms, reward.target_terms):
        total = sum(abs(w) for w in terms.values())
        bench = sum(abs(w) for w in _benchmark_terms(terms).values())
        shares.append(bench / total if total > 0 else 0.0)
    return float(weight), float(reward.aggregator == "min"), shares[0], shares[1]


def alignment_objectives(reward: RewardSpec, is_target: np.ndarray) -> list[FieldObjective]:
    """The (source, target) objectives whose gradients the alignment features compare with:
    each field's benchmarks weighted by the sum of its terms' weights on them (``exact_match``,
    ``answer_loss`` and ``answer_logprob`` of one qa benchmark all point at its answer NLL), or,
    for a field without a benchmark term, the held-out loss of its domains."""
    from mixagent.proxy.alignment import FieldObjective

    out = []
    for terms, mask in ((reward.source_terms, ~is_target), (reward.target_terms, is_target)):
        bench: dict[str, float] = {}
        for name, w in _benchmark_terms(terms).items():
            if w > 0:
                task = name.rpartition(".")[0]
                bench[task] = bench.get(task, 0.0) + w
        out.append(FieldObjective(bench, tuple(int(k) for k in np.flatnonzero(mask))))
    return out


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
    alignment: np.ndarray | None = None  # [K, 2] gradient cosines after step t (if observed)


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
        base_alignment: the base model's alignment features (``[K, 2]``), required when the
            observation has the ``alignment`` group; every step then needs its own.

    The stateful part (:attr:`state`, :meth:`advance`, :meth:`snapshot`, :meth:`restore`) is
    what a single run uses; :meth:`step` is the pure function behind it, for callers that try
    several steps from one state (branching).
    """

    def __init__(self, base_losses: np.ndarray, base_tasks: Mapping[str, Mapping[str, float]],
                 is_target: np.ndarray, reward: RewardSpec, observation: ObservationSpec,
                 num_steps: int, base_alignment: np.ndarray | None = None):
        self.layout: FeatureLayout = feature_layout(observation.features)
        self.base_alignment = self._alignment(base_alignment)
        self.base_losses = np.array(base_losses, dtype=np.float64)
        self.base_tasks = _tasks_copy(base_tasks)
        self.is_target = np.asarray(is_target, dtype=bool).copy()
        self.reward_spec = reward
        self.obs_spec = observation
        self.num_steps = int(num_steps)
        self.objective = objective_features(reward) if self.layout.objective else None
        self.base_scores = self.score(self.base_losses, self.base_tasks)
        self.state = self.start()

    def _alignment(self, alignment: np.ndarray | None) -> np.ndarray | None:
        """A private ``[K, 2]`` copy when the layout observes alignment (required then), else None."""
        if not self.layout.alignment:
            return None
        if alignment is None:
            raise ValueError("the observation has the 'alignment' features: every evaluation "
                             "needs its alignment (proxy.alignment.Aligner)")
        return np.array(alignment, dtype=np.float64).reshape(-1, 2)

    # -- the definition --------------------------------------------------------------------------
    def score(self, losses: np.ndarray, tasks: Mapping[str, Mapping[str, float]]) -> Scores:
        """Scores of an evaluation against the base (0 = the base, higher is better)."""
        return score(np.asarray(losses, dtype=np.float64), tasks, self.base_losses,
                     self.base_tasks, self.is_target, self.reward_spec)

    def start(self) -> StepState:
        """The state before the first step: the base evaluation, no weights applied yet."""
        align = None if self.base_alignment is None else self.base_alignment.copy()
        return StepState(0, np.zeros(self.is_target.size), self.base_losses.copy(),
                         self.base_losses.copy(), _tasks_copy(self.base_tasks), self.base_scores,
                         align)

    def observe(self, state: StepState) -> dict[str, np.ndarray]:
        """The observation of ``state`` (fresh arrays)."""
        o, s = self.obs_spec, state.scores
        bench = benchmark_scores(s, self.reward_spec) if self.layout.benchmark_scores else None
        return make_observation(state.weights, state.losses, self.base_losses, state.prev_losses,
                                self.is_target, state.t / self.num_steps, s.source, s.target,
                                s.balanced, o.loss_max, o.score_max, alignment=state.alignment,
                                benchmarks=bench, objective=self.objective)

    def step(self, state: StepState, weights: np.ndarray, losses: np.ndarray,
             tasks: Mapping[str, Mapping[str, float]], alignment: np.ndarray | None = None) -> Step:
        """From ``state``, a step that applied ``weights`` and then evaluated to ``losses`` and
        ``tasks`` (and ``alignment``, when observed). Pure: ``state`` is not changed and nothing
        of ``self`` is."""
        scores = self.score(losses, tasks)
        after = StepState(state.t + 1, np.array(weights, dtype=np.float64),
                          np.array(losses, dtype=np.float64), state.losses, _tasks_copy(tasks),
                          scores, self._alignment(alignment))
        reward = self.reward_spec.scale * (scores.balanced - state.scores.balanced)
        return Step(after, self.observe(after), float(reward), after.t >= self.num_steps)

    # -- one run ---------------------------------------------------------------------------------
    def reset(self) -> dict[str, np.ndarray]:
        """Back to the base; returns its observation."""
        self.state = self.start()
        return self.observe(self.state)

    def advance(self, weights: np.ndarray, losses: np.ndarray,
                tasks: Mapping[str, Mapping[str, float]], alignment: np.ndarray | None = None
                ) -> Step:
        """:meth:`step` from the current state, which becomes the step's end state."""
        out = self.step(self.state, weights, losses, tasks, alignment)
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
