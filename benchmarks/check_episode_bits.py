"""Check that a code change leaves env episodes bit-identical (the proof a speed-up needs).

Cached episodes and committed measurements depend on the exact floats an episode produces, so a
speed-up of the proxy may be on by default only if it changes no bit. This script plays one
episode per spec with seeded random actions and records every observation, reward, loss and a
hash of the final parameters and optimizer state:

    python benchmarks/check_episode_bits.py --save /tmp/before.json      # on the old code
    python benchmarks/check_episode_bits.py --against /tmp/before.json   # on the new code

``--against`` exits non-zero and names the first difference if any value differs in any bit
(floats are compared through their hex representation). Specs default to ``envs/micro.yaml``
and ``envs/prose-to-math.yaml``; thread count is whatever the spec / ``MIXAGENT_NUM_THREADS``
says (run it once per thread count you care about).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _exact(x: Any) -> Any:
    """A JSON value that preserves every bit: floats as hex, arrays as lists of hex."""
    if isinstance(x, dict):
        return {str(k): _exact(v) for k, v in sorted(x.items())}
    if isinstance(x, list | tuple):
        return [_exact(v) for v in x]
    if isinstance(x, np.ndarray):
        return _exact(x.tolist())
    if isinstance(x, float | np.floating):
        return float(x).hex()
    if isinstance(x, np.integer):
        return int(x)
    return x


def _state_hash(engine: Any) -> str:
    """sha256 of the model parameters and the optimizer moments, in a fixed order."""
    import torch

    h = hashlib.sha256()
    for k, v in sorted(engine.model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    for p in engine.model.parameters():
        for k, v in sorted(engine.optimizer.state.get(p, {}).items()):
            if isinstance(v, torch.Tensor):
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def play(spec: str, seed: int) -> dict[str, Any]:
    """One episode of ``spec`` with seeded random actions: everything it produced, exactly."""
    from mixagent.envs.proxy_env import ProxyCPTEnv

    env = ProxyCPTEnv(spec)
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    steps: list[dict[str, Any]] = [{"obs": _exact(obs), "data_seed": info["data_seed"]}]
    done = False
    while not done:
        action = rng.uniform(-1.0, 1.0, env.num_domains).astype(np.float32)
        obs, reward, done, _, info = env.step(action)
        steps.append({"obs": _exact(obs), "reward": _exact(reward),
                      "train_loss": _exact(info["train_loss"]), "losses": _exact(info["losses"]),
                      "scores": _exact(info["scores"])})
    out = {"spec": spec, "seed": seed, "threads": env.engine.threads, "steps": steps,
           "state_sha256": _state_hash(env.engine)}
    env.close()
    return out


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """The path of the first differing value of two JSON values, or None if equal."""
    if type(a) is not type(b):
        return f"{where}: {a!r} != {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{where}.{k}: missing on one side"
            d = first_difference(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = first_difference(x, y, f"{where}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{where}: {a!r} != {b!r}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("specs", nargs="*", default=[str(ROOT / "envs" / "micro.yaml"),
                                                  str(ROOT / "envs" / "prose-to-math.yaml")])
    ap.add_argument("--seed", type=int, default=7)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--save", type=Path)
    g.add_argument("--against", type=Path)
    args = ap.parse_args(argv)
    runs = {Path(s).name: play(s, args.seed) for s in args.specs}
    if args.save:
        args.save.write_text(json.dumps(runs, indent=1))
        print(f"saved {', '.join(runs)} to {args.save}")
        return 0
    ref = json.loads(args.against.read_text())
    bad = 0
    for name, run in runs.items():
        if name not in ref:
            print(f"{name}: not in {args.against}")
            bad += 1
            continue
        diff = first_difference(ref[name], json.loads(json.dumps(run)), name)
        print(f"{name} (threads {run['threads']}): "
              f"{'BIT-IDENTICAL' if diff is None else 'DIFFERS at ' + diff}")
        bad += diff is not None
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
