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

3. **Population batching.** ``benchmarks/bench_population.py`` (P=1 and P=8 on ``--population-spec``,
   run as a subprocess; its last JSON line gives ``population_ratio``, transitions per CPU-second
   of P=8 vs P=1). Null, with the reason printed, when that benchmark is absent or fails.
4. **Utilisation (MFU).** An env step's FLOPs (``FlopCounterMode``: one training step and one
   evaluation, times their counts) per second, over a large fp32 matmul's FLOP/s on the same
   single thread, timed just before each sampled step (:mod:`mixagent.proxy.flops`), on
   ``--mfu-spec`` (default the shipped ``envs/prose-to-math.yaml``).

Absolute numbers depend on the machine and on its load; compare ratios from the same run. The
last line printed is one JSON object with ``workers_ratio``, ``branch4_ratio``,
``population_ratio`` and ``mfu`` (null for a part skipped or unavailable).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MIXAGENT_NUM_THREADS", "1")


def _workers(spec: str, episodes: int, tmp: Path) -> float:
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
    ratio = two.transitions_per_second / one.transitions_per_second
    print(f"  => 2 workers vs 1: {ratio:.2f}x "
          "transitions/s steady state (goal >= 1.8x on 2 cores); end-to-end "
          f"{(two.transitions / two.wall_seconds) / (one.transitions / one.wall_seconds):.2f}x")
    print("     CPU cost per transition, 2 workers vs 1: "
          f"{(cpu2 / two.transitions) / (cpu1 / one.transitions):.2f}x (1.00 = no parallel "
          "overhead; other processes on the cores cap the wall-clock speed-up)")
    return ratio


def _branching(spec: str, ks: list[int], episodes: int, repeats: int,
               tmp: Path) -> dict[int, float]:
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
    out = {}
    for k in ks:
        r = statistics.median(x[0] for x in rates[f"branch {k} batched"]) / base_cpu
        goal = " (goal >= 3x)" if k == 4 else ""
        print(f"  => --branch {k} vs plain: {r:.2f}x transitions per CPU-second{goal}")
        out[k] = r
    return out


def _population(spec: str, rounds: int) -> float | None:
    """P=8 vs P=1 from ``bench_population.py`` (a subprocess: its own threads and memory)."""
    script = ROOT / "benchmarks" / "bench_population.py"
    if not script.exists():
        print(f"  population_ratio: null ({script.name} does not exist yet)")
        return None
    cmd = [sys.executable, str(script), "--spec", spec, "--sizes", "1,8", "--rounds", str(rounds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(f"  | {line}")
    try:
        ratio = json.loads(lines[-1])["population_ratio"]
    except (IndexError, ValueError, KeyError, TypeError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"  population_ratio: null ({script.name} exited {proc.returncode}: {tail})")
        return None
    print(f"  => P=8 vs P=1: {ratio:.2f}x transitions per CPU-second" if ratio is not None else
          "  population_ratio: null (bench_population.py measured no P=8 vs P=1 ratio)")
    return ratio


def _mfu(spec: str, samples: int) -> dict[str, Any]:
    """MFU of env steps on one thread (MIXAGENT_NUM_THREADS), against the reference matmul."""
    from bench_env import utilisation  # one env-step MFU measurement for both benches

    from mixagent.envs.proxy_env import ProxyCPTEnv

    env = ProxyCPTEnv(spec)
    r = utilisation(env, samples, seed=0, warm_up=True)
    env.close()
    f = r.flops
    print(f"  {r.threads} thread(s): env step {f.total / 1e9:.2f} GFLOP ({f.train_steps} x "
          f"{f.train_step / 1e9:.3f} training + {f.evaluation / 1e9:.3f} evaluation), achieved "
          f"{r.achieved_flops_per_second / 1e9:.1f} GFLOP/s vs reference matmul "
          f"{r.reference_flops_per_second / 1e9:.1f} GFLOP/s")
    cpu = "n/a" if r.env_step_cpu is None else f"{r.env_step_cpu:.3f}"
    print(f"  => MFU (median of {r.samples}): env step {r.env_step:.3f}, training alone "
          f"{r.train:.3f} (goal >= 0.6 on one thread); per CPU-second {cpu} (steadier under "
          f"load) | load average {os.getloadavg()[0]:.2f}")
    return r.as_dict()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=str(Path(__file__).resolve().parents[1] / "envs" / "micro.yaml"))
    ap.add_argument("--episodes", type=int, default=150, help="episodes per worker-scaling run")
    ap.add_argument("--branch", type=int, nargs="+", default=[4, 8], help="K values to measure")
    ap.add_argument("--branch-episodes", type=int, default=12, help="episodes per branching sample")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved samples per branching mode")
    ap.add_argument("--population-spec", default=str(ROOT / "envs" / "prose-to-math.yaml"))
    ap.add_argument("--population-rounds", type=int, default=2)
    ap.add_argument("--mfu-spec", default=str(ROOT / "envs" / "prose-to-math.yaml"))
    ap.add_argument("--mfu-samples", type=int, default=5, help="env steps timed for the MFU")
    ap.add_argument("--skip-workers", action="store_true")
    ap.add_argument("--skip-branching", action="store_true")
    ap.add_argument("--skip-population", action="store_true")
    ap.add_argument("--skip-mfu", action="store_true")
    args = ap.parse_args()

    import platform

    import torch

    print(f"bench_collect: {args.spec}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; torch {torch.__version__}; {platform.python_version()}")
    summary: dict[str, Any] = {"workers_ratio": None, "branch4_ratio": None,
                               "population_ratio": None, "mfu": None}
    with tempfile.TemporaryDirectory(prefix="bench-collect-") as d:
        tmp = Path(d)
        if not args.skip_workers:
            print("1. workers (plain episodes):", flush=True)
            summary["workers_ratio"] = _workers(args.spec, args.episodes, tmp)
        if not args.skip_branching:
            print(f"2. branching (1 process, 1 thread, {args.branch_episodes} episodes x "
                  f"{args.repeats} interleaved samples per mode):", flush=True)
            summary["branch4_ratio"] = _branching(args.spec, args.branch, args.branch_episodes,
                                                  args.repeats, tmp).get(4)
    if not args.skip_population:
        print(f"3. population batching ({args.population_spec}):", flush=True)
        summary["population_ratio"] = _population(args.population_spec, args.population_rounds)
    if not args.skip_mfu:
        print(f"4. utilisation ({args.mfu_spec}):", flush=True)
        m = _mfu(args.mfu_spec, args.mfu_samples)
        summary["mfu"] = m["env_step"]
        summary["mfu_train"] = m["train"]
        summary["mfu_cpu"] = m["env_step_cpu"]
    summary["load_average"] = os.getloadavg()[0]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
