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
A scenario-family collection (``mixagent collect FAMILY``) has one domain space and observation
layout *per scenario* (the ``scenario`` column; the card's ``scenarios.<id>``): every row is read
with its own scenario's space and layout, never the family base's, so episodes with 5 and with 30
domains, with and without the optional observation groups, train one agent side by side.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixagent.data.space import DomainSpace
from mixagent.envs.observation import DOMAIN_FEATURES, GLOBAL_FEATURES
from mixagent.errors import DataError
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
    # (E,) each episode's scenario choices ({} outside a family): what returns depend on besides
    # the policy, so episodes of different scenarios are ranked by return net of it
    contexts: list[dict[str, Any]] = field(default_factory=list)
    # (E,) each episode's scenario id ('' outside a family): episodes that share one differ only
    # in their mixing and seeds, so their returns can be compared directly
    scenarios: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    def subset(self, idx: np.ndarray) -> TransitionData:
        """The transitions at ``idx`` (episode bookkeeping kept whole)."""
        return TransitionData(self.dom[idx], self.glob[idx], self.mask[idx], self.actions[idx],
                              self.weights[idx], self.rewards[idx], self.dom2[idx], self.glob2[idx],
                              self.dones[idx], self.episode[idx], self.on_path[idx], self.episodes,
                              self.returns, self.spaces, self.contexts, self.scenarios)


def unflatten(flat: Sequence[float], k: int, features: Sequence[str] | None = None
              ) -> dict[str, np.ndarray]:
    """The env's ``Dict`` observation from a flattened row (``domains`` row-major, then ``global``).

    ``features``: the optional observation groups the row's scenario had on, when known (the
    card records them per scenario) — then the layout is exact. Otherwise the row's length says
    which groups were on (each layout has its own per-domain and global widths; for K ≥ 2
    domains no two layouts flatten to the same length), so collections with and without them are
    read alike.
    """
    from mixagent.envs.observation import feature_layout, observation_widths

    a = np.asarray(flat, dtype=np.float32)
    widths = observation_widths()
    if features is not None:
        lay = feature_layout(list(features))
        widths = [(len(lay.domains), len(lay.globals))]
    for fd, fg in widths:
        if a.size == k * fd + fg:
            return {"domains": a[: k * fd].reshape(k, fd), "global": a[k * fd :]}
    fd, fg = len(DOMAIN_FEATURES), len(GLOBAL_FEATURES)
    raise DataError(f"a stored observation has {a.size} values; {k} domains need {k * fd + fg} "
                    "(or more with optional observation features): the observation layout changed?")


def _spec_of(env: Mapping[str, Any]) -> dict[str, Any]:
    """The env spec a collection's stored ``env_spec`` stands for: the spec itself, or for a
    scenario family its base (what every scenario shares: action map, source field)."""
    if env.get("spec"):
        return dict(env["spec"])
    fam = (env.get("family") or {}).get("family") or {}
    base = fam.get("base")
    return dict(base) if isinstance(base, Mapping) else {}


def read_trajectories(paths: Sequence[str | Path]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Transition rows of trajectory collections (read and validated by
    :func:`mixagent.trajectories.load`) and what their cards say about the env: its name and
    action map (``action_scale``, ``action_floor``), spec hashes and collection ids.

    Each row gains ``domain_space`` (its scenario's :class:`DomainSpace`) and ``obs_features``
    (the optional observation groups its scenario observed). ``meta["observation_features"]``
    lists the groups *every* row has (what an agent trained on all of them can use); for scenario
    families ``meta["families"]`` holds each family (plain data), its collection seed and the
    (seed, episode) pairs and scenario ids it trained on (held-out selection excludes them).
    """
    from mixagent.trajectories import load
    from mixagent.trajectories.storage import COLLECTION_FILE, SPEC_FILE

    ts = load(list(paths))
    rows = ts.table.to_pylist()
    if not rows:
        raise DataError(f"no transitions in {', '.join(map(str, paths))}")
    meta: dict[str, Any] = {"collections": [c.get("collection_id") for c in ts.cards],
                            "env_spec_hashes": sorted({str(c.get("env_spec_hash")) for c in ts.cards}),
                            "episodes": len({r["eps_id"] for r in rows}),
                            "collection_seconds": round(sum(float((c.get("compute") or {}).get(
                                "transition_seconds", 0.0)) for c in ts.cards), 1)}
    envs = [(c.get("env_spec") or {}) for c in ts.cards]
    families: list[dict[str, Any]] = []  # {"family", "seed", "collection_hash"}
    for root in map(Path, paths):  # a collection still running (or killed) has no card yet
        f = root / SPEC_FILE
        if f.is_file():
            env = json.loads(f.read_text(encoding="utf-8"))
            envs.append(env)
            coll = root / COLLECTION_FILE
            if env.get("family") and coll.is_file():
                rec = json.loads(coll.read_text(encoding="utf-8"))
                families.append({"family": env["family"], "seed": int(rec["identity"]["seed"]),
                                 "collection_id": str(rec["collection_id"]),
                                 "env_spec_hash": str(rec["env_spec_hash"])})
    for env in envs:
        spec = _spec_of(env)
        if spec:
            act = spec.get("action") or {}
            meta.update({"env_spec": env.get("name") or spec.get("name", ""),
                         "action_scale": float(act.get("scale", 3.0)),
                         "action_floor": float(act.get("floor", 0.0))})
            break
    spaces, features, choices = _recorded_spaces(ts.cards, envs, families, rows)
    for r in rows:  # each row carries its scenario's domain space (a shared object)
        h = str(r["env_spec_hash"])
        r["domain_space"] = spaces[h]
        r["obs_features"] = features.get(h)
        r["scenario_choices"] = choices.get(h, {})
    groups = [set(f) for f in features.values() if f is not None]
    meta["observation_features"] = sorted(set.intersection(*groups)) if groups and \
        len(groups) == len(features) else []
    if families:
        for fam in families:
            own = [r for r in rows if _in_family(r, fam)]
            fam["episodes"] = sorted({int(r["episode"]) for r in own})
            fam["scenario_ids"] = sorted({str(r["scenario"]) for r in own})
        meta["families"] = families
    return rows, meta


def _in_family(row: Mapping[str, Any], fam: Mapping[str, Any]) -> bool:
    """Whether ``row`` came from the family collection ``fam`` (an episode id starts with its
    collection's id)."""
    return bool(row.get("scenario")) and str(row["eps_id"]).startswith(f"{fam['collection_id']}-")


def _recorded_spaces(cards: Sequence[Mapping[str, Any]], envs: Sequence[Mapping[str, Any]],
                     families: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]
                     ) -> tuple[dict[str, DomainSpace], dict[str, list[str] | None],
                                dict[str, dict[str, Any]]]:
    """The domain space and observation groups of every env-spec hash in ``rows``: the ones the
    collection recorded in its card (``domain_space``, or per scenario of a family
    ``scenarios.<id>.domain_space``: the env's real fields, roles and token counts).

    A family collection without a card yet (still running, or killed) gets each scenario's
    space by re-sampling it from (collection seed, episode) — pure — and resolving it. A
    collection from before cards recorded spaces gets its space from the env spec it stored:
    roles from the rows' ``is_target`` feature, fields from the spec's source and target field
    (exact: an env's domains are those of its two fields), token counts unknown (0, with a
    warning; only the policy's provenance records them).

    The third mapping holds each family scenario's sampled ``choices`` (budget, schedule,
    reward weighting, ...): what makes one scenario's returns incomparable with another's.
    """
    out: dict[str, DomainSpace] = {}
    feats: dict[str, list[str] | None] = {}
    choices: dict[str, dict[str, Any]] = {}
    for c in cards:
        env = c.get("env_spec") or {}
        if c.get("domain_space") and c.get("env_spec_hash"):
            h = str(c["env_spec_hash"])
            out[h] = DomainSpace.from_dict(c["domain_space"])
            feats[h] = list((_spec_of(env).get("observation") or {}).get("features") or [])
        for entry in (c.get("scenarios") or {}).values():
            if entry.get("domain_space") and entry.get("env_spec_hash"):
                h = str(entry["env_spec_hash"])
                out[h] = DomainSpace.from_dict(entry["domain_space"])
                feats[h] = list(((entry.get("spec") or {}).get("observation") or {})
                                .get("features") or [])
                choices[h] = dict(entry.get("choices") or {})
    for r in rows:
        h = str(r["env_spec_hash"])
        if h in out:
            continue
        if r.get("scenario"):
            fam = next((f for f in families if _in_family(r, f)), None)
            if fam is not None:
                out[h], feats[h], choices[h] = _resampled_space(fam, int(r["episode"]),
                                                                str(r["scenario"]))
                continue
        spec = next((_spec_of(e) for e in envs if e.get("spec")), None) or {}
        names = list(r["domain_names"])
        target = unflatten(r["obs"], len(names))["domains"][:, DOMAIN_FEATURES.index("is_target")] > 0.5
        if "source_field" not in spec or "target_field" not in spec:
            raise DataError(f"trajectories of env spec {h}: neither a recorded domain space nor an "
                            "env spec with source and target fields; re-collect them")
        log.warning("trajectories of env spec %s record no domain space (collected before cards "
                    "did); fields from the env spec, token counts unknown (0)", h[:12])
        out[h] = DomainSpace(tuple(names),
                             tuple(spec["target_field"] if t else spec["source_field"] for t in target),
                             tuple("target" if t else "source" for t in target), (0,) * len(names),
                             str(spec.get("name", "")))
        feats[h] = None  # unknown: read by the row's length
    return out, feats, choices


def _resampled_space(fam: Mapping[str, Any], episode: int, scenario: str
                     ) -> tuple[DomainSpace, list[str], dict[str, Any]]:
    """A family scenario's domain space, observation groups and choices, re-sampled from its
    collection's (seed, episode) and resolved against the data (a collection without a card)."""
    from mixagent.envs.family import ScenarioFamily
    from mixagent.envs.setup import resolve_spec

    sc = ScenarioFamily.from_dict(fam["family"]).scenario(int(fam["seed"]), episode)
    if sc.id != scenario:
        raise DataError(f"episode {episode} records scenario {scenario}, but its family now samples "
                        f"{sc.id}; the family changed under the collection")
    return (DomainSpace.from_env(resolve_spec(sc.spec)), list(sc.spec.observation.features),
            dict(sc.choices))


def _row_space(r: Mapping[str, Any], name: str) -> DomainSpace:
    """The domain space of a row from :func:`read_trajectories`, renamed to ``name`` if given
    (the policy's provenance names spaces after the env spec by default)."""
    space = r.get("domain_space")
    if not isinstance(space, DomainSpace):
        raise DataError("a transition row has no domain_space; read rows with read_trajectories "
                        "(or give rows_from_episode the env's space)")
    return dataclasses.replace(space, name=name) if name else space


def transitions_from_rows(rows: Iterable[Mapping[str, Any]], features: FeatureSpec,
                          action_scale: float, floor: float = 0.0, space_name: str = "") -> TransitionData:
    """Agent-input transitions from schema rows (see module docstring); ``space_name`` names
    the domain spaces in the policy's provenance (default: the env-spec hash)."""
    from mixagent.envs.actions import action_from_weights, policy_floor

    by_ep: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_ep.setdefault(str(r["eps_id"]), []).append(r)
    items: list[tuple[np.ndarray, ...]] = []
    episodes, returns, spaces, contexts, scenarios = [], [], {}, [], []
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
        feats = ep_rows[0].get("obs_features")
        path = [unflatten(path_rows[0]["obs"], k, feats)] + [unflatten(path_rows[t]["new_obs"], k, feats)
                                                              for t in steps]
        space = _row_space(ep_rows[0], space_name)
        spaces.setdefault((space.names, space.roles), space)
        e_idx = len(episodes)
        episodes.append(eid)
        contexts.append(dict(ep_rows[0].get("scenario_choices") or {}))
        scenarios.append(str(ep_rows[0].get("scenario") or ""))
        returns.append(float(sum(float(path_rows[t]["rewards"]) for t in steps)))
        for r in ep_rows:
            t = int(r["t"])
            if t > len(path) - 1:  # a branch past the end of the stored path
                continue
            before = path[max(0, t - h + 1) : t + 1]
            nxt = unflatten(r["new_obs"], k, feats)
            after = [*path[max(0, t - h + 2) : t + 1], nxt]
            d, g = build_features(before, features)
            d2, g2 = build_features(after, features)
            w = np.asarray(r["weights"], dtype=np.float64)
            a = action_from_weights(w, action_scale, policy_floor(floor, k))
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
        episodes=episodes, returns=np.asarray(returns), spaces=list(spaces.values()),
        contexts=contexts, scenarios=scenarios)
    for i, (d, g, a, w, r, d2, g2, done, e, cont) in enumerate(items):
        k = d.shape[0]
        out.dom[i, :k], out.glob[i], out.mask[i, :k] = d, g, True
        out.actions[i, :k], out.weights[i, :k], out.rewards[i] = a, w, r
        out.dom2[i, :k], out.glob2[i], out.dones[i] = d2, g2, done
        out.episode[i], out.on_path[i] = e, cont
    return out


def context_matrix(contexts: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """A design matrix of episode contexts (scenario choices): nested keys flattened with dots,
    numbers as they are, anything else one-hot per ``key=value``; (E, 0) when no episode has a
    context (a single-scenario collection)."""
    flat = [_flatten(c) for c in contexts]
    numeric = sorted({k for f in flat for k, v in f.items() if _is_number(v)})
    levels = sorted({f"{k}={v}" for f in flat for k, v in f.items() if not _is_number(v)})
    cols = {name: i for i, name in enumerate([*numeric, *levels])}
    x = np.zeros((len(flat), len(cols)))
    for i, f in enumerate(flat):
        for k, v in f.items():
            if _is_number(v):
                x[i, cols[k]] = float(v)
            else:
                x[i, cols[f"{k}={v}"]] = 1.0
    return x


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = json.dumps(v, sort_keys=True) if isinstance(v, list) else v
    return out


def rows_from_episode(result: Any, space: DomainSpace, eps_id: str) -> list[dict[str, Any]]:
    """Schema-like rows from a :class:`~mixagent.policies.protocol.EpisodeResult` run with
    ``keep_observations=True`` on ``space`` (tests and quick experiments without the trajectory
    store)."""
    import gymnasium as gym

    from mixagent.envs.observation import observation_space

    obs = result.observations
    names = list(space.names)
    k = len(names)
    box = observation_space(k, 1.0, 1.0)  # flattening order only (domains, then global)
    flat = [gym.spaces.flatten(box, o).astype(np.float32).tolist() for o in obs]
    rows = []
    for t, s in enumerate(result.steps):
        rows.append({"eps_id": eps_id, "t": t, "obs": flat[t], "new_obs": flat[t + 1],
                     "weights": s.weights.tolist(), "rewards": s.reward,
                     "terminateds": t == len(result.steps) - 1, "is_continuation": True,
                     "branch_id": 0, "domain_names": list(names), "balanced_score": s.scores["balanced"],
                     "domain_space": space})
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
        spaces.append(_row_space(ep_rows[0], ""))
        mixtures.append(np.mean([np.asarray(r["weights"], dtype=np.float64) for r in ep_rows], axis=0))
        scores.append(float(ep_rows[-1]["balanced_score"]))
    return spaces, mixtures, scores
