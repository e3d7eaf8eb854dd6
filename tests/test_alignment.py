"""The optional observation groups: gradient alignment per domain, benchmark scores per field.

A domain whose text is the benchmark's text aligns more than an unrelated one; measuring leaves
the model and the RNG as they were; with the groups on, both environment checkers pass and the
v1 columns are unchanged; with them off, nothing is (spaces, spec dumps, agents).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mixagent.envs.observation import (
    ALIGNMENT_FEATURES,
    BENCHMARK_FEATURES,
    DOMAIN_FEATURES,
    GLOBAL_FEATURES,
    feature_layout,
)
from mixagent.envs.spec import ObservationSpec, RewardSpec

pytestmark = pytest.mark.usefixtures("micro_cache_env")

FEATURES = ["alignment", "benchmark_scores"]
ROOT = Path(__file__).resolve().parents[1]


# -- the constructed case ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(synthetic_datadir: Path):
    """The 4-domain synthetic data directory, its evaluator and a tiny Llama trained a little
    on all of it (so its gradients are a language model's, not an initialisation's)."""
    from mixagent.data.manifest import DataDir
    from mixagent.proxy.config import EvalSpec, ModelSpec
    from mixagent.proxy.evaluation import Evaluator
    from mixagent.proxy.model import build_hf_config, build_model
    from mixagent.proxy.training import lm_loss

    data = DataDir(synthetic_datadir)
    domains = data.domain_names
    seq = 32
    tok = data.manifest.tokenizer
    cfg = build_hf_config(ModelSpec(config={"hidden_size": 32, "num_hidden_layers": 1,
                                            "num_attention_heads": 2, "num_key_value_heads": 2,
                                            "intermediate_size": 64}),
                          tok.vocab_size, seq, tok.eos_token_id)
    model = build_model(cfg, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rows = [np.asarray(data.tokens(d, "train")[: 16 * seq], dtype=np.int64).reshape(16, seq)
            for d in domains]
    batch = torch.from_numpy(np.concatenate(rows))
    with torch.random.fork_rng():
        for _ in range(30):
            lm_loss(model, batch).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    ev = Evaluator(data, domains, EvalSpec(sequences_per_domain=4, batch_size=16), seq,
                   torch.device("cpu"))
    return data, domains, ev, model


def _text_benchmark(ev, domain: int) -> None:
    """Make the evaluator's ``bench`` a text benchmark made of one domain's held-out text."""
    rows = (ev.domain_ids == domain).nonzero(as_tuple=True)[0]
    x = ev.tokens[rows]
    w = torch.full((x.shape[0], x.shape[1] - 1), 1.0 / (x.shape[0] * (x.shape[1] - 1)))
    ev.benchmark_tensors = lambda name: (x, w)


@pytest.mark.parametrize("params", ["head", "all"])
def test_the_benchmarks_own_domain_aligns_more_than_an_unrelated_one(synthetic, params):
    from mixagent.proxy.alignment import Aligner, FieldObjective

    data, domains, ev, model = synthetic
    math, prose = domains.index("math/y"), domains.index("prose/a")
    _text_benchmark(ev, math)
    try:
        aligner = Aligner(data, domains, ev, [FieldObjective({"bench": 1.0})], sequences=4,
                          params=params, seq_len=32, batch_size=8)
        a = aligner(model)
    finally:
        del ev.benchmark_tensors
    assert a.shape == (len(domains), 1)
    assert np.all(np.abs(a) <= 1.0)
    assert a[math, 0] > a[prose, 0] + 0.1, a[:, 0]
    assert a[math, 0] == a[:, 0].max()


def test_a_field_without_a_benchmark_aligns_with_its_held_out_loss(synthetic):
    from mixagent.proxy.alignment import Aligner, FieldObjective

    data, domains, ev, model = synthetic
    code = domains.index("code/x")
    aligner = Aligner(data, domains, ev, [FieldObjective({}, (code,))], sequences=4,
                      params="head", seq_len=32, batch_size=8)
    a = aligner(model)[:, 0]
    assert a[code] == a.max() and a[code] > a[domains.index("prose/b")] + 0.1


def test_alignment_changes_nothing_and_repeats_exactly(synthetic):
    from mixagent.proxy.alignment import Aligner, FieldObjective

    data, domains, ev, model = synthetic
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    rng = torch.get_rng_state()
    aligner = Aligner(data, domains, ev, [FieldObjective({}, (0, 1)), FieldObjective({}, (2, 3))],
                      sequences=3, params="all", seq_len=32, batch_size=8)
    a, b = aligner(model), aligner(model)
    assert a.tobytes() == b.tobytes()
    assert torch.equal(rng, torch.get_rng_state())
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_benchmark_tensors_give_the_answer_loss(micro_spec: Path):
    """The accessor's weighted NLL is exactly what the evaluator reports as ``answer_loss``."""
    import torch.nn.functional as F

    from mixagent.data.builtin import TASK_NAME
    from mixagent.envs.setup import build_engine, resolve_spec

    d = yaml.safe_load(micro_spec.read_text(encoding="utf-8"))
    d["eval"]["tasks"] = [{"name": TASK_NAME, "examples": 8}]
    path = micro_spec.with_name("micro-bench.yaml")
    path.write_text(yaml.safe_dump(d), encoding="utf-8")
    eng = build_engine(resolve_spec(path), progress=False)
    x, w = eng.evaluator.benchmark_tensors(TASK_NAME)
    assert w.shape == (x.shape[0], x.shape[1] - 1) and float(w.sum()) == pytest.approx(1.0)
    with torch.no_grad():
        logits = eng.model(input_ids=x[:, :-1], use_cache=False).logits
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                              reduction="none").view(w.shape)
    assert float((nll * w).sum()) == pytest.approx(eng.base_eval.tasks[TASK_NAME]["answer_loss"],
                                                   rel=1e-5)
    with pytest.raises(KeyError, match="not evaluated"):
        eng.evaluator.benchmark_tensors("nope")


# -- the environment -----------------------------------------------------------------------------
def _spec_with(micro_spec: Path, name: str, observation: dict | None) -> Path:
    from mixagent.data.builtin import TASK_NAME

    d = yaml.safe_load(micro_spec.read_text(encoding="utf-8"))
    d["eval"]["tasks"] = [{"name": TASK_NAME, "examples": 8}]
    d["reward"]["target_terms"] = {"loss": 1.0, f"{TASK_NAME}.answer_loss": 0.5}
    if observation is not None:
        d["observation"] = observation
    path = micro_spec.with_name(name)
    path.write_text(yaml.safe_dump(d), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def envs(micro_spec: Path, micro_cache: Path):
    """The micro env with a scored task, without and with the optional groups."""
    from mixagent.envs.proxy_env import ProxyCPTEnv

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXAGENT_CACHE", str(micro_cache))
        off = ProxyCPTEnv(_spec_with(micro_spec, "micro-off.yaml", None), progress=False)
        on = ProxyCPTEnv(_spec_with(micro_spec, "micro-on.yaml", {"features": FEATURES}),
                         progress=False)
    yield off, on
    off.close()
    on.close()


def _episode(env, seed: int = 4):
    rng = np.random.default_rng(1)
    obs, _ = env.reset(seed=seed)
    out = [(obs, 0.0)]
    for _ in range(env.num_steps):
        obs, r, *_ = env.step(rng.uniform(-1, 1, env.num_domains).astype(np.float32))
        out.append((obs, r))
    return out


def test_groups_add_columns_and_leave_v1_columns_and_rewards_unchanged(envs):
    off, on = envs
    assert on.observation_space["domains"].shape == (on.num_domains, len(DOMAIN_FEATURES) + 2)
    assert on.observation_space["global"].shape == (len(GLOBAL_FEATURES) + 2,)
    assert on.layout.domains == (*DOMAIN_FEATURES, *ALIGNMENT_FEATURES)
    assert on.layout.globals == (*GLOBAL_FEATURES, *BENCHMARK_FEATURES)
    nd, ng = len(DOMAIN_FEATURES), len(GLOBAL_FEATURES)
    a, b = _episode(off), _episode(on)
    for (o1, r1), (o2, r2) in zip(a, b, strict=True):
        assert o1["domains"].tobytes() == np.ascontiguousarray(o2["domains"][:, :nd]).tobytes()
        assert o1["global"].tobytes() == o2["global"][:ng].tobytes()
        assert r1 == r2
    # the global benchmark scores: the target field's answer_loss term, the source has none
    last = b[-1][0]["global"]
    info_terms = on.transitions.state.scores.terms
    assert last[ng] == 0.0
    assert last[ng + 1] == np.float32(info_terms["target.math_exact_match.answer_loss"])
    # the alignment of the reset observation is the base's, and it moves with training
    assert np.array_equal(b[0][0]["domains"][:, nd:], on.engine.base_alignment.astype(np.float32))
    assert not np.array_equal(b[0][0]["domains"][:, nd:], b[-1][0]["domains"][:, nd:])
    assert np.all(np.abs(b[-1][0]["domains"][:, nd:]) <= 1.0)
    # and an episode repeats exactly (the measurement changes no state)
    again = _episode(on)
    assert all(x[0]["domains"].tobytes() == y[0]["domains"].tobytes() for x, y in zip(b, again, strict=True))


def test_features_off_is_the_v1_layout_and_hash():
    from mixagent.envs.observation import V1_LAYOUT, observation_space

    assert ObservationSpec().model_dump(mode="json") == {"loss_max": 20.0, "score_max": 1.0}
    assert ObservationSpec(features=[]).model_dump() == ObservationSpec().model_dump()
    assert feature_layout([]) == V1_LAYOUT and V1_LAYOUT.domains == DOMAIN_FEATURES
    assert observation_space(3, 20.0, 1.0) == observation_space(3, 20.0, 1.0, V1_LAYOUT)
    # columns come in the documented order whatever order the groups are listed in
    assert feature_layout(["benchmark_scores", "alignment"]) == feature_layout(FEATURES)
    with pytest.raises(ValueError, match="not in features"):
        ObservationSpec(alignment={"sequences": 6})
    with pytest.raises(ValueError, match="twice"):
        ObservationSpec(features=["alignment", "alignment"])


def test_gymnasium_check_env_with_the_groups_on(envs):
    from gymnasium.utils.env_checker import check_env

    check_env(envs[1], skip_render_check=True)


@pytest.mark.filterwarnings("ignore:Your observation domains has an unconventional shape")
def test_sb3_check_env_with_the_groups_on(envs):
    from stable_baselines3.common.env_checker import check_env

    check_env(envs[1], warn=True)


def test_benchmark_scores_and_objectives_follow_the_reward_terms():
    from mixagent.envs.scoring import Scores
    from mixagent.envs.transition import alignment_objectives, benchmark_scores

    reward = RewardSpec(source_terms={"loss": 1.0},
                        target_terms={"loss": 1.0, "qa.answer_loss": 0.5, "qa.exact_match": 0.25,
                                      "doc.loss": 0.25})
    s = Scores(0.0, 0.0, 0.0, {"source.loss": -0.1, "target.loss": 0.2,
                               "target.qa.answer_loss": 0.4, "target.qa.exact_match": 0.1,
                               "target.doc.loss": -0.2})
    src, tgt = benchmark_scores(s, reward)
    assert src == 0.0 and tgt == pytest.approx((0.5 * 0.4 + 0.25 * 0.1 - 0.25 * 0.2) / 1.0)
    obj = alignment_objectives(reward, np.array([False, False, True]))
    assert obj[0].benchmarks == {} and obj[0].domains == (0, 1)
    assert obj[1].benchmarks == {"qa": 0.75, "doc": 0.25} and obj[1].domains == (2,)


@pytest.mark.parametrize("reward, expected", [
    (RewardSpec(), (0.5, 0.0, 0.0, 0.0)),
    (RewardSpec(aggregator="weighted", source_weight=0.7,
                source_terms={"prose_cloze.answer_logprob": 1.0},
                target_terms={"qa.answer_logprob": 1.0, "loss": 0.5}), (0.7, 0.0, 1.0, 2 / 3)),
    (RewardSpec(aggregator="min", source_weight=0.9, target_terms={"qa.exact_match": 0.25, "loss": 0.75}),
     (0.5, 1.0, 0.0, 0.25)),
])
def test_objective_features_say_what_the_reward_asks_for(reward, expected):
    from mixagent.envs.transition import objective_features

    assert objective_features(reward) == pytest.approx(expected)


def test_the_objective_group_is_constant_over_a_run_and_changes_nothing_else(envs, micro_spec: Path,
                                                                           micro_cache: Path):
    """``objective`` appends the reward's weighting after the other global columns, the same at
    reset and at every step; the other columns and the rewards are those of the env without it."""
    from gymnasium.utils.env_checker import check_env

    from mixagent.envs.observation import OBJECTIVE_FEATURES
    from mixagent.envs.proxy_env import ProxyCPTEnv
    from mixagent.envs.transition import objective_features

    on = envs[1]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXAGENT_CACHE", str(micro_cache))
        obj = ProxyCPTEnv(_spec_with(micro_spec, "micro-objective.yaml",
                                     {"features": [*FEATURES, "objective"]}), progress=False)
    try:
        assert obj.layout.globals == (*GLOBAL_FEATURES, *BENCHMARK_FEATURES, *OBJECTIVE_FEATURES)
        want = np.asarray(objective_features(obj.env_spec.reward), dtype=np.float32)
        a, b = _episode(on), _episode(obj)
        ng = len(GLOBAL_FEATURES) + len(BENCHMARK_FEATURES)
        for (o1, r1), (o2, r2) in zip(a, b, strict=True):
            assert o1["domains"].tobytes() == o2["domains"].tobytes() and r1 == r2
            assert o1["global"].tobytes() == o2["global"][:ng].tobytes()
            assert o2["global"][ng:].tobytes() == want.tobytes()
        check_env(obj, skip_render_check=True)
        # no shipped policy reads it unasked: every baseline and agent v2.1 act alike with it on
        from mixagent.policies.protocol import BASELINES, DomainSpace, resolve_policy

        space = DomainSpace.from_env(obj)
        specs = [f"baseline:{n}" for n in BASELINES if n != "regmix"]  # regmix: a fitted static mixture
        specs += ["baseline:alignment?beta=30&hold_field_shares=true&source_share=0.7",
                  f"policy:{ROOT / 'policies' / 'mixagent-agent-v2.1'}"]
        for spec in specs:
            acts = []
            for episode in (a, b):
                policy = resolve_policy(spec)
                policy.reset(space, 0)
                acts.append([policy.act(o) for o, _ in episode])
            for x, y in zip(*acts, strict=True):
                assert x.tobytes() == y.tobytes(), spec
    finally:
        obj.close()
    from mixagent.policies.features import FeatureSpec, global_input_names

    spec = FeatureSpec(observation=["objective"])
    assert spec.extra.globals == OBJECTIVE_FEATURES and spec.extra.domains == ()
    assert global_input_names(spec)[-len(OBJECTIVE_FEATURES):] == list(OBJECTIVE_FEATURES)


# -- agents --------------------------------------------------------------------------------------
def test_a_v1_agent_acts_alike_on_extended_observations_and_an_agent_can_use_them(envs):
    from mixagent.errors import ConfigError
    from mixagent.policies.agent import AgentParams, MixingAgent
    from mixagent.policies.features import FeatureSpec, domain_input_names, global_input_names
    from mixagent.policies.protocol import DomainSpace

    on = envs[1]
    nd, ng = len(DOMAIN_FEATURES), len(GLOBAL_FEATURES)
    ep = _episode(on)
    v1_obs = [{"domains": o["domains"][:, :nd].copy(), "global": o["global"][:ng].copy()} for o, _ in ep]
    space = DomainSpace.from_env(on)

    def run(agent, observations):
        agent.reset(space, 0)
        return [agent.act(o) for o in observations]

    v1 = MixingAgent(AgentParams())
    assert AgentParams().model_dump() == AgentParams(features=FeatureSpec()).model_dump()
    assert "observation" not in AgentParams().model_dump()["features"]
    for x, y in zip(run(v1, v1_obs), run(v1, [o for o, _ in ep]), strict=True):
        assert x.tobytes() == y.tobytes()

    spec = FeatureSpec(observation=FEATURES)
    assert domain_input_names(spec)[-2:] == list(ALIGNMENT_FEATURES)
    assert global_input_names(spec)[-2:] == list(BENCHMARK_FEATURES)
    agent = MixingAgent(AgentParams(features=spec))
    w = run(agent, [o for o, _ in ep])
    assert all(np.isclose(x.sum(), 1.0) for x in w)
    with pytest.raises(ConfigError, match=r"observation\.features"):
        run(agent, v1_obs)


def test_batched_branching_measures_each_branchs_alignment(envs):
    """Folded K-branch training reproduces ``env.step`` with the groups on (its own check,
    which compares observations, passes) and each branch observes its own model's alignment."""
    from mixagent.trajectories.branching import BranchConfig, Brancher

    on = envs[1]
    on.reset(seed=2)
    rng = np.random.default_rng(8)
    br = Brancher(on, BranchConfig(k=2, batched="auto"))
    acts = [rng.uniform(-1, 1, on.num_domains).astype(np.float32) for _ in range(2)]
    trs, chosen = br.step(acts, 0)
    assert br.fallback_reason is None and all(t.batched for t in trs) and chosen == 0
    nd = len(DOMAIN_FEATURES)
    assert not np.array_equal(trs[0].obs["domains"][:, nd:], trs[1].obs["domains"][:, nd:])
    # the env continues from branch 0: its next observation is that branch's
    assert np.array_equal(on.transitions.observation()["domains"], trs[0].obs["domains"])


def test_trajectory_cards_record_the_layout():
    from mixagent.trajectories.schema import env_observation_layout, observation_layout

    v1 = observation_layout(list(DOMAIN_FEATURES), list(GLOBAL_FEATURES), 3)
    assert env_observation_layout([], 3) == v1
    on = env_observation_layout(["benchmark_scores", "alignment"], 3)
    assert on["domains"] == {"shape": [3, 7], "features": [*DOMAIN_FEATURES, *ALIGNMENT_FEATURES]}
    assert on["global"]["features"] == [*GLOBAL_FEATURES, *BENCHMARK_FEATURES]
    assert on["size"] == 3 * 7 + 6 and on["groups"] == ["alignment", "benchmark_scores"]


# -- the production CPT run ------------------------------------------------------------------------
def test_a_cpt_run_observes_the_alignment_the_engine_would(synthetic_datadir: Path, model_dir: Path,
                                                           tmp_path: Path, caplog) -> None:
    """The controller measures the alignment on the Trainer's model with the engine's Aligner:
    at step 0 (the untouched model) it equals a direct measurement; a resumed run rebuilds its
    observations from the checkpoint without a mismatch."""
    import logging

    from conftest import cpt_config, stop_at
    from transformers import AutoModelForCausalLM, TrainerCallback

    from mixagent.cpt.run import run_cpt
    from mixagent.cpt.state import load_state
    from mixagent.data.manifest import DataDir
    from mixagent.envs.transition import alignment_objectives
    from mixagent.proxy.alignment import Aligner
    from mixagent.proxy.config import EvalSpec
    from mixagent.proxy.evaluation import Evaluator

    class Logs(TrainerCallback):
        def __init__(self) -> None:
            self.logs: list[dict] = []

        def on_log(self, args, state, control, logs=None, **kwargs) -> None:
            self.logs.append(dict(logs or {}))

    obs = {"features": FEATURES, "alignment": {"sequences": 3}}
    out = tmp_path / "run"
    rec = Logs()
    summary = run_cpt(cpt_config(synthetic_datadir, model_dir, out, max_steps=6, save_steps=3,
                                 observation=obs), callbacks=[stop_at(3), rec])
    assert any("mixture/align_target/math/y" in e for e in rec.logs)  # the Trainer's loggers get it
    state = load_state(out / "checkpoint-3")
    dom = np.asarray(state.decisions[0].observation["domains"], dtype=np.float32)
    glob = np.asarray(state.decisions[0].observation["global"], dtype=np.float32)
    assert dom.shape == (len(summary["domains"]), 7) and glob.shape == (6,)

    data = DataDir(synthetic_datadir)
    names = summary["domains"]
    roles = np.array([r == "target" for r in summary["roles"]])
    ev = Evaluator(data, names, EvalSpec(sequences_per_domain=2, batch_size=16), 32,
                   torch.device("cpu"))
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    direct = Aligner(data, names, ev, alignment_objectives(RewardSpec(), roles), 3, "head", 32,
                     16)(model)
    assert dom[:, 5:].tobytes() == direct.astype(np.float32).tobytes()

    caplog.set_level(logging.INFO, logger="mixagent.cpt.controller")
    resumed = run_cpt(cpt_config(synthetic_datadir, model_dir, out, max_steps=6, save_steps=3,
                                 observation=obs, resume=True))
    assert len(resumed["decisions"]) == 2
    assert not any("differs" in r.getMessage() for r in caplog.records)


def test_a_text_benchmark_end_to_end(synthetic_datadir: Path, tmp_path: Path):
    """A text benchmark added to a data directory (math/y-like documents): its domain aligns
    most, the target benchmark score is its term, and batched branching scores it too (no
    fall-back to one branch after another)."""
    import json
    import shutil

    from conftest import synthetic_docs

    from mixagent.data.build.benchmarks import add_benchmarks
    from mixagent.envs.proxy_env import ProxyCPTEnv
    from mixagent.trajectories.branching import BranchConfig, Brancher

    data = tmp_path / "data"
    shutil.copytree(synthetic_datadir, data)
    docs = synthetic_docs("math/y", 30, seed=99)
    (tmp_path / "bench.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in docs))
    (tmp_path / "add.yaml").write_text(yaml.safe_dump({"benchmarks": [
        {"name": "mathtext", "field": "math", "path": "bench.jsonl", "kind": "text"}]}))
    add_benchmarks(data, tmp_path / "add.yaml")
    model = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
             "num_key_value_heads": 2, "intermediate_size": 64}
    spec = {"name": "text-bench", "data": {"path": str(data)}, "source_field": "prose",
            "target_field": "math", "model": {"arch": "llama", "config": model},
            "pretrain": {"tokens": 8192, "batch_size": 8, "lr": {"peak": 3e-3, "warmup_steps": 5}},
            "cpt": {"num_steps": 3, "tokens_per_step": 512, "batch_size": 8, "seq_len": 32,
                    "lr": {"peak": 2e-3, "warmup_steps": 1}},
            "eval": {"sequences_per_domain": 2, "tasks": [{"name": "mathtext", "examples": 20}]},
            "reward": {"target_terms": {"loss": 1.0, "mathtext.loss": 1.0}},
            "observation": {"features": FEATURES}, "runtime": {"device": "cpu", "num_threads": 1}}
    (tmp_path / "env.yaml").write_text(yaml.safe_dump(spec))
    env = ProxyCPTEnv(tmp_path / "env.yaml", progress=False)
    target = env.engine.base_alignment[:, 1]
    assert env.domain_names[int(np.argmax(target))] == "math/y"
    env.reset(seed=1)
    br = Brancher(env, BranchConfig(k=2))
    rng = np.random.default_rng(0)
    trs, _ = br.step([rng.uniform(-1, 1, env.num_domains).astype(np.float32) for _ in range(2)], 0)
    assert br.fallback_reason is None and all(t.batched for t in trs)
    g = trs[0].obs["global"]
    assert g[-2] == 0.0 and g[-1] == np.float32(trs[0].info["terms"]["target.mathtext.loss"])
    env.close()
