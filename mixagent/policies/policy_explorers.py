"""Mixing policies as trajectory-collection explorers: the policies layer's explorer factory.

``mixagent collect --explorer policy:DIR`` (a saved agent or fitted baseline) and
``--explorer baseline:NAME[?k=v&...]`` are built by :func:`make_explorer`, which the CLI hands to
:func:`mixagent.trajectories.collect` as ``explorer_factory``: trajectories sit below policies
and never import them, so the layer that knows policies supplies the explorers that run them.
Every other spec goes to :func:`mixagent.trajectories.explorers.make_explorer`. A module-level
function pickles by reference, so Ray workers rebuild the same explorers.

:class:`PolicyExplorer` adapts :class:`~mixagent.policies.protocol.MixingPolicy` to the collector's
``Explorer`` protocol: the worker resets it with the env's :class:`~mixagent.data.space.DomainSpace`
(real fields, roles and token counts) and it feeds each step's training loss
(``info["train_loss"]``) back to the policy before the next decision. It returns the policy's
weights; the worker maps them to the env action, like every explorer's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mixagent.data.space import DomainSpace
from mixagent.errors import ConfigError
from mixagent.policies.protocol import MixingPolicy, resolve_policy
from mixagent.trajectories.explorers import POLICY_KINDS, Explorer, check_explorer
from mixagent.trajectories.explorers import make_explorer as make_trajectory_explorer


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
        self._steps = 0

    def reset(self, domain_names: Sequence[str], is_target: np.ndarray, seed: int,
              space: DomainSpace | None = None) -> None:
        """Start an episode on ``space`` (the env's; required: a policy needs real fields and
        token counts, which names and roles alone do not give)."""
        if space is None:
            raise ConfigError(f"explorer {self.name}: reset needs the env's domain space (space=); "
                              "the collection worker passes it")
        if tuple(space.names) != tuple(domain_names):
            raise ConfigError(f"explorer {self.name}: the domain space {list(space.names)} is not "
                              f"the env's {list(domain_names)}")
        self.policy.reset(space, seed)
        self._steps = 0

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        loss = info.get("train_loss")
        if self._steps > 0 and loss is not None and math.isfinite(float(loss)):
            self.policy.feedback(train_loss=float(loss))
        self._steps += 1
        return self.policy.act(observation)


def make_explorer(spec: str) -> Explorer:
    """The explorer factory of the policies layer: ``policy:DIR`` and ``baseline:NAME[?...]``
    as :class:`PolicyExplorer`, anything else as trajectories' own explorers."""
    kind, _, arg = spec.strip().partition(":")
    if kind in POLICY_KINDS:
        return check_explorer(PolicyExplorer(resolve_policy(f"{kind}:{arg}"), f"{kind}:{arg}"), spec)
    return make_trajectory_explorer(spec)
