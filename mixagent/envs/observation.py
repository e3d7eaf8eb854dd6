"""The observation layout of :class:`~mixagent.envs.proxy_env.ProxyCPTEnv` (see docs/ENV.md).

A one-level ``Dict`` of two finite ``Box`` es (float32), which both environment checkers accept
and stable-baselines3's ``MultiInputPolicy`` consumes:

``"domains"``: shape ``(K, len(DOMAIN_FEATURES))``, one row per domain in action order:

=====================  ==========================================================  ==============
feature                meaning                                                     range
=====================  ==========================================================  ==============
``weight``             weight applied in the last step (0 after reset)             [0, 1]
``loss``               held-out loss now (nats/token)                              [0, M]
``loss_change_base``   loss now minus the base's loss (negative = improved)        [-M, M]
``loss_change_step``   loss now minus the loss before the last step                [-M, M]
``is_target``          1 for a target-field domain, 0 for a source-field domain    [0, 1]
=====================  ==========================================================  ==============

``"global"``: shape ``(len(GLOBAL_FEATURES),)``:

=====================  ==========================================================  ==============
``progress``           re-weighting steps done / steps per episode                 [0, 1]
``source_score``       source-field score (0 = base, higher is better)             [-S, S]
``target_score``       target-field score                                          [-S, S]
``balanced_score``     their aggregate, whose change is the reward                 [-S, S]
=====================  ==========================================================  ==============

``M`` = ``observation.loss_max`` and ``S`` = ``observation.score_max`` of the spec; values are
clipped into these ranges (the reward and ``info`` use the unclipped numbers).

Features are per domain and the domain axis carries no position information beyond the row, so
a permutation-equivariant policy can serve any number of domains.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

DOMAIN_FEATURES: tuple[str, ...] = (
    "weight", "loss", "loss_change_base", "loss_change_step", "is_target",
)
GLOBAL_FEATURES: tuple[str, ...] = (
    "progress", "source_score", "target_score", "balanced_score",
)


def feature_bounds(loss_max: float, score_max: float) -> dict[str, tuple[float, float]]:
    """The documented range of every feature."""
    return {
        "weight": (0.0, 1.0),
        "loss": (0.0, loss_max),
        "loss_change_base": (-loss_max, loss_max),
        "loss_change_step": (-loss_max, loss_max),
        "is_target": (0.0, 1.0),
        "progress": (0.0, 1.0),
        "source_score": (-score_max, score_max),
        "target_score": (-score_max, score_max),
        "balanced_score": (-score_max, score_max),
    }


def observation_space(num_domains: int, loss_max: float, score_max: float) -> spaces.Dict:
    b = feature_bounds(loss_max, score_max)
    lo_d = np.array([b[f][0] for f in DOMAIN_FEATURES], dtype=np.float32)
    hi_d = np.array([b[f][1] for f in DOMAIN_FEATURES], dtype=np.float32)
    lo_g = np.array([b[f][0] for f in GLOBAL_FEATURES], dtype=np.float32)
    hi_g = np.array([b[f][1] for f in GLOBAL_FEATURES], dtype=np.float32)
    shape = (num_domains, len(DOMAIN_FEATURES))
    return spaces.Dict({
        "domains": spaces.Box(np.broadcast_to(lo_d, shape).copy(),
                              np.broadcast_to(hi_d, shape).copy(), shape, np.float32),
        "global": spaces.Box(lo_g, hi_g, (len(GLOBAL_FEATURES),), np.float32),
    })


def make_observation(weights: np.ndarray, losses: np.ndarray, base_losses: np.ndarray,
                     prev_losses: np.ndarray, is_target: np.ndarray, progress: float,
                     source: float, target: float, balanced: float, loss_max: float,
                     score_max: float) -> dict[str, np.ndarray]:
    """Assemble and clip an observation (fresh arrays every call)."""
    dom = np.empty((losses.size, len(DOMAIN_FEATURES)), dtype=np.float32)
    dom[:, 0] = np.clip(weights, 0.0, 1.0)
    dom[:, 1] = np.clip(losses, 0.0, loss_max)
    dom[:, 2] = np.clip(losses - base_losses, -loss_max, loss_max)
    dom[:, 3] = np.clip(losses - prev_losses, -loss_max, loss_max)
    dom[:, 4] = is_target
    glob = np.clip(np.array([progress, source, target, balanced], dtype=np.float64),
                   [0.0, -score_max, -score_max, -score_max], [1.0, score_max, score_max, score_max])
    return {"domains": dom, "global": glob.astype(np.float32)}
