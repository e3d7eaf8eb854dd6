"""Trajectory collection throughput: Ray workers, and branching, on one env spec.

Prints, from one run:

1. **Workers.** Steady-state transitions/s of plain episodes with ``--workers 1`` (in-process,
   no Ray) and with ``--workers 2`` (two Ray actors, one CPU and one torch thread each), and the
   ratio (goal: >= 1.8x on 2 cores). "Steady state" starts once every worker has built its
   environment; the one-off setup (Ray start, actor start, env build) is printed separately.
   Also printed: the CPU time per transition of 2 workers vs 1 (workers' processes plus the
   driver; Ray's own daemons not counted) — the parallel overhead, which unlike the wall-clock
   ratio does not depend on what else runs on the machine.
2. **Branching.** Transitions per CPU-second of plain episodes vs ``--branch K`` (batched: the K
   branches trained and evaluated as one folded computation) vs ``--branch K`` with batching off
   (K sequential restore+step), in one process with one torch thread (goal: >= 3x for K=4).
   CPU-seconds are this process's CPU time (``time.process_time``: robust to other processes
   competing for the cores); wall-clock rates are printed too. Episodes are produced and
   written as shards exactly as ``collect`` does; setup is excluded. Modes are interleaved and
   repeated; the median rate is reported.

Absolute numbers depend on the machine and on its load; compare ratios from the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MIXAGENT_NUM_THREADS", "1")


def _workers(spec: str, episodes: int, tmp: Path) -> None:
    from mixagent.trajectories import collect

    rows: list = []
    for workers in (1, 2):
        r = collect(env_spec=spec, out=str(tmp / f"w{workers}"), episodes=episodes,
                    workers=workers, seed=0, progress=False)
        cpu = r.worker_cpu_seconds + (r.driver_cpu_seconds if workers > 1 else 0.0)
        print(f"  workers={workers} ({'in-process' if workers == 1 else 'Ray actors'}): "
              f"{r.transitions} transitions, {r.transitions_per_second:7.2f} transitions/s steady "
              f"state ({r.collect_seconds:.1f} s wall, {cpu:.1f} CPU-s incl. driver) | setup "
              f"{r.setup_seconds:.1f} s, end-to-end {r.transitions / r.wall_seconds:.2f} "
              f"transitions/s | load average {os.getloadavg()[0]:.2f}", flush=True)
        rows.append((workers, r, cpu))
    (_, one, cpu1), (_, two, cpu2) = rows
    print(f"  => 2 workers vs 1: {two.transitions_per_second / one.transitions_per_second:.2f}x "
          "transitions/s steady state (goal >= 1.8x on 2 cores); end-to-end "
          f"{(two.transitions / two.wall_seconds) / (one.transitions / one.wall_seconds):.2f}x")
    print("     CPU cost per transition, 2 workers vs 1: "
          f"{(cpu2 / two.transitions) / (cpu1 / one.transitions):.2f}x (1.00 = no parallel "
          "overhead; other processes on the cores cap the wall-clock speed-up)")


def _branching(spec: str, ks: list[int], episodes: int, repeats: int, tmp: Path) -> None:
    import torch

    from mixagent.envs.spec import load_env_spec
    from mixagent.trajectories.storage import write_shard
    from mixagent.trajectories.worker import EpisodeWorker, WorkerConfig

    torch.set_num_threads(1)
    env_spec = load_env_spec(spec)

    def make(k: int, batched: str) -> EpisodeWorker:
        from mixagent.trajectories.identity import hash_of_spec_file

        cfg = WorkerConfig(env_spec=env_spec.model_dump(mode="json"), spec_origin=env_spec.origin,
                           spec_root=str(env_spec.root), spec_hash=hash_of_spec_file(env_spec),
                           collection_hash="bench", collection_id="bench",
                           explorers=[("random_walk", 1.0)], seed=0,
                           branch={"k": k, "batched": batched}, threads=1)
        w = EpisodeWorker(cfg, f"k{k}-{batched}")
        w.run_episode(10_000)  # warm-up (and the batched path's one-off check against env.step)
        return w

    modes = [("plain", 1, "off")] + [(f"branch {k} batched", k, "auto") for k in ks] + \
            [(f"branch {k} sequential", k, "off") for k in ks]
    workers = {name: make(k, b) for name, k, b in modes}
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in modes}
    for rep in range(repeats):
        for name, _, _ in modes:
            w = workers[name]
            out = tmp / f"bench-{name.replace(' ', '-')}-{rep}"
            n = 0
            c0, t0 = time.process_time(), time.perf_counter()
            for ep in range(episodes):
                table = w.run_episode(ep)
                write_shard(out, ep, table)
                n += table.num_rows
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            rates[name].append((n / cpu, n / wall))
    for name, k, batched in modes:
        fb = workers[name].brancher.fallback_reason
        if k > 1 and batched == "auto" and fb:
            print(f"  note: {name} fell back to sequential branching: {fb}")
    base_cpu = statistics.median(r[0] for r in rates["plain"])
    base_wall = statistics.median(r[1] for r in rates["plain"])
    for name, _, _ in modes:
        cpu = statistics.median(r[0] for r in rates[name])
        wall = statistics.median(r[1] for r in rates[name])
        print(f"  {name:22s} {cpu:8.2f} transitions/CPU-s ({cpu / base_cpu:5.2f}x plain) | "
              f"{wall:8.2f} transitions/s wall ({wall / base_wall:5.2f}x)", flush=True)
    for k in ks:
        r = statistics.median(x[0] for x in rates[f"branch {k} batched"]) / base_cpu
        goal = " (goal >= 3x)" if k == 4 else ""
        print(f"  => --branch {k} vs plain: {r:.2f}x transitions per CPU-second{goal}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=str(Path(__file__).resolve().parents[1] / "envs" / "micro.yaml"))
    ap.add_argument("--episodes", type=int, default=150, help="episodes per worker-scaling run")
    ap.add_argument("--branch", type=int, nargs="+", default=[4, 8], help="K values to measure")
    ap.add_argument("--branch-episodes", type=int, default=12, help="episodes per branching sample")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved samples per branching mode")
    ap.add_argument("--skip-workers", action="store_true")
    ap.add_argument("--skip-branching", action="store_true")
    args = ap.parse_args()

    import platform

    import torch

    print(f"bench_collect: {args.spec}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; torch {torch.__version__}; {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="bench-collect-") as d:
        tmp = Path(d)
        if not args.skip_workers:
            print("1. workers (plain episodes):", flush=True)
            _workers(args.spec, args.episodes, tmp)
        if not args.skip_branching:
            print(f"2. branching (1 process, 1 thread, {args.branch_episodes} episodes x "
                  f"{args.repeats} interleaved samples per mode):", flush=True)
            _branching(args.spec, args.branch, args.branch_episodes, args.repeats, tmp)


if __name__ == "__main__":
    main()
