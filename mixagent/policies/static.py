"""Static mixtures: the same weights at every step, computed from the domain space alone.

These are what practitioners use today (a hand-picked or grid-searched source:target ratio),
so every learned policy is compared against them. Each works on any domain space because it is
defined by roles and token counts, never by domain positions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import Field

from mixagent.config import StrictModel
from mixagent.data.space import DomainSpace
from mixagent.policies.protocol import MixingPolicy, register_policy

log = logging.getLogger(__name__)


class StaticPolicy(MixingPolicy):
    """A policy whose weights depend only on the domain space; computed once per ``reset``."""

    _weights: np.ndarray

    def _reset(self) -> None:
        assert self.space is not None
        self._weights = self.weights_for(self.space)

    def _act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        return self._weights.copy()

    def weights_for(self, space: DomainSpace) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class _NoParams(StrictModel):
    pass


@register_policy
class Uniform(StaticPolicy):
    """Equal weight on every domain. The default of most multi-domain training recipes."""

    kind = "uniform"
    Params = _NoParams

    def weights_for(self, space: DomainSpace) -> np.ndarray:
        return np.full(space.num_domains, 1.0 / space.num_domains)


@register_policy
class ProportionalToTokens(StaticPolicy):
    """Weights proportional to each domain's training tokens: "natural" sampling, i.e.
    concatenating all data and shuffling (the implicit default of most pre-training corpora)."""

    kind = "tokens"
    Params = _NoParams

    def weights_for(self, space: DomainSpace) -> np.ndarray:
        t = np.asarray(space.train_tokens, dtype=np.float64)
        if t.sum() <= 0:
            return np.full(space.num_domains, 1.0 / space.num_domains)
        return t / t.sum()


def _within(space: DomainSpace, mask: np.ndarray, within: str) -> np.ndarray:
    """A distribution over the domains in ``mask`` (uniform or by tokens); zeros elsewhere."""
    w = np.zeros(space.num_domains)
    if not mask.any():
        return w
    if within == "tokens":
        t = np.asarray(space.train_tokens, dtype=np.float64) * mask
        if t.sum() > 0:
            return t / t.sum()
    w[mask] = 1.0 / mask.sum()
    return w


def field_ratio(space: DomainSpace, source: float, within: str = "uniform") -> np.ndarray:
    """``source`` on the source field and the rest on the target field, each field's share spread
    evenly (``within: uniform``) or by tokens over its domains; a space without one of the fields
    puts everything on the other."""
    t = space.is_target
    src = _within(space, ~t, within)
    tgt = _within(space, t, within)
    if not t.any():
        return src
    if t.all():
        return tgt
    return source * src + (1.0 - source) * tgt


class TargetOnlyParams(StrictModel):
    within: Literal["uniform", "tokens"] = "uniform"


@register_policy
class TargetOnly(StaticPolicy):
    """Only target-field data: naive CPT, the forgetting baseline every CPT paper reports.
    ``within`` spreads the weight evenly (default) or by tokens over the target domains."""

    kind = "target_only"
    Params = TargetOnlyParams

    def weights_for(self, space: DomainSpace) -> np.ndarray:
        return _within(space, space.is_target, self.params.within)


class FixedRatioParams(StrictModel):
    source: float = Field(default=0.5, ge=0, le=1, description="share of the source field")
    within: Literal["uniform", "tokens"] = "uniform"


@register_policy
class FixedRatio(StaticPolicy):
    """A fixed source:target ratio — replay of general data during CPT.

    ``source`` is the source field's share; each field's share is spread evenly (``within:
    uniform``) or by tokens over its domains. The best ratio for a scenario is the "critical
    mixture ratio" of Gu et al. 2024 ("CMR: Scaling Law for Continual Pre-training"), found by
    ``mixagent evaluate``'s ``baseline:best_fixed_ratio`` (:mod:`mixagent.evaluation.tuning`) by
    grid search on the proxy instead of by fitting their scaling law.
    Degenerate spaces (no source or no target domain) fall back to the field that exists.
    """

    kind = "fixed_ratio"
    Params = FixedRatioParams

    def weights_for(self, space: DomainSpace) -> np.ndarray:
        return field_ratio(space, self.params.source, self.params.within)

    def describe(self) -> str:
        return f"fixed_ratio(source={self.params.source:g})"
