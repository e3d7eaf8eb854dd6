"""Registering ``mixagent/ProxyCPT-v0`` with Gymnasium (an import side effect of ``mixagent``).

Only gymnasium is imported here; torch and transformers load when an environment is built.
"""

from __future__ import annotations

ENV_ID = "mixagent/ProxyCPT-v0"
ENTRY_POINT = "mixagent.envs.proxy_env:ProxyCPTEnv"


def register_envs() -> None:
    """Register the env ids once (idempotent), so ``gymnasium.make(ENV_ID, spec=...)`` works."""
    import gymnasium

    if ENV_ID not in gymnasium.registry:
        # deterministic: same seed + same actions -> same trajectory (the checker verifies it)
        gymnasium.register(id=ENV_ID, entry_point=ENTRY_POINT, nondeterministic=False)
