"""Population batching: transitions/s and transitions per CPU-second for populations of P episodes.

P = 1 is the plain sequential environment (``env.reset`` / ``env.step``), the baseline every
ratio is against; P > 1 is :class:`~mixagent.trajectories.population.PopulationStepper` (P
episodes trained as one batched model). The sizes are measured in one process, interleaved
round by round (P=1, P=8, ..., then again), so a change in machine load hits every size alike.
Stepper construction and its one-off verification step are done before timing. CPU-seconds are
this process's CPU time (all its threads), so a ratio of transitions per CPU-second is
independent of how many cores torch used.

Examples::

    python benchmarks/bench_population.py                      # envs/prose-to-math.yaml, P=1,8,64
    python benchmarks/bench_population.py --spec envs/micro.yaml --sizes 1,2 --rounds 1
    python benchmarks/bench_population.py --device cuda        # P=1,8,64,256 on a GPU

The last line is one JSON object: ``population_ratio`` (P=8 vs P=1, transitions per CPU-second;
null when 8 or 1 was not measured) and per-P ``rates``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _spec(path: str, device: str | None, threads: int | None) -> Any:
    from mixagent.envs.spec import load_env_spec

    spec = load_env_spec(path)
    update: dict[str, Any] = {}
    if device:
        update["device"] = device
    if threads:
        update["num_threads"] = threads
    if update:
        spec = spec.model_copy(update={"runtime": spec.runtime.model_copy(update=update)})
    return spec


def _actions(rng: np.random.Generator, p: int, steps: int, k: int) -> np.ndarray:
    return rng.uniform(-1, 1, (steps, p, k)).astype(np.float32)


def _plain_round(env: Any, steps: int, seed: int, rng: np.random.Generator) -> int:
    acts = _actions(rng, 1, steps, env.num_domains)
    env.reset(seed=seed)
    for t in range(steps):
        env.step(acts[t, 0])
    return steps


def _population_round(env: Any, stepper: Any, steps: int, seed: int,
                      rng: np.random.Generator) -> int:
    p = stepper.size
    acts = _actions(rng, p, steps, env.num_domains)
    stepper.reset([seed * 1000 + i for i in range(p)])
    for t in range(steps):
        stepper.step(list(acts[t]))
    return steps * p


def _sync(env: Any) -> None:
    import torch

    if env.engine.device.type == "cuda":
        torch.cuda.synchronize(env.engine.device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default=str(ROOT / "envs" / "prose-to-math.yaml"))
    ap.add_argument("--sizes", default=None, help="comma-separated population sizes (default "
                    "1,8,64; on a GPU 1,8,64,256)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds per size")
    ap.add_argument("--steps", type=int, default=None, help="re-weighting steps per episode "
                    "(default: the spec's cpt.num_steps)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None,
                    help="override the spec's runtime.device (cuda needs a GPU torch can see)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: spec)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the actions and episode seeds")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    import torch

    from mixagent.envs.proxy_env import ProxyCPTEnv
    from mixagent.trajectories.population import PopulationStepper

    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no GPU")
    t0 = time.perf_counter()
    env = ProxyCPTEnv(_spec(args.spec, args.device, args.threads), progress=False)
    on_gpu = env.engine.device.type == "cuda"
    sizes = [int(s) for s in (args.sizes or ("1,8,64,256" if on_gpu else "1,8,64")).split(",")]
    steps = min(args.steps or env.num_steps, env.num_steps)
    cpt = env.env_spec.cpt
    print(f"spec {args.spec}: {env.num_domains} domains, {steps} of {env.num_steps} steps x "
          f"{cpt.tokens_per_step:,} tokens, device {env.engine.device}, torch threads "
          f"{env.engine.threads or torch.get_num_threads()}; env ready in "
          f"{time.perf_counter() - t0:.1f} s")
    steppers: dict[int, Any] = {}
    for p in sizes:
        if p > 1:
            t1 = time.perf_counter()
            steppers[p] = PopulationStepper(env, p)
            steppers[p].reset(list(range(p)))  # warm-up and the one-off verification step
            steppers[p].step(list(_actions(np.random.default_rng(0), p, 1, env.num_domains)[0]))
            print(f"P={p}: stepper built and verified in {time.perf_counter() - t1:.1f} s")
    _plain_round(env, 1, 0, np.random.default_rng(0))  # warm-up of the plain env
    totals = {p: {"transitions": 0, "wall_s": 0.0, "cpu_s": 0.0} for p in sizes}
    rng = np.random.default_rng(args.seed)
    for r in range(args.rounds):
        for p in sizes:
            _sync(env)
            w0, c0 = time.perf_counter(), time.process_time()
            n = (_plain_round(env, steps, 1 + r, rng) if p == 1 else
                 _population_round(env, steppers[p], steps, 1 + r, rng))
            _sync(env)
            tot = totals[p]
            tot["transitions"] += n
            tot["wall_s"] += time.perf_counter() - w0
            tot["cpu_s"] += time.process_time() - c0
    rates: dict[str, dict[str, float]] = {}
    for p in sizes:
        tot = totals[p]
        rates[str(p)] = {"transitions": tot["transitions"],
                         "transitions_per_s": tot["transitions"] / tot["wall_s"],
                         "transitions_per_cpu_s": tot["transitions"] / max(tot["cpu_s"], 1e-9),
                         "wall_s": round(tot["wall_s"], 3), "cpu_s": round(tot["cpu_s"], 3)}
        x = rates[str(p)]
        print(f"P={p:<4d} {x['transitions']:5d} transitions  {x['transitions_per_s']:8.3f} /s  "
              f"{x['transitions_per_cpu_s']:8.3f} per CPU-s")
    base = rates.get("1")
    ratios = {p: rates[p]["transitions_per_cpu_s"] / base["transitions_per_cpu_s"]
              for p in rates if base and p != "1"}
    for p, v in ratios.items():
        print(f"P={p} vs P=1: {v:.2f}x transitions per CPU-second, "
              f"{rates[p]['transitions_per_s'] / base['transitions_per_s']:.2f}x transitions/s")
    print(json.dumps({"population_ratio": ratios.get("8"), "ratios": ratios, "rates": rates,
                      "spec": args.spec, "device": str(env.engine.device), "steps": steps,
                      "rounds": args.rounds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
