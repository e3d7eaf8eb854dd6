"""FLOP counting / MFU helpers, and the allocator tuning's two promises: same bits, same hashes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


# -- runtime.compile (issue 14): an opt-in torch.compile of the training loss -------------------
def test_compile_setting_from_yaml_and_environment(micro_spec: Path, micro_cache_env: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from mixagent.envs.setup import resolve_spec
    from mixagent.errors import ConfigError
    from mixagent.proxy.config import RuntimeSpec
    from mixagent.proxy.runtime import COMPILE_ENV, resolve_compile
    from mixagent.trajectories.identity import resolved_spec_hash
    from mixagent.utils.raypool import compile_applied, forwarded_env

    raw = yaml.safe_load(micro_spec.read_text())
    on = micro_spec.with_name("micro-compiled.yaml")
    on.write_text(yaml.safe_dump({**raw, "runtime": {**raw.get("runtime", {}), "compile": True}}))
    spec_on = resolve_spec(on)
    assert spec_on.spec.runtime.compile is True and RuntimeSpec().compile is False
    # a speed setting (numerics equal up to float rounding): not part of the env's identity
    assert resolved_spec_hash(spec_on) == resolved_spec_hash(resolve_spec(micro_spec))

    monkeypatch.delenv(COMPILE_ENV, raising=False)
    assert resolve_compile(RuntimeSpec()) is False
    assert resolve_compile(RuntimeSpec(compile=True)) is True
    for value, want in (("1", True), ("true", True), ("ON", True), ("0", False), ("no", False)):
        monkeypatch.setenv(COMPILE_ENV, value)
        assert resolve_compile(RuntimeSpec(compile=not want)) is want  # the variable wins
    monkeypatch.setenv(COMPILE_ENV, " ")
    assert resolve_compile(RuntimeSpec(compile=True)) is True  # empty: the spec decides
    monkeypatch.setenv(COMPILE_ENV, "maybe")
    with pytest.raises(ConfigError, match=COMPILE_ENV):
        resolve_compile(RuntimeSpec())
    # Ray workers get it from the driver explicitly (with MIXAGENT_CACHE)
    monkeypatch.setenv(COMPILE_ENV, "1")
    assert forwarded_env()[COMPILE_ENV] == "1" and "MIXAGENT_CACHE" in forwarded_env()
    assert compile_applied([{"compile": "compiled"}, {"compile": ["fallback", "off"]}, {}]) == [
        "compiled", "fallback", "off"]
    assert compile_applied([]) is None


def _episode(spec: Path, seed: int = 7) -> tuple[Any, list[dict[str, Any]]]:
    """One micro episode with seeded random actions: the engine and each step's numbers."""
    import numpy as np

    from mixagent.envs.proxy_env import ProxyCPTEnv

    env = ProxyCPTEnv(spec, progress=False)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    steps, done = [], False
    while not done:
        action = rng.uniform(-1.0, 1.0, env.num_domains).astype(np.float32)
        _, reward, done, _, info = env.step(action)
        steps.append({"reward": float(reward), "train_loss": float(info["train_loss"]),
                      "losses": np.asarray(info["losses"], np.float64),
                      "scores": dict(info["scores"]), "weights": np.asarray(info["weights"])})
    engine = env.engine
    env.close()
    return engine, steps


def test_compile_falls_back_to_eager_when_compiling_fails(
        micro_spec: Path, micro_cache_env: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """No compiler (simulated): warn, train eagerly (bit-identical to compile off), and say so."""
    import numpy as np

    from mixagent.proxy import runtime

    monkeypatch.delenv(runtime.COMPILE_ENV, raising=False)
    eager, ref = _episode(micro_spec)
    assert eager.compile_state == "off"

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Compiler: cc is not found")

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(runtime, "_compile_warned", False)
    monkeypatch.setenv(runtime.COMPILE_ENV, "1")
    with caplog.at_level("WARNING", logger="mixagent.proxy.runtime"):
        engine, got = _episode(micro_spec)
    assert engine.compile_state == "fallback"
    assert any("torch.compile of the training loss failed" in r.message for r in caplog.records)
    assert all(p.grad is None for p in engine.model.parameters())
    for a, b in zip(got, ref, strict=True):
        assert a["reward"] == b["reward"] and a["train_loss"] == b["train_loss"]
        assert np.array_equal(a["losses"], b["losses"]) and np.array_equal(a["weights"], b["weights"])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.*")
def test_compiled_loss_matches_eager(micro_spec: Path, micro_cache_env: None,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A micro episode with the training loss compiled equals the eager one up to float rounding
    (measured: |d train loss| ~1e-6, |d reward| ~3e-8) with the same weights schedule; the loss
    is compiled once, at engine construction (no recompile during the episode). ~35 s cold."""
    import numpy as np
    from torch._dynamo.utils import counters

    from mixagent.proxy.runtime import COMPILE_ENV

    monkeypatch.delenv(COMPILE_ENV, raising=False)
    _, ref = _episode(micro_spec)
    monkeypatch.setenv(COMPILE_ENV, "1")
    from mixagent.envs.proxy_env import ProxyCPTEnv

    env = ProxyCPTEnv(micro_spec, progress=False)
    assert env.engine.compile_state == "compiled"
    assert all(p.grad is None for p in env.engine.model.parameters())
    env.close()
    frames = counters["frames"]["total"]
    engine, got = _episode(micro_spec)  # a second engine, and its steps: nothing recompiled
    assert engine.compile_state == "compiled"
    assert counters["frames"]["total"] == frames
    for a, b in zip(got, ref, strict=True):
        assert np.array_equal(a["weights"], b["weights"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["reward"] == pytest.approx(b["reward"], rel=1e-4, abs=1e-6)
        np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-5)
        for k, v in b["scores"].items():
            assert a["scores"][k] == pytest.approx(v, rel=1e-4, abs=1e-6)
