"""ProxyCPTEnv on the micro spec: API checkers, PPO, determinism, reset, layout, bad input."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mixagent.config import validate_config
from mixagent.envs.actions import action_from_weights, weights_from_action
from mixagent.envs.errors import InvalidActionError, ResetNeededError
from mixagent.envs.observation import (
    ALIGNMENT_FEATURES,
    BENCHMARK_FEATURES,
    DOMAIN_FEATURES,
    GLOBAL_FEATURES,
    OBJECTIVE_FEATURES,
    feature_bounds,
)
from mixagent.envs.spec import EnvSpec, load_env_spec
from mixagent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "envs" / "micro.yaml"


def micro_raw() -> dict:
    return yaml.safe_load(MICRO.read_text())


def spec_from(raw: dict, origin: str = "micro.yaml") -> EnvSpec:
    return validate_config(EnvSpec, raw, source=origin).located(origin, MICRO.parent)


@pytest.fixture(scope="module")
def env(cache: Path):
    from mixagent.envs.proxy_env import ProxyCPTEnv

    e = ProxyCPTEnv(MICRO)
    yield e
    e.close()


def run_episode(env, actions, seed):
    obs, info = env.reset(seed=seed)
    traj = [(obs, 0.0, info["losses"])]
    for a in actions:
        obs, r, _, _, info = env.step(a)
        traj.append((obs, r, info["losses"]))
    return traj


# -- checkers and RL ---------------------------------------------------------------------------
def test_gymnasium_check_env(env):
    from gymnasium.utils.env_checker import check_env

    check_env(env, skip_render_check=True)


@pytest.mark.filterwarnings("ignore:Your observation domains has an unconventional shape")
def test_sb3_check_env(env):
    # SB3 suggests flattening the (K, F) per-domain block; it is kept 2-D on purpose (per-domain,
    # permutation-equivariant policies), and MultiInputPolicy flattens it itself.
    from stable_baselines3.common.env_checker import check_env

    check_env(env, warn=True)


def test_registered_and_makeable(cache):
    import gymnasium

    import mixagent  # noqa: F401 - registration is an import side effect

    assert "mixagent/ProxyCPT-v0" in gymnasium.registry
    e = gymnasium.make("mixagent/ProxyCPT-v0", spec=str(MICRO))
    obs, _ = e.reset(seed=3)
    assert e.observation_space.contains(obs)
    e.close()


def test_ppo_trains(env):
    from stable_baselines3 import PPO

    model = PPO("MultiInputPolicy", env, n_steps=6, batch_size=6, n_epochs=2, seed=0,
                device="cpu", policy_kwargs={"net_arch": [16]})
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=12)
    after = list(model.policy.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert action.shape == env.action_space.shape


# -- determinism and reset -----------------------------------------------------------------------
def test_same_seed_same_actions_same_trajectory(env):
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, env.num_domains).astype(np.float32) for _ in range(env.num_steps)]
    a = run_episode(env, actions, seed=7)
    run_episode(env, actions[::-1], seed=8)  # something different in between
    b = run_episode(env, actions, seed=7)
    for (oa, ra, la), (ob, rb, lb) in zip(a, b, strict=True):
        assert np.array_equal(oa["domains"], ob["domains"])
        assert np.array_equal(oa["global"], ob["global"])
        assert ra == rb
        assert np.array_equal(la, lb)


def test_thread_setting_is_scoped_to_the_proxy(env):
    before = torch.get_num_threads()
    env.reset(seed=0)
    env.step(np.zeros(env.num_domains, np.float32))
    assert env.engine.threads == 1  # micro spec: runtime.num_threads
    assert torch.get_num_threads() == before


def test_different_reset_seeds_change_the_data_order(env):
    actions = [np.zeros(env.num_domains, np.float32)] * env.num_steps
    a = run_episode(env, actions, seed=1)
    b = run_episode(env, actions, seed=2)
    assert not np.array_equal(a[-1][2], b[-1][2])


def test_reset_restores_the_base_exactly(env):
    from safetensors.torch import load_file

    env.reset(seed=0)
    for _ in range(env.num_steps):
        env.step(env.action_space.sample())
    trained = {k: v.clone() for k, v in env.engine.model.state_dict().items()}
    _, info = env.reset(seed=0)
    state = env.engine.model.state_dict()
    on_disk = load_file(str(env.engine.base_path / "model.safetensors"))
    assert any(not torch.equal(trained[k], state[k]) for k in state)
    for k, v in on_disk.items():
        assert torch.equal(state[k], v), k
    assert len(env.engine.optimizer.state) == 0  # fresh optimizer (optimizer_state: fresh)
    assert np.array_equal(info["losses"], env.base_losses)
    assert np.array_equal(env.engine.evaluate().losses, env.base_losses)


def test_snapshot_restore_branches_exactly(env):
    env.reset(seed=5)
    env.step(np.zeros(env.num_domains, np.float32))
    snap = env.snapshot()
    a = np.linspace(-1, 1, env.num_domains).astype(np.float32)
    first = env.step(a)
    env.step(-a)
    env.restore(snap)
    again = env.step(a)
    assert np.array_equal(first[0]["domains"], again[0]["domains"])
    assert first[1] == again[1]
    env.restore(snap)  # a snapshot can be restored repeatedly
    assert np.array_equal(env.step(a)[0]["domains"], first[0]["domains"])


def test_episode_terminates_and_return_is_final_score(env):
    env.reset(seed=0)
    total, term, steps = 0.0, False, 0
    while not term:
        _, r, term, trunc, info = env.step(env.action_space.sample())
        total += r
        steps += 1
        assert not trunc
    assert steps == env.num_steps
    assert math.isclose(total, env.env_spec.reward.scale * info["scores"]["balanced"],
                        rel_tol=1e-9, abs_tol=1e-12)
    assert info["tokens"] == env.num_steps * env.env_spec.cpt.tokens_per_step
    for key in ("weights", "losses", "scores", "task_metrics", "tokens", "wall_time"):
        assert key in info
    assert info["wall_time"] >= info["train_time"] > 0 and info["eval_time"] > 0
    assert isinstance(info["wall_time"], float) and info["wall_time"] != 0.0


# -- observation layout ------------------------------------------------------------------------------
def test_observation_layout_matches_documentation(env):
    from mixagent.envs import observation, proxy_env

    space = env.observation_space
    assert set(space.spaces) == {"domains", "global"}
    assert space["domains"].shape == (env.num_domains, len(DOMAIN_FEATURES))
    assert space["global"].shape == (len(GLOBAL_FEATURES),)
    # the documented tables list the features in this order, in the module and in docs/ENV.md
    # (the v1 layout, then the optional groups' features: tests/test_alignment.py)
    documented = [*DOMAIN_FEATURES, *GLOBAL_FEATURES, *ALIGNMENT_FEATURES, *BENCHMARK_FEATURES,
                  *OBJECTIVE_FEATURES]
    assert re.findall(r"^``(\w+)``\s{2,}", observation.__doc__, re.M) == documented
    md = (ROOT / "docs" / "ENV.md").read_text()
    section = md[md.index("## Observation") : md.index("## Reward")]
    assert re.findall(r"^\| `(\w+)` \|", section, re.M) == documented
    assert "loss_change_base" in proxy_env.ProxyCPTEnv.__doc__
    spec = env.env_spec.observation
    bounds = feature_bounds(spec.loss_max, spec.score_max)
    for j, f in enumerate(DOMAIN_FEATURES):
        assert np.all(space["domains"].low[:, j] == bounds[f][0])
        assert np.all(space["domains"].high[:, j] == bounds[f][1])
    for j, f in enumerate(GLOBAL_FEATURES):
        assert space["global"].low[j] == bounds[f][0] and space["global"].high[j] == bounds[f][1]

    obs0, info0 = env.reset(seed=0)
    a = np.linspace(-1, 1, env.num_domains).astype(np.float32)
    obs, _, _, _, info = env.step(a)
    d = {f: obs["domains"][:, j] for j, f in enumerate(DOMAIN_FEATURES)}
    g = dict(zip(GLOBAL_FEATURES, obs["global"], strict=True))
    f32 = np.float32
    assert np.allclose(d["weight"], info["weights"].astype(f32))
    assert np.allclose(d["weight"], weights_from_action(a, env.env_spec.action.scale,
                                                        env.env_spec.action.floor))
    assert np.allclose(d["loss"], info["losses"].astype(f32))
    assert np.allclose(d["loss_change_base"], (info["losses"] - env.base_losses).astype(f32))
    assert np.allclose(d["loss_change_step"], (info["losses"] - info0["losses"]).astype(f32))
    assert np.array_equal(d["is_target"], env.is_target.astype(f32))
    assert g["progress"] == f32(1 / env.num_steps)
    for name in ("source", "target", "balanced"):
        assert np.isclose(g[f"{name}_score"], info["scores"][name])
    assert np.all(obs0["domains"][:, 0] == 0) and obs0["global"][0] == 0


# -- bad input ---------------------------------------------------------------------------------------
def test_bad_actions_say_what_is_wrong(env):
    env.reset(seed=0)
    k = env.num_domains
    with pytest.raises(InvalidActionError, match=rf"shape \(3,\), expected \({k},\)"):
        env.step(np.zeros(3, np.float32))
    bad = np.zeros(k, np.float32)
    bad[1] = np.nan
    with pytest.raises(InvalidActionError, match=r"NaN at positions \[1\]"):
        env.step(bad)
    bad = np.zeros(k, np.float32)
    bad[0] = np.inf
    with pytest.raises(InvalidActionError, match=r"inf at positions \[0\]"):
        env.step(bad)
    with pytest.raises(InvalidActionError, match="numbers"):
        env.step("uniform")
    assert isinstance(InvalidActionError("x"), ValueError)
    with pytest.raises(InvalidActionError, match="non-negative"):
        env.step_weights([-1.0] + [1.0] * (k - 1))


def test_stepping_after_the_end_needs_reset(env):
    env.reset(seed=0)
    for _ in range(env.num_steps):
        env.step(np.zeros(env.num_domains, np.float32))
    with pytest.raises(ResetNeededError, match=r"call reset\(\)"):
        env.step(np.zeros(env.num_domains, np.float32))


def test_spec_errors_name_the_key(cache, tmp_path):
    from mixagent.envs.setup import resolve_spec

    raw = micro_raw()
    raw["target_field"] = "maths"
    with pytest.raises(ConfigError, match=r"micro.yaml: target_field: unknown field 'maths'; "
                                          r"the data directory has .*math"):
        resolve_spec(spec_from(raw))

    raw = micro_raw()
    raw["data"] = {"path": str(tmp_path / "nowhere")}
    with pytest.raises(ConfigError, match=r"data.path: data directory not found"):
        resolve_spec(spec_from(raw))

    raw = micro_raw()
    raw["model"]["config"]["hidden_size"] = 30  # not divisible by 2 heads... 30/2=15 is fine:
    raw["model"]["config"]["num_attention_heads"] = 4  # 30 is not a multiple of 4
    with pytest.raises(ConfigError, match=r"model.config: cannot build a llama model: .*30"):
        resolve_spec(spec_from(raw))

    raw = micro_raw()
    raw["model"]["config"]["hiden_size"] = 32
    with pytest.raises(ConfigError, match=r"model.config.hiden_size: not a LlamaConfig key; "
                                          r"did you mean hidden_size"):
        resolve_spec(spec_from(raw))

    raw = micro_raw()
    raw["model"]["config"]["vocab_size"] = 100
    with pytest.raises(ConfigError, match=r"model.config.vocab_size: set by mixagent"):
        resolve_spec(spec_from(raw))

    raw = micro_raw()
    raw["domains"] = ["prose/pydoc-topics", "code/stdlib-core"]
    with pytest.raises(ConfigError, match=r"domains\[1\]: 'code/stdlib-core' belongs to field"):
        resolve_spec(spec_from(raw))

    raw = micro_raw()
    raw["reward"]["target_terms"] = {"loss": 1.0, "math_exact_match.exact_match": 1.0}
    with pytest.raises(ConfigError, match=r"reward.target_terms.math_exact_match.exact_match: "
                                          r"task 'math_exact_match' is not evaluated"):
        resolve_spec(spec_from(raw))


def test_spec_file_errors_name_the_key(tmp_path):
    raw = micro_raw()
    raw["cpt"]["batchsize"] = 3
    raw["eval"]["sequences_per_domain"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_env_spec(path)
    msg = str(err.value)
    assert f"{path}: cpt.batchsize: unknown key" in msg
    assert f"{path}: eval.sequences_per_domain:" in msg

    raw = micro_raw()
    raw["cpt"]["tokens_per_step"] = 500
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"cpt: .*tokens_per_step=500 is not a multiple of "
                                          r"batch_size\*seq_len=256; use 256 or 512"):
        load_env_spec(path)

    raw = micro_raw()
    raw["data"] = {"builtin": "tiny", "path": "x"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"data: .*exactly one"):
        load_env_spec(path)


# -- action map ----------------------------------------------------------------------------------------
def test_action_map_and_inverse():
    rng = np.random.default_rng(0)
    for k, scale, floor in ((4, 3.0, 0.0), (12, 2.0, 0.01), (7, 3.0, 0.002)):
        for _ in range(20):
            a = rng.uniform(-1, 1, k)
            w = weights_from_action(a, scale, floor)
            assert math.isclose(w.sum(), 1.0) and np.all(w >= floor - 1e-15)
            back = action_from_weights(w, scale, floor)
            assert np.all(np.abs(back) <= 1.0)
            assert np.allclose(weights_from_action(back, scale, floor), w, atol=1e-6)
        assert np.allclose(weights_from_action(np.zeros(k), scale, floor), 1.0 / k)
    # unreachable mixtures: clipped, or an error when strict
    w = np.array([1.0, 0.0, 0.0])
    a = action_from_weights(w, 3.0, 0.0)
    assert a.tolist() == [1.0, -1.0, -1.0]
    with pytest.raises(InvalidActionError, match=r"not reachable|at most"):
        action_from_weights(w, 3.0, 0.0, strict=True)
    with pytest.raises(InvalidActionError, match=r"shape \(3, 1\), expected \(3,\)"):
        weights_from_action(np.zeros((3, 1)), 3.0)


def test_parse_weights():
    from mixagent.envs.weights import parse_weights

    domains = ["prose/a", "prose/b", "math/x"]
    field_of = lambda d: d.split("/")[0]  # noqa: E731
    assert np.allclose(parse_weights("uniform", domains, field_of), 1 / 3)
    assert np.allclose(parse_weights("prose=0.4,math=0.6", domains, field_of), [0.2, 0.2, 0.6])
    assert np.allclose(parse_weights("1,1,2", domains, field_of), [0.25, 0.25, 0.5])
    assert np.allclose(parse_weights("math/x=1", domains, field_of), [0, 0, 1])
    for bad, msg in (("1,2", "2 numbers given, expected 3"), ("maths=1", "'maths' is neither"),
                     ("prose=-1", "non-negative"), ("prose=x", "not a number"),
                     ("prose=0", "all weights are zero"), ("1,nan,1", "finite")):
        with pytest.raises(ConfigError, match=msg):
            parse_weights(bad, domains, field_of, where="--weights")


# -- CLI ------------------------------------------------------------------------------------------------
def test_cli_pretrain_and_env_run(cache):
    from typer.testing import CliRunner

    from mixagent.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["env", "pretrain", str(MICRO)])
    assert res.exit_code == 0, res.output
    assert "base " in res.output and "parameters" in res.output
    res = runner.invoke(app, ["env", "run", str(MICRO), "--weights", "prose=0.3,math=0.7"])
    assert res.exit_code == 0, res.output
    assert "balanced" in res.output and "0.300" in res.output and "return" in res.output
    res = runner.invoke(app, ["env", "run", str(MICRO), "--weights", "maths=1"])
    assert res.exit_code != 0
    assert "'maths' is neither a field" in str(res.exception)
