"""Policies: everything that sets domain weights, behind one protocol (:class:`MixingPolicy`).

``base`` (the protocol, :class:`DomainSpace`, the registry, ``baseline:``/``policy:`` spec strings,
:func:`run_episode`) → ``static`` (uniform, tokens, target-only, fixed ratio + grid search) →
``online`` (DoReMi, ODM, Velocitune) → ``regmix`` → ``features`` / ``network`` / ``agent`` (the
learned, permutation-equivariant agent) → ``format`` (config.json + model.safetensors + card) →
``training`` (offline BC + CQL; online SB3 PPO/SAC over Ray). Names load on first use, so
importing the package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DomainSpace": "mixagent.policies.base",
    "MixingPolicy": "mixagent.policies.base",
    "EpisodeResult": "mixagent.policies.base",
    "StepRecord": "mixagent.policies.base",
    "BASELINES": "mixagent.policies.base",
    "evaluate_policies": "mixagent.policies.base",
    "load_policy": "mixagent.policies.base",
    "policy_kinds": "mixagent.policies.base",
    "register_policy": "mixagent.policies.base",
    "resolve_policy": "mixagent.policies.base",
    "run_episode": "mixagent.policies.base",
    "Uniform": "mixagent.policies.static",
    "ProportionalToTokens": "mixagent.policies.static",
    "TargetOnly": "mixagent.policies.static",
    "FixedRatio": "mixagent.policies.static",
    "grid_search_ratio": "mixagent.policies.static",
    "OnlineReweighter": "mixagent.policies.online",
    "DoReMi": "mixagent.policies.online",
    "ODM": "mixagent.policies.online",
    "Velocitune": "mixagent.policies.online",
    "RegMix": "mixagent.policies.regmix",
    "fit_regmix": "mixagent.policies.regmix",
    "MixingAgent": "mixagent.policies.agent",
    "FeatureSpec": "mixagent.policies.features",
    "NetworkConfig": "mixagent.policies.network",
    "PolicyExplorer": "mixagent.policies.explorer",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mixagent.policies' has no attribute {name!r}")


def _register_explorers() -> None:
    from mixagent.policies.explorer import register_explorers

    register_explorers()


_register_explorers()  # `--explorer policy:DIR` / `baseline:NAME` in trajectory collection
