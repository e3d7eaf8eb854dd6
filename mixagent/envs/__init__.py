"""Environments: a proxy CPT scenario (an env spec) as a Gymnasium environment.

``spec`` (the YAML env spec) → ``setup`` (checked against the data; builds the engine) →
``proxy_env`` (:class:`ProxyCPTEnv`, registered as ``mixagent/ProxyCPT-v0``) with the action
map in ``actions``, the observation layout in ``observation`` and the reward in ``scoring``.
Names are imported on first use, so ``import mixagent`` (which registers the env id) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ENV_ID": "mixagent.envs.registration",
    "register_envs": "mixagent.envs.registration",
    "EnvSpec": "mixagent.envs.spec",
    "load_env_spec": "mixagent.envs.spec",
    "action_from_weights": "mixagent.envs.actions",
    "check_action": "mixagent.envs.actions",
    "weights_from_action": "mixagent.envs.actions",
    "InvalidActionError": "mixagent.envs.errors",
    "ResetNeededError": "mixagent.envs.errors",
    "ProxyCPTEnv": "mixagent.envs.proxy_env",
    "EnvSnapshot": "mixagent.envs.proxy_env",
    "resolve_spec": "mixagent.envs.setup",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mixagent.envs' has no attribute {name!r}")
