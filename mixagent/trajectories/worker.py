"""The per-worker episode loop: one environment, episodes in, one Arrow table per episode out.

:class:`EpisodeWorker` is a plain class: ``--workers 1`` uses it in-process; the Ray pool wraps it
with ``ray.remote`` so each actor owns one environment (built once, reused for every episode it
is given). The driver, not the worker, writes shards — workers on other nodes need no shared
filesystem, and there is a single writer per collection.

Determinism: everything random in episode ``i`` — the env's reset seed (its data order), the
explorer's seed, the branch choices, the explorer drawn for the episode — comes from
``SeedSequence([collection seed, i])``, never from the worker or the time, so a retried, resumed
or redistributed episode produces the same rows (wall-time columns aside). In a family with
``repeat_seeds: shared`` the env seed is the first repeat's of the scenario (the others still
episode ``i``'s own), so a scenario's repeats differ in their mixing alone.

Scenario families: the worker samples episode ``i``'s scenario itself
(:meth:`~mixagent.envs.family.ScenarioFamily.scenario` of (collection seed, ``i``), pure) and
keeps the environments of the last ``env_cache`` scenarios, so episodes of a scenario it has
seen reuse its environment. All scenarios of a family share one base, pre-trained (or found in
the cache) once when the worker starts.

Population batching (``population > 1``): :meth:`EpisodeWorker.run_population` runs a group of
episodes as one batched model (:mod:`mixagent.trajectories.population`), each member with its
own explorer instance and the seeds above, so its rows are the ones :meth:`run_episode` gives.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from mixagent.config import StrictModel
from mixagent.trajectories.branching import BranchConfig, Brancher, Transition
from mixagent.trajectories.explorers import (
    Explorer,
    ExplorerChoice,
    ExplorerFactory,
    choose_explorer,
    is_stochastic,
    make_explorer,
    perturb,
)
from mixagent.utils.raypool import PoolWorker

log = logging.getLogger(__name__)


class FaultInjection(StrictModel):
    """Testing only: the worker process exits hard when it starts ``episode`` the first time
    (``marker`` is created then, so the retry succeeds)."""

    episode: int
    marker: str


class WorkerConfig(StrictModel):
    """Everything a worker needs, as plain JSON-able data (sent to Ray actors)."""

    env_spec: dict[str, Any] = Field(description="EnvSpec.model_dump(mode='json')")
    spec_origin: str
    spec_root: str
    spec_hash: str
    collection_hash: str
    collection_id: str
    explorers: list[tuple[str, float]]
    explorer_order: str = Field(default="draw", description="draw (by share) or cycle (i mod n)")
    seed: int
    branch: BranchConfig
    threads: int | None = Field(default=None, description="torch threads; None: leave as is")
    env_vars: dict[str, str] = Field(default_factory=dict)
    fault: FaultInjection | None = None
    family: dict[str, Any] | None = Field(
        default=None, description="ScenarioFamily.to_dict(): sample a scenario per episode")
    env_cache: int = Field(default=4, ge=1, description="environments of a family kept per worker")
    population: int = Field(default=1, ge=1, description="episodes trained as one batched model "
                            "(run_population); 1: episode by episode")


@dataclass
class _EnvSlot:
    """An environment and what the episode loop needs of it (one per scenario)."""

    env: Any
    brancher: Brancher
    scenario: str  # '' for a collection of one env spec
    spec_hash: str
    steppers: dict[int, Any] = field(default_factory=dict)  # population size -> PopulationStepper


@dataclass(frozen=True)
class EpisodeSeeds:
    env: int
    explorer: int
    branch: int
    choice: int


def episode_seeds(seed: int, episode: int) -> EpisodeSeeds:
    """The seeds of episode ``episode`` of a collection seeded ``seed`` (see module docstring)."""
    s = np.random.SeedSequence([int(seed), int(episode)]).generate_state(4, dtype=np.uint32)
    return EpisodeSeeds(int(s[0]), int(s[1]), int(s[2]), int(s[3]))


class EpisodeWorker(PoolWorker):
    """Owns one :class:`~mixagent.envs.proxy_env.ProxyCPTEnv`; runs whole episodes on request."""

    def __init__(self, config: dict[str, Any] | WorkerConfig, worker_id: str = "local",
                 explorer_factory: ExplorerFactory | None = None):
        cfg = config if isinstance(config, WorkerConfig) else WorkerConfig.model_validate(config)
        self.cfg = cfg
        #: builds explorers from specs; a module-level function, so it pickles to Ray actors
        self._make_explorer = explorer_factory or make_explorer
        self._setup(worker_id, cfg.env_vars, cfg.threads)
        from mixagent.envs.spec import EnvSpec

        self.choices = [ExplorerChoice(s, w) for s, w in cfg.explorers]
        self._explorers: dict[str, Explorer] = {}
        #: population members' explorers, (spec, member slot) -> explorer: members that use the
        #: same spec at once need their own instances (explorers keep per-episode state)
        self._member_explorers: dict[tuple[str, int], Explorer] = {}
        self.population_enabled = cfg.population > 1
        self.population_fallback: str | None = None
        self._envs: OrderedDict[str, _EnvSlot] = OrderedDict()  # scenario id -> slot (LRU)
        self.family: Any = None
        if cfg.family is None:
            spec = EnvSpec.model_validate(cfg.env_spec).located(cfg.spec_origin,
                                                                Path(cfg.spec_root))
            self._use(self._build(spec, ""))
        else:
            self._start_family(cfg.family)
        self._warm_up()
        self._ready()

    def info(self) -> dict[str, Any]:
        """:meth:`PoolWorker.info` plus ``compile``: whether the proxies train with a compiled
        loss (each built engine's ``compile_state``: "off", "compiled", "fallback"); a family
        worker has built no environment yet at start, so it says "requested" or "off"."""
        slots = [*self._envs.values(), *([self.slot] if getattr(self, "slot", None) else [])]
        found = sorted({str(getattr(slot.env.engine, "compile_state", "off")) for slot in slots})
        if not found and self.family is not None:
            from mixagent.proxy.runtime import resolve_compile

            found = ["requested" if resolve_compile(self.family.base.runtime) else "off"]
        return {**super().info(), "compile": (found[0] if len(found) == 1 else found) if found else None}

    def _warm_up(self) -> None:
        """Pay the one-off costs of a fresh process now, inside setup, not in its first episode.

        A Ray actor is a new interpreter: its first :meth:`run_episode` used to import what the
        episode loop imports lazily — above all pandas, which pyarrow imports on the first
        ``pa.array`` (~0.5 CPU-seconds, 5-10 micro-spec episodes' worth of work). Counted in a
        worker's steady state, that cost made short-episode collections look as if Ray cost
        ~20% per episode. Building an empty table touches no environment or random state, so
        rows are unchanged.
        """
        from gymnasium.spaces import flatten  # noqa: F401

        from mixagent.data.sampler import validate_weights  # noqa: F401
        from mixagent.envs.actions import action_from_weights  # noqa: F401
        from mixagent.trajectories.schema import warm_up

        warm_up()

    def _start_family(self, data: dict[str, Any]) -> None:
        """Check the family resolves to the collection's hash here, and make sure of its base."""
        from mixagent.envs.family import ScenarioFamily
        from mixagent.envs.setup import resolve_spec
        from mixagent.proxy.base_model import ensure_base
        from mixagent.trajectories.identity import family_hash

        self.family = ScenarioFamily.from_dict(data)
        resolved = resolve_spec(self.family.base)
        self._check_hash(family_hash(self.family, resolved.data.manifest),
                         self.cfg.spec_hash, "scenario family")
        # every scenario shares this base (the family varies nothing the base key covers)
        ensure_base(resolved.base_recipe(), self.family.base.runtime, progress=False)

    def _check_hash(self, found: str, expected: str, what: str) -> None:
        if found != expected:
            from mixagent.errors import DataError

            raise DataError(f"worker {self.worker_id}: the {what} resolves to hash {found} here, "
                            f"but the collection is for {expected} (different data on this "
                            "node?)")

    def _build(self, spec: Any, scenario: str) -> _EnvSlot:
        from mixagent.envs.proxy_env import ProxyCPTEnv
        from mixagent.trajectories.identity import resolved_spec_hash

        env = ProxyCPTEnv(spec, progress=False)
        found = resolved_spec_hash(env.resolved)
        if not scenario:
            self._check_hash(found, self.cfg.spec_hash, "env spec")
        return _EnvSlot(env, Brancher(env, self.cfg.branch), scenario, found)

    def _use(self, slot: _EnvSlot) -> None:
        """Make ``slot`` the environment of the next episode."""
        self.slot = slot
        self.env = slot.env
        self.brancher = slot.brancher
        self._space = slot.env.observation_space
        act = slot.env.env_spec.action
        self._scale, self._floor = act.scale, act.floor

    def _use_scenario(self, episode: int) -> None:
        """The environment of episode ``episode``'s scenario: cached, or built (evicting the
        least recently used one beyond ``env_cache``)."""
        scenario = self.family.scenario(self.cfg.seed, episode)
        slot = self._envs.pop(scenario.id, None)
        if slot is None:
            log.info("worker %s: episode %d, new scenario %s (%s)", self.worker_id, episode,
                     scenario.id, scenario.spec.description)
            slot = self._build(scenario.spec, scenario.id)
        self._envs[scenario.id] = slot
        while len(self._envs) > self.cfg.env_cache:
            _, old = self._envs.popitem(last=False)
            old.env.close()
        self._use(slot)

    def _explorer(self, spec: str) -> Explorer:
        if spec not in self._explorers:
            self._explorers[spec] = self._make_explorer(spec)
        return self._explorers[spec]

    def _reset_explorer(self, explorer: Explorer, seed: int) -> None:
        """``reset(names, is_target, seed)``, plus ``space=`` (the env's DomainSpace) for
        explorers that take it (mixing policies need fields and token counts) and
        ``num_steps=`` (the episode's length) for those that take that."""
        env = self.env
        try:
            params = set(inspect.signature(explorer.reset).parameters)
        except (TypeError, ValueError):
            params = set()
        extra: dict[str, Any] = {}
        if "space" in params:
            from mixagent.data.space import DomainSpace

            extra["space"] = DomainSpace.from_env(env)
        if "num_steps" in params:
            extra["num_steps"] = int(env.num_steps)
        explorer.reset(env.domain_names, env.is_target, seed, **extra)

    def _flat(self, obs: dict[str, np.ndarray]) -> list[float]:
        from gymnasium.spaces import flatten

        return np.asarray(flatten(self._space, obs), dtype=np.float32).tolist()

    def _seeds(self, episode: int) -> EpisodeSeeds:
        """Episode ``episode``'s seeds; in a family with ``repeat_seeds: shared`` the env seed is
        the first repeat's, so a scenario's repeats see one data order (common random numbers)."""
        seeds = episode_seeds(self.cfg.seed, episode)
        if self.family is None:
            return seeds
        first = self.family.env_seed_index(episode)
        return seeds if first == episode else replace(seeds, env=episode_seeds(self.cfg.seed, first).env)

    def _explorer_spec(self, episode: int, seeds: EpisodeSeeds) -> str:
        """Which explorer runs episode ``episode``: drawn by share from its seed, or in turn."""
        if self.cfg.explorer_order == "cycle":
            return self.choices[episode % len(self.choices)].spec
        return choose_explorer(self.choices, np.random.default_rng(seeds.choice))

    def run_episode(self, episode: int) -> Any:
        """Collect episode ``episode``; returns its rows as a ``pyarrow.Table`` (one shard)."""
        from mixagent.envs.actions import action_from_weights
        from mixagent.trajectories.schema import rows_to_table

        self._maybe_crash(episode)
        if self.family is not None:
            self._use_scenario(episode)
        cfg, env = self.cfg, self.env
        seeds = self._seeds(episode)
        explorer = self._explorer(self._explorer_spec(episode, seeds))
        obs, info = env.reset(seed=seeds.env)
        self._reset_explorer(explorer, seeds.explorer)
        branch_rng = np.random.default_rng(seeds.branch)
        k = cfg.branch.k
        alternatives = cfg.branch.alternatives
        if alternatives == "auto":
            alternatives = "explorer" if is_stochastic(explorer) else "perturb"
        select = cfg.branch.select if explorer.stateless else "explorer"
        rows: list[dict[str, Any]] = []
        parent = -1
        eps_id = f"{cfg.collection_id}-{episode:06d}"
        for t in range(env.num_steps):
            proposals = [self._normalise(explorer.act(obs, info), explorer)]
            for _ in range(k - 1):
                proposals.append(self._normalise(explorer.act(obs, info), explorer)
                                 if alternatives == "explorer" else
                                 perturb(proposals[0], branch_rng, cfg.branch.perturb_concentration))
            # the one path from an explorer's weights to the env: the centred action whose
            # mapped weights are the proposal (or its nearest reachable mixture); the env maps
            # the stored action, so every row's actions -> weights is exactly the env's map
            actions = [action_from_weights(w, self._scale, self._floor) for w in proposals]
            if k == 1:
                t0 = time.perf_counter()
                o, r, term, trunc, inf = env.step(actions[0])
                inf = {**inf, "wall_time": time.perf_counter() - t0}
                transitions = [Transition(actions[0], o, float(r), bool(term), bool(trunc), inf)]
                chosen = 0
            else:
                pick = None if select == "best" else \
                    (int(branch_rng.integers(k)) if select == "random" else 0)
                transitions, chosen = self.brancher.step(actions, pick)
            flat_obs = self._flat(obs)
            for b, tr in enumerate(transitions):
                rows.append(self._row(eps_id, episode, t, b, k, parent, b == chosen, flat_obs,
                                      tr, proposals[b], explorer.name, seeds))
            obs, info = transitions[chosen].obs, transitions[chosen].info
            parent = chosen
            if transitions[chosen].terminated or transitions[chosen].truncated:
                break
        self._episodes += 1
        return rows_to_table(rows, cfg.spec_hash, cfg.collection_hash, episode)


    def run_episode_ipc(self, episode: int) -> bytes:
        """:meth:`run_episode`, its table as Arrow IPC bytes: what a Ray actor returns
        (:func:`~mixagent.trajectories.schema.table_to_ipc` says why)."""
        from mixagent.trajectories.schema import table_to_ipc

        return table_to_ipc(self.run_episode(episode))

    def run_population_ipc(self, episodes: list[int]) -> list[bytes]:
        """:meth:`run_population`, each table as Arrow IPC bytes (see :meth:`run_episode_ipc`)."""
        from mixagent.trajectories.schema import table_to_ipc

        return [table_to_ipc(t) for t in self.run_population(episodes)]

    # -- population batching -------------------------------------------------------------------
    def run_population(self, episodes: list[int] | tuple[int, ...]) -> list[Any]:
        """Collect ``episodes`` as one population (:mod:`mixagent.trajectories.population`);
        returns their tables in the order given, each the rows :meth:`run_episode` would give
        (to floating-point reassociation; ``batched`` True).

        Members must share the scenario: with a family, the episodes are grouped by scenario
        (in order of first appearance) and each group is one population. A member alone in its
        group, or every member once batching is off (unfoldable model, a failed verification,
        any error in the batched path), runs as a plain episode.
        """
        episodes = [int(e) for e in episodes]
        for ep in episodes:
            self._maybe_crash(ep)
        groups: dict[str, list[int]] = {}
        for ep in episodes:
            key = self.family.scenario(self.cfg.seed, ep).id if self.family is not None else ""
            groups.setdefault(key, []).append(ep)
        tables: dict[int, Any] = {}
        for group in groups.values():
            if self.family is not None:
                self._use_scenario(group[0])
            done = self._population(group) if len(group) > 1 and self.population_enabled else None
            if done is None:
                done = {ep: self.run_episode(ep) for ep in group}
            tables.update(done)
        return [tables[ep] for ep in episodes]

    def _stepper(self, size: int) -> Any:
        from mixagent.trajectories.population import FoldError, PopulationStepper

        stepper = self.slot.steppers.get(size)
        if stepper is None:
            try:
                stepper = PopulationStepper(self.env, size)
            except FoldError as err:
                self._disable_population(f"cannot batch a population: {err}")
                return None
            self.slot.steppers[size] = stepper
        return stepper

    def _disable_population(self, reason: str) -> None:
        if self.population_enabled:
            log.warning("worker %s: %s; collecting episode by episode from now on",
                        self.worker_id, reason)
        self.population_enabled = False
        self.population_fallback = reason
        for slot in [self.slot, *self._envs.values()]:
            slot.steppers.clear()

    def _population(self, group: list[int]) -> dict[int, Any] | None:
        """The batched population of ``group`` (one scenario), or None to run it episode by
        episode (batching just turned off; the reason was logged)."""
        from mixagent.errors import MixagentError

        stepper = self._stepper(len(group))
        if stepper is None:
            return None
        try:
            return self._population_rows(group, stepper)
        except MixagentError:
            raise  # a user error (an explorer's bad weights): the plain path would repeat it
        except Exception as err:  # any surprise in the fast path: fall back, keep collecting
            self._disable_population(f"population batching failed ({type(err).__name__}: {err})")
            return None

    def _population_rows(self, group: list[int], stepper: Any) -> dict[int, Any]:
        from mixagent.envs.actions import action_from_weights
        from mixagent.trajectories.schema import rows_to_table

        cfg, env = self.cfg, self.env
        seeds = [self._seeds(ep) for ep in group]
        explorers = []
        for j, (ep, s) in enumerate(zip(group, seeds, strict=True)):
            spec = self._explorer_spec(ep, s)
            if (spec, j) not in self._member_explorers:
                self._member_explorers[(spec, j)] = self._make_explorer(spec)
            explorers.append(self._member_explorers[(spec, j)])
        starts = stepper.reset([s.env for s in seeds])
        for explorer, s in zip(explorers, seeds, strict=True):
            self._reset_explorer(explorer, s.explorer)
        obs = [o for o, _ in starts]
        infos = [i for _, i in starts]
        rows: list[list[dict[str, Any]]] = [[] for _ in group]
        eps_ids = [f"{cfg.collection_id}-{ep:06d}" for ep in group]
        parent = -1
        for t in range(env.num_steps):
            proposals = [self._normalise(ex.act(o, i), ex)
                         for ex, o, i in zip(explorers, obs, infos, strict=True)]
            # the same map as run_episode: the stored action is what the env maps to weights
            actions = [action_from_weights(w, self._scale, self._floor) for w in proposals]
            transitions = stepper.step(actions)
            for j, tr in enumerate(transitions):
                rows[j].append(self._row(eps_ids[j], group[j], t, 0, 1, parent, True,
                                         self._flat(obs[j]), tr, proposals[j], explorers[j].name,
                                         seeds[j]))
            obs = [tr.obs for tr in transitions]
            infos = [tr.info for tr in transitions]
            parent = 0
            ended = {tr.terminated or tr.truncated for tr in transitions}
            if len(ended) > 1:
                raise RuntimeError("population members ended at different steps")
            if ended == {True}:
                break
        self._episodes += len(group)
        return {ep: rows_to_table(r, cfg.spec_hash, cfg.collection_hash, ep)
                for ep, r in zip(group, rows, strict=True)}

    def _normalise(self, w: Any, explorer: Explorer) -> np.ndarray:
        from mixagent.data.sampler import validate_weights
        from mixagent.errors import MixagentError

        try:
            return validate_weights(w, self.env.num_domains, self.env.domain_names)
        except ValueError as err:
            raise MixagentError(f"explorer {explorer.name} proposed invalid weights: {err}") from None

    def _row(self, eps_id: str, episode: int, t: int, branch: int, k: int, parent: int,
             continued: bool, flat_obs: list[float], tr: Transition, proposed: np.ndarray,
             explorer: str, seeds: EpisodeSeeds) -> dict[str, Any]:
        info = tr.info
        scores = info["scores"]
        tasks = {f"{task}.{metric}": float(v) for task, metrics in info["task_metrics"].items()
                 for metric, v in metrics.items()}
        return {
            "eps_id": eps_id,
            "obs": flat_obs,
            "actions": np.asarray(tr.action, np.float32).tolist(),
            "rewards": float(tr.reward),
            "new_obs": self._flat(tr.obs),
            "terminateds": bool(tr.terminated),
            "truncateds": bool(tr.truncated),
            "t": t,
            "episode": episode,
            "branch_id": branch,
            "num_branches": k,
            "parent_branch": parent,
            "is_continuation": continued,
            "weights": np.asarray(info["weights"], np.float64).tolist(),
            "proposed_weights": np.asarray(proposed, np.float64).tolist(),
            "losses": np.asarray(info["losses"], np.float64).tolist(),
            "source_score": float(scores["source"]),
            "target_score": float(scores["target"]),
            "balanced_score": float(scores["balanced"]),
            "terms": {str(n): float(v) for n, v in info.get("terms", {}).items()},
            "task_metrics": tasks,
            "train_loss": float(info["train_loss"]),
            "tokens": int(info["tokens"]),
            "domain_names": list(self.env.domain_names),
            "env_spec_hash": self.slot.spec_hash,
            "scenario": self.slot.scenario,
            "explorer": explorer,
            "env_seed": seeds.env,
            "explorer_seed": seeds.explorer,
            "batched": bool(tr.batched),
            "wall_time": float(info.get("wall_time", 0.0)),
            "train_time": float(info.get("train_time", 0.0)),
            "eval_time": float(info.get("eval_time", 0.0)),
            "worker": self.worker_id,
        }

    def _maybe_crash(self, episode: int) -> None:
        fault = self.cfg.fault
        if fault is None or fault.episode != episode:
            return
        marker = Path(fault.marker)
        if marker.exists():
            return
        marker.write_text(self.worker_id, encoding="utf-8")
        log.warning("fault injection: worker %s exits while starting episode %d", self.worker_id,
                    episode)
        os._exit(17)
