"""The policy conformance harness: every baseline and the agent obey the same contract.

Simplex outputs, determinism given a seed, exact save/load round trips (json + safetensors), and
acting on domain spaces of different sizes (K=4 and K'=7) with the same object. Plus the
direction of each online rule, the spec strings, the format's refusal to unpickle, and the
network's permutation equivariance. Synthetic observations (the env's ``make_observation``), no
training: the whole file runs in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixagent.envs.observation import make_observation
from mixagent.errors import ConfigError
from mixagent.policies import (
    ODM,
    DomainSpace,
    DoReMi,
    FixedRatio,
    MixingAgent,
    MixingPolicy,
    RegMix,
    Velocitune,
    fit_regmix,
    load_policy,
    resolve_policy,
)
from mixagent.policies.protocol import BASELINES, policy_kinds


def _regmix() -> MixingPolicy:
    space = DomainSpace.synthetic(4, 2)
    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(4), 40)
    y = x[:, 0] * 0.1 - x[:, 3] * 0.05 + rng.normal(0, 1e-3, 40)
    return fit_regmix(x, y, space, num_candidates=2000, top_k=16)


FACTORIES: dict[str, Callable[[], MixingPolicy]] = {
    "uniform": lambda: resolve_policy("baseline:uniform"),
    "tokens": lambda: resolve_policy("baseline:tokens"),
    "target_only": lambda: resolve_policy("baseline:target_only"),
    "fixed_ratio": lambda: resolve_policy("baseline:fixed_ratio?source=0.3"),
    "doremi": lambda: resolve_policy("baseline:doremi"),
    "odm": lambda: resolve_policy("baseline:odm"),
    "velocitune": lambda: resolve_policy("baseline:velocitune?eta=3"),
    # the benchmark-signal baselines (they act on observations with the optional groups on)
    "alignment": lambda: resolve_policy("baseline:alignment"),
    "odm_benchmark": lambda: resolve_policy("baseline:odm_benchmark"),
    "regmix": _regmix,
    "agent_pool": lambda: _agent("pool", deterministic=True),
    "agent_attention_sampling": lambda: _agent("attention", deterministic=False),
    # headroom's dynamic schedules (registered by the evaluation layer, which uses them)
    "schedule": lambda: _schedule(),
}


def _schedule() -> MixingPolicy:
    from mixagent.evaluation.schedules import SourceSchedule

    return SourceSchedule(shape="ramp", start=0.8, end=0.3, num_steps=4)


def _agent(mixer: str, deterministic: bool) -> MixingAgent:
    torch.manual_seed(0)
    agent = MixingAgent(network={"mixer": mixer, "hidden": 16}, deterministic=deterministic)
    # a random init has a zero output head (uniform weights); perturb it so outputs vary
    with torch.no_grad():
        for p in agent.network.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return agent


def test_every_baseline_and_kind_is_covered():
    assert set(BASELINES) <= set(FACTORIES)
    assert set(policy_kinds()) <= {k.split("_")[0] if k.startswith("agent") else k for k in FACTORIES}


#: kinds that need the optional observation groups (the harness turns them on for these only)
NEEDS_GROUPS = {"alignment", "odm_benchmark"}


def observations(space: DomainSpace, steps: int, seed: int, groups: bool = False
                 ) -> list[dict[str, np.ndarray]]:
    """A plausible observation sequence: targets improve, sources drift up (forgetting).
    ``groups``: with the alignment and benchmark-score columns too (drawn from their own
    generator, so the v1 columns are the same either way)."""
    rng = np.random.default_rng(seed)
    extra = np.random.default_rng(seed + 1)
    k = space.num_domains
    tgt = space.is_target
    base = rng.uniform(3.0, 6.0, k)
    loss, w = base.copy(), np.zeros(k)
    out = []
    for t in range(steps):
        prev = loss.copy()
        if t:
            loss = loss + np.where(tgt, -0.08, 0.03) * rng.uniform(0.5, 1.5, k)
        glob = ((~tgt) * (base - loss) / base).sum() / (~tgt).sum(), (tgt * (base - loss) / base).sum() / tgt.sum()
        align = bench = None
        if groups:
            align = np.stack([np.where(tgt, 0.1, 0.5), np.where(tgt, 0.6, 0.2)], axis=1) \
                + extra.normal(0.0, 0.1, (k, 2))
            bench = (0.5 * glob[0] + extra.normal(0.0, 0.01), 0.8 * glob[1] + extra.normal(0.0, 0.01))
        out.append(make_observation(w, loss, base, prev, tgt.astype(np.float64), t / steps, glob[0], glob[1],
                                    (glob[0] + glob[1]) / 2, 20.0, 1.0, alignment=align,
                                    benchmarks=bench))
        w = rng.dirichlet(np.ones(k))
    return out


def rollout(policy: MixingPolicy, space: DomainSpace, seed: int, steps: int = 5) -> np.ndarray:
    policy.reset(space, seed)
    ws = []
    for obs in observations(space, steps, seed=123, groups=policy.kind in NEEDS_GROUPS):
        ws.append(policy.act(obs))
        policy.feedback(train_loss=3.0)
    return np.stack(ws)


@pytest.fixture(params=sorted(FACTORIES))
def make(request) -> Callable[[], MixingPolicy]:
    return FACTORIES[request.param]


@pytest.mark.parametrize("k", [4, 7])
def test_weights_are_on_the_simplex(make, k):
    ws = rollout(make(), DomainSpace.synthetic(k, 2), seed=0)
    assert ws.shape == (5, k)
    assert np.isfinite(ws).all() and (ws >= 0).all()
    np.testing.assert_allclose(ws.sum(1), 1.0, atol=1e-9)


def test_same_seed_same_weights(make):
    space = DomainSpace.synthetic(5, 2)
    a, b = make(), make()
    np.testing.assert_array_equal(rollout(a, space, seed=3), rollout(b, space, seed=3))
    # the same instance, reset, repeats itself
    np.testing.assert_array_equal(rollout(a, space, seed=3), rollout(a, space, seed=3))


def test_save_load_round_trip(make, tmp_path):
    space = DomainSpace.synthetic(6, 3)
    p = make()
    p.save(tmp_path / "p")
    q = load_policy(tmp_path / "p")
    assert type(q) is type(p) and q.kind == p.kind
    np.testing.assert_array_equal(rollout(p, space, seed=1), rollout(q, space, seed=1))
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    assert cfg["kind"] == p.kind and cfg["format"] == "mixagent.policy/1"
    assert (tmp_path / "p" / "README.md").is_file()


def test_one_instance_acts_on_k_and_k_prime(make):
    p = make()
    w4 = rollout(p, DomainSpace.synthetic(4, 2), seed=0)
    w7 = rollout(p, DomainSpace.synthetic(7, 3), seed=0)
    assert w4.shape[1] == 4 and w7.shape[1] == 7


#: kinds whose actions depend on what they saw since reset (the rest must return {})
STATEFUL = {"doremi", "odm", "velocitune", "alignment", "odm_benchmark", "agent_pool", "agent_attention_sampling", "schedule"}


def test_state_dict_continues_a_run_exactly(make, request):
    """state_dict after N acts -> JSON -> a fresh policy's load_state_dict: identical next actions
    (what CPT resume relies on)."""
    space = DomainSpace.synthetic(5, 2)
    obs = observations(space, 9, seed=123, groups=make().kind in NEEDS_GROUPS)
    losses = np.linspace(3.0, 4.0, space.num_domains)

    def fresh() -> MixingPolicy:
        q = make()
        q.reset(space, 4)
        return q

    def rest(q: MixingPolicy) -> np.ndarray:
        out = []
        for o in obs[5:]:
            out.append(q.act(o))
            q.feedback(train_loss=3.0, domain_train_losses=losses + len(out))
        return np.stack(out)

    p = fresh()
    for i, o in enumerate(obs[:5]):
        p.act(o)
        p.feedback(train_loss=3.0, domain_train_losses=losses - i)  # pending at the save
    state = json.loads(json.dumps(p.state_dict(), allow_nan=False))  # plain JSON values only
    q = fresh()
    q.load_state_dict(state)
    expected = rest(p)
    np.testing.assert_array_equal(rest(q), expected)
    kind = request.node.callspec.params["make"]
    if kind in STATEFUL:  # the state is what carries the run: without it the actions differ
        assert not np.array_equal(rest(fresh()), expected)
    else:
        assert state == {}


def test_act_before_reset_and_wrong_k_are_errors():
    p = resolve_policy("baseline:uniform")
    obs = observations(DomainSpace.synthetic(4, 2), 1, 0)[0]
    with pytest.raises(RuntimeError, match="reset"):
        p.act(obs)
    p.reset(DomainSpace.synthetic(5, 2), 0)
    with pytest.raises(ConfigError, match="4 domains"):
        p.act(obs)


# -- what each static rule means ------------------------------------------------------------------
def test_static_rules():
    space = DomainSpace(("m/a", "m/b", "p/c", "p/d"), ("m", "m", "p", "p"),
                        ("target", "target", "source", "source"), (100, 300, 200, 400))
    obs = observations(space, 1, 0)[0]

    def w(spec):
        p = resolve_policy(spec)
        p.reset(space, 0)
        return p.act(obs)

    np.testing.assert_allclose(w("baseline:uniform"), 0.25)
    np.testing.assert_allclose(w("baseline:tokens"), [0.1, 0.3, 0.2, 0.4])
    np.testing.assert_allclose(w("baseline:target_only"), [0.5, 0.5, 0, 0])
    np.testing.assert_allclose(w("baseline:fixed_ratio?source=0.2"), [0.4, 0.4, 0.1, 0.1])
    np.testing.assert_allclose(w("baseline:fixed_ratio?source=0.2&within=tokens"),
                               [0.2, 0.6, 0.2 / 3, 0.4 / 3])


# -- direction of the online rules ---------------------------------------------------------------
def _obs(loss, base, prev, tgt, t=0.5):
    k = len(loss)
    return make_observation(np.full(k, 1 / k), np.asarray(loss, float), np.asarray(base, float),
                            np.asarray(prev, float), np.asarray(tgt, float), t, 0, 0, 0, 20, 1)


SPACE4 = DomainSpace(("t/a", "t/b", "s/c", "s/d"), ("t", "t", "s", "s"),
                     ("target", "target", "source", "source"), (1, 1, 1, 1))


def test_doremi_upweights_domains_with_excess_loss_over_the_reference():
    p = DoReMi()
    p.reset(SPACE4, 0)
    base = [5.0, 5.0, 4.0, 4.0]
    w0 = p.act(_obs(base, base, base, [1, 1, 0, 0]))
    np.testing.assert_allclose(w0, 0.25)
    # domain 2 forgot (loss above the base), the others improved or held
    for _ in range(3):
        w = p.act(_obs([4.8, 4.9, 4.3, 4.0], base, base, [1, 1, 0, 0]))
    assert w.argmax() == 2 and w[2] > 0.5
    np.testing.assert_allclose(w[[0, 1, 3]], w[0], rtol=1e-9)  # no excess: equal


def test_odm_upweights_high_loss_domains():
    p = ODM()
    p.reset(SPACE4, 0)
    loss = [6.0, 3.0, 3.0, 3.0]
    for _ in range(5):
        w = p.act(_obs(loss, loss, loss, [1, 1, 0, 0]))
    assert w.argmax() == 0 and w[0] > w[1] + 0.03
    # per-domain training losses fed back take precedence over the observation
    p.reset(SPACE4, 0)
    for _ in range(5):
        p.act(_obs(loss, loss, loss, [1, 1, 0, 0]))
        p.feedback(train_loss=3.0, domain_train_losses=np.array([3.0, 3.0, 3.0, 6.0]))
    w = p.act(_obs(loss, loss, loss, [1, 1, 0, 0]))
    assert w[3] > w[1]


def test_velocitune_upweights_slow_learners():
    p = Velocitune()
    p.reset(SPACE4, 0)
    base = [5.0, 5.0, 4.0, 4.0]
    p.act(_obs(base, base, base, [1, 1, 0, 0]))
    # domain 0 reached its target loss (0.9·base), domain 1 is halfway, sources did not move
    for _ in range(3):
        w = p.act(_obs([4.5, 4.75, 4.0, 4.0], base, base, [1, 1, 0, 0]))
    assert w[0] < w[1] < w[2]
    assert abs(w[2] - w[3]) < 1e-9


# -- spec strings and registry -------------------------------------------------------------------
def test_spec_strings():
    p = resolve_policy("baseline:fixed_ratio?source=0.3")
    assert isinstance(p, FixedRatio) and p.params.source == 0.3
    assert isinstance(resolve_policy("doremi"), DoReMi)
    with pytest.raises(ConfigError, match="unknown baseline"):
        resolve_policy("baseline:nope")
    with pytest.raises(ConfigError, match="source"):
        resolve_policy("baseline:fixed_ratio?source=2")
    with pytest.raises(ConfigError, match="fitted mixture"):
        resolve_policy("baseline:regmix")
    assert isinstance(resolve_policy("baseline:regmix?source_share=0.4"), RegMix)


def test_policy_dir_spec_and_format_checks(tmp_path):
    resolve_policy("baseline:odm?smoothing=0.5").save(tmp_path / "odm")
    p = resolve_policy(f"policy:{tmp_path / 'odm'}")
    assert isinstance(p, ODM) and p.params.smoothing == 0.5
    with pytest.raises(ConfigError, match="not a policy directory"):
        load_policy(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"format": "pickle", "kind": "agent"}))
    with pytest.raises(ConfigError, match="format"):
        load_policy(tmp_path / "bad")


def test_mistyped_policy_path_is_not_called_an_unknown_baseline(tmp_path, monkeypatch):
    """Issue 15 #8: a path without ``policy:`` that does not exist says so (not "unknown
    baseline '/path'"); a policy directory named as a baseline is pointed to ``policy:PATH``."""
    monkeypatch.chdir(tmp_path)
    FixedRatio(source=0.3).save(tmp_path / "pols" / "ratio")
    for spec in (str(tmp_path / "pols" / "ratoi"), "pols/ratoi", "policy:pols/ratoi"):
        with pytest.raises(ConfigError, match="does not exist") as err:
            resolve_policy(spec)
        assert "unknown baseline" not in str(err.value) and "pols" in str(err.value)
    with pytest.raises(ConfigError, match="write policy:pols/ratio"):
        resolve_policy("baseline:pols/ratio")
    with pytest.raises(ConfigError, match="policy:pols/ratio"):
        resolve_policy("pols/ratio/config.json")  # a file inside a policy directory
    with pytest.raises(ConfigError, match=r"did you mean baseline:uniform\?"):
        resolve_policy("unifrom")  # a plain word is still checked against the baseline names
    assert isinstance(resolve_policy("pols/ratio"), FixedRatio)


def test_agent_directory_holds_no_pickle(tmp_path):
    _agent("pool", True).save(tmp_path / "a")
    assert sorted(f.name for f in (tmp_path / "a").iterdir()) == ["README.md", "config.json",
                                                                   "model.safetensors"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle


def test_regmix_prefers_what_its_data_rewards():
    p = _regmix()
    w = np.array([p.params.weights[n] for n in DomainSpace.synthetic(4, 2).names])
    assert w[0] > w[3]
    assert p.provenance["fit"]["episodes"] == 40


# -- the network ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mixer", ["pool", "attention"])
def test_actor_and_critic_are_permutation_equivariant_and_k_agnostic(mixer):
    from mixagent.policies.features import IS_TARGET_COLUMN
    from mixagent.policies.network import ActorNet, CriticNet, NetworkConfig

    torch.manual_seed(0)
    cfg = NetworkConfig(hidden=16, mixer=mixer)
    actor = ActorNet(9, 11, cfg, IS_TARGET_COLUMN)
    critic = CriticNet(9, 11, cfg, IS_TARGET_COLUMN, scale=3.0)
    nn_params = dict(actor.named_parameters())
    with torch.no_grad():
        nn_params["head.weight"].normal_()
    for k in (3, 8):
        dom = torch.randn(2, k, 9)
        dom[..., IS_TARGET_COLUMN] = (torch.arange(k) % 2).float()
        glob = torch.randn(2, 11)
        act = torch.rand(2, k) * 2 - 1
        perm = torch.randperm(k)
        mean, _ = actor(dom, glob)
        mean_p, _ = actor(dom[:, perm], glob)
        torch.testing.assert_close(mean[:, perm], mean_p, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(critic(dom, glob, act), critic(dom[:, perm], glob, act[:, perm]),
                                   atol=1e-5, rtol=1e-5)
    # padding: a K=3 space inside a K=5 batch gives the same outputs as unpadded
    dom = torch.randn(1, 3, 9)
    dom[..., IS_TARGET_COLUMN] = torch.tensor([1.0, 0.0, 0.0])
    glob = torch.randn(1, 11)
    padded = torch.cat([dom, torch.randn(1, 2, 9)], dim=1)
    mask = torch.tensor([[True, True, True, False, False]])
    torch.testing.assert_close(actor(dom, glob)[0], actor(padded, glob, mask)[0][:, :3], atol=1e-5, rtol=1e-5)
    a = torch.rand(1, 3) * 2 - 1
    a_pad = torch.cat([a, torch.zeros(1, 2)], dim=1)
    torch.testing.assert_close(critic(dom, glob, a), critic(padded, glob, a_pad, mask), atol=1e-5, rtol=1e-5)


# -- the action map: one definition (mixagent.envs.actions), a torch copy tested equal ----------------
@settings(max_examples=300, deadline=None, derandomize=True)
@given(k=st.integers(1, 600), scale=st.floats(0.1, 10.0), floor=st.floats(0.0, 0.2),
       pad=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_torch_action_map_equals_the_env_map(k, scale, floor, pad, seed):
    """``network.weights_from_actions`` (torch, batched, masked, differentiable) equals
    ``envs.actions.weights_from_action`` with the policy's floor, on any K — including floors
    infeasible for K (``K·floor ≥ 1``), which ``policy_floor`` caps at 0.5/K."""
    from mixagent.envs.actions import policy_floor, weights_from_action
    from mixagent.policies.network import weights_from_actions

    rng = np.random.default_rng(seed)
    a = rng.uniform(-1.0, 1.0, k)
    want = weights_from_action(a, scale, policy_floor(floor, k))
    assert np.isclose(want.sum(), 1.0) and (want >= min(floor, 0.5 / k) - 1e-12).all()
    got = weights_from_actions(torch.from_numpy(a)[None], scale, floor=floor)[0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    # padded into a wider batch with a mask: the real domains get the same weights, padding 0
    padded = torch.from_numpy(np.concatenate([a, rng.uniform(-1, 1, pad)]))[None]
    mask = torch.tensor([[True] * k + [False] * pad])
    got_pad = weights_from_actions(padded, scale, mask, floor)[0].numpy()
    np.testing.assert_allclose(got_pad[:k], want, rtol=1e-9, atol=1e-12)
    assert (got_pad[k:] == 0).all()


@pytest.mark.parametrize("k", [4, 19, 600])
def test_agent_applies_the_env_action_map(k):
    """The agent's weights are the env's map of its deterministic action, with its floor made
    feasible for K; the same numbers as the former private copy (floor capped at 0.5/K, then
    renormalised) up to float noise."""
    from mixagent.envs.actions import policy_floor, weights_from_action

    torch.manual_seed(0)
    agent = MixingAgent(network={"hidden": 8, "layers": 1}, floor=0.002)
    space = DomainSpace.synthetic(k, k // 2)
    agent.reset(space, seed=0)
    obs = observations(space, 1, seed=0)[0]
    w = agent.act(obs)
    agent.reset(space, seed=0)
    dom, glob = (torch.from_numpy(x).unsqueeze(0) for x in agent.history.push(obs))
    with torch.no_grad():
        a = torch.tanh(agent.network(dom, glob)[0])[0].double().numpy()
    np.testing.assert_allclose(w, weights_from_action(a, 3.0, policy_floor(0.002, k)), rtol=0, atol=1e-15)
    z = 3.0 * a
    p = np.exp(z - z.max())
    p /= p.sum()
    f = min(0.002, 0.5 / k)
    old = (1.0 - k * f) * p + f
    np.testing.assert_allclose(w, old / old.sum(), rtol=1e-12, atol=1e-15)
    assert w.min() >= f - 1e-15
