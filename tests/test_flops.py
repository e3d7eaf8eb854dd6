"""FLOP counting / MFU helpers, and the allocator tuning's two promises: same bits, same hashes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mixagent.proxy.flops import StepFlops, count_flops, measure_mfu, mfu

ROOT = Path(__file__).resolve().parents[1]


def test_count_flops_of_a_matmul() -> None:
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4


def test_measure_mfu_shape() -> None:
    flops = StepFlops(train_step=1000, train_steps=3, evaluation=500)
    assert flops.total == 3500 and flops.as_dict()["total"] == 3500
    r = measure_mfu(lambda: (0.5, 0.25), flops, threads=1, samples=2)
    assert r.samples == 2 and r.threads == 1
    assert r.env_step == pytest.approx(mfu(3500, 0.5, r.reference_flops_per_second), rel=1.0)
    assert math.isfinite(r.train) and r.train > 0
    assert r.env_step_cpu is not None and r.env_step_cpu > 0  # CPU: per CPU-second too
    assert json.dumps(r.as_dict())


def test_env_step_flops_leaves_the_engine_unchanged(micro_spec: Path, micro_cache_env: None) -> None:
    from mixagent.envs.proxy_env import ProxyCPTEnv
    from mixagent.proxy.flops import env_step_flops

    env = ProxyCPTEnv(micro_spec)
    env.reset(seed=0)
    before = {k: v.clone() for k, v in env.engine.model.state_dict().items()}
    f = env_step_flops(env.engine)
    assert f.train_step > 0 and f.evaluation > 0
    assert f.train_steps == env.env_spec.cpt.steps_per_action
    after = env.engine.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in env.engine.model.parameters())
    env.close()


def test_tune_allocator_is_not_part_of_the_spec_hash(micro_spec: Path, micro_cache_env: None) -> None:
    from mixagent.envs.setup import resolve_spec
    from mixagent.trajectories.identity import resolved_spec_hash

    raw = yaml.safe_load(micro_spec.read_text())
    off = micro_spec.with_name("micro-untuned.yaml")
    off.write_text(yaml.safe_dump({**raw, "runtime": {**raw.get("runtime", {}),
                                                     "tune_allocator": False}}))
    assert resolved_spec_hash(resolve_spec(micro_spec)) == resolved_spec_hash(resolve_spec(off))


_PLAY = """
import json, sys
sys.path.insert(0, {bench!r})
from check_episode_bits import play
print(json.dumps(play({spec!r}, 3)))
"""


@pytest.mark.slow
def test_allocator_tuning_is_bit_identical(micro_spec: Path, micro_cache: Path) -> None:
    """A micro episode with the allocator tuned and one without (separate processes: the tuning
    is process-wide) produce the same observations, rewards, losses and final state, bit for bit."""
    raw = yaml.safe_load(micro_spec.read_text())
    runs = []
    for tuned in (True, False):
        path = micro_spec.with_name(f"micro-tuned-{tuned}.yaml")
        path.write_text(yaml.safe_dump({**raw, "runtime": {**raw.get("runtime", {}),
                                                          "tune_allocator": tuned}}))
        code = _PLAY.format(bench=str(ROOT / "benchmarks"), spec=str(path))
        env = {**os.environ, "MIXAGENT_CACHE": str(micro_cache)}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, check=True).stdout
        run = json.loads(out.strip().splitlines()[-1])
        run.pop("spec")
        runs.append(run)
    assert runs[0] == runs[1]
