"""Population batching (mixagent.trajectories.population) on the micro env spec.

P members trained as one batched model must equal P sequential environments (to the stated
floating-point tolerance, bmm vs mm reassociation), and ``collect(population=P)`` must write the
rows a plain collection writes. No timing assertions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mixagent.errors import ConfigError
from mixagent.trajectories import collect, load
from mixagent.trajectories.schema import DETERMINISTIC_COLUMNS

pytestmark = pytest.mark.usefixtures("micro_cache_env")

#: the stated tolerance: observation, reward, scores, losses and metrics of a member vs the
#: sequential env (float32 training; measured max deviation on the micro spec ~1e-7)
RTOL, ATOL = 1e-5, 1e-6


def _close(a: object, b: object, what: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), what
        for key in a:
            _close(a[key], b[key], f"{what}.{key}")
        return
    if isinstance(a, str) or a is None:
        assert a == b, what
        return
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=RTOL,
                               atol=ATOL, err_msg=what)


def _same_step(mine: tuple, ref: tuple, what: str) -> None:
    obs, reward, term, trunc, info = mine
    r_obs, r_reward, r_term, r_trunc, r_info = ref
    _close(obs, r_obs, f"{what} obs")
    _close(reward, r_reward, f"{what} reward")
    assert (term, trunc) == (r_term, r_trunc), what
    timing = {"wall_time", "train_time", "eval_time"}
    assert info.keys() == r_info.keys(), what
    _close({k: v for k, v in info.items() if k not in timing},
           {k: v for k, v in r_info.items() if k not in timing}, f"{what} info")


def test_population_members_equal_sequential_envs(micro_env):
    from mixagent.trajectories.population import PopulationStepper

    env = micro_env
    seeds = [3, 11, 40]
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (len(seeds), env.num_steps, env.num_domains)).astype(np.float32)
    # the sequential reference: three plain episodes
    ref = []
    for i, s in enumerate(seeds):
        start = env.reset(seed=s)
        ref.append([start] + [env.step(actions[i, t]) for t in range(env.num_steps)])
    pop = PopulationStepper(env, len(seeds))
    starts = pop.reset(seeds)
    for i in range(len(seeds)):
        _close(starts[i][0], ref[i][0][0], f"member {i} reset obs")
        assert starts[i][1]["data_seed"] == ref[i][0][1]["data_seed"]
    finals = []
    for t in range(env.num_steps):
        trs = pop.step([actions[i, t] for i in range(len(seeds))])
        assert pop.verified and all(tr.batched for tr in trs)
        for i, tr in enumerate(trs):
            _same_step((tr.obs, tr.reward, tr.terminated, tr.truncated, tr.info), ref[i][t + 1],
                       f"member {i} step {t}")
        finals = trs
    assert all(tr.terminated for tr in finals)
    # members really differ (different seeds and actions): the comparison is not vacuous
    assert len({round(tr.info["scores"]["balanced"], 9) for tr in finals}) == len(seeds)
    # a new population from the same stepper starts from the base again
    again = pop.reset(seeds[::-1])
    _close(again[0][0], ref[-1][0][0], "second reset")
    trs = pop.step([actions[2, 0], actions[1, 0], actions[0, 0]])
    _same_step((trs[0].obs, trs[0].reward, trs[0].terminated, trs[0].truncated, trs[0].info),
               ref[2][1], "second population, member 0")


def test_population_refuses_misuse(micro_env):
    from mixagent.envs.errors import ResetNeededError
    from mixagent.trajectories.population import PopulationStepper

    pop = PopulationStepper(micro_env, 2, verify=False)
    with pytest.raises(ResetNeededError):
        pop.step([np.zeros(micro_env.num_domains, np.float32)] * 2)
    with pytest.raises(ValueError, match="seeds for a population of 2"):
        pop.reset([1, 2, 3])
    pop.reset([1, 2])
    with pytest.raises(ValueError, match="actions for a population of 2"):
        pop.step([np.zeros(micro_env.num_domains, np.float32)])


def _collect(spec: Path, out: Path, episodes: int, **kw):
    return collect(env_spec=str(spec), out=str(out), episodes=episodes, progress=False, **kw)


def _rows(folder: Path):
    df = load(folder).to_pandas()
    return df[list(DETERMINISTIC_COLUMNS)].sort_values(["episode", "t"]).reset_index(drop=True)


def _same_rows_within_tolerance(a: Path, b: Path) -> None:
    ra, rb = _rows(a), _rows(b)
    assert len(ra) == len(rb) and len(ra) > 0
    for col in DETERMINISTIC_COLUMNS:
        if col in ("eps_id", "batched"):  # the collection id (config hash) and the batched flag
            continue
        for x, y in zip(ra[col].tolist(), rb[col].tolist(), strict=True):
            _close_value(x, y, col)


def _close_value(x: object, y: object, what: str) -> None:
    """Numbers within the tolerance, anything else (ids, names, flags) equal, recursively."""
    if isinstance(x, dict):
        assert isinstance(y, dict) and x.keys() == y.keys(), what
        for key in x:
            _close_value(x[key], y[key], f"{what}.{key}")
    elif isinstance(x, list | tuple | np.ndarray):
        assert len(x) == len(y), what
        for a, b in zip(x, y, strict=True):
            _close_value(a, b, what)
    elif isinstance(x, str | bool | np.bool_):
        assert x == y, what
    else:
        _close(x, y, what)


def test_collect_population_gives_the_plain_rows_and_resumes_exactly(micro_spec: Path,
                                                                     tmp_path: Path):
    cfg = {"seed": 4, "explorers": ["random_walk@0.5", "uniform@0.5"]}
    _collect(micro_spec, tmp_path / "plain", 5, **cfg)
    r = _collect(micro_spec, tmp_path / "pop", 5, population=3, **cfg)
    assert r.collected == [0, 1, 2, 3, 4] and r.transitions == 15
    _same_rows_within_tolerance(tmp_path / "plain", tmp_path / "pop")
    df = load(tmp_path / "pop").to_pandas()
    assert df.batched.all()  # both populations ({0,1,2}, {3,4}) were batched and verified
    from mixagent.trajectories.storage import read_collection

    ident = read_collection(tmp_path / "pop")["identity"]
    assert ident["branch"]["population"] == 3
    # resume: a lost shard is collected again by rerunning its whole population -> same rows
    part = tmp_path / "part"
    _collect(micro_spec, part, 5, population=3, **cfg)
    (part / "shards" / "episode-000001.parquet").unlink()
    r2 = _collect(micro_spec, part, 5, population=3, resume=True, **cfg)
    assert r2.collected == [1] and r2.skipped == [0, 2, 3, 4]
    ra, rb = _rows(tmp_path / "pop"), _rows(part)
    for col in DETERMINISTIC_COLUMNS:
        assert ra[col].map(repr).tolist() == rb[col].map(repr).tolist(), col


def test_population_bad_combinations_are_refused(micro_spec: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot be combined"):
        _collect(micro_spec, tmp_path / "x", 2, population=2, branch={"k": 2})
    with pytest.raises(ConfigError):
        _collect(micro_spec, tmp_path / "y", 2, population=0)
    # a plain collection cannot be resumed as a population (the rounding differs): refused
    _collect(micro_spec, tmp_path / "z", 1, seed=1)
    from mixagent.trajectories.storage import TrajectoryError

    with pytest.raises(TrajectoryError, match="different collection"):
        _collect(micro_spec, tmp_path / "z", 2, seed=1, population=2, resume=True)


def test_unfoldable_model_falls_back_to_episodes_with_a_warning(micro_spec: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture):
    import mixagent.trajectories.population as population
    from mixagent.trajectories.replicas import FoldError

    def refuse(*_a: object, **_k: object) -> None:
        raise FoldError("test: no fold")

    monkeypatch.setattr(population.ReplicaTrainer, "__init__", refuse)
    with caplog.at_level("WARNING"):
        r = _collect(micro_spec, tmp_path / "fb", 2, seed=2, population=2)
    assert r.transitions == 6
    assert "cannot batch a population" in caplog.text
    assert not load(tmp_path / "fb").to_pandas().batched.any()


def test_ray_workers_collect_populations_like_in_process(micro_spec: Path, tmp_path: Path,
                                                         micro_cache: Path):
    import ray

    started = not ray.is_initialized()
    if started:
        # a private instance: never join a cluster someone else started on this machine
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        cfg = {"seed": 6, "population": 2}
        _collect(micro_spec, tmp_path / "local", 4, **cfg)
        r = _collect(micro_spec, tmp_path / "ray", 4, workers=2, **cfg)
    finally:
        if started:
            ray.shutdown()
    assert sorted(r.collected) == [0, 1, 2, 3]
    ra, rb = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    for col in DETERMINISTIC_COLUMNS:
        assert ra[col].map(repr).tolist() == rb[col].map(repr).tolist(), col
