"""Trajectories → arrays of agent inputs for offline RL (and RegMix's mixture table).

Rows follow the trajectory schema (:mod:`mixagent.trajectories.schema`): one transition per
row, observations flattened, an episode's main path made of its ``is_continuation`` rows, and
branch rows that start from the path's state at ``t`` and end after one step. The agent's state
needs the observations *before* ``t`` too (its history window), so every row — path or branch —
is given the window ``path[t-H+1 .. t]`` and its next state the window ``path[t-H+2 .. t] +
[new_obs]``. Actions are recomputed from the applied ``weights`` with the agent's own action map
(:func:`mixagent.envs.actions.action_from_weights`), so data and agent mean the same thing by
an action even if the collection used another scale.

Domain spaces of different sizes can be mixed: arrays are padded to the largest K with a mask.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixagent.envs.observation import DOMAIN_FEATURES, GLOBAL_FEATURES
from mixagent.errors import DataError
from mixagent.policies.base import DomainSpace
from mixagent.policies.features import FeatureSpec, build_features

log = logging.getLogger(__name__)


@dataclass
class TransitionData:
    """Padded transition arrays (N transitions, padded to ``K`` domains)."""

    dom: np.ndarray  # (N, K, Fd) inputs at s
    glob: np.ndarray  # (N, G)
    mask: np.ndarray  # (N, K) bool
    actions: np.ndarray  # (N, K) in [-1, 1], 0 where padded
    weights: np.ndarray  # (N, K) applied weights
    rewards: np.ndarray  # (N,)
    dom2: np.ndarray  # (N, K, Fd) inputs at s'
    glob2: np.ndarray  # (N, G)
    dones: np.ndarray  # (N,) 1.0 if s' is terminal
    episode: np.ndarray  # (N,) index into ``episodes``
    on_path: np.ndarray  # (N,) bool: the row is on its episode's main path
    episodes: list[str] = field(default_factory=list)
    returns: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (E,) path return per episode
    spaces: list[DomainSpace] = field(default_factory=list)  # distinct domain spaces seen

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    def subset(self, idx: np.ndarray) -> TransitionData:
        """The transitions at ``idx`` (episode bookkeeping kept whole)."""
        return TransitionData(self.dom[idx], self.glob[idx], self.mask[idx], self.actions[idx],
                              self.weights[idx], self.rewards[idx], self.dom2[idx], self.glob2[idx],
                              self.dones[idx], self.episode[idx], self.on_path[idx], self.episodes,
                              self.returns, self.spaces)


def unflatten(flat: Sequence[float], k: int) -> dict[str, np.ndarray]:
    """The env's ``Dict`` observation from a flattened row (``domains`` row-major, then ``global``)."""
    a = np.asarray(flat, dtype=np.float32)
    fd, fg = len(DOMAIN_FEATURES), len(GLOBAL_FEATURES)
    if a.size != k * fd + fg:
        raise DataError(f"a stored observation has {a.size} values; {k} domains need "
                        f"{k * fd + fg} (the observation layout changed?)")
    return {"domains": a[: k * fd].reshape(k, fd), "global": a[k * fd :]}


def read_trajectories(paths: Sequence[str | Path]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Transition rows of trajectory collections (read and validated by
    :func:`mixagent.trajectories.load`) and what their cards say about the env: its name and
    action map (``action_scale``, ``action_floor``), spec hashes and collection ids."""
    from mixagent.trajectories import load

    ts = load(list(paths))
    rows = ts.table.to_pylist()
    if not rows:
        raise DataError(f"no transitions in {', '.join(map(str, paths))}")
    meta: dict[str, Any] = {"collections": [c.get("collection_id") for c in ts.cards],
                            "env_spec_hashes": sorted({str(c.get("env_spec_hash")) for c in ts.cards}),
                            "episodes": len({r["eps_id"] for r in rows}),
                            "collection_seconds": round(sum(float((c.get("compute") or {}).get(
                                "transition_seconds", 0.0)) for c in ts.cards), 1)}
    specs = [(c.get("env_spec") or {}) for c in ts.cards]
    for root in paths:  # a collection still running (or killed) has no card yet
        f = Path(root) / "env_spec.json"
        if f.is_file():
            import json

            specs.append(json.loads(f.read_text(encoding="utf-8")))
    for env in specs:
        spec = env.get("spec") or {}
        if spec:
            act = spec.get("action") or {}
            meta.update({"env_spec": env.get("name") or spec.get("name", ""),
                         "action_scale": float(act.get("scale", 3.0)),
                         "action_floor": float(act.get("floor", 0.0))})
            break
    return rows, meta


def _space(names: Sequence[str], is_target: np.ndarray, name: str) -> DomainSpace:
    return DomainSpace(tuple(names), tuple(n.split("/", 1)[0] for n in names),
                       tuple("target" if t else "source" for t in is_target), tuple(0 for _ in names),
                       name)


def transitions_from_rows(rows: Iterable[Mapping[str, Any]], features: FeatureSpec,
                          action_scale: float, floor: float = 0.0, space_name: str = "") -> TransitionData:
    """Agent-input transitions from schema rows (see module docstring); ``space_name`` names
    the domain spaces in the policy's provenance (default: the env-spec hash)."""
    from mixagent.envs.actions import action_from_weights

    by_ep: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_ep.setdefault(str(r["eps_id"]), []).append(r)
    items: list[tuple[np.ndarray, ...]] = []
    episodes, returns, spaces = [], [], {}
    h = features.history
    for eid, ep_rows in sorted(by_ep.items()):
        ep_rows.sort(key=lambda r: (int(r["t"]), int(r.get("branch_id", 0))))
        names = list(ep_rows[0]["domain_names"])
        k = len(names)
        path_rows = {int(r["t"]): r for r in ep_rows if r.get("is_continuation", True)}
        steps = sorted(path_rows)
        if not steps or steps != list(range(len(steps))):
            log.warning("episode %s: main path has steps %s; skipped", eid, steps[:5])
            continue
        path = [unflatten(path_rows[0]["obs"], k)] + [unflatten(path_rows[t]["new_obs"], k) for t in steps]
        is_target = path[0]["domains"][:, 4] > 0.5
        spaces.setdefault((tuple(names), tuple(is_target)), _space(
            names, is_target, space_name or str(ep_rows[0].get("env_spec_hash", ""))[:12]))
        e_idx = len(episodes)
        episodes.append(eid)
        returns.append(float(sum(float(path_rows[t]["rewards"]) for t in steps)))
        for r in ep_rows:
            t = int(r["t"])
            if t > len(path) - 1:  # a branch past the end of the stored path
                continue
            before = path[max(0, t - h + 1) : t + 1]
            nxt = unflatten(r["new_obs"], k)
            after = [*path[max(0, t - h + 2) : t + 1], nxt]
            d, g = build_features(before, features)
            d2, g2 = build_features(after, features)
            w = np.asarray(r["weights"], dtype=np.float64)
            a = action_from_weights(w, action_scale, floor)
            items.append((d, g, a, w, float(r["rewards"]), d2, g2, float(bool(r["terminateds"])),
                          e_idx, bool(r.get("is_continuation", True))))
    if not items:
        raise DataError("no usable transitions (every episode lacked a complete main path)")
    kmax = max(it[0].shape[0] for it in items)
    n = len(items)
    fd, fg = items[0][0].shape[1], items[0][1].shape[0]
    out = TransitionData(
        dom=np.zeros((n, kmax, fd), np.float32), glob=np.zeros((n, fg), np.float32),
        mask=np.zeros((n, kmax), bool), actions=np.zeros((n, kmax), np.float32),
        weights=np.zeros((n, kmax), np.float32), rewards=np.zeros(n, np.float32),
        dom2=np.zeros((n, kmax, fd), np.float32), glob2=np.zeros((n, fg), np.float32),
        dones=np.zeros(n, np.float32), episode=np.zeros(n, np.int64), on_path=np.zeros(n, bool),
        episodes=episodes, returns=np.asarray(returns), spaces=list(spaces.values()))
    for i, (d, g, a, w, r, d2, g2, done, e, cont) in enumerate(items):
        k = d.shape[0]
        out.dom[i, :k], out.glob[i], out.mask[i, :k] = d, g, True
        out.actions[i, :k], out.weights[i, :k], out.rewards[i] = a, w, r
        out.dom2[i, :k], out.glob2[i], out.dones[i] = d2, g2, done
        out.episode[i], out.on_path[i] = e, cont
    return out


def rows_from_episode(result: Any, names: Sequence[str], eps_id: str) -> list[dict[str, Any]]:
    """Schema-like rows from a :class:`~mixagent.policies.base.EpisodeResult` run with
    ``keep_observations=True`` (tests and quick experiments without the trajectory store)."""
    import gymnasium as gym

    from mixagent.envs.observation import observation_space

    obs = result.observations
    k = len(names)
    space = observation_space(k, 1.0, 1.0)
    flat = [gym.spaces.flatten(space, o).astype(np.float32).tolist() for o in obs]
    rows = []
    for t, s in enumerate(result.steps):
        rows.append({"eps_id": eps_id, "t": t, "obs": flat[t], "new_obs": flat[t + 1],
                     "weights": s.weights.tolist(), "rewards": s.reward,
                     "terminateds": t == len(result.steps) - 1, "is_continuation": True,
                     "branch_id": 0, "domain_names": list(names), "balanced_score": s.scores["balanced"]})
    return rows


def episode_mixtures(rows: Iterable[Mapping[str, Any]]) -> tuple[list[DomainSpace], list[np.ndarray], list[float]]:
    """Per episode (main path): its domain space, mean weights and final balanced score —
    RegMix's (mixture, score) table."""
    by_ep: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if r.get("is_continuation", True):
            by_ep.setdefault(str(r["eps_id"]), []).append(r)
    spaces, mixtures, scores = [], [], []
    for ep_rows in by_ep.values():
        ep_rows.sort(key=lambda r: int(r["t"]))
        if not bool(ep_rows[-1]["terminateds"]):
            continue
        names = list(ep_rows[0]["domain_names"])
        obs0 = unflatten(ep_rows[0]["obs"], len(names))
        spaces.append(_space(names, obs0["domains"][:, 4] > 0.5, ""))
        mixtures.append(np.mean([np.asarray(r["weights"], dtype=np.float64) for r in ep_rows], axis=0))
        scores.append(float(ep_rows[-1]["balanced_score"]))
    return spaces, mixtures, scores
