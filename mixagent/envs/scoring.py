"""Balanced source/target scores, normalised against the base (see :class:`RewardSpec`).

Pure numpy on evaluation results, so evaluation reports and baselines compute exactly the
numbers the environment rewards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mixagent.data.manifest import metric_value
from mixagent.envs.spec import RewardSpec


@dataclass(frozen=True)
class Scores:
    """Field scores (0 = the base, higher = better) and their balanced aggregate."""

    source: float
    target: float
    balanced: float
    terms: dict[str, float] = field(default_factory=dict)  # e.g. "target.loss"


def _relative_gain(base: float | np.ndarray, cur: float | np.ndarray,
                   normalisation: str = "relative") -> float:
    """Mean gain of a loss-like quantity (positive, lower is better) against the base.

    ``relative``: ``(b - c) / b`` (v1). ``bounded``: ``2 (b - c) / (b + c)``, in (-2, 2); the
    same slope at ``c = b``, antisymmetric in (b, c), 0 when both are 0 (see :class:`RewardSpec`).
    """
    if normalisation == "relative":  # v1's expression exactly (same dtypes, same bits)
        return float(np.mean((np.asarray(base) - np.asarray(cur)) / np.asarray(base)))
    b = np.asarray(base, dtype=np.float64)
    c = np.asarray(cur, dtype=np.float64)
    if normalisation == "bounded":
        den = b + c
        return float(np.mean(np.divide(2.0 * (b - c), den, out=np.zeros_like(den), where=den != 0)))
    raise ValueError(f"unknown normalisation {normalisation!r}; use 'relative' or 'bounded'")


def term_value(name: str, mask: np.ndarray, losses: np.ndarray,
               tasks: Mapping[str, Mapping[str, float]], base_losses: np.ndarray,
               base_tasks: Mapping[str, Mapping[str, float]], normalisation: str = "relative") -> float:
    """One normalised term: ``loss`` over the domains in ``mask``, or ``<task>.<metric>``;
    ``normalisation`` is :attr:`RewardSpec.normalisation` (exact match ignores it)."""
    if name == "loss":
        return _relative_gain(base_losses[mask], losses[mask], normalisation)
    task, _, metric = name.rpartition(".")
    cur, ref = metric_value(tasks[task], metric), metric_value(base_tasks[task], metric)
    if metric == "exact_match":
        return float(cur - ref)
    if metric == "answer_logprob":  # higher is better; its negation is the answer's loss
        return _relative_gain(-ref, -cur, normalisation)
    return _relative_gain(ref, cur, normalisation)  # answer_loss, a text benchmark's loss


def aggregate(source: float, target: float, reward: RewardSpec) -> float:
    """The balanced score of a source and a target score."""
    if reward.aggregator == "mean":
        return 0.5 * (source + target)
    if reward.aggregator == "min":
        return min(source, target)
    return reward.source_weight * source + (1.0 - reward.source_weight) * target


def score(losses: np.ndarray, tasks: Mapping[str, Mapping[str, float]], base_losses: np.ndarray,
          base_tasks: Mapping[str, Mapping[str, float]], is_target: np.ndarray,
          reward: RewardSpec) -> Scores:
    """Scores of one evaluation (per-domain ``losses`` and task metrics) against the base's."""
    terms: dict[str, float] = {}
    fields = {}
    for role, key, mask in (("source", "source_terms", ~is_target),
                            ("target", "target_terms", is_target)):
        spec_terms: dict[str, float] = getattr(reward, key)
        total, weight = 0.0, 0.0
        for name, w in spec_terms.items():
            v = term_value(name, mask, losses, tasks, base_losses, base_tasks, reward.normalisation)
            terms[f"{role}.{name}"] = v
            total += w * v
            weight += w
        fields[role] = total / weight
    return Scores(fields["source"], fields["target"],
                  aggregate(fields["source"], fields["target"], reward), terms)
