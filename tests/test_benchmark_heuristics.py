"""The zero-tuning baselines on the benchmark signals: ``baseline:alignment`` and
``baseline:odm_benchmark``.

Hand-computed updates on tiny constructed observations, the direction of each rule, the field
weight read off the scores, the refusals when the env does not observe what a rule reads, and
an episode of the micro env with the groups on. (Simplex, determinism, save/load, K and K',
state round trips: the conformance harness in test_policies.py.)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from mixagent.envs.observation import make_observation
from mixagent.errors import ConfigError
from mixagent.policies import ODM, DomainSpace, resolve_policy, run_episode
from mixagent.policies.benchmark_heuristics import balanced_source_weight

#: 2 source domains then 1 target domain
SPACE = DomainSpace(names=("s0", "s1", "t0"), fields=("prose", "prose", "math"),
                    roles=("source", "source", "target"), train_tokens=(100, 300, 100))
IS_TARGET = np.array([0.0, 0.0, 1.0])


def obs(align=None, bench=None, scores=(0.1, 0.3, 0.2), weights=(0.0, 0.0, 0.0)):
    """One observation of SPACE; ``scores`` = (source, target, balanced)."""
    loss = np.array([3.0, 3.5, 4.0])
    return make_observation(np.asarray(weights, dtype=np.float64), loss, loss, loss, IS_TARGET, 0.5,
                            *scores, 20.0, 1.0,
                            alignment=None if align is None else np.asarray(align, dtype=np.float64),
                            benchmarks=bench)


def softmax(z):
    p = np.exp(np.asarray(z) - np.max(z))
    return p / p.sum()


# -- the balanced score's weight on the source field -------------------------------------------------
def test_source_weight_is_read_off_the_scores_for_every_aggregator():
    s, t = 0.1, 0.3
    assert balanced_source_weight(s, t, (s + t) / 2, 0.9) == pytest.approx(0.5)  # mean
    assert balanced_source_weight(s, t, 0.3 * s + 0.7 * t, 0.9) == pytest.approx(0.3)  # weighted
    assert balanced_source_weight(s, t, min(s, t), 0.9) == 1.0  # min: the lagging source
    assert balanced_source_weight(t, s, min(s, t), 0.9) == 0.0  # min: the lagging target
    assert balanced_source_weight(0.0, 0.0, 0.0, 0.9) == 0.9  # a tie keeps the last estimate
    # float32 observations: the ratio is still exact enough
    s32, t32, b32 = (float(np.float32(x)) for x in (0.0123, 0.0456, 0.3 * 0.0123 + 0.7 * 0.0456))
    assert balanced_source_weight(s32, t32, b32, 0.5) == pytest.approx(0.3, abs=1e-5)


# -- baseline:alignment ------------------------------------------------------------------------------
A1 = [[0.5, 0.1], [0.2, 0.2], [0.0, 0.7]]
A2 = [[0.3, 0.0], [0.4, 0.1], [0.1, 0.9]]


def test_alignment_update_by_hand():
    p = resolve_policy("baseline:alignment")
    p.reset(SPACE, 0)
    w1 = p.act(obs(A1))  # mean aggregator in the scores: w = 1/2
    s1 = 0.5 * np.array(A1)[:, 0] + 0.5 * np.array(A1)[:, 1]
    np.testing.assert_allclose(w1, softmax(3.0 * s1), rtol=1e-6)
    w2 = p.act(obs(A2))
    s2 = 0.5 * np.array(A2)[:, 0] + 0.5 * np.array(A2)[:, 1]
    np.testing.assert_allclose(w2, softmax(3.0 * (0.5 * s1 + 0.5 * s2)), rtol=1e-6)
    # the tokens prior multiplies in; beta 0 is the prior itself
    q = resolve_policy("baseline:alignment?initial=tokens&beta=0")
    q.reset(SPACE, 0)
    np.testing.assert_allclose(q.act(obs(A1)), [0.2, 0.6, 0.2], rtol=1e-12)
    q = resolve_policy("baseline:alignment?initial=tokens")
    q.reset(SPACE, 0)
    np.testing.assert_allclose(q.act(obs(A1)), softmax(np.log([0.2, 0.6, 0.2]) + 3.0 * s1), rtol=1e-6)


def test_alignment_follows_the_field_the_balanced_score_needs():
    # min aggregator, target lagging: all the weight of the score on the target field
    align = [[0.6, 0.1], [0.6, 0.1], [0.1, 0.6]]
    p = resolve_policy("baseline:alignment")
    p.reset(SPACE, 0)
    w = p.act(obs(align, scores=(0.3, 0.1, 0.1)))
    np.testing.assert_allclose(w, softmax(3.0 * np.array([0.1, 0.1, 0.6])), rtol=1e-6)
    assert w[2] > w[0] == pytest.approx(w[1])
    # source lagging: the source domains lead
    p.reset(SPACE, 0)
    w = p.act(obs(align, scores=(0.1, 0.3, 0.1)))
    assert w[0] > w[2]
    # and a fixed source_weight overrides the scores
    q = resolve_policy("baseline:alignment?source_weight=0")
    q.reset(SPACE, 0)
    np.testing.assert_allclose(q.act(obs(align, scores=(0.1, 0.3, 0.1))), softmax(3.0 * np.array([0.1, 0.1, 0.6])),
                               rtol=1e-6)


def test_a_domain_with_higher_target_alignment_gets_more_weight():
    p = resolve_policy("baseline:alignment?source_weight=0.2")
    p.reset(SPACE, 0)
    w = p.act(obs([[0.3, 0.2], [0.3, 0.5], [0.3, 0.4]]))
    assert w[1] > w[2] > w[0]


def test_holding_field_shares_tilts_only_within_each_field():
    p = resolve_policy("baseline:alignment?beta=30&hold_field_shares=true")
    p.reset(SPACE, 0)
    w = p.act(obs(A1))
    s = 0.5 * np.array(A1)[:, 0] + 0.5 * np.array(A1)[:, 1]
    # the prior (uniform) gives the source field 2/3 and the target 1/3, whatever the alignment
    np.testing.assert_allclose(w, [*(2 / 3 * softmax(30.0 * s[:2])), 1 / 3], rtol=1e-6)
    # the unheld rule at the same beta moves weight across fields (here onto the target domain)
    q = resolve_policy("baseline:alignment?beta=30")
    q.reset(SPACE, 0)
    assert q.act(obs(A1))[2] > 0.5
    # with a tokens prior, the fields keep the tokens' shares
    r = resolve_policy("baseline:alignment?beta=30&hold_field_shares=true&initial=tokens")
    r.reset(SPACE, 0)
    np.testing.assert_allclose(r.act(obs(A1))[:2].sum(), 0.8, rtol=1e-9)
    # written only when on, so the default rule's config (and the policy id keying cached
    # evaluation episodes) is what it was before the option; a saved held rule loads as held
    assert "hold_field_shares" not in q.config()["params"]
    assert p.config()["params"]["hold_field_shares"] is True
    again = type(p).from_config(p.config(), {})
    again.reset(SPACE, 0)
    np.testing.assert_array_equal(again.act(obs(A1)), w)


def test_a_set_source_share_is_the_first_mixture_and_the_held_share():
    """``source_share`` sets the source field's share of the prior: the first mixture of every
    online rule, and the share a held alignment rule keeps at every decision."""
    held = resolve_policy("baseline:alignment?beta=30&hold_field_shares=true&source_share=0.7")
    held.reset(SPACE, 0)
    s1 = 0.5 * np.array(A1)[:, 0] + 0.5 * np.array(A1)[:, 1]
    np.testing.assert_allclose(held.act(obs(A1)), [*(0.7 * softmax(30.0 * s1[:2])), 0.3], rtol=1e-6)
    assert held.act(obs(A2))[:2].sum() == pytest.approx(0.7)
    # by tokens within each field: 0.7 split 1:3 over the source domains
    tok = resolve_policy("baseline:alignment?beta=0&hold_field_shares=true&source_share=0.7&initial=tokens")
    tok.reset(SPACE, 0)
    np.testing.assert_allclose(tok.act(obs(A1)), [0.175, 0.525, 0.3], rtol=1e-12)
    # any online rule starts from it (ODM's first decision is its prior)
    odm = resolve_policy("baseline:odm?source_share=0.2")
    odm.reset(SPACE, 0)
    np.testing.assert_allclose(odm.act(obs()), [0.1, 0.1, 0.8], rtol=1e-12)
    # written only when set: the rules' configs and policy ids are what they were before it
    for spec in ("baseline:odm", "baseline:alignment?beta=30", "baseline:doremi"):
        assert "source_share" not in resolve_policy(spec).config()["params"]
    assert held.config()["params"]["source_share"] == 0.7
    again = type(held).from_config(held.config(), {})
    again.reset(SPACE, 0)
    np.testing.assert_allclose(again.act(obs(A1))[:2].sum(), 0.7, rtol=1e-12)
    with pytest.raises(ConfigError, match="source_share"):
        resolve_policy("baseline:odm?source_share=1.5")


def test_alignment_state_round_trip_keeps_the_estimates():
    p = resolve_policy("baseline:alignment")
    p.reset(SPACE, 0)
    p.act(obs(A1, scores=(0.3, 0.1, 0.1)))  # min: source weight estimate 0
    state = p.state_dict()
    assert state["source_weight_est"] == 0.0 and state["t"] == 1
    q = resolve_policy("baseline:alignment")
    q.reset(SPACE, 0)
    q.load_state_dict(state)
    tie = obs(A2, scores=(0.2, 0.2, 0.2))  # a tie: the saved estimate must be used
    np.testing.assert_array_equal(q.act(tie), p.act(tie))


def test_alignment_refuses_observations_without_alignment():
    p = resolve_policy("baseline:alignment")
    p.reset(SPACE, 0)
    with pytest.raises(ConfigError, match=r"does not observe.*observation: \{features: \[alignment\]\}"):
        p.act(obs())
    with pytest.raises(ConfigError, match="does not observe"):
        p.act(obs(bench=(0.0, 0.0)))  # benchmark scores alone are not enough


# -- baseline:odm_benchmark --------------------------------------------------------------------------
def _eps(t: int, k: int = 3) -> float:
    return min(1.0 / k, math.sqrt(math.log(k) / (k * max(t, 1))))


def _exp3(rewards: np.ndarray, t: int) -> np.ndarray:
    step = (t - 1) * 10
    p = softmax(_eps(step - 10) * rewards)
    return (1 - 3 * _eps(step)) * p + _eps(step)


def test_odm_benchmark_update_by_hand_with_field_credit():
    p = resolve_policy("baseline:odm_benchmark")
    p.reset(SPACE, 0)
    w1 = p.act(obs(bench=(0.0, 0.0), scores=(0.0, 0.0, 0.0)))
    np.testing.assert_array_equal(w1, np.full(3, 1 / 3))  # no feedback yet: the initial mixture
    w2 = p.act(obs(bench=(-0.02, 0.04), scores=(-0.01, 0.05, 0.02)))  # mean: w = 1/2
    # gain per field: w_f * dB_f / max|dB| = (0.5 * -0.02/0.04, 0.5 * 1) = (-0.25, 0.5); the source
    # change is shared by s0, s1 (played 1/3 each), the target's by t0; importance-weighted by 1/3
    r = np.array([-0.25 / 2, -0.25 / 2, 0.5]) / (1 / 3)
    rewards = 0.1 * r  # moving average from 0, alpha 0.9
    np.testing.assert_allclose(w2, _exp3(rewards, 2), rtol=1e-6)
    assert w2[2] > w2[0] == pytest.approx(w2[1])
    # next decision: the scale stays the largest change so far; the played mixture is w2
    w3 = p.act(obs(bench=(-0.01, 0.05), scores=(-0.005, 0.06, 0.0275)))
    gain = np.array([0.5 * 0.01 / 0.04, 0.5 * 0.01 / 0.04])
    share = np.array([w2[0] / (w2[0] + w2[1]), w2[1] / (w2[0] + w2[1]), 1.0])
    r = np.array([gain[0], gain[0], gain[1]]) * share / w2
    np.testing.assert_allclose(w3, _exp3(0.9 * rewards + 0.1 * r, 3), rtol=1e-5)


def test_odm_benchmark_alignment_credit_by_hand():
    align = [[0.4, 0.0], [0.2, 0.3], [-0.1, 0.6]]
    p = resolve_policy("baseline:odm_benchmark")  # auto: alignment credit, since it is observed
    p.reset(SPACE, 0)
    p.act(obs(align, bench=(0.0, 0.0), scores=(0.0, 0.0, 0.0)))
    w2 = p.act(obs(align, bench=(0.01, 0.04), scores=(0.01, 0.05, 0.03)))
    gain = np.array([0.5 * 0.01 / 0.04, 0.5])
    pi = np.full(3, 1 / 3)
    c_src = pi * np.array([0.4, 0.2, 0.0]) / (pi * np.array([0.4, 0.2, 0.0])).sum()
    c_tgt = pi * np.array([0.0, 0.3, 0.6]) / (pi * np.array([0.0, 0.3, 0.6])).sum()
    r = (gain[0] * c_src + gain[1] * c_tgt) / pi
    np.testing.assert_allclose(w2, _exp3(0.1 * r, 2), rtol=1e-5)
    # field credit ignores the alignment columns
    q = resolve_policy("baseline:odm_benchmark?credit=field")
    q.reset(SPACE, 0)
    q.act(obs(align, bench=(0.0, 0.0), scores=(0.0, 0.0, 0.0)))
    w2f = q.act(obs(align, bench=(0.01, 0.04), scores=(0.01, 0.05, 0.03)))
    r = np.array([gain[0] / 2, gain[0] / 2, gain[1]]) / pi
    np.testing.assert_allclose(w2f, _exp3(0.1 * r, 2), rtol=1e-5)


def test_odm_benchmark_without_a_change_stays_put_and_resumes_exactly():
    p = resolve_policy("baseline:odm_benchmark")
    p.reset(SPACE, 0)
    for _ in range(3):  # no benchmark change: zero rewards, ODM's epsilon-mixture of uniform
        w = p.act(obs(bench=(0.0, 0.0), scores=(0.0, 0.0, 0.0)))
    np.testing.assert_allclose(w, np.full(3, 1 / 3))
    p.act(obs(bench=(0.01, 0.02), scores=(0.01, 0.02, 0.015)))
    state = p.state_dict()
    assert state["prev_benchmarks"] == pytest.approx([0.01, 0.02]) and state["reward_scale"] == pytest.approx(0.02)
    q = resolve_policy("baseline:odm_benchmark")
    q.reset(SPACE, 0)
    q.load_state_dict(state)
    nxt = obs(bench=(0.0, 0.05), scores=(0.0, 0.05, 0.025))
    np.testing.assert_array_equal(q.act(nxt), p.act(nxt))


def test_odm_benchmark_refusals():
    p = resolve_policy("baseline:odm_benchmark")
    p.reset(SPACE, 0)
    with pytest.raises(ConfigError, match=r"benchmark score.*observation: \{features: \[benchmark_scores\]\}"):
        p.act(obs())
    with pytest.raises(ConfigError, match="benchmark_scores"):
        p.act(obs(A1))  # alignment alone is not enough
    q = resolve_policy("baseline:odm_benchmark?credit=alignment")
    q.reset(SPACE, 0)
    q.act(obs(bench=(0.0, 0.0)))  # the first decision credits nothing
    with pytest.raises(ConfigError, match=r"credit=alignment.*features: \[alignment\]"):
        q.act(obs(bench=(0.01, 0.0)))
    with pytest.raises(ConfigError, match="credit"):
        resolve_policy("baseline:odm_benchmark?credit=nope")


def test_odm_itself_is_untouched_by_the_benchmark_variant():
    """ODM's default is the loss-rewarded bandit, by hand (existing reports depend on it)."""
    p = ODM()
    p.reset(SPACE, 0)
    loss = np.array([3.0, 3.5, 4.0])
    p.act(obs(bench=(0.5, 0.5), align=A1))  # extra groups are ignored
    w = p.act(obs(bench=(0.9, 0.1), align=A2))
    np.testing.assert_allclose(w, _exp3(0.1 * loss / (1 / 3), 2), rtol=1e-6)
    assert "credit" not in p.params.model_dump()


# -- an episode of the micro env with the groups on ---------------------------------------------------
@pytest.fixture(scope="module")
def micro_env(micro_spec: Path, micro_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """envs/micro.yaml with its scored task in the target's reward and both groups observed."""
    from mixagent.data.builtin import TASK_NAME
    from mixagent.envs.proxy_env import ProxyCPTEnv

    d = yaml.safe_load(micro_spec.read_text(encoding="utf-8"))
    d["eval"]["tasks"] = [{"name": TASK_NAME, "examples": 8}]
    d["reward"]["target_terms"] = {"loss": 1.0, f"{TASK_NAME}.answer_loss": 0.5}
    d["observation"] = {"features": ["benchmark_scores", "alignment"]}
    path = micro_spec.with_name("micro-bench-heuristics.yaml")
    path.write_text(yaml.safe_dump(d), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXAGENT_CACHE", str(micro_cache))
        env = ProxyCPTEnv(path, progress=False)
    yield env
    env.close()


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["baseline:alignment", "baseline:odm_benchmark",
                                  "baseline:odm_benchmark?credit=field"])
def test_an_env_episode_gives_valid_weights_every_step(micro_env, spec):
    runs = []
    for _ in range(2):
        res = run_episode(resolve_policy(spec), micro_env, seed=3)
        w = res.weights
        assert w.shape == (micro_env.num_steps, micro_env.num_domains)
        assert np.isfinite(w).all() and (w >= 0).all()
        np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-9)
        runs.append(w)
    np.testing.assert_array_equal(runs[0], runs[1])  # deterministic given the seed
    if spec == "baseline:alignment":  # it acts on the base's alignment from the first decision
        assert not np.allclose(runs[0][0], 1.0 / micro_env.num_domains)
