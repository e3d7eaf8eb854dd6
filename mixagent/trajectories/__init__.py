"""Trajectories: Ray-parallel collection of data-mixing trajectories, and reading them back.

``explorers`` (what chooses the mixtures: random walks on the simplex, uniform draws, mixing
policies) → ``worker`` (one environment, whole episodes, branching via ``branching`` and its
batched fast path ``replicas``) → ``collection`` (:func:`collect`: episode queue over Ray
actors, retries, resume, dataset card) → ``storage`` (atomic Parquet shards, validation,
quarantine) and ``schema`` (the columns and their version) → ``dataset`` (:func:`load` →
:class:`TrajectorySet`) → ``plot``. (The orchestration module is ``collection``, not
``collect``, so that ``mixagent.trajectories.collect`` stays the function.)
See docs/TRAJECTORIES.md. Names load on first use, so importing this package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "collect": "mixagent.trajectories.collection",
    "CollectConfig": "mixagent.trajectories.collection",
    "CollectResult": "mixagent.trajectories.collection",
    "BranchConfig": "mixagent.trajectories.branching",
    "load": "mixagent.trajectories.dataset",
    "TrajectorySet": "mixagent.trajectories.dataset",
    "TrajectoryError": "mixagent.trajectories.storage",
    "Explorer": "mixagent.trajectories.explorers",
    "make_explorer": "mixagent.trajectories.explorers",
    "register_explorer": "mixagent.trajectories.explorers",
    "plot_trajectories": "mixagent.trajectories.plot",
    "SCHEMA_VERSION": "mixagent.trajectories.schema",
    "arrow_schema": "mixagent.trajectories.schema",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mixagent.trajectories' has no attribute {name!r}")
