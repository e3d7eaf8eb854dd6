"""Training mixing agents on the micro env spec: offline (BC + CQL), RegMix, online PPO over Ray,
the CLI, and policies plugged into trajectory collection as explorers.

Heavy things happen once per session: the built-in ``tiny`` corpus and the micro base are built
into a session cache (``MIXAGENT_CACHE``), a dozen micro episodes are collected in-process with
``mixagent.trajectories.collect``, and Ray is started once (reused if another test module
started it).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mixagent.policies import DomainSpace, MixingAgent, load_policy

EPISODES = 12

pytestmark = pytest.mark.usefixtures("micro_cache_env")


@pytest.fixture(scope="session")
def micro_traj(micro_spec: Path, micro_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dozen random-walk episodes with 2 branches per step, collected in this process."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXAGENT_CACHE", str(micro_cache))
        from mixagent.trajectories import collect

        out = tmp_path_factory.mktemp("traj") / "micro-rw"
        collect(env_spec=str(micro_spec), out=str(out), episodes=EPISODES, workers=1,
                explorers=["random_walk:jump=0.3"], branch={"k": 2}, progress=False)
    return out


@pytest.fixture(scope="session")
def ray_session():
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    if started:
        ray.shutdown()


def _acts_anywhere(policy) -> None:
    """The policy acts on synthetic spaces of 4 and 9 domains (it was trained on 6)."""
    from mixagent.envs.observation import make_observation

    rng = np.random.default_rng(0)
    for k in (4, 9):
        space = DomainSpace.synthetic(k, 2)
        policy.reset(space, 0)
        w = np.zeros(k)
        for t in range(3):
            loss = rng.uniform(3, 6, k)
            w = policy.act(make_observation(w, loss, loss + 0.1, loss + 0.05, space.is_target.astype(float),
                                            t / 3, -0.01, 0.02, 0.005, 20.0, 1.0))
            assert w.shape == (k,) and np.isclose(w.sum(), 1) and (w >= 0).all()


def test_transitions_follow_the_path_and_branches(micro_traj: Path):
    from mixagent.policies.features import FeatureSpec
    from mixagent.policies.training.data import read_trajectories, transitions_from_rows

    rows, meta = read_trajectories([micro_traj])
    assert meta["action_scale"] == 3.0 and meta["action_floor"] == 0.01
    data = transitions_from_rows(rows, FeatureSpec(history=3), meta["action_scale"], meta["action_floor"])
    assert len(data) == len(rows) == EPISODES * 3 * 2  # 3 steps x 2 branches
    assert len(data.episodes) == EPISODES and data.on_path.sum() == EPISODES * 3
    assert np.isfinite(data.dom).all() and np.isfinite(data.dom2).all()
    # the return of an episode is the sum of its path rewards
    ep0 = data.episode == 0
    np.testing.assert_allclose(data.returns[0], data.rewards[ep0 & data.on_path].sum(), rtol=1e-5)
    # first-step states have an empty history; weights enter relative to uniform
    first = data.dom[:, :, 0].sum(1) == 0
    assert first.sum() == EPISODES * 2
    k = data.mask.sum(1)
    np.testing.assert_allclose(data.dom2[:, :, 0].sum(1), k, rtol=1e-4)  # sum of weight·K = K


def test_offline_training_reduces_its_losses(micro_traj: Path, tmp_path: Path):
    from mixagent.policies.training.data import read_trajectories, transitions_from_rows
    from mixagent.policies.training.offline import OfflineConfig, train_offline

    rows, meta = read_trajectories([micro_traj])
    cfg = OfflineConfig(bc_steps=60, cql_steps=60, eval_every=10, checkpoint_every=30, batch_size=32,
                        patience=100, network={"hidden": 16}, action_scale=meta["action_scale"],
                        floor=meta["action_floor"], val_fraction=0.25, bc_top_quantile=1.0)
    data = transitions_from_rows(rows, cfg.features, cfg.action_scale, cfg.floor)
    res = train_offline(data, cfg, tmp_path / "agent", progress=False)
    bc = [h["bc_loss"] for h in res.history if h["phase"] == 0]
    cql = [h["q_loss"] for h in res.history if h["phase"] == 1]
    assert len(bc) == 6 and len(cql) == 6
    assert np.mean(bc[-2:]) < bc[0]
    assert np.mean(cql[-2:]) < cql[0]
    ckpts = sorted((tmp_path / "agent" / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == ["bc-0000060", "cql-0000030", "cql-0000060"]  # the last 3
    assert isinstance(load_policy(ckpts[-1]), MixingAgent)
    _acts_anywhere(res.agent)
    # seeded: the same config gives the same agent
    again = train_offline(data, cfg, None, progress=False)
    for (k1, v1), (_, v2) in zip(res.agent.tensors().items(), again.agent.tensors().items(), strict=True):
        assert np.array_equal(v1.numpy(), v2.numpy()), k1


def test_data_fraction_takes_nested_episode_subsets(micro_traj: Path):
    """A learning curve's x-axis: 0.25 of the training episodes is inside 0.5 for one seed, whole
    episodes only, and the validation split is the same at every fraction."""
    from mixagent.policies.training.data import read_trajectories, transitions_from_rows
    from mixagent.policies.training.offline import OfflineConfig, episode_prefix, split_by_episode

    rows, meta = read_trajectories([micro_traj])
    data = transitions_from_rows(rows, OfflineConfig().features, meta["action_scale"],
                                 meta["action_floor"])
    train, _ = split_by_episode(data, 0.0, seed=0)
    half, quarter = (episode_prefix(train, f, seed=5) for f in (0.5, 0.25))
    eps = [set(np.unique(d.episode)) for d in (train, half, quarter)]
    assert len(eps[1]) == round(0.5 * len(eps[0])) and len(eps[2]) == max(1, round(0.25 * len(eps[0])))
    assert eps[2] <= eps[1] <= eps[0]
    for d, e in zip((half, quarter), eps[1:], strict=True):  # every row of a kept episode
        assert len(d) == int(np.isin(train.episode, list(e)).sum())
    assert set(np.unique(episode_prefix(train, 0.5, seed=5).episode)) == eps[1]  # seeded
    with pytest.raises(ValueError, match="data_fraction"):
        OfflineConfig(data_fraction=0.0)


def _records_micro_scenario(policy, micro_spec: Path) -> None:
    """The policy's config records the reward and observation of the env it was trained on."""
    from mixagent.envs.spec import load_env_spec
    from mixagent.policies.records import scenario_record

    spec = load_env_spec(micro_spec)
    rec = scenario_record(policy.config())
    assert rec is not None and rec.name == "micro"
    assert rec.reward == spec.reward and rec.observation == spec.observation


def test_train_cli_bc_and_regmix_and_info(micro_traj: Path, micro_spec: Path, tmp_path: Path):
    from mixagent.cli.main import app

    runner = CliRunner()
    out = tmp_path / "bc"
    r = runner.invoke(app, ["train", str(micro_traj), "--out", str(out), "--algo", "bc", "--bc-steps", "20",
                            "--no-progress"])
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "README.md", "history.json"}
    pol = load_policy(out)
    assert pol.provenance["training"]["algo"] == "bc"
    assert pol.params.floor == 0.01
    _records_micro_scenario(pol, micro_spec)
    _acts_anywhere(pol)
    r = runner.invoke(app, ["policy", "info", str(out)])
    assert r.exit_code == 0 and "loads: ok" in r.output and "Trained on" in r.output
    r = runner.invoke(app, ["train", str(micro_traj), "--out", str(tmp_path / "rm"), "--algo", "regmix"])
    assert r.exit_code == 0, r.output
    rm = load_policy(tmp_path / "rm")
    assert rm.kind == "regmix" and rm.provenance["fit"]["episodes"] == EPISODES
    _records_micro_scenario(rm, micro_spec)
    _acts_anywhere(rm)


def test_policies_plug_into_collection_as_explorers(micro_spec: Path, micro_traj: Path, tmp_path: Path):
    from mixagent.cli.main import app
    from mixagent.policies.policy_explorers import make_explorer
    from mixagent.trajectories import collect, load

    runner = CliRunner()
    r = runner.invoke(app, ["train", str(micro_traj), "--out", str(tmp_path / "a"), "--algo", "bc",
                            "--bc-steps", "5", "--no-progress"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "explored"
    collect(env_spec=str(micro_spec), out=str(out), episodes=2, workers=1, progress=False,
            explorers=[f"policy:{tmp_path / 'a'}@1", "baseline:fixed_ratio?source=0.2@1"],
            explorer_factory=make_explorer)
    df = load(out).to_pandas()
    assert len(df) == 2 * 3
    fixed = df[df.explorer.str.startswith("baseline:")]
    for w in fixed.weights:  # exact weights: 0.2 spread over 3 source domains, 0.8 over 3 targets
        np.testing.assert_allclose(sorted(np.round(w, 6)), sorted([0.8 / 3] * 3 + [0.2 / 3] * 3), atol=1e-6)
    # the policy explorer's episode: its first proposal is what the trained agent decides on the
    # episode's first observation (replayed from the same env seed)
    from mixagent.envs.proxy_env import ProxyCPTEnv

    learned = df[df.explorer.str.startswith("policy:")].sort_values("t")
    assert list(learned.t) == [0, 1, 2]
    env = ProxyCPTEnv(micro_spec, progress=False)
    obs, _ = env.reset(seed=int(learned.env_seed.iloc[0]))
    agent = load_policy(tmp_path / "a")
    agent.reset(DomainSpace.from_env(env), int(learned.explorer_seed.iloc[0]))
    np.testing.assert_allclose(learned.proposed_weights.iloc[0], agent.act(obs), atol=1e-6)


def test_ppo_on_two_ray_workers_exports_a_loadable_policy(micro_spec: Path, ray_session, tmp_path: Path):
    from mixagent.envs.proxy_env import ProxyCPTEnv
    from mixagent.policies.protocol import run_episode
    from mixagent.policies.training.online import OnlineConfig, train_online

    cfg = OnlineConfig(algo="ppo", workers=2, timesteps=240, n_steps=12, batch_size=24, n_epochs=2,
                       network={"hidden": 16}, checkpoint_every=120)
    res = train_online(micro_spec, cfg, tmp_path / "ppo")
    assert res.timesteps >= 240
    assert len(res.episode_returns) >= 240 // 3 - 2  # 3-step episodes, auto-reset inside the actors
    res.agent.save(tmp_path / "ppo")
    agent = load_policy(tmp_path / "ppo")
    assert isinstance(agent, MixingAgent) and agent.params.squash == "clip"
    assert agent.provenance["training"]["workers"] == 2
    assert any((tmp_path / "ppo" / "checkpoints").iterdir())
    env = ProxyCPTEnv(micro_spec, progress=False)
    ep = run_episode(agent, env, seed=0)
    assert len(ep.steps) == 3
    _acts_anywhere(agent)


def test_sac_in_process_learns_through_train_policy(micro_spec: Path, tmp_path: Path):
    """SAC through the one training entry point: gradient steps after ``learning_starts`` change
    the exported actor (compared with the checkpoint taken before any update), and the policy
    records the scenario it was trained on."""
    from mixagent.policies.training import TrainConfig, train_policy

    out = tmp_path / "sac"
    res = train_policy(TrainConfig(algo="sac", env=str(micro_spec), hyperparameters={
        "workers": 1, "timesteps": 30, "learning_starts": 12, "sac_batch_size": 8,
        "network": {"hidden": 16}, "checkpoint_every": 12}), out)
    assert res.details["timesteps"] >= 30 and res.out == out
    before = load_policy(out / "checkpoints" / "step-0000012").tensors()  # no update yet at step 12
    after = load_policy(out).tensors()
    assert before.keys() == after.keys()
    weights = [k for k in after if "norm" not in k]  # the input normalisation is fitted at step 12
    assert weights and any(not np.array_equal(before[k].numpy(), after[k].numpy()) for k in weights)
    _records_micro_scenario(res.policy, micro_spec)
    _acts_anywhere(res.policy)


def test_bc_ranks_episodes_net_of_their_scenario():
    """On a family, an episode on an easy scenario must not outrank a better mixture on a hard
    one: the residual ranking removes what the scenario choices predict."""
    from mixagent.policies.training.data import TransitionData, context_matrix
    from mixagent.policies.training.offline import episode_merit

    rng = np.random.default_rng(0)
    n = 40
    easy = rng.random(n) < 0.5
    skill = rng.normal(0, 0.1, n)  # what the policy contributed
    returns = np.where(easy, 3.0, 1.0) + skill
    contexts = [{"target_field": "math" if e else "code", "cpt": {"num_steps": 4}} for e in easy]
    x = context_matrix(contexts)
    assert x.shape == (n, 3)  # cpt.num_steps, then one column per field value
    data = TransitionData(*(np.zeros((0,)),) * 11, episodes=[str(i) for i in range(n)],
                          returns=returns, contexts=contexts)
    eps = np.arange(n)
    by_return = episode_merit(data, eps, "return")
    residual = episode_merit(data, eps, "residual")
    assert np.array_equal(by_return, returns)
    assert np.corrcoef(residual, skill)[0, 1] > 0.95
    assert np.corrcoef(by_return, skill)[0, 1] < 0.5
    # without contexts (one scenario) both rank alike
    plain = TransitionData(*(np.zeros((0,)),) * 11, episodes=data.episodes, returns=returns)
    assert np.array_equal(np.argsort(episode_merit(plain, eps)), np.argsort(returns))


def test_bc_ranks_within_repeated_scenarios_where_choices_explain_little():
    """With scenario effects the recorded choices do not capture (which domains a subset kept),
    the residual ranking is mostly noise; within repeated scenarios (`repeats`) it is not. Only
    repeated scenarios are cloned, each one's best episodes, and the validation split keeps a
    scenario's episodes on one side."""
    from mixagent.policies.training.data import TransitionData
    from mixagent.policies.training.offline import (
        _top_episodes,
        episode_merit,
        episode_prefix,
        split_by_episode,
    )

    rng = np.random.default_rng(1)
    n_sc, reps = 30, 4
    hidden = np.repeat(rng.normal(0, 1.0, n_sc), reps)  # scenario effect, not in the choices
    skill = rng.normal(0, 0.2, n_sc * reps)
    returns = hidden + skill
    names = [f"s{i // reps}" for i in range(n_sc * reps)]
    contexts = [{"target_field": "math"}] * len(names)
    n_ep = len(names)
    # one transition per episode, on the main path
    zeros = (np.zeros((n_ep, 1, 1)), np.zeros((n_ep, 1)), np.ones((n_ep, 1), bool),
             np.zeros((n_ep, 1)), np.zeros((n_ep, 1)), np.zeros(n_ep), np.zeros((n_ep, 1, 1)),
             np.zeros((n_ep, 1)), np.zeros(n_ep))
    data = TransitionData(*zeros, np.arange(n_ep), np.ones(n_ep, bool),
                          episodes=[str(i) for i in range(n_ep)], returns=returns,
                          contexts=contexts, scenarios=names)
    eps = np.arange(n_ep)
    within = episode_merit(data, eps, "scenario")
    residual = episode_merit(data, eps, "residual")
    assert np.corrcoef(within, skill)[0, 1] > 0.8
    assert np.corrcoef(residual, skill)[0, 1] < 0.5
    kept = _top_episodes(data, 0.25, "scenario")  # the best of each scenario's four
    assert sorted(kept.tolist()) == [g * reps + int(np.argmax(returns[g * reps:(g + 1) * reps]))
                                     for g in range(n_sc)]
    # a scenario collected once is never cloned; with none repeated, the residual ranking
    once = TransitionData(*zeros, np.arange(n_ep), np.ones(n_ep, bool), episodes=data.episodes,
                          returns=returns, contexts=contexts, scenarios=[f"u{i}" for i in eps])
    assert np.isnan(episode_merit(once, eps, "scenario")).all()
    assert np.array_equal(_top_episodes(once, 0.5, "scenario"), _top_episodes(once, 0.5, "residual"))
    train, val = split_by_episode(data, 0.2, 0)
    val_sc = {names[e] for e in np.unique(val.episode)}
    assert val_sc and not val_sc & {names[e] for e in np.unique(train.episode)}
    assert len(np.unique(val.episode)) == 24  # whole scenarios, 20% of the episodes
    # a learning curve's share keeps scenarios whole too, nested across shares
    quarter, half = (np.unique(episode_prefix(data, f, 3).episode) for f in (0.25, 0.5))
    assert len(quarter) == 32 and len(half) == 60 and set(quarter) <= set(half)
    assert all(np.isin(np.flatnonzero(np.isin(names, [names[e]])), quarter).all() for e in quarter)


def test_batches_grouped_by_domain_count_change_no_row():
    """Grouped minibatches are padded to their group's largest K only: every row's
    log-likelihood and Q-value equal those of the fully padded batch, and every row is drawn."""
    import torch

    from mixagent.policies.features import IS_TARGET_COLUMN
    from mixagent.policies.network import ActorNet, CriticNet, NetworkConfig
    from mixagent.policies.training.data import TransitionData
    from mixagent.policies.training.offline import _Batches, _tensors

    rng = np.random.default_rng(0)
    n, kmax, fd, fg = 96, 12, 5, 3
    ks = rng.integers(2, kmax + 1, n)
    mask = np.arange(kmax)[None, :] < ks[:, None]
    dom = (rng.normal(size=(n, kmax, fd)) * mask[..., None]).astype(np.float32)
    dom[:, :, IS_TARGET_COLUMN] = (rng.random((n, kmax)) < 0.5) * mask
    act = (rng.uniform(-0.9, 0.9, (n, kmax)) * mask).astype(np.float32)
    glob = rng.normal(size=(n, fg)).astype(np.float32)
    z = np.zeros(n, np.float32)
    d = TransitionData(dom, glob, mask, act, act, z, dom, glob, z, np.arange(n), np.ones(n, bool))
    batches = _Batches(d, np.arange(n), batch_size=16)
    assert len(batches.groups) == 3 and batches.k[0] < batches.k[-1] == kmax
    assert sorted(np.concatenate(batches.groups).tolist()) == list(range(n))
    torch.manual_seed(0)
    actor = ActorNet(fd, fg, NetworkConfig(hidden=16), IS_TARGET_COLUMN)
    critic = CriticNet(fd, fg, NetworkConfig(hidden=16), IS_TARGET_COLUMN, 3.0)
    rows = batches.groups[0]
    full, trimmed = _tensors(d, rows), _tensors(d, rows, batches.k[0])
    assert trimmed["dom"].shape[1] == batches.k[0] < full["dom"].shape[1]
    with torch.no_grad():
        for net_out in (lambda b: actor.log_prob(b["dom"], b["glob"], b["act"], b["mask"]),
                        lambda b: critic(b["dom"], b["glob"], b["act"], b["mask"])):
            torch.testing.assert_close(net_out(trimmed), net_out(full), rtol=1e-5, atol=1e-5)
    b = batches.draw(np.random.default_rng(1))
    assert b["dom"].shape[0] == 16 and b["dom"].shape[1] in batches.k
