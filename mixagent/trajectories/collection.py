"""Orchestrating a collection: the episode queue, Ray actors, retries, resume, the card.

``collect`` resolves the env spec (cheap) — or loads a scenario family (a file with a top-level
``family:`` key; :mod:`mixagent.envs.family`), whose scenario of episode ``i`` every worker
samples from (seed, i) — fixes the collection's identity (env-spec or family hash +
explorers + branching + seed), prepares the output folder (refusing a foreign one), validates the
shards already there, and collects the missing episodes — in this process for ``workers=1``
(no Ray), else on a pool of Ray actors, one environment each. Every finished episode is written
as its own shard at once, so a kill loses at most the episodes in flight. With
``population=P`` the work items are populations of P episodes fixed by index, each trained as one
batched model by a worker (:mod:`mixagent.trajectories.population`; refused with branching).

Faults:

* an actor that dies (killed, OOM, node lost) fails its episode with ``RayActorError``; the
  episode goes back to the front of the queue and a replacement actor is started, up to
  ``max_attempts`` tries per episode (the pool is :mod:`mixagent.utils.raypool`, shared with
  evaluation);
* a user error inside an episode (a :class:`~mixagent.errors.MixagentError`), or any error
  while a worker builds its environment, stops the collection with that message: retrying a
  deterministic error only repeats it;
* two runs on one folder: the first holds ``.collect.lock`` (an ``flock``, released by the
  kernel when its process dies) for its whole run; the second fails at once, naming the first;
* ``resume=True`` removes leftover temporary files, moves shards that fail validation into
  ``quarantine/`` (reported with path and reason, never deleted) and collects every episode
  ``0..episodes-1`` that has no valid shard. Episode seeds depend only on (seed, index), so the
  result is row-for-row the collection an uninterrupted run would have produced.
"""

from __future__ import annotations

import collections
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from mixagent.config import StrictModel
from mixagent.envs.family import is_family_file, load_family
from mixagent.errors import ConfigError
from mixagent.trajectories.branching import BranchConfig
from mixagent.trajectories.explorers import ExplorerFactory, is_stochastic, make_explorer, parse_explorers
from mixagent.trajectories.identity import CollectionIdentity, family_hash, resolved_spec_hash
from mixagent.trajectories.schema import (
    COLUMNS,
    SCHEMA_TAG,
    env_observation_layout,
    schema_table_markdown,
    table_from_ipc,
)
from mixagent.trajectories.schema import warm_up as warm_up_arrow
from mixagent.trajectories.storage import (
    CARD_FORMAT,
    COLLECTION_ENTRIES,
    COLLECTION_FILE,
    COLLECTION_FORMAT,
    LOCK_FILE,
    TrajectoryError,
    check_table,
    collection_lock,
    quarantine,
    read_card,
    read_collection,
    read_shard,
    remove_temporary,
    scan_shards,
    write_card,
    write_collection,
    write_shard,
)
from mixagent.trajectories.worker import EpisodeWorker, FaultInjection, WorkerConfig
from mixagent.utils.progress import Progress
from mixagent.utils.raypool import ActorPool as _ActorPool
from mixagent.utils.raypool import compile_applied, forwarded_env
from mixagent.utils.raypool import ensure_ray as _ensure_ray
from mixagent.utils.signals import sigterm_deferred, terminate_as_interrupt

log = logging.getLogger(__name__)

#: work items queued on each Ray actor at once (:meth:`~mixagent.utils.raypool.ActorPool.run`):
#: 2 hides the round trip and the driver's shard write between episodes; more would only make
#: a kill lose more episodes in flight
QUEUE_DEPTH = 2


class CollectConfig(StrictModel):
    """A trajectory collection (``mixagent collect``); see docs/TRAJECTORIES.md."""

    env_spec: str = Field(description="path of the env spec YAML, or of a scenario family YAML "
                                      "(top-level 'family:'): one scenario sampled per episode")
    out: str = Field(description="collection folder (trajectories/NAME)")
    episodes: int = Field(ge=1, description="episodes 0..N-1 are collected")
    workers: int = Field(default=1, ge=1, description="1: in this process, no Ray; else Ray actors")
    explorers: list[str] = Field(default_factory=lambda: ["random_walk"],
                                 description="explorer specs, 'spec@share' to mix per episode")
    explorer_order: Literal["draw", "cycle"] = Field(
        default="draw", description="draw: each episode draws its explorer by share from its own "
        "seed; cycle: episode i uses the (i mod n)-th explorer, shares ignored -- with a family's "
        "`repeats` equal to the explorer count, each scenario runs every explorer once")
    branch: BranchConfig = Field(default_factory=BranchConfig)
    seed: int = Field(default=0, ge=0)
    resume: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)
    threads_per_worker: int | None = Field(
        default=None, gt=0, description="torch threads per Ray actor (default: its CPU share)")
    address: str | None = Field(default=None, description="Ray cluster to join (else RAY_ADDRESS)")
    max_attempts: int = Field(default=3, ge=1, description="tries per episode when workers die")
    env_cache: int = Field(default=4, ge=1, description="family: environments (scenarios) each "
                           "worker keeps for reuse")
    population: int = Field(default=1, ge=1, le=4096, description="episodes trained as one "
                            "batched model per worker (population batching); 1: one by one")
    progress: bool | None = Field(default=None, description="progress bar (default: on a terminal)")
    fault: FaultInjection | None = Field(default=None, description="testing only")


@dataclass
class CollectResult:
    """What a ``collect`` call did."""

    out: Path
    collected: list[int] = field(default_factory=list)  # episodes collected by this call
    skipped: list[int] = field(default_factory=list)  # already present (resume)
    quarantined: list[tuple[Path, str]] = field(default_factory=list)
    transitions: int = 0  # collected by this call
    retries: int = 0
    setup_seconds: float = 0.0  # until every worker had its environment
    collect_seconds: float = 0.0  # from then until the last shard was written
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0  # allocated CPUs x wall time
    worker_cpu_seconds: float = 0.0  # CPU time the workers' processes used while collecting
    driver_cpu_seconds: float = 0.0  # CPU time of this process while collecting
    remote_calls: int = 0  # work items sent to Ray actors (one round trip each; 0 in-process)
    in_process: bool = True  # workers=1 without Ray: the driver's CPU time includes the worker's
    workers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def transitions_per_second(self) -> float:
        return self.transitions / self.collect_seconds if self.collect_seconds > 0 else 0.0

    @property
    def cpu_seconds_per_transition(self) -> float:
        """Process CPU time (workers' processes, plus the driver when it is a separate process;
        Ray's daemons not counted) per transition collected: the cost of a transition, which
        unlike wall time does not depend on what else runs on the machine. Setup excluded."""
        cpu = self.worker_cpu_seconds + (0.0 if self.in_process else self.driver_cpu_seconds)
        return cpu / self.transitions if self.transitions else 0.0


def collect(config: CollectConfig | None = None, *, explorer_factory: ExplorerFactory | None = None,
            **kwargs: Any) -> CollectResult:
    """Collect trajectories (``collect(CollectConfig(...))`` or ``collect(env_spec=..., ...)``).

    ``explorer_factory`` builds explorers from specs (default: trajectories' own,
    :func:`~mixagent.trajectories.explorers.make_explorer`); pass
    :func:`mixagent.policies.policy_explorers.make_explorer` for ``policy:``/``baseline:`` explorers, as
    ``mixagent collect`` does. It must be a module-level function (it travels to Ray workers).
    """
    if config is None:
        from mixagent.config import validate_config

        config = validate_config(CollectConfig, kwargs, "collect")
    elif kwargs:
        raise TypeError("pass either a CollectConfig or keyword arguments, not both")
    return _Collection(config, explorer_factory).run()


class _Collection:
    def __init__(self, config: CollectConfig, explorer_factory: ExplorerFactory | None = None):
        from mixagent.envs.setup import resolve_spec

        self.config = config
        self.out = Path(config.out)
        self.explorer_factory = explorer_factory or make_explorer
        choices = parse_explorers(config.explorers, self.explorer_factory)
        if config.branch.alternatives == "explorer" and config.branch.k > 1:
            lazy = [c.spec for c in choices if not is_stochastic(self.explorer_factory(c.spec))]
            if lazy:
                raise ConfigError(f"branch alternatives 'explorer' need explorers whose proposals "
                                  f"are random; {', '.join(lazy)} would propose the same action K "
                                  "times (use alternatives 'perturb' or 'auto')")
        if config.population > 1 and config.branch.k > 1:
            raise ConfigError(f"--population {config.population} and --branch {config.branch.k} "
                              "cannot be combined: a population batches whole episodes, "
                              "branching batches the K actions of one step; choose one")
        self.family: Any = None  # a ScenarioFamily, when env_spec is a family file
        if is_family_file(config.env_spec):
            self.family = load_family(config.env_spec)
            self.resolved = resolve_spec(self.family.base)
            self.spec_hash = family_hash(self.family, self.resolved.data.manifest)
        else:
            self.resolved = resolve_spec(config.env_spec)
            self.spec_hash = resolved_spec_hash(self.resolved)
        spec = self.resolved.spec
        self.identity = CollectionIdentity(
            env_spec_hash=self.spec_hash, explorers=[f"{c.spec}@{c.weight:g}" for c in choices],
            seed=config.seed, branch=_batching_identity(config), explorer_order=config.explorer_order)
        self.config_hash = self.identity.config_hash
        self.collection_id = self.config_hash[:8]
        threads = config.threads_per_worker or max(1, int(config.cpus_per_worker))
        env_vars = forwarded_env()
        self.worker_config = WorkerConfig(
            env_spec=spec.model_dump(mode="json"), spec_origin=spec.origin,
            spec_root=str(spec.root), spec_hash=self.spec_hash, collection_hash=self.config_hash,
            collection_id=self.collection_id, explorers=[(c.spec, c.weight) for c in choices],
            explorer_order=config.explorer_order,
            seed=config.seed, branch=config.branch, threads=threads, env_vars=env_vars,
            fault=config.fault, env_cache=config.env_cache, population=config.population,
            family=self.family.to_dict() if self.family is not None else None)
        self.result = CollectResult(self.out)

    # -- folder ------------------------------------------------------------------------------------
    def _collection_record(self) -> dict[str, Any]:
        return {"format": COLLECTION_FORMAT, "schema": SCHEMA_TAG,
                "collection_id": self.collection_id, "config_hash": self.config_hash,
                "env_spec_hash": self.spec_hash, "identity": self.identity.model_dump(mode="json"),
                "env_spec_name": self.family.name if self.family else self.resolved.spec.name,
                "scenario_family": self.family is not None,
                # a family's domains differ by scenario: see the card's scenarios
                "domain_names": [] if self.family else list(self.resolved.domains),
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def _foreign_error(self) -> TrajectoryError:
        return TrajectoryError(f"{self.out} exists and is not a mixagent trajectory collection "
                               f"(no {COLLECTION_FILE}); choose an empty or new --out")

    def _precheck(self) -> None:
        """Refuse a folder that is plainly not a collection before the lock file goes into it.

        Lenient on purpose: a run that just started may have written some collection files but
        not yet ``collection.json``; the strict check in :meth:`_prepare` runs under the lock.
        """
        out = self.out
        if out.exists() and not out.is_dir():
            raise TrajectoryError(f"--out {out} is a file, not a folder; choose another --out")
        if out.is_dir() and not (out / COLLECTION_FILE).exists() and any(
                p.name not in COLLECTION_ENTRIES and not p.name.startswith(".")
                for p in out.iterdir()):
            raise self._foreign_error()

    def _prepare(self) -> set[int]:
        """Create or check the folder; on resume clean it up. Returns the episodes present."""
        out, cfg = self.out, self.config
        if (out / COLLECTION_FILE).exists():
            found = read_collection(out)
            if found.get("config_hash") != self.config_hash:
                raise TrajectoryError(_mismatch(out, found, self.identity.model_dump(mode="json")))
            if not cfg.resume:
                raise TrajectoryError(f"{out} already holds this collection; pass --resume to "
                                      "continue it (or choose another --out)")
        elif out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
            raise self._foreign_error()
        else:
            spec_dump = {"origin": self.resolved.spec.origin,
                         "spec": self.resolved.spec.model_dump(mode="json")}
            if self.family is not None:  # no "spec": no reader may take the base for the MDP
                spec_dump = {"origin": self.family.origin, "family": self.family.to_dict()}
            write_collection(out, self._collection_record(), spec_dump)
        scan = scan_shards(out, spec_hash=self.spec_hash, config_hash=self.config_hash)
        if scan.temporary:
            log.info("removing %d unfinished shard write(s): %s", len(scan.temporary),
                     ", ".join(p.name for p in scan.temporary))
            remove_temporary(scan.temporary)
        for bad in scan.bad:
            dest = quarantine(out, bad)
            log.warning("bad shard %s (%s); moved to %s and its episode will be collected again",
                        bad.path, bad.reason, dest)
            self.result.quarantined.append((bad.path, bad.reason))
        return set(scan.good)

    # -- run ---------------------------------------------------------------------------------------
    def run(self) -> CollectResult:
        self._precheck()
        with collection_lock(self.out):
            return self._run_locked()

    def _run_locked(self) -> CollectResult:
        cfg = self.config
        t_start = time.perf_counter()
        present = self._prepare()
        todo = [i for i in range(cfg.episodes) if i not in present]
        self.result.skipped = sorted(i for i in present if i < cfg.episodes)
        if self.result.skipped:
            log.info("resuming: %d of %d episodes already collected", len(self.result.skipped),
                     cfg.episodes)
        try:
            if todo:
                if cfg.workers == 1 and not (cfg.address or os.environ.get("RAY_ADDRESS")):
                    self._run_local(todo)
                else:
                    self._run_ray(todo)
        finally:
            r = self.result
            r.wall_seconds = time.perf_counter() - t_start
            r.cpu_seconds = r.wall_seconds * cfg.workers * cfg.cpus_per_worker
            self._write_card()
        return self.result

    def _on_episode(self, episode: int, table: pa.Table, bar: Any) -> None:
        # a worker's rows are checked like a shard on disk before they become one
        check_table(table, f"episode {episode} from a worker", spec_hash=self.spec_hash,
                    config_hash=self.config_hash, episode=episode)
        write_shard(self.out, episode, table)
        self.result.collected.append(episode)
        self.result.transitions += table.num_rows
        elapsed = time.perf_counter() - self._t_ready
        bar.set_postfix(transitions=self.result.transitions,
                        per_s=f"{self.result.transitions / max(elapsed, 1e-9):.2f}")
        bar.update(1, note=f"episode {episode}: {table.num_rows} transitions")

    def _groups(self, todo: list[int]) -> list[tuple[int, ...]]:
        """The work items: one episode each, or with ``population=P`` the populations of the
        missing episodes. Populations are fixed by index (episodes ``g·P … g·P+P-1`` below
        ``episodes``), never by what happens to be missing: a population's float rounding may
        depend on its members (batched kernels), so a resumed collection reruns a population
        whole — writing only its missing shards — and its rows are those of an uninterrupted
        run."""
        p = self.config.population
        if p == 1:
            return [(ep,) for ep in todo]
        starts = sorted({ep - ep % p for ep in todo})
        return [tuple(range(g, min(g + p, self.config.episodes))) for g in starts]

    def _on_group(self, group: tuple[int, ...], tables: list[pa.Table], bar: Any,
                  wanted: set[int]) -> None:
        for ep, table in zip(group, tables, strict=True):
            if ep in wanted:  # members with a valid shard were rerun only for exact rounding
                self._on_episode(ep, table, bar)

    def _bar(self, total: int) -> Progress:
        """A bar on a terminal, a log line per episode otherwise (a collection runs for hours)."""
        return Progress(total, "collecting", "episode", progress=self.config.progress, logger=log,
                        log_every=1)

    def _run_local(self, todo: list[int]) -> None:
        t0 = time.perf_counter()
        cfg = self.worker_config.model_copy(update={"threads": self.config.threads_per_worker})
        worker = EpisodeWorker(cfg, "local", self.explorer_factory)
        self.result.workers.append(worker.info())
        self.result.setup_seconds = time.perf_counter() - t0
        self._t_ready = time.perf_counter()
        cpu0 = time.process_time()
        wanted = set(todo)
        with terminate_as_interrupt(), self._bar(len(todo)) as bar:
            for group in self._groups(todo):
                if self.config.population == 1:
                    self._on_episode(group[0], worker.run_episode(group[0]), bar)
                else:
                    self._on_group(group, worker.run_population(list(group)), bar, wanted)
        self.result.collect_seconds = time.perf_counter() - self._t_ready
        self.result.driver_cpu_seconds = time.process_time() - cpu0  # includes the worker
        self.result.worker_cpu_seconds = worker.stats()["cpu_seconds"]

    def _run_ray(self, todo: list[int]) -> None:
        import ray

        cfg = self.config
        self.result.in_process = False
        started = _ensure_ray(cfg.address)
        t0 = time.perf_counter()
        remote_cls = ray.remote(EpisodeWorker)
        payload = self.worker_config.model_dump(mode="json")
        serial = 0

        def new_actor() -> Any:
            nonlocal serial
            serial += 1
            return remote_cls.options(num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker,
                                      max_restarts=0).remote(payload, f"w{serial}", self.explorer_factory)

        actors = [new_actor() for _ in range(cfg.workers)]
        pool = _ActorPool(actors, new_actor, max_replacements=cfg.workers * cfg.max_attempts)
        warm_up_arrow()  # while the actors start: the first table received would pay it
        try:
            self.result.workers = pool.start()
            self.result.setup_seconds = time.perf_counter() - t0
            self._t_ready = time.perf_counter()
            cpu0 = time.process_time()
            # after ray.init, which installs its own SIGTERM handler (utils/signals.py says why)
            with terminate_as_interrupt(), self._bar(len(todo)) as bar:
                # two items queued per actor: the next episode is waiting when one ends, so a
                # worker never idles while the driver writes a shard (see ActorPool.run)
                # tables travel as Arrow IPC bytes (schema.table_to_ipc says why)
                if cfg.population == 1:
                    self.result.retries = pool.run(
                        todo, "run_episode_ipc",
                        lambda ep, data: self._on_episode(ep, table_from_ipc(data), bar),
                        max_attempts=cfg.max_attempts, depth=QUEUE_DEPTH)
                else:
                    wanted = set(todo)
                    self.result.retries = pool.run(
                        self._groups(todo), "run_population_ipc",
                        lambda group, data: self._on_group(
                            group, [table_from_ipc(d) for d in data], bar, wanted),
                        max_attempts=cfg.max_attempts, call_args=lambda group: (list(group),),
                        depth=QUEUE_DEPTH)
            self.result.collect_seconds = time.perf_counter() - self._t_ready
            self.result.driver_cpu_seconds = time.process_time() - cpu0
            self.result.worker_cpu_seconds = pool.cpu_seconds()
            self.result.remote_calls = pool.calls
        finally:
            pool.shutdown()
            if started:
                ray.shutdown()

    # -- card --------------------------------------------------------------------------------------
    def _write_card(self) -> None:
        try:
            with sigterm_deferred("writing the dataset card"):
                card, readme = build_card(self.out, self._collection_record(), self.resolved,
                                          self.config, self.result, self.family)
                write_card(self.out, card, readme)
        except Exception as err:  # the card must never hide the collection's own error
            log.warning("could not write the dataset card of %s: %s", self.out, err)


def _batching_identity(config: CollectConfig) -> dict[str, Any]:
    """The identity's ``branch`` entry: the branching config, plus ``population`` when episodes
    are batched (it changes float rounding, as ``batched`` does). Left out at 1, so collections
    without populations keep the config hash they always had."""
    out = config.branch.identity()
    if config.population > 1:
        out["population"] = config.population
    return out


def _mismatch(out: Path, found: dict[str, Any], mine: dict[str, Any]) -> str:
    theirs = found.get("identity", {})
    diffs = [f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} now" for k in mine
             if theirs.get(k) != mine.get(k)]
    what = "; ".join(diffs) or "config hash differs"
    return (f"{out} holds a different collection ({what}); use another --out, or the same "
            "env spec (or scenario family), explorers, branching and seed to resume it")


# -- the dataset card --------------------------------------------------------------------------------
def build_card(out: Path, collection: dict[str, Any], resolved: Any, config: CollectConfig,
               result: CollectResult, family: Any = None) -> tuple[dict[str, Any], str]:
    """The card (JSON) and README of a collection, from the shards on disk and this run.

    ``family``: the collection's :class:`~mixagent.envs.family.ScenarioFamily`; ``resolved`` is
    then its base, and the card describes each scenario collected (``scenarios``) instead of
    one env spec.
    """
    from mixagent.data.space import DomainSpace

    stats = _shard_stats(out, collection["env_spec_hash"], collection["config_hash"])
    previous = read_card(out)
    runs = list(previous.get("compute", {}).get("runs", []))
    runs.append({
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "episodes_requested": config.episodes,
        "episodes_collected": len(result.collected),
        "episodes_skipped": len(result.skipped),
        "transitions": result.transitions,
        "quarantined": [str(p) for p, _ in result.quarantined],
        "retries": result.retries,
        "workers": config.workers,
        "cpus_per_worker": config.cpus_per_worker,
        "gpus_per_worker": config.gpus_per_worker,
        "setup_seconds": round(result.setup_seconds, 3),
        "collect_seconds": round(result.collect_seconds, 3),
        "wall_seconds": round(result.wall_seconds, 3),
        "cpu_seconds": round(result.cpu_seconds, 3),
        "worker_cpu_seconds": round(result.worker_cpu_seconds, 3),
        "driver_cpu_seconds": round(result.driver_cpu_seconds, 3),
        "cpu_seconds_per_transition": round(result.cpu_seconds_per_transition, 6),
        "remote_calls": result.remote_calls,
        # runtime.compile / MIXAGENT_COMPILE as the workers applied it ("off", "compiled",
        # "fallback"): numerics equal eager up to float rounding, not bit for bit
        "compile": compile_applied(result.workers),
        "host": platform.node(),
    })
    spec = resolved.spec
    env_spec: dict[str, Any] = {"name": spec.name, "origin": spec.origin,
                                "spec": spec.model_dump(mode="json"),
                                "data_content_hash": resolved.data.manifest.content_hash}
    layout = env_observation_layout(spec.observation.features, len(resolved.domains))
    scenarios: dict[str, Any] = {}
    if family is not None:
        # no "spec" key: a reader must not take the base for the MDP of every row
        env_spec = {"name": family.name, "origin": family.origin, "family": family.to_dict(),
                    "data_content_hash": resolved.data.manifest.content_hash}
        scenarios = _scenario_cards(family, config.seed, stats["scenarios"])
        layout = {**env_observation_layout(spec.observation.features, 0),
                  "note": "K (domains) differs by scenario; see scenarios.<id>.observation_layout"}
        layout["domains"]["shape"][0] = None
        layout["size"] = None
    card = {
        "format": CARD_FORMAT,
        "name": out.name,
        "schema": SCHEMA_TAG,
        "collection_id": collection["collection_id"],
        "config_hash": collection["config_hash"],
        "env_spec_hash": collection["env_spec_hash"],
        "env_spec": env_spec,
        "collection": collection["identity"],
        "domain_names": [] if family is not None else list(resolved.domains),
        "observation_layout": layout,
        "scenario_family": family is not None,
        "scenarios": scenarios,
        "columns": [{"name": n, "type": str(t), "meaning": d} for n, t, d in COLUMNS],
        "counts": stats["counts"],
        "returns": stats["returns"],
        "explorers": stats["explorers"],
        "compute": {"transition_seconds": stats["transition_seconds"],
                    "cpu_seconds": round(sum(r["cpu_seconds"] for r in runs), 3),
                    "runs": runs},
        "versions": {**{p: _version(p) for p in ("mixagent", "torch", "transformers", "pyarrow",
                                                   "ray")},
                     "python": platform.python_version()},
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if family is None:
        # fields, roles and token counts as the env saw them: what a policy trained on these
        # trajectories records as its domain space (read back, never guessed from names)
        card["domain_space"] = DomainSpace.from_env(resolved).to_dict()
    return card, _readme(card)


def _scenario_cards(family: Any, seed: int, found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each collected scenario once: its env-spec hash, episodes, full sampled spec, domains,
    domain space and observation layout (re-sampled from (seed, its first episode): pure)."""
    from mixagent.data.space import DomainSpace
    from mixagent.envs.setup import resolve_spec

    out: dict[str, Any] = {}
    for sid, rec in sorted(found.items()):
        scenario = family.scenario(seed, rec["episodes"][0])
        entry: dict[str, Any] = {"env_spec_hash": rec["env_spec_hash"],
                                 "episodes": rec["episodes"], "choices": scenario.choices,
                                 "spec": scenario.spec.model_dump(mode="json")}
        if scenario.id != sid:  # the family changed under a finished collection: say so
            entry["warning"] = f"episode {rec['episodes'][0]} now samples {scenario.id}"
        try:
            resolved = resolve_spec(scenario.spec)
            entry["domain_names"] = list(resolved.domains)
            entry["domain_space"] = DomainSpace.from_env(resolved).to_dict()
            entry["observation_layout"] = env_observation_layout(
                scenario.spec.observation.features, len(resolved.domains))
        except Exception as err:  # the card lists what it can
            entry["warning"] = f"could not resolve the scenario: {err}"
        out[sid] = entry
    return out


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _shard_stats(out: Path, spec_hash: str, config_hash: str) -> dict[str, Any]:
    from mixagent.trajectories.storage import SHARDS_DIR, episode_of

    cols = ["episode", "rewards", "is_continuation", "explorer", "wall_time", "scenario",
            "env_spec_hash"]
    tables, bad = [], 0
    folder = out / SHARDS_DIR
    for p in sorted(folder.glob("episode-*.parquet")) if folder.is_dir() else []:
        if episode_of(p) is None:
            continue
        try:
            tables.append(read_shard(p, spec_hash=spec_hash, config_hash=config_hash, columns=cols))
        except TrajectoryError:
            bad += 1
    counts = {"episodes": len(tables), "transitions": 0, "continuation_transitions": 0,
              "branch_transitions": 0, "bad_shards": bad}
    returns: dict[str, Any] = {}
    explorers: dict[str, int] = {}
    scenarios: dict[str, dict[str, Any]] = {}
    seconds = 0.0
    if tables:
        t = pa.concat_tables(tables)
        cont = t["is_continuation"].to_numpy(zero_copy_only=False)
        counts["transitions"] = t.num_rows
        counts["continuation_transitions"] = int(cont.sum())
        counts["branch_transitions"] = int((~cont).sum())
        seconds = float(pc.sum(t["wall_time"]).as_py() or 0.0)
        ep = t["episode"].to_numpy()[cont]
        rew = t["rewards"].to_numpy()[cont]
        uniq, inv = np.unique(ep, return_inverse=True)
        per_ep = np.bincount(inv, weights=rew, minlength=uniq.size)
        returns = {"mean": float(per_ep.mean()), "std": float(per_ep.std()),
                   "min": float(per_ep.min()), "max": float(per_ep.max()),
                   "note": "return of each episode's continued path (sum of its rewards)"}
        of_episode = dict(zip(t["episode"].to_pylist(), t["explorer"].to_pylist(), strict=True))
        explorers = dict(collections.Counter(of_episode.values()))
        scenario_of = dict(zip(t["episode"].to_pylist(),
                               zip(t["scenario"].to_pylist(), t["env_spec_hash"].to_pylist(),
                                   strict=True), strict=True))
        for ep, (sid, h) in sorted(scenario_of.items()):
            if sid:
                scenarios.setdefault(sid, {"env_spec_hash": h, "episodes": []})["episodes"].append(ep)
    return {"counts": counts, "returns": returns, "explorers": explorers,
            "scenarios": scenarios, "transition_seconds": round(seconds, 3)}


def _readme(card: dict[str, Any]) -> str:
    c, comp, ident = card["counts"], card["compute"], card["collection"]
    ret = card["returns"]
    ret_line = (f"{ret['mean']:.4g} ± {ret['std']:.3g} (min {ret['min']:.4g}, max {ret['max']:.4g})"
                if ret else "n/a")
    # a family's card holds ScenarioFamily.to_dict(), whose "family" is the FamilySpec dump
    family = (card["env_spec"].get("family") or {}).get("family") or {}
    lines = [
        f"# Trajectories: {card['name']}",
        "",
        f"Data-mixing trajectories collected by mixagent on the "
        f"{'scenario family' if card['scenario_family'] else 'env spec'} **{card['env_spec']['name']}** "
        f"(`{card['env_spec']['origin']}`), spec hash `{card['env_spec_hash']}`, collection config "
        f"hash `{card['config_hash']}`. Schema `{card['schema']}` (Parquet, one shard per episode).",
        "",
        f"- episodes: {c['episodes']}, transitions: {c['transitions']} "
        f"({c['continuation_transitions']} on the continued paths, {c['branch_transitions']} "
        "branch alternatives)",
        f"- explorers: {', '.join(f'{k} ({v} episodes)' for k, v in card['explorers'].items()) or 'n/a'}",
        f"- branching: {ident['branch']}",
        f"- seed: {ident['seed']}; episode i's seeds derive from (seed, i) only"
        + ("; a scenario's repeats share the first repeat's env seed (`repeat_seeds: shared`)"
           if family.get("repeat_seeds") == "shared" else "")
        + ("; episode i runs the (i mod n)-th explorer (`--explorer-order cycle`)"
           if ident.get("explorer_order") == "cycle" else ""),
        f"- episode return (continued path): {ret_line}",
        f"- compute: {comp['transition_seconds']:.1f} s in transitions, {comp['cpu_seconds']:.1f} "
        f"allocated CPU-seconds over {len(comp['runs'])} run(s)",
        (f"- scenario family **{card['env_spec']['name']}**: {len(card['scenarios'])} scenario(s) "
         "collected, each episode on one of them (the `scenario` column; a family with "
         "`repeats` runs each several times; each scenario's spec, domains and env-spec hash "
         "under `scenarios` in card.json)") if card["scenario_family"] else
        f"- domains ({len(card['domain_names'])}): {', '.join(card['domain_names'])}",
        "",
        "Load with `mixagent.trajectories.load(\"<this folder>\")`; summarise with "
        "`mixagent trajectories info`. Observations are flattened (`domains` [K, F] row-major, "
        "then `global`); see `observation_layout` in card.json.",
        "",
        "## Columns",
        "",
        schema_table_markdown(),
        "",
    ]
    return "\n".join(lines)
