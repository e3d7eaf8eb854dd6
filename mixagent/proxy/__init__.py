"""Proxy continual pre-training: a small causal LM, its cached base, training and evaluation.

``config`` (typed settings, pydantic only) → ``model`` (transformers config + model from a dict,
no download) → ``base`` (pre-training on the source field, cached by content hash) →
``engine`` (:class:`~mixagent.proxy.engine.ProxyEngine`: restore the base, train under domain
weights, evaluate, snapshot/restore). The Gymnasium environment in :mod:`mixagent.envs` is a thin
layer over the engine. Only ``config`` is imported eagerly; the rest (and torch) on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from mixagent.proxy.config import (
    CPTSpec,
    EvalSpec,
    LRSpec,
    ModelSpec,
    OptimizerSpec,
    PretrainSpec,
    RuntimeSpec,
    TaskSpec,
)

_LAZY = {
    "BaseCheckpoint": "mixagent.proxy.base_model",
    "BaseRecipe": "mixagent.proxy.base_model",
    "ensure_base": "mixagent.proxy.base_model",
    "EngineSnapshot": "mixagent.proxy.engine",
    "ProxyEngine": "mixagent.proxy.engine",
    "TrainStats": "mixagent.proxy.engine",
    "EvalResult": "mixagent.proxy.evaluation",
    "Evaluator": "mixagent.proxy.evaluation",
}

__all__ = [
    "BaseCheckpoint",
    "BaseRecipe",
    "CPTSpec",
    "EngineSnapshot",
    "EvalResult",
    "EvalSpec",
    "Evaluator",
    "LRSpec",
    "ModelSpec",
    "OptimizerSpec",
    "PretrainSpec",
    "ProxyEngine",
    "RuntimeSpec",
    "TaskSpec",
    "TrainStats",
    "ensure_base",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mixagent.proxy' has no attribute {name!r}")
