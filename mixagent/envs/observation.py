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

Optional groups (``observation.features``), appended after the v1 columns in this order:

==============================  ==============================================================  ==============
``align_source``                (domains, ``alignment``) gradient cosine with the source        [-1, 1]
                                field's benchmark loss, on the current model
``align_target``                (domains, ``alignment``) ... with the target field's            [-1, 1]
``source_benchmark``            (global, ``benchmark_scores``) the source score's benchmark     [-S, S]
                                terms alone (0 if it has none)
``target_benchmark``            (global, ``benchmark_scores``) the target score's               [-S, S]
``objective_source_weight``     (global, ``objective``; constant over a run) the source         [0, 1]
                                field's weight in the balanced score (0.5 for ``mean``, ``min``)
``objective_min``               (global, ``objective``) 1 when the balanced score is the        [0, 1]
                                worse field's (``aggregator: min``)
``objective_source_benchmark``  (global, ``objective``) the share of the source terms'          [0, 1]
                                weight on benchmark terms (the rest: the domain-loss term)
``objective_target_benchmark``  (global, ``objective``) the same for the target terms           [0, 1]
==============================  ==============================================================  ==============

Without them the layout is v1's, bit for bit; :func:`feature_layout` gives the names in play.

Features are per domain and the domain axis carries no position information beyond the row, so
a permutation-equivariant policy can serve any number of domains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from mixagent.errors import ConfigError

DOMAIN_FEATURES: tuple[str, ...] = (
    "weight", "loss", "loss_change_base", "loss_change_step", "is_target",
)
GLOBAL_FEATURES: tuple[str, ...] = (
    "progress", "source_score", "target_score", "balanced_score",
)
#: optional groups (``observation.features``): per-domain columns, global entries
ALIGNMENT_FEATURES: tuple[str, ...] = ("align_source", "align_target")
BENCHMARK_FEATURES: tuple[str, ...] = ("source_benchmark", "target_benchmark")
OBJECTIVE_FEATURES: tuple[str, ...] = (
    "objective_source_weight", "objective_min", "objective_source_benchmark", "objective_target_benchmark",
)
FEATURE_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "alignment": (ALIGNMENT_FEATURES, ()),
    "benchmark_scores": ((), BENCHMARK_FEATURES),
    "objective": ((), OBJECTIVE_FEATURES),
}


@dataclass(frozen=True)
class FeatureLayout:
    """The feature names of an observation, per domain and global, in column order."""

    domains: tuple[str, ...] = DOMAIN_FEATURES
    globals: tuple[str, ...] = GLOBAL_FEATURES

    @property
    def alignment(self) -> bool:
        return ALIGNMENT_FEATURES[0] in self.domains

    @property
    def benchmark_scores(self) -> bool:
        return BENCHMARK_FEATURES[0] in self.globals

    @property
    def objective(self) -> bool:
        return OBJECTIVE_FEATURES[0] in self.globals


def feature_layout(features: Sequence[str] = ()) -> FeatureLayout:
    """The layout with the optional groups ``features`` (an ``ObservationSpec.features`` list):
    v1's columns first, then each group's in the fixed order of :data:`FEATURE_GROUPS`, so a
    layout depends on which groups are on, never on how they were listed."""
    unknown = set(features) - set(FEATURE_GROUPS)
    if unknown:
        raise ValueError(f"unknown observation feature groups {sorted(unknown)}; "
                         f"known: {', '.join(FEATURE_GROUPS)}")
    dom, glob = list(DOMAIN_FEATURES), list(GLOBAL_FEATURES)
    for group, (d, g) in FEATURE_GROUPS.items():
        if group in features:
            dom += d
            glob += g
    return FeatureLayout(tuple(dom), tuple(glob))


V1_LAYOUT = feature_layout()


def _layouts() -> dict[tuple[int, int], FeatureLayout]:
    """Every layout, keyed by its (per-domain, global) feature counts — unique, because each
    group adds columns to one box only."""
    groups = list(FEATURE_GROUPS)
    out = {}
    for mask in range(2 ** len(groups)):
        lay = feature_layout([g for i, g in enumerate(groups) if mask >> i & 1])
        out[(len(lay.domains), len(lay.globals))] = lay
    assert len(out) == 2 ** len(groups), "two observation layouts have the same shapes"
    return out


_LAYOUTS = _layouts()


def observation_widths() -> list[tuple[int, int]]:
    """(per-domain, global) feature counts of every observation layout, v1's first."""
    return sorted(_LAYOUTS, key=lambda w: (w != (len(V1_LAYOUT.domains), len(V1_LAYOUT.globals)), w))


def observation_layout_of(obs: Mapping[str, np.ndarray]) -> FeatureLayout:
    """The layout of an environment observation, from its two shapes (each optional group adds
    columns to one of the two boxes, in a fixed order, so the shapes say which groups are on):
    what a policy that sees only observations uses to find a column by name."""
    key = (int(np.shape(obs["domains"])[-1]), int(np.shape(obs["global"])[-1]))
    if key not in _LAYOUTS:
        raise ConfigError(f"an observation with {key[0]} per-domain and {key[1]} global features "
                          "matches no observation layout of this mixagent version")
    return _LAYOUTS[key]


def feature_bounds(loss_max: float, score_max: float) -> dict[str, tuple[float, float]]:
    """The documented range of every feature."""
    return {
        "weight": (0.0, 1.0),
        "loss": (0.0, loss_max),
        "loss_change_base": (-loss_max, loss_max),
        "loss_change_step": (-loss_max, loss_max),
        "is_target": (0.0, 1.0),
        "align_source": (-1.0, 1.0),
        "align_target": (-1.0, 1.0),
        "progress": (0.0, 1.0),
        "source_score": (-score_max, score_max),
        "target_score": (-score_max, score_max),
        "balanced_score": (-score_max, score_max),
        "source_benchmark": (-score_max, score_max),
        "target_benchmark": (-score_max, score_max),
        **{name: (0.0, 1.0) for name in OBJECTIVE_FEATURES},
    }


def observation_space(num_domains: int, loss_max: float, score_max: float,
                      layout: FeatureLayout = V1_LAYOUT) -> spaces.Dict:
    """The ``Dict`` space of ``layout`` (v1's by default) over ``num_domains`` domains."""
    b = feature_bounds(loss_max, score_max)
    lo_d = np.array([b[f][0] for f in layout.domains], dtype=np.float32)
    hi_d = np.array([b[f][1] for f in layout.domains], dtype=np.float32)
    lo_g = np.array([b[f][0] for f in layout.globals], dtype=np.float32)
    hi_g = np.array([b[f][1] for f in layout.globals], dtype=np.float32)
    shape = (num_domains, len(layout.domains))
    return spaces.Dict({
        "domains": spaces.Box(np.broadcast_to(lo_d, shape).copy(),
                              np.broadcast_to(hi_d, shape).copy(), shape, np.float32),
        "global": spaces.Box(lo_g, hi_g, (len(layout.globals),), np.float32),
    })


def make_observation(weights: np.ndarray, losses: np.ndarray, base_losses: np.ndarray,
                     prev_losses: np.ndarray, is_target: np.ndarray, progress: float,
                     source: float, target: float, balanced: float, loss_max: float,
                     score_max: float, *, alignment: np.ndarray | None = None,
                     benchmarks: tuple[float, float] | None = None,
                     objective: tuple[float, ...] | None = None) -> dict[str, np.ndarray]:
    """Assemble and clip an observation (fresh arrays every call).

    ``alignment`` (``[K, 2]`` cosines), ``benchmarks`` (source, target benchmark scores) and
    ``objective`` (the :data:`OBJECTIVE_FEATURES`) add their groups' columns when given; without
    them the result is v1's layout, computed by v1's own expressions (so its bits are v1's)."""
    extra = 0 if alignment is None else alignment.shape[1]
    dom = np.empty((losses.size, len(DOMAIN_FEATURES) + extra), dtype=np.float32)
    dom[:, 0] = np.clip(weights, 0.0, 1.0)
    dom[:, 1] = np.clip(losses, 0.0, loss_max)
    dom[:, 2] = np.clip(losses - base_losses, -loss_max, loss_max)
    dom[:, 3] = np.clip(losses - prev_losses, -loss_max, loss_max)
    dom[:, 4] = is_target
    if alignment is not None:
        dom[:, len(DOMAIN_FEATURES):] = np.clip(alignment, -1.0, 1.0)
    glob = np.clip(np.array([progress, source, target, balanced], dtype=np.float64),
                   [0.0, -score_max, -score_max, -score_max], [1.0, score_max, score_max, score_max])
    if benchmarks is not None:
        glob = np.concatenate([glob, np.clip(np.asarray(benchmarks, dtype=np.float64),
                                             -score_max, score_max)])
    if objective is not None:
        glob = np.concatenate([glob, np.clip(np.asarray(objective, dtype=np.float64), 0.0, 1.0)])
    return {"domains": dom, "global": glob.astype(np.float32)}
