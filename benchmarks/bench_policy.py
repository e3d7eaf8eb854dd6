"""Decision latency of mixing policies on CPU: the learned agent (goal ≤ 2 ms) and the baselines.

A decision is the full ``policy.act(obs)`` call a CPT run makes every N steps: the agent pushes
the observation into its history window, builds its per-domain inputs, runs the equivariant
actor on one state and maps the actions onto the simplex. Timed for K = 8, 52 and 128 domains
(52 is the Data Mixing Agent paper's domain space), for both mixers, on ``--threads`` torch
threads (default 1: a CPT run's main process should not spend more on the policy).

Prints median and 95th-percentile latency per configuration. Absolute numbers depend on the
machine and its load; compare configurations from one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _observations(k: int, n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    from mixagent.envs.observation import make_observation

    rng = np.random.default_rng(seed)
    tgt = (np.arange(k) < k // 2).astype(np.float64)
    base = rng.uniform(3, 6, k)
    out = []
    loss = base.copy()
    for t in range(n):
        prev, loss = loss, loss + rng.normal(0, 0.02, k)
        out.append(make_observation(rng.dirichlet(np.ones(k)), loss, base, prev, tgt, (t % 10) / 10,
                                    -0.01, 0.02, 0.005, 20.0, 1.0))
    return out


def time_policy(policy, k: int, decisions: int, warmup: int = 20) -> tuple[float, float]:
    """(median, p95) seconds per ``act`` over ``decisions`` calls after ``warmup``."""
    from mixagent.policies import DomainSpace

    obs = _observations(k, decisions + warmup)
    policy.reset(DomainSpace.synthetic(k, k // 2), seed=0)
    times = []
    for i, o in enumerate(obs):
        t0 = time.perf_counter()
        policy.act(o)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", type=int, nargs="+", default=[8, 52, 128])
    ap.add_argument("--decisions", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=64)
    args = ap.parse_args()

    import torch

    from mixagent.policies import MixingAgent, resolve_policy

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.decisions} decisions per row; "
          "goal for the agent: <= 2 ms")
    print(f"{'policy':<34} {'K':>4} {'median ms':>10} {'p95 ms':>8}")
    policies = {
        f"agent (pool, hidden {args.hidden})": lambda: MixingAgent(network={"mixer": "pool", "hidden": args.hidden}),
        f"agent (attention, hidden {args.hidden})": lambda: MixingAgent(
            network={"mixer": "attention", "hidden": args.hidden}),
        "baseline:uniform": lambda: resolve_policy("baseline:uniform"),
        "baseline:doremi": lambda: resolve_policy("baseline:doremi"),
        "baseline:odm": lambda: resolve_policy("baseline:odm"),
    }
    worst = 0.0
    for name, make in policies.items():
        for k in args.domains:
            med, p95 = time_policy(make(), k, args.decisions)
            if name.startswith("agent"):
                worst = max(worst, med)
            print(f"{name:<34} {k:>4} {med * 1e3:>10.3f} {p95 * 1e3:>8.3f}")
    print(f"slowest agent median: {worst * 1e3:.3f} ms ({'meets' if worst <= 2e-3 else 'misses'} the 2 ms goal)")


if __name__ == "__main__":
    main()
