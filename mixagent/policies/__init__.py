"""Policies: everything that sets domain weights, behind one protocol (:class:`MixingPolicy`).

``protocol`` (the protocol, the registry, ``baseline:``/``policy:`` spec strings,
:func:`run_episode`) → ``static`` (uniform, tokens, target-only, fixed ratio) →
``heuristics`` (online: DoReMi, ODM, Velocitune) → ``benchmark_heuristics`` (online, on the
benchmark signals: alignment-following, ODM rewarded by benchmarks) → ``regmix`` → ``features`` / ``network`` / ``agent`` (the
learned, permutation-equivariant agent) → ``format`` (config.json + model.safetensors + card) →
``training`` (offline BC + CQL; online SB3 PPO/SAC over Ray); ``policy_explorers`` (policies as
trajectory-collection explorers: the explorer factory ``mixagent collect`` passes down).
:class:`~mixagent.data.space.DomainSpace` is defined in the data layer and re-exported here.
Names load on first use, so importing the package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DomainSpace": "mixagent.data.space",  # defined in the data layer; re-exported for callers
    "MixingPolicy": "mixagent.policies.protocol",
    "EpisodeResult": "mixagent.policies.protocol",
    "StepRecord": "mixagent.policies.protocol",
    "BASELINES": "mixagent.policies.protocol",
    "load_policy": "mixagent.policies.protocol",
    "policy_kinds": "mixagent.policies.protocol",
    "register_policy": "mixagent.policies.protocol",
    "resolve_policy": "mixagent.policies.protocol",
    "run_episode": "mixagent.policies.protocol",
    "Uniform": "mixagent.policies.static",
    "ProportionalToTokens": "mixagent.policies.static",
    "TargetOnly": "mixagent.policies.static",
    "FixedRatio": "mixagent.policies.static",
    "OnlineReweighter": "mixagent.policies.heuristics",
    "DoReMi": "mixagent.policies.heuristics",
    "ODM": "mixagent.policies.heuristics",
    "Velocitune": "mixagent.policies.heuristics",
    "AlignmentHeuristic": "mixagent.policies.benchmark_heuristics",
    "ODMBenchmark": "mixagent.policies.benchmark_heuristics",
    "RegMix": "mixagent.policies.regmix",
    "fit_regmix": "mixagent.policies.regmix",
    "MixingAgent": "mixagent.policies.agent",
    "FeatureSpec": "mixagent.policies.features",
    "NetworkConfig": "mixagent.policies.network",
    "PolicyExplorer": "mixagent.policies.policy_explorers",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mixagent.policies' has no attribute {name!r}")

