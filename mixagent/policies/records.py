"""What a policy's ``config.json`` records about its past: the scenario it was trained with and
its evaluation.

Both records live in ``provenance`` (so recording them never changes a policy's id or its
cached evaluation episodes) and each has exactly one typed definition here: the writers
(training, :mod:`mixagent.evaluation.card`) build these models and the readers (the card
renderer, ``mixagent demo``, a CPT run that needs the policy's reward) parse them through
:func:`scenario_record` and :func:`evaluation_record`, so a field cannot mean one thing to its
writer and another to a reader.

* ``provenance.scenario`` (:class:`ScenarioRecord`) — the env spec's name and the reward and
  observation settings of the environment the policy was trained on. A CPT run must score and
  observe the way that environment did, or the agent's inputs mean something else.
* ``provenance.evaluation`` (:class:`EvaluationRecord`, format ``mixagent.evaluation/1``) —
  written by ``mixagent evaluate --record-card``: per scenario the policy's scores, rank, the
  tuned best fixed ratio, and the paired difference against every baseline.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import Field, ValidationError

from mixagent.config import StrictModel
from mixagent.envs.spec import ObservationSpec, RewardSpec
from mixagent.errors import ConfigError

log = logging.getLogger(__name__)

EVALUATION_FORMAT = "mixagent.evaluation/1"


# -- the scenario a policy was trained with ----------------------------------------------------------
class ScenarioRecord(StrictModel):
    """The reward and observation settings of the env spec a policy was trained on."""

    name: str = Field(default="", description="the env spec's name")
    reward: RewardSpec = Field(default_factory=RewardSpec)
    observation: ObservationSpec = Field(default_factory=ObservationSpec)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], name: str = "") -> ScenarioRecord:
        """From an env spec as a dict (a trajectory collection's ``env_spec.json`` ``spec``, or
        ``EnvSpec.model_dump()``): only the settings that a run scoring this policy must share."""
        return cls(name=name or str(spec.get("name") or ""), reward=spec.get("reward") or {},
                   observation=spec.get("observation") or {})


def scenario_record(config: dict[str, Any]) -> ScenarioRecord | None:
    """``provenance.scenario`` of a policy config, or None for a policy that records none (a
    baseline saved by hand, an agent trained before the record existed)."""
    raw = (config.get("provenance") or {}).get("scenario")
    if raw is None:
        return None
    try:
        return ScenarioRecord.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"policy config: provenance.scenario is not a scenario record: {err}") from None


# -- its evaluation -------------------------------------------------------------------------------------
class Interval(StrictModel):
    """A mean over seeds with its 95% Student-t interval (None bounds for one seed)."""

    n: int
    mean: float
    std: float
    half_width: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


class BaselineComparison(StrictModel):
    """This policy against one baseline on one scenario, paired by seed."""

    baseline: str
    baseline_balanced: float
    diff: float
    diff_half_width: float | None = None
    win_rate: float
    verdict: str


class ScenarioEvaluation(StrictModel):
    """The policy's results on one evaluated scenario."""

    scenario: str
    spec_hash: str
    best_fixed_ratio: float | None = Field(
        default=None, description="the grid-searched source share (tuned on the tune seeds), if tuned")
    in_distribution: bool = False
    balanced: Interval
    source: Interval
    target: Interval
    rank: int
    of: int
    vs: list[BaselineComparison] = Field(default_factory=list)


class EvaluationRecord(StrictModel):
    """``provenance.evaluation``: what ``mixagent evaluate --record-card`` measured."""

    format: str = EVALUATION_FORMAT
    report: str
    created_at: str
    seeds: list[int]
    tune_seeds: list[int]
    scenarios: list[ScenarioEvaluation]
    description: str = ""

    def best_fixed_ratio(self, scenario: str) -> tuple[float, str] | None:
        """The tuned source share for ``scenario`` and where in the config it is, or None when
        that scenario was not evaluated with ``baseline:best_fixed_ratio``."""
        for i, sc in enumerate(self.scenarios):
            if sc.scenario == scenario and sc.best_fixed_ratio is not None \
                    and 0.0 <= sc.best_fixed_ratio <= 1.0:
                return sc.best_fixed_ratio, f"provenance.evaluation.scenarios[{i}].best_fixed_ratio"
        return None


def evaluation_record(config: dict[str, Any]) -> EvaluationRecord | None:
    """``provenance.evaluation`` of a policy config, or None when there is none.

    A record in another format is an error that says how to replace it: there is one format,
    and a reader that guessed at others would show numbers nobody can trace.
    """
    raw = (config.get("provenance") or {}).get("evaluation")
    if raw is None:
        return None
    fmt = raw.get("format") if isinstance(raw, dict) else None
    if fmt != EVALUATION_FORMAT:
        raise ConfigError(f"policy config: provenance.evaluation has format {fmt!r}, expected "
                          f"{EVALUATION_FORMAT!r}; re-run 'mixagent evaluate --record-card' with this "
                          "policy to replace it (or delete provenance.evaluation)")
    try:
        return EvaluationRecord.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"policy config: provenance.evaluation is not a {EVALUATION_FORMAT} "
                          f"record: {err}") from None

