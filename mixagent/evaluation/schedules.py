"""Source-share schedules: the dynamic mixtures a headroom measurement tries against static ones.

A :class:`SourceSchedule` moves the source field's share over an episode's ``num_steps``
re-weighting steps and keeps the weights *within* each field fixed (uniform, or a given
mixture's within-field proportions). Two shapes, the simplest dynamic schedules a practitioner
would try before trusting an agent:

* ``two_phase``: share ``start`` for the first half of the steps, ``end`` from the midpoint on
  (step ``t`` of ``T`` is in the second half when ``t + 0.5 >= T / 2``);
* ``ramp``: linear from ``start`` at the first step to ``end`` at the last
  (``start + (end - start) · t / (T - 1)``).

The shapes' formula, :func:`~mixagent.envs.shares.source_share`, lives in the env layer (the
trajectories layer's ``mixture`` explorer draws the same schedules); the policy lives in the
evaluation layer because only headroom uses it; it is a registered
:class:`~mixagent.policies.protocol.MixingPolicy` (kind ``schedule``) so the evaluation worker
runs it, caches its episodes and identifies it by content like any baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mixagent.config import StrictModel
from mixagent.envs.shares import source_share
from mixagent.errors import ConfigError
from mixagent.policies.protocol import MixingPolicy, register_policy


class ScheduleParams(StrictModel):
    shape: Literal["two_phase", "ramp"]
    start: float = Field(ge=0, le=1, description="source share at the first step")
    end: float = Field(ge=0, le=1, description="source share from the midpoint (two_phase) or at the "
                       "last step (ramp)")
    num_steps: int = Field(ge=1, description="re-weighting steps of the episode (the env's cpt.num_steps)")
    within: dict[str, float] = Field(default_factory=dict, description="per-domain weights whose "
                                     "within-field proportions are kept; empty: uniform in each field")
    within_label: str = Field(default="uniform", description="where `within` came from (for tables)")


@register_policy
class SourceSchedule(MixingPolicy):
    """A source-share schedule with fixed within-field weights; its run state is the step count."""

    kind = "schedule"
    Params = ScheduleParams

    def _reset(self) -> None:
        space = self.space
        assert space is not None
        self._t = 0
        tgt = space.is_target
        within = self.params.within
        if within:
            missing = [n for n in space.names if n not in within]
            if missing:
                raise ConfigError(f"schedule: within-field weights lack domains {missing}")
            w = np.array([max(float(within[n]), 0.0) for n in space.names])
        else:
            w = np.ones(space.num_domains)
        self._src = _normalised(w, ~tgt)
        self._tgt = _normalised(w, tgt)

    def _act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        p = self.params
        s = source_share(p.shape, p.start, p.end, self._t, p.num_steps)
        self._t += 1
        if not self._tgt.any():
            return self._src.copy()
        if not self._src.any():
            return self._tgt.copy()
        return s * self._src + (1.0 - s) * self._tgt

    def state_dict(self) -> dict[str, Any]:
        return {"t": self._t}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._t = int(state.get("t", 0))

    def shares(self) -> list[float]:
        """The source share of every step, for reports."""
        p = self.params
        return [source_share(p.shape, p.start, p.end, t, p.num_steps) for t in range(p.num_steps)]

    def describe(self) -> str:
        p = self.params
        return f"{p.shape}(source {p.start:g}->{p.end:g}, within {p.within_label})"


def _normalised(w: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``w`` restricted to ``mask``, summing to 1 (uniform on the mask if ``w`` is 0 there)."""
    out = np.where(mask, w, 0.0)
    if out.sum() <= 0:
        out = mask.astype(np.float64)
    total = out.sum()
    return out / total if total > 0 else out

