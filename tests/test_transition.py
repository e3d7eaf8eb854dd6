"""One definition of a step: the env, a CPT run's controller and batched branching agree.

The same scripted evaluations are fed through the three places that turn evaluations into what
a policy sees — ``ProxyCPTEnv.step``, ``MixtureController.decide`` (production CPT) and the
batched branch path of trajectory collection — and must give bitwise-identical observations,
scores and (where there is one) rewards. Training is real (micro proxy); only the evaluations
are scripted, so the comparison is exact and any path that rebuilt its observation or scores
its own way fails here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from mixagent.config import StrictModel
from mixagent.envs.transition import MixingTransition
from mixagent.proxy.evaluation import EvalResult

pytestmark = pytest.mark.usefixtures("micro_cache_env")


@pytest.fixture(scope="module", params=["v1", "groups"])
def env(request: pytest.FixtureRequest, micro_spec: Path, micro_cache: Path):
    """The micro env with a scored task, so task terms enter the scores too; with the v1
    observation and with the optional groups (alignment, benchmark scores, objective) on."""
    from mixagent.data.builtin import TASK_NAME
    from mixagent.envs.proxy_env import ProxyCPTEnv

    d = yaml.safe_load(micro_spec.read_text(encoding="utf-8"))
    d["eval"]["tasks"] = [{"name": TASK_NAME, "examples": 8}]
    d["reward"]["target_terms"] = {"loss": 1.0, f"{TASK_NAME}.answer_loss": 0.5,
                                   f"{TASK_NAME}.exact_match": 0.25}
    d["reward"]["scale"] = 7.0
    if request.param == "groups":
        d["observation"] = {"features": ["alignment", "benchmark_scores", "objective"]}
    spec = micro_spec.with_name(f"micro-transition-{request.param}.yaml")
    spec.write_text(yaml.safe_dump(d), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXAGENT_CACHE", str(micro_cache))
        e = ProxyCPTEnv(spec, progress=False)
    yield e
    e.close()


def scripted_alignment(env: Any, n: int) -> list[np.ndarray | None]:
    """The base's alignment, then ``n`` scripted ones (None when the env does not observe it)."""
    if not env.layout.alignment:
        return [None] * (n + 1)
    rng = np.random.default_rng(5)
    return [env.engine.base_alignment, *(rng.uniform(-1, 1, (env.num_domains, 2)) for _ in range(n))]


def scripted(env: Any, n: int) -> list[EvalResult]:
    """``n`` evaluations after the base: losses drift, task metrics move (no model involved)."""
    base = env.engine.base_eval
    rng = np.random.default_rng(7)
    out = []
    for i in range(1, n + 1):
        losses = base.losses * (1.0 + rng.normal(0.0, 0.02, base.losses.size))
        tasks = {t: {"exact_match": min(1.0, m["exact_match"] + 0.125 * i),
                     "answer_loss": m["answer_loss"] * (1.0 - 0.03 * i)}
                 for t, m in base.tasks.items()}
        out.append(EvalResult(losses, tasks))
    return out


def actions(env: Any, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.uniform(-1, 1, env.num_domains).astype(np.float32) for _ in range(n)]


class Scripted(StrictModel):
    pass


def scripted_policy(weights: list[np.ndarray]) -> Any:
    """A policy that returns the given weights in order (what the env applied)."""
    from mixagent.policies.protocol import MixingPolicy

    class Replay(MixingPolicy):
        kind = "test-replay"
        Params = Scripted

        def _reset(self) -> None:
            self.i = 0

        def _act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
            self.i += 1
            return np.asarray(weights[self.i - 1], dtype=np.float64)

    return Replay()


def env_path(env: Any, evals: list[EvalResult], acts: list[np.ndarray],
             aligns: list[np.ndarray | None]) -> list[dict[str, Any]]:
    """Observation, reward and scores of the reset and of every step, evaluations scripted."""
    obs, info = env.reset(seed=0)
    out = [{"obs": obs, "scores": info["scores"], "weights": info["weights"]}]
    queue = list(evals)
    align = list(aligns[1:])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(env.engine, "evaluate", lambda: queue.pop(0).copy())
        mp.setattr(env.engine, "evaluate_alignment", lambda: align.pop(0))
        for a in acts:
            obs, r, _, _, info = env.step(a)
            out.append({"obs": obs, "reward": r, "scores": info["scores"], "weights": info["weights"]})
    return out


def controller_of(env: Any, evals: list[EvalResult], weights: list[np.ndarray],
                  aligns: list[np.ndarray | None]) -> Any:
    """A production CPT run's controller whose evaluations and alignments are scripted."""
    from mixagent.cpt.controller import DecisionPlan, MixtureController
    from mixagent.data.sampler import MixtureSampler
    from mixagent.policies.protocol import DomainSpace

    eng = env.engine
    queue = [eng.base_eval.copy(), *(e.copy() for e in evals)]
    task_keys = [(t, m) for t, ms in eng.base_eval.tasks.items() for m in ms]
    align = list(aligns)
    controller = MixtureController(
        sampler=MixtureSampler(eng.data, eng.cpt.seq_len, seed=0, domains=eng.domains),
        policy=scripted_policy(weights), space=DomainSpace.from_env(env),
        plan=DecisionPlan(max_steps=env.num_steps, reweight_every=1, samples_per_step=1,
                          lead_steps=0),
        reward=env.env_spec.reward, observation=env.env_spec.observation,
        evaluator_factory=lambda: lambda model: queue.pop(0), task_keys=task_keys, policy_seed=0,
        policy_name="test-replay", aligner_factory=lambda evaluator: lambda model: align.pop(0))
    return controller


def cpt_path(env: Any, evals: list[EvalResult], weights: list[np.ndarray],
             aligns: list[np.ndarray | None]) -> list[dict[str, Any]]:
    """The same evaluations through a production CPT run's decisions (the model is never read)."""
    controller = controller_of(env, evals, weights, aligns)
    out = []
    for step in range(len(evals) + 1):
        dec = controller.decide(step, torch.nn.Identity(), torch.device("cpu"), None)
        # (dec.weights are the weights chosen here; the observation holds those applied before)
        out.append({"obs": {k: np.asarray(v, dtype=np.float32) for k, v in dec.observation.items()},
                    "scores": dec.scores})
    return out


def batched_path(env: Any, evals: list[EvalResult], acts: list[np.ndarray],
                 aligns: list[np.ndarray | None], k: int = 3) -> list[dict[str, Any]]:
    """The same evaluations through the folded K-branch path: branch 0 of each step is the
    episode's action and continues (the other branches get the same evaluation, so they must
    score the same)."""
    from mixagent.trajectories import replicas
    from mixagent.trajectories.branching import BranchConfig, Brancher

    obs, info = env.reset(seed=0)
    out = [{"obs": obs, "scores": info["scores"], "weights": info["weights"]}]
    queue = list(evals)
    align = list(aligns[1:])
    rng = np.random.default_rng(11)
    br = Brancher(env, BranchConfig(k=k, batched="auto"))
    br._verified = True  # the check against env.step is about training; evaluations are scripted
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(replicas.ReplicaTrainer, "evaluate",
                   lambda self: [e.copy() for e in [queue.pop(0)] * self.k])
        mp.setattr(replicas.ReplicaTrainer, "alignment", lambda self: [align.pop(0)] * self.k)
        for a in acts:
            others = [rng.uniform(-1, 1, a.size).astype(np.float32) for _ in range(k - 1)]
            trs, chosen = br.step([a, *others], 0)
            assert chosen == 0 and all(t.batched for t in trs), br.fallback_reason
            assert len({t.reward for t in trs}) == 1  # same evaluation, same reward
            t = trs[0]
            out.append({"obs": t.obs, "reward": t.reward, "scores": t.info["scores"],
                        "weights": t.info["weights"]})
    return out


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]], *, rewards: bool) -> None:
    assert len(a) == len(b)
    for t, (x, y) in enumerate(zip(a, b, strict=True)):
        for key in ("domains", "global"):
            assert x["obs"][key].dtype == y["obs"][key].dtype == np.float32
            assert x["obs"][key].tobytes() == y["obs"][key].tobytes(), (t, key, x["obs"][key], y["obs"][key])
        assert x["scores"] == y["scores"], t
        if rewards:  # the env and batched branching: same applied weights in info, same reward
            assert np.asarray(x["weights"]).tobytes() == np.asarray(y["weights"]).tobytes(), t
        if rewards and t:
            assert x["reward"] == y["reward"], t


def test_env_cpt_and_batched_branching_give_identical_steps(env):
    n = env.num_steps
    evals, acts, aligns = scripted(env, n), actions(env, n), scripted_alignment(env, n)
    by_env = env_path(env, evals, acts, aligns)
    applied = [step["weights"] for step in by_env[1:]]
    # a CPT run asks for weights at its last evaluation too; they are never observed
    by_cpt = cpt_path(env, evals, [*applied, np.full(env.num_domains, 1 / env.num_domains)], aligns)
    by_batch = batched_path(env, evals, acts, aligns)
    _same(by_env, by_batch, rewards=True)
    _same(by_env, by_cpt, rewards=False)
    # the scores are the transition's, and the reward is the scaled change of the balanced score
    tr = env.transitions
    for prev, cur, ev in zip(by_env, by_env[1:], evals, strict=False):
        s = tr.score(ev.losses, ev.tasks)
        assert cur["scores"] == {"source": s.source, "target": s.target, "balanced": s.balanced}
        assert cur["reward"] == env.env_spec.reward.scale * (cur["scores"]["balanced"]
                                                             - prev["scores"]["balanced"])
    assert by_env[-1]["obs"]["global"][0] == 1.0  # progress reached the end in every path
    width = by_env[0]["obs"]["domains"].shape[1]
    assert width == len(env.layout.domains) == (7 if env.layout.alignment else 5)
    if env.layout.alignment:  # the scripted alignment is what every path observed
        for step, al in zip(by_env, aligns, strict=True):
            assert np.array_equal(step["obs"]["domains"][:, 5:], al.astype(np.float32))


def test_a_resumed_cpt_run_rebuilds_the_last_observation(env, caplog):
    """Resuming rebuilds the step state from the checkpoint's decisions — with the alignment
    group, from the alignment its recorded observations hold — and observes what was recorded."""
    import copy

    n = env.num_steps
    evals, aligns = scripted(env, n), scripted_alignment(env, n)
    weights = [np.full(env.num_domains, 1 / env.num_domains)] * (n + 1)
    first = controller_of(env, evals, weights, aligns)
    for step in range(n + 1):
        first.decide(step, torch.nn.Identity(), torch.device("cpu"), None)
    saved = copy.deepcopy(first.capture(n))
    resumed = controller_of(env, [], weights, [])
    with caplog.at_level("WARNING"):
        resumed.restore(saved, "checkpoint")
    assert "differs" not in caplog.text
    obs = resumed.transition.observation()
    rec = saved.decisions[-1].observation
    for key in ("domains", "global"):
        assert obs[key].tobytes() == np.asarray(rec[key], dtype=np.float32).tobytes()


def test_transition_is_pure_and_snapshots_restore_exactly():
    from mixagent.envs.spec import ObservationSpec, RewardSpec

    base = np.array([4.0, 5.0, 3.0])
    tr = MixingTransition(base, {}, np.array([False, True, True]), RewardSpec(scale=2.0),
                          ObservationSpec(), num_steps=2)
    start = tr.snapshot()
    a = tr.step(start, np.array([0.2, 0.3, 0.5]), base * 0.9, {})
    b = tr.step(start, np.array([0.2, 0.3, 0.5]), base * 0.9, {})
    assert tr.state is start and a.reward == b.reward  # step changes nothing
    assert a.observation["domains"].tobytes() == b.observation["domains"].tobytes()
    tr.advance(np.array([0.2, 0.3, 0.5]), base * 0.9, {})
    second = tr.advance(np.array([0.6, 0.2, 0.2]), base * 0.8, {})
    assert second.terminated and second.state.t == 2
    assert np.array_equal(second.state.prev_losses, base * 0.9)
    again = tr.restore(start)
    assert again["domains"].tobytes() == tr.reset()["domains"].tobytes()
    assert np.array_equal(again["domains"][:, 3], np.zeros(3))  # no change before the first step
