"""Training mixing policies: offline (BC + CQL on trajectories), RegMix's regression, online (SB3
over Ray) — all behind :func:`train_policy` and its :class:`TrainConfig` (:mod:`.api`), which
also assembles every trained policy's provenance. The engines are :mod:`.offline` and
:mod:`.online`; callers outside this package use ``train_policy``."""

from mixagent.policies.training.api import TrainConfig, TrainResult, train_policy

__all__ = ["TrainConfig", "TrainResult", "train_policy"]
