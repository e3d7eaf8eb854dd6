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

import time
from pathlib import Path
from typing import Any

from mixagent.utils.raypool import PoolWorker

EPISODE_FORMAT = "mixagent.eval-episode/1"
#: fields of a record that measure time, not behaviour (excluded from determinism checks)
TIMING_FIELDS = ("wall_time", "decision_time", "wall_seconds", "worker")


class EvaluationWorker(PoolWorker):
    """Owns the environments of an evaluation's scenarios; runs whole episodes on request."""

    def __init__(self, scenarios: dict[str, dict[str, Any]], threads: int | None = None,
                 env_vars: dict[str, str] | None = None, worker_id: str = "local"):
        self._setup(worker_id, env_vars, threads)
        from mixagent.envs.proxy_env import ProxyCPTEnv
        from mixagent.envs.spec import EnvSpec
        from mixagent.errors import DataError
        from mixagent.trajectories.identity import resolved_spec_hash

        self.envs: dict[str, Any] = {}
        for key, p in scenarios.items():
            spec = EnvSpec.model_validate(p["spec"]).located(p["origin"], Path(p["root"]))
            env = ProxyCPTEnv(spec, progress=False)
            found = resolved_spec_hash(env.resolved)
            if found != p["spec_hash"]:
                raise DataError(f"worker {self.worker_id}: env spec {p['origin']} resolves to hash "
                                f"{found} here but to {p['spec_hash']} on the driver (different data "
                                "on this node?)")
            self.envs[key] = env
        self._ready()

    def run(self, task: dict[str, Any]) -> dict[str, Any]:
        """Run one episode: ``task`` has ``scenario`` (key), ``spec_hash``, ``seed`` and ``policy``
        (a :meth:`~mixagent.evaluation.policies.PolicyInstance.payload`)."""
        from mixagent.evaluation.policies import build_policy
        from mixagent.policies.base import run_episode

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
