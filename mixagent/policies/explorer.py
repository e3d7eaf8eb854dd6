"""Plugging mixing policies into trajectory collection as explorers.

``mixagent collect --explorer policy:DIR`` (a saved agent or fitted baseline) and
``--explorer baseline:NAME[?k=v&...]`` resolve through
:func:`mixagent.trajectories.explorers.register_explorer`; importing :mod:`mixagent.policies`
registers both kinds. :class:`PolicyExplorer` adapts :class:`~mixagent.policies.base.MixingPolicy`
to the collector's ``Explorer`` protocol (``reset(domain_names, is_target, seed)``,
``act(observation, info)``): it rebuilds a :class:`DomainSpace` from the names and roles
(fields from the ``field/domain`` naming convention; token counts unknown unless the caller
passes ``space=``), and feeds each step's training loss (``info["train_loss"]``) back to the
policy before the next decision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mixagent.policies.base import DomainSpace, MixingPolicy, resolve_policy


class PolicyExplorer:
    """A :class:`MixingPolicy` as a trajectory-collection explorer.

    ``stateless`` is true only for static policies: online rules and agents carry state
    between steps (estimates, history), so the collector must not call ``act`` twice per step.
    """

    def __init__(self, policy: MixingPolicy, name: str):
        from mixagent.policies.static import StaticPolicy

        self.policy = policy
        self.name = name
        self.stateless = isinstance(policy, StaticPolicy)

    def reset(self, domain_names: Sequence[str], is_target: np.ndarray, seed: int,
              space: DomainSpace | None = None) -> None:
        if space is None:
            names = tuple(domain_names)
            space = DomainSpace(names, tuple(n.split("/", 1)[0] for n in names),
                                tuple("target" if t else "source" for t in np.asarray(is_target)),
                                tuple(0 for _ in names))
        self.policy.reset(space, seed)
        self._steps = 0

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        loss = info.get("train_loss")
        if self._steps > 0 and loss is not None and math.isfinite(float(loss)):
            self.policy.feedback(train_loss=float(loss))
        self._steps += 1
        return self.policy.act(observation)


def _policy_explorer(arg: str) -> PolicyExplorer:
    return PolicyExplorer(resolve_policy(f"policy:{arg}"), f"policy:{arg}")


def _baseline_explorer(arg: str) -> PolicyExplorer:
    return PolicyExplorer(resolve_policy(f"baseline:{arg}"), f"baseline:{arg}")


def register_explorers() -> None:
    """Register ``policy:`` and ``baseline:`` with the collector (idempotent; a no-op if the
    trajectories package is not installed)."""
    try:
        from mixagent.trajectories.explorers import register_explorer
    except ImportError:  # pragma: no cover - trajectories package absent
        return
    register_explorer("policy", _policy_explorer, replace=True)
    register_explorer("baseline", _baseline_explorer, replace=True)
