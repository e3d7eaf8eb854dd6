"""The evaluation worker: one environment per scenario, (policy, scenario, seed) tasks in, episode
records out.

:class:`EvaluationWorker` is a plain class: ``workers=1`` uses it in-process; the runner wraps
it with ``ray.remote`` so each actor owns one environment per scenario (built once, reused for
every task). Records are plain JSON (the episode cache's format); the driver writes them.

Determinism: an episode depends only on (scenario, policy, seed): the env's reset seed fixes its
data order, the policy is rebuilt from its payload for every task and seeded with the same seed,
and the env restores the base on reset, so a task gives the same numbers on any worker, in any
order (wall-clock fields aside).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mixagent.utils.raypool import PoolWorker

EPISODE_FORMAT = "mixagent.eval-episode/1"
#: fields of a record that measure time, not behaviour (excluded from determinism checks)
TIMING_FIELDS = ("wall_time", "decision_time", "wall_seconds", "worker")


class EvaluationWorker(PoolWorker):
    """Owns the environments of an evaluation's scenarios; runs whole episodes on request.

    ``in_process=True`` (``workers=1``) shares the caller's process, so the thread share is
    applied to the proxies only (``MIXAGENT_NUM_THREADS`` while the environments are built: each
    engine then runs its compute under that many threads and restores the caller's count),
    never to the whole process. A Ray actor owns its process and sets both.
    ``progress`` is for a base that must be pre-trained while an environment is built.
    """

    def __init__(self, scenarios: dict[str, dict[str, Any]], threads: int | None = None,
                 env_vars: dict[str, str] | None = None, worker_id: str = "local", *,
                 in_process: bool = False, progress: bool | None = False,
                 log_level: int | None = None):
        from mixagent.proxy.runtime import THREADS_ENV

        self._setup(worker_id, env_vars, None if in_process else threads, log_level=log_level)
        scoped = {THREADS_ENV: str(threads)} if in_process and threads is not None else {}
        with _scoped_environ(scoped):
            self._build(scenarios, progress)
        self._ready()

    def _build(self, scenarios: dict[str, dict[str, Any]], progress: bool | None) -> None:
        from mixagent.envs.proxy_env import ProxyCPTEnv
        from mixagent.envs.spec import EnvSpec
        from mixagent.errors import DataError
        from mixagent.trajectories.identity import resolved_spec_hash

        self.envs: dict[str, Any] = {}
        for key, p in scenarios.items():
            spec = EnvSpec.model_validate(p["spec"]).located(p["origin"], Path(p["root"]))
            env = ProxyCPTEnv(spec, progress=progress)
            found = resolved_spec_hash(env.resolved)
            if found != p["spec_hash"]:
                raise DataError(f"worker {self.worker_id}: env spec {p['origin']} resolves to hash "
                                f"{found} here but to {p['spec_hash']} on the driver (different data "
                                "on this node?)")
            self.envs[key] = env

    def threads(self) -> int | list[int]:
        """Torch threads the episodes actually run with: each engine's own setting (applied
        around its compute), else this process's count. Read here, where episodes run, not in
        the driver: the driver's count says nothing about a worker's."""
        import torch

        found = sorted({int(getattr(env.engine, "threads", None) or torch.get_num_threads())
                        for env in self.envs.values()})
        return found[0] if len(found) == 1 else found

    def compile_state(self) -> str | list[str] | None:
        """Whether the proxies train with a compiled loss (``runtime.compile`` /
        ``MIXAGENT_COMPILE``): each engine's ``compile_state`` ("off", "compiled", "fallback")."""
        found = sorted({str(getattr(env.engine, "compile_state", "off")) for env in self.envs.values()})
        return (found[0] if len(found) == 1 else found) if found else None

    def info(self) -> dict[str, Any]:
        return {**super().info(), "threads": self.threads(), "compile": self.compile_state()}

    def run(self, task: dict[str, Any]) -> dict[str, Any]:
        """Run one episode: ``task`` has ``scenario`` (key), ``spec_hash``, ``seed`` and ``policy``
        (a :meth:`~mixagent.evaluation.policies.PolicyInstance.payload`)."""
        from mixagent.evaluation.policies import build_policy
        from mixagent.policies.protocol import run_episode

        env = self.envs[task["scenario"]]
        policy = build_policy(task["policy"])
        t0 = time.perf_counter()
        res = run_episode(policy, env, int(task["seed"]))
        self._episodes += 1
        ep = res.to_dict()
        return {"format": EPISODE_FORMAT, "policy_id": task["policy"]["policy_id"],
                "scenario": task["scenario"], "spec_hash": task["spec_hash"], "seed": int(task["seed"]),
                "policy": ep["policy"], "final_scores": ep["final_scores"], "return": ep["return"],
                "steps": ep["steps"], "wall_seconds": time.perf_counter() - t0,
                "worker": self.worker_id}


@contextlib.contextmanager
def _scoped_environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for a block, then restore them (the caller's process is not
    ours to change for good)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
