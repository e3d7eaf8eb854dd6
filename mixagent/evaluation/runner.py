"""Orchestrating an evaluation: tasks, the worker pool, the episode cache, tuning, the report.

``evaluate(config)``:

1. resolves the scenarios and policies (cheap; bad input is a ConfigError saying what to fix);
2. phase 1 — runs, in one parallel batch, the tuning episodes of the tuned baselines and every
   (policy, scenario, eval seed) episode of the other policies;
3. tunes ``best_fixed_ratio`` and ``regmix`` per scenario from the tuning episodes (every RegMix
   budget on a prefix of the same random runs, so only the largest budget's runs are run);
4. phase 2 — runs the tuned baselines on the eval seeds;
   with ``runs_to_match``, phase 3 — fits RegMix on each budget of the ladder and runs those fits
   on the eval seeds (their count logged first);
5. writes ``report.json``, the plots and ``report.md`` (and policy cards with ``record_card``).

Episodes already in ``OUT/episodes/`` are not run again (resume). With ``workers=1`` and no Ray
address, everything runs in this process; otherwise on a pool of Ray actors
(:mod:`mixagent.utils.raypool`), each owning one environment per scenario.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixagent.evaluation.config import EvaluateConfig, PoolConfig, config_or_keywords
from mixagent.evaluation.policies import PolicyEntry, PolicyInstance, parse_policies, reads_objective
from mixagent.evaluation.scenarios import Scenario, load_scenarios
from mixagent.evaluation.store import EpisodeStore
from mixagent.utils.raypool import compile_applied

log = logging.getLogger(__name__)

REPORT_FORMAT = "mixagent.evaluation-report/1"


@dataclass
class EvaluationResult:
    """What ``evaluate`` did and where the report is."""

    out: Path
    report: dict[str, Any]
    episodes_run: int = 0
    episodes_cached: int = 0
    wall_seconds: float = 0.0

    @property
    def report_md(self) -> Path:
        return self.out / "report.md"

    @property
    def report_json(self) -> Path:
        return self.out / "report.json"


@dataclass
class EpisodeTask:
    """One episode to get: (scenario, policy, env seed), also its cache key."""

    scenario: Scenario
    instance: PolicyInstance
    seed: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scenario.key, self.instance.policy_id, self.seed)

    def payload(self) -> dict[str, Any]:
        return {"scenario": self.scenario.key, "spec_hash": self.scenario.spec_hash, "seed": self.seed,
                "policy": self.instance.payload()}


@dataclass
class Executor:
    """Runs tasks in-process or on a Ray actor pool (started on first use, reused by phases).

    ``config`` is any :class:`~mixagent.evaluation.config.PoolConfig` (an evaluation's or a
    headroom measurement's): only its worker settings are read."""

    config: PoolConfig
    scenarios: list[Scenario]
    pool: Any = None
    local: Any = None
    started_ray: bool = False
    workers_info: list[dict[str, Any]] = field(default_factory=list)
    retries: int = 0

    @property
    def uses_ray(self) -> bool:
        return self.config.workers > 1 or bool(self.config.address or os.environ.get("RAY_ADDRESS"))

    def _payload(self) -> dict[str, dict[str, Any]]:
        return {s.key: s.spec_payload for s in self.scenarios}

    def _env_vars(self) -> dict[str, str]:
        from mixagent.utils.raypool import forwarded_env

        return forwarded_env()

    def start(self) -> None:
        """Build the workers (their environments, maybe a base) unless built: done before the
        progress of a phase starts, so its rate and time left count episodes only."""
        if self.uses_ray:
            if self.pool is None:
                self._start_pool()
        elif self.local is None:
            from mixagent.evaluation.worker import EvaluationWorker

            # the documented share (cfg.threads), applied to the proxies only: with no thread
            # setting the in-process proxies used to run on every core
            self.local = EvaluationWorker(self._payload(), self.config.threads, self._env_vars(),
                                          in_process=True, progress=self.config.progress)
            self.workers_info = [self.local.info()]

    def run(self, tasks: list[EpisodeTask], on_result: Callable[[EpisodeTask, dict[str, Any]], None]) -> None:
        if not tasks:
            return
        self.start()
        if not self.uses_ray:
            for t in tasks:
                on_result(t, self.local.run(t.payload()))
            return
        by_index = dict(enumerate(tasks))
        self.retries += self.pool.run(list(by_index), "run", lambda i, rec: on_result(by_index[i], rec),
                                      max_attempts=self.config.max_attempts,
                                      call_args=lambda i: (by_index[i].payload(),))

    def _start_pool(self) -> None:
        import ray

        from mixagent.evaluation.worker import EvaluationWorker
        from mixagent.utils.raypool import ActorPool, ensure_ray

        cfg = self.config
        self.started_ray = ensure_ray(cfg.address)
        remote_cls = ray.remote(EvaluationWorker)
        payload, env_vars, threads = self._payload(), self._env_vars(), cfg.threads
        # an actor's stderr is not a terminal: its progress (a base pre-trained there) is logged,
        # at the driver's level, and Ray forwards it to the driver's stderr
        progress = False if cfg.progress is False else None
        log_level = logging.getLogger().getEffectiveLevel()
        serial = 0

        def new_actor() -> Any:
            nonlocal serial
            serial += 1
            return remote_cls.options(num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker,
                                      max_restarts=0).remote(payload, threads, env_vars, f"w{serial}",
                                                             progress=progress, log_level=log_level)

        self.pool = ActorPool([new_actor() for _ in range(cfg.workers)], new_actor,
                              max_replacements=cfg.workers * cfg.max_attempts, what="task",
                              role="evaluation worker")
        self.workers_info = self.pool.start()

    def cpu_seconds(self) -> float | None:
        if self.pool is not None:
            return self.pool.cpu_seconds()
        if self.local is not None:
            return float(self.local.stats()["cpu_seconds"])
        return None

    def close(self) -> None:
        if self.pool is not None:
            import ray

            self.pool.shutdown()
            if self.started_ray:
                ray.shutdown()
            self.pool = None


class EpisodeRunner:
    """Episodes by key (scenario, policy id, seed): from the episode cache, else run on an
    :class:`Executor`; what ``evaluate`` and ``mixagent env headroom`` share, so both resume
    from the same cache files and run in the same worker pool.

    ``records`` maps :attr:`EpisodeTask.key` to the episode record; ``ran`` / ``cached`` count
    episodes run here and read from the cache.
    """

    def __init__(self, config: PoolConfig, scenarios: list[Scenario], cache_root: Path,
                 records: dict[tuple[str, str, int], dict[str, Any]] | None = None):
        self.config = config
        self.store = EpisodeStore(cache_root)
        self.executor = Executor(config, scenarios)
        self.records: dict[tuple[str, str, int], dict[str, Any]] = {} if records is None else records
        self.ran = 0
        self.cached = 0

    def collect(self, tasks: list[EpisodeTask], desc: str,
                label: Callable[[EpisodeTask], str] | None = None) -> None:
        """Load cached episodes, run the rest, store every record under its key.

        Progress: a bar on a terminal; otherwise (a log file) one log line per finished episode
        with its policy (``label``, default the policy's description), scenario, seed and score,
        so a long run is never silent.
        """
        from mixagent.utils.progress import Progress

        label = label or (lambda t: t.instance.describe)
        todo: dict[tuple[str, str, int], EpisodeTask] = {}
        for t in tasks:
            if t.key in self.records or t.key in todo:
                continue
            rec = self.store.get(t.instance.policy_id, t.scenario.spec_hash, t.seed)
            if rec is None:
                rec = self._objective_blind(t)
            if rec is not None:
                self.records[t.key] = rec
                self.cached += 1
            else:
                todo[t.key] = t
        cached = len(tasks) - len(todo)
        if not todo:
            if tasks:
                log.info("%s: all %d episodes from the cache in %s", desc, cached, self.store.root)
            return
        log.info("%s: %d episodes to run (%d from the cache), %s", desc, len(todo), cached,
                 f"{self.config.workers} workers" if self.executor.uses_ray else "in this process")
        self.executor.start()
        with Progress(len(todo), desc, "episode", progress=self.config.progress, logger=log,
                      log_every=1) as bar:
            def done(task: EpisodeTask, rec: dict[str, Any]) -> None:
                self.store.put(rec)
                self.records[task.key] = rec
                self.ran += 1
                bar.update(1, note=f"{label(task)} on {task.scenario.key} seed {task.seed}: "
                                   f"balanced {float(rec['final_scores']['balanced']):+.5f}")

            self.executor.run(list(todo.values()), done)

    def _objective_blind(self, t: EpisodeTask) -> dict[str, Any] | None:
        """On a scenario that observes the ``objective`` group, the episode of a policy blind to
        it is the one cached for the same scenario without the group: stored again under this
        scenario's key, marked ``reused_from_spec_hash``."""
        alias = t.scenario.objective_alias
        if alias is None or reads_objective(t.instance):
            return None
        rec = self.store.get(t.instance.policy_id, alias, t.seed)
        if rec is None:
            return None
        rec = {**rec, "spec_hash": t.scenario.spec_hash, "scenario": t.scenario.key,
               "reused_from_spec_hash": alias}
        self.store.put(rec)
        return rec

    def finals(self, scenario: Scenario) -> dict[tuple[str, int], dict[str, float]]:
        """Final scores of the scenario's episodes so far, keyed (policy id, seed)."""
        return {(pid, seed): rec["final_scores"] for (key, pid, seed), rec in self.records.items()
                if key == scenario.key}

    def close(self) -> None:
        self.executor.close()


def evaluate(config: EvaluateConfig | None = None, **kwargs: Any) -> EvaluationResult:
    """Run an evaluation (``evaluate(EvaluateConfig(...))`` or ``evaluate(envs=[...], ...)``)."""
    return _Evaluation(config_or_keywords(EvaluateConfig, config, kwargs, "evaluate")).run()


class _Evaluation:
    def __init__(self, config: EvaluateConfig):
        self.config = config
        self.out = Path(config.out)
        self.entries: list[PolicyEntry] = parse_policies(config.policies)
        self.scenarios: list[Scenario] = load_scenarios(config.envs)
        if self.out.exists() and not self.out.is_dir():
            from mixagent.errors import ConfigError

            raise ConfigError(f"--out {self.out} is a file; choose a folder (e.g. reports/NAME)")
        self.store = EpisodeStore(self.out)
        self.records: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.tuning: dict[str, dict[str, Any]] = {}
        self.ladders: dict[str, list[dict[str, Any]]] = {}  # runs to match: scenario → RegMix ladder
        self.ladder_added = 0
        self.ladder_labels: dict[tuple[str, str], str] = {}
        self.ran = 0
        self.cached = 0

    # -- tasks ---------------------------------------------------------------------------------------
    def _collect(self, tasks: list[EpisodeTask], runner: EpisodeRunner, desc: str) -> None:
        runner.collect(tasks, desc, self._label)
        self.ran, self.cached = runner.ran, runner.cached

    def _label(self, task: EpisodeTask) -> str:
        """The policy's name in the report, or what a tuning episode tries."""
        for e in self.entries:
            if e.instance is not None and e.instance.policy_id == task.instance.policy_id:
                return e.label
            inst = e.tuned_instances.get(task.scenario.key)
            if inst is not None and inst.policy_id == task.instance.policy_id:
                return f"{e.label} ({inst.describe})"
        ladder = self.ladder_labels.get((task.scenario.key, task.instance.policy_id))
        return ladder or f"tuning {task.instance.describe}"

    # -- run -------------------------------------------------------------------------------------------
    def run(self) -> EvaluationResult:
        from mixagent.evaluation import tuning
        from mixagent.utils.io import write_json_atomic

        cfg = self.config
        t0 = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        self.store.clean_temporary()
        write_json_atomic(self.out / "config.json", cfg.model_dump(mode="json"))
        seeds, tune_seeds = list(cfg.seeds), list(cfg.tune_seeds)
        tuned = [e for e in self.entries if e.tuned]
        tuned_kinds = sorted({e.tuned for e in tuned if e.tuned})
        # RegMix budgets share one sequence of random mixtures: run the largest budget's runs
        budgets = sorted({cfg.regmix_runs_of(e.spec) for e in tuned if e.tuned == "regmix"})
        runner = EpisodeRunner(cfg, self.scenarios, self.out, self.records)
        executor = runner.executor
        try:
            phase1: list[EpisodeTask] = []
            state: dict[tuple[str, str], dict[str, Any]] = {}
            for sc in self.scenarios:
                for kind in tuned_kinds:
                    pairs, st = tuning.tuning_tasks(sc, kind, cfg.ratio_grid, tune_seeds,
                                                    max(budgets, default=cfg.regmix_runs), cfg.regmix_seed)
                    state[(sc.key, kind)] = st
                    phase1 += [EpisodeTask(sc, inst, s) for inst, s in pairs]
                for e in self.entries:
                    if e.tuned is None:
                        assert e.instance is not None
                        phase1 += [EpisodeTask(sc, e.instance, s) for s in seeds]
            self._collect(phase1, runner, "evaluating" if not tuned_kinds else "tuning + evaluating")
            phase2: list[EpisodeTask] = []
            for sc in self.scenarios:
                finals = runner.finals(sc)
                for e in sorted(tuned, key=lambda e: (e.tuned, e.runs or 0)):
                    st = state[(sc.key, str(e.tuned))]
                    if e.tuned == "best_fixed_ratio":
                        inst, rec = tuning.finish_grid(sc, cfg.ratio_grid, st["instances"], tune_seeds, finals)
                    else:
                        n = cfg.regmix_runs_of(e.spec)
                        inst, rec = tuning.finish_regmix(sc, st["mixtures"][:n], st["instances"][:n],
                                                         tune_seeds, finals, seed=cfg.regmix_seed,
                                                         regressor=cfg.regmix_regressor)
                    self.tuning.setdefault(sc.key, {})[str(e.tuning_key)] = rec
                    e.tuned_instances[sc.key] = inst
                    phase2 += [EpisodeTask(sc, inst, s) for s in seeds]
            self._collect(phase2, runner, "evaluating tuned baselines")
            if cfg.runs_to_match:
                self._ladder_episodes(runner, state, budgets)
            cpu = executor.cpu_seconds()
            workers_info = executor.workers_info
            retries = executor.retries
        finally:
            runner.close()
        wall = time.perf_counter() - t0
        report = self._report(wall, cpu, workers_info, retries)
        from mixagent.evaluation.report import write_report

        write_report(self.out, report, self.records, self.entries, self.scenarios, plots=cfg.plots)
        result = EvaluationResult(self.out, report, self.ran, self.cached, wall)
        if cfg.record_card:
            from mixagent.evaluation.card import record_cards

            record_cards(report, self.entries, self.out)
        log.info("evaluation written to %s (%d episodes run, %d from cache, %.1f s)", self.out,
                 self.ran, self.cached, wall)
        return result

    def _ladder_episodes(self, runner: EpisodeRunner, state: dict[tuple[str, str], dict[str, Any]],
                         budgets: list[int]) -> None:
        """Runs to match, phase 3: fit RegMix on each prefix of the ladder (an evaluated budget
        keeps its fit) and evaluate the fits on the evaluation seeds. Logs how many evaluation
        episodes this adds before running them; ``self.ladders`` gets each fit."""
        from mixagent.evaluation import tuning

        cfg = self.config
        seeds, tune_seeds = list(cfg.seeds), list(cfg.tune_seeds)
        ladder = tuning.regmix_ladder(budgets)
        if not ladder:
            return
        evaluated = {cfg.regmix_runs_of(e.spec): e for e in self.entries if e.tuned == "regmix"}
        main = {(sc.key, e.instance_for(sc.key).policy_id, s)
                for sc in self.scenarios for e in self.entries for s in seeds}
        tasks: list[EpisodeTask] = []
        for sc in self.scenarios:
            st, finals = state[(sc.key, "regmix")], runner.finals(sc)
            points = []
            for n in ladder:
                e = evaluated.get(n)
                if e is not None:
                    inst, rec = e.tuned_instances[sc.key], self.tuning[sc.key][str(e.tuning_key)]
                else:
                    inst, rec = tuning.finish_regmix(sc, st["mixtures"][:n], st["instances"][:n], tune_seeds,
                                                     finals, seed=cfg.regmix_seed, regressor=cfg.regmix_regressor)
                points.append({"runs": n, "tuning_episodes": n, "policy_id": inst.policy_id,
                               "describe": inst.describe, "source_share": rec["source_share"],
                               "predicted_best": rec.get("fit", {}).get("predicted_best"),
                               "evaluated_as": e.label if e is not None else None})
                self.ladder_labels.setdefault((sc.key, inst.policy_id),
                                              f"regmix fitted on {n} runs ({inst.describe}, runs to match)")
                tasks += [EpisodeTask(sc, inst, s) for s in seeds]
            self.ladders[sc.key] = points
        added = {t.key for t in tasks} - main
        self.ladder_added = len(added)
        log.info("runs to match: RegMix fitted on the first %s runs of each of %d scenario(s); evaluating "
                 "the fits on %d evaluation seeds adds %d episodes to the evaluation (the cache may hold "
                 "some)", "/".join(map(str, ladder)), len(self.scenarios), len(seeds), len(added))
        self._collect(tasks, runner, "runs to match (RegMix ladder)")

    def _report(self, wall: float, cpu: float | None, workers_info: list[dict[str, Any]],
                retries: int) -> dict[str, Any]:
        from mixagent.evaluation import analysis

        cfg = self.config
        seeds = list(cfg.seeds)
        tables = {sc.key: analysis.scenario_table(self.records, self.entries, sc, seeds)
                  for sc in self.scenarios}
        eval_keys = {(sc.key, e.instance_for(sc.key).policy_id, s)
                     for sc in self.scenarios for e in self.entries for s in seeds}
        label_of = {(sc.key, e.instance_for(sc.key).policy_id): e.label
                    for sc in self.scenarios for e in self.entries}
        episodes = [{**self.records[k], "label": label_of[(k[0], k[1])]} for k in sorted(eval_keys)]
        episode_seconds = sum(float(r.get("wall_seconds", 0.0)) for r in self.records.values())
        return {
            "format": REPORT_FORMAT,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "setup": {
                "config": cfg.model_dump(mode="json"),
                "scenarios": [sc.to_dict() for sc in self.scenarios],
                "seeds": seeds, "tune_seeds": list(cfg.tune_seeds), "workers": cfg.workers,
                "machine": _machine(),
                "versions": _versions(),
                "compute": {"wall_seconds": round(wall, 3),
                            "episode_seconds": round(episode_seconds, 3),
                            "worker_cpu_seconds": None if cpu is None else round(cpu, 3),
                            "episodes_total": len(self.records), "episodes_run": self.ran,
                            "episodes_cached": self.cached, "retries": retries,
                            "workers": workers_info,
                            "threads_per_worker": cfg.threads,
                            "threads_applied": _threads_applied(workers_info),
                            "compile_applied": compile_applied(workers_info)},
            },
            "notes": {
                "field_shares": "mean over steps and seeds of each field's total domain weight "
                                "(results[].field_shares)",
                "uniform": "uniform is uniform over domains, not over fields: its source share is "
                           "(source domains) / (all domains) of the scenario",
            },
            "policies": [e.to_dict() for e in self.entries],
            "tuning": self.tuning,
            "results": tables,
            "win_rates": analysis.win_rates(self.records, self.entries, self.scenarios, seeds),
            "transfer": analysis.transfer(self.records, self.entries, self.scenarios, seeds, tables),
            **({"runs_to_match": analysis.runs_to_match(
                self.records, self.entries, self.scenarios, seeds, self.ladders,
                grid_points=len(cfg.ratio_grid), tune_seeds=cfg.tune_seeds,
                added_episodes=self.ladder_added)} if cfg.runs_to_match else {}),
            "episodes": episodes,
        }


def _threads_applied(workers_info: list[dict[str, Any]]) -> list[int] | None:
    """The torch thread counts the workers' episodes ran with (as each worker reported it), or
    None when no worker started (every episode came from the cache)."""
    found: set[int] = set()
    for w in workers_info:
        t = w.get("threads")
        found.update(t if isinstance(t, list) else [t] if t is not None else [])
    return sorted(found) or None


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {"host": platform.node(), "platform": platform.platform(),
                            "processor": platform.processor() or platform.machine(),
                            "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch

        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # torch is a dependency; this only guards odd installs
        info["cuda"] = None
    return info


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("mixagent", "torch", "transformers", "ray"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "not installed"
    return out
