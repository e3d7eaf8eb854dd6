"""The learned agent's state: the observation plus a short history, as per-domain and global inputs.

One function (:func:`build_features`) turns a window of the last ``history`` environment
observations into the network's inputs. The agent at run time (a rolling :class:`History`), the
offline trainer (every prefix of a stored episode) and the online trainer (the
:class:`FeatureWrapper` around the env) all call it, so a policy sees the same numbers in
training, evaluation and production.

Inputs are made comparable across domain spaces, which is what lets a policy act on a space
of another size: weights enter as ``weight·K`` (1 = a uniform share, whatever K is) and loss
changes as *relative* changes, so domains with different loss levels read alike.

Per-domain inputs (``DOMAIN_INPUTS`` then, per lag ``j``, ``weight_rel_lagj`` and
``rel_change_step_lagj``) and global inputs (``GLOBAL_INPUTS`` then, per lag, the source share
and the source/target scores of ``j`` steps ago). Before the first step a lag is all zeros —
exactly what the environment shows after ``reset`` (weights 0, no change).

Optional observation groups (``FeatureSpec.observation``, the env's ``observation.features``)
append their features as inputs, as the environment gives them: ``alignment`` adds the
per-domain ``align_source, align_target`` (cosines, already comparable across domain spaces and
model sizes), ``benchmark_scores`` the global ``source_benchmark, target_benchmark``,
``objective`` the global ``objective_*`` (what the reward asks for, constant over a run).
Observation columns are selected *by name* from the observation's layout (v1's columns come
first in every layout, each group's after them in a fixed order, so the layout follows from
the two shapes): an agent trained on v1 observations acts on exactly the same numbers when the
environment observes more, and an agent that needs a group says so when it is missing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from mixagent.config import StrictModel
from mixagent.envs.observation import (
    FEATURE_GROUPS,
    FeatureLayout,
    feature_layout,
    observation_layout_of,
)
from mixagent.errors import ConfigError

DOMAIN_INPUTS: tuple[str, ...] = ("weight_rel", "loss", "rel_change_base", "rel_change_step",
                                  "is_target")
GLOBAL_INPUTS: tuple[str, ...] = ("progress", "source_score", "target_score", "balanced_score",
                                  "source_share")
IS_TARGET_COLUMN = DOMAIN_INPUTS.index("is_target")
LAG_DOMAIN = ("weight_rel", "rel_change_step")
LAG_GLOBAL = ("source_share", "source_score", "target_score")


class FeatureSpec(StrictModel):
    """How the agent's state is built from observations.

    ``observation``: the optional observation groups the agent uses as inputs (they must be on
    in the environment's ``observation.features``); empty: the v1 inputs only.
    """

    history: int = Field(default=3, ge=1, le=16,
                         description="observations in the state: the current one and history-1 past")
    observation: list[Literal["alignment", "benchmark_scores", "objective"]] = Field(
        default_factory=list, description="optional observation groups used as inputs")

    @model_validator(mode="after")
    def _unique(self) -> FeatureSpec:
        if len(set(self.observation)) != len(self.observation):
            raise ValueError(f"observation: a group is listed twice: {self.observation}")
        return self

    @model_serializer(mode="wrap")
    def _omit_unset_observation(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave ``observation`` out when empty, so agents saved before it existed keep their
        parameters' dump (policy ids and cached evaluation episodes are keyed by it)."""
        out: dict[str, Any] = handler(self)
        if not out.get("observation"):
            out.pop("observation", None)
        return out

    @property
    def extra(self) -> FeatureLayout:
        """The observation features the optional groups add: (per domain, global)."""
        layout = feature_layout(self.observation)
        v1 = feature_layout()
        return FeatureLayout(layout.domains[len(v1.domains):], layout.globals[len(v1.globals):])


def domain_input_names(spec: FeatureSpec) -> list[str]:
    return [*DOMAIN_INPUTS, *(f"{n}_lag{j}" for j in range(1, spec.history) for n in LAG_DOMAIN),
            *spec.extra.domains]


def global_input_names(spec: FeatureSpec) -> list[str]:
    return [*GLOBAL_INPUTS, *(f"{n}_lag{j}" for j in range(1, spec.history) for n in LAG_GLOBAL),
            *spec.extra.globals]


def _column(layout: FeatureLayout, name: str, where: str) -> int:
    names = layout.domains if where == "domains" else layout.globals
    if name not in names:
        group = next(g for g, (d, gl) in FEATURE_GROUPS.items() if name in (*d, *gl))
        raise ConfigError(f"the agent uses the observation feature {name!r}, which this "
                          f"environment does not observe; add {group!r} to the env spec's "
                          "observation.features")
    return names.index(name)


def _step_features(obs: Mapping[str, np.ndarray], spec: FeatureSpec | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per-domain (weight_rel, loss, rel_change_base, rel_change_step, is_target, then the
    groups' features) and global (progress, scores..., source_share, then the groups') of one
    observation; observation columns are picked by name."""
    dom = np.asarray(obs["domains"], dtype=np.float64)
    glob = np.asarray(obs["global"], dtype=np.float64)
    layout = observation_layout_of(obs)
    k = dom.shape[0]
    w, loss, d_base, d_step, tgt = (dom[:, _column(layout, n, "domains")] for n in (
        "weight", "loss", "loss_change_base", "loss_change_step", "is_target"))
    base = np.maximum(loss - d_base, 1e-6)
    prev = np.maximum(loss - d_step, 1e-6)
    extra = spec.extra if spec is not None else FeatureLayout((), ())
    d = np.stack([w * k, loss, d_base / base, d_step / prev, tgt,
                  *(dom[:, _column(layout, n, "domains")] for n in extra.domains)], axis=1)
    share = float(w[tgt < 0.5].sum())
    g = np.concatenate([glob[[_column(layout, n, "global") for n in GLOBAL_INPUTS[:4]]], [share],
                        glob[[_column(layout, n, "global") for n in extra.globals]]])
    return d, g


def build_features(window: Sequence[Mapping[str, np.ndarray]], spec: FeatureSpec
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Inputs from the last observations (oldest first, the current one last); float32."""
    cur_d, cur_g = _step_features(window[-1], spec)
    k = cur_d.shape[0]
    nd, ng = len(DOMAIN_INPUTS), len(GLOBAL_INPUTS)
    dom = [cur_d[:, :nd]]
    glob = [cur_g[:ng]]
    for j in range(1, spec.history):
        if j < len(window):
            d, g = _step_features(window[-1 - j])
            dom.append(d[:, [0, 3]])
            glob.append(g[[4, 1, 2]])
        else:
            dom.append(np.zeros((k, len(LAG_DOMAIN))))
            glob.append(np.zeros(len(LAG_GLOBAL)))
    dom.append(cur_d[:, nd:])  # the optional groups' inputs, last (v1 inputs keep their columns)
    glob.append(cur_g[ng:])
    return (np.concatenate(dom, axis=1).astype(np.float32),
            np.concatenate(glob).astype(np.float32))


def episode_features(observations: Sequence[Mapping[str, np.ndarray]], spec: FeatureSpec
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Inputs at every observation of an episode: ``(T+1, K, Fd)`` and ``(T+1, G)``."""
    doms, globs = [], []
    for t in range(len(observations)):
        d, g = build_features(observations[max(0, t - spec.history + 1) : t + 1], spec)
        doms.append(d)
        globs.append(g)
    return np.stack(doms), np.stack(globs)


class History:
    """The rolling window a running agent keeps between decisions."""

    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self._obs: deque[Mapping[str, np.ndarray]] = deque(maxlen=spec.history)

    def reset(self) -> None:
        self._obs.clear()

    def push(self, obs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Add the newest observation and return the inputs for the decision it prompts."""
        self._obs.append({k: np.array(v, copy=True) for k, v in obs.items()})
        return build_features(list(self._obs), self.spec)


class FeatureWrapper(gym.ObservationWrapper):
    """An env whose observations are the agent's inputs: ``Dict(domains=Box(K, Fd),
    global=Box(G))``. Used for online RL, so SB3 trains on exactly what the exported agent sees."""

    def __init__(self, env: gym.Env, spec: FeatureSpec):
        super().__init__(env)
        self.feature_spec = spec
        self.history = History(spec)
        k = env.observation_space["domains"].shape[0]
        fd, fg = len(domain_input_names(spec)), len(global_input_names(spec))
        big = np.float32(1e6)
        self.observation_space = gym.spaces.Dict({
            "domains": gym.spaces.Box(-big, big, (k, fd), np.float32),
            "global": gym.spaces.Box(-big, big, (fg,), np.float32),
        })

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self.history.reset()
        return super().reset(**kwargs)

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        d, g = self.history.push(observation)
        return {"domains": d, "global": g}
