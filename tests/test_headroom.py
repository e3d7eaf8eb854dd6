"""Headroom (``mixagent env headroom``) and the reward's ``normalisation`` option.

Normalisation: hand-computed values on tiny cases, and ``relative`` (the default) unchanged bit
for bit, down to the env-spec hash. Headroom: one measurement on the micro spec with small
counts (2 seeds, 8 random mixtures), shared by several tests: every key of the JSON, numbers
equal to re-running an episode, the best re-evaluated on fresh seeds only, resume from the
cache, 1 vs 2 Ray workers, and errors that say what to fix.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from mixagent.envs.scoring import score, term_value
from mixagent.envs.spec import EnvSpec, RewardSpec
from mixagent.errors import ConfigError

pytestmark = pytest.mark.usefixtures("micro_cache_env")

MICRO = Path(__file__).resolve().parents[1] / "envs" / "micro.yaml"


# -- normalisation ----------------------------------------------------------------------------------
def _term(name, losses, base, tasks=None, base_tasks=None, norm="relative"):
    mask = np.ones(len(losses), dtype=bool)
    return term_value(name, mask, np.asarray(losses), tasks or {}, np.asarray(base), base_tasks or {}, norm)


def test_bounded_normalisation_matches_hand_computation():
    # loss term over two domains: base 2 -> 1 (halved), base 4 -> 6 (1.5x)
    assert _term("loss", [1.0, 6.0], [2.0, 4.0]) == pytest.approx((0.5 + -0.5) / 2)
    assert _term("loss", [1.0, 6.0], [2.0, 4.0], norm="bounded") == pytest.approx((2 / 3 + 2 * -2 / 10) / 2)
    # antisymmetric: halving a loss gains what doubling it costs; relative does not
    assert _term("loss", [1.0], [2.0], norm="bounded") == pytest.approx(-_term("loss", [2.0], [1.0], norm="bounded"))
    assert _term("loss", [1.0], [2.0]) == 0.5 and _term("loss", [2.0], [1.0]) == -1.0
    # bounded in (-2, 2): a collapse costs at most 2, where relative is unbounded below
    assert _term("loss", [1e9], [2.0], norm="bounded") == pytest.approx(-2.0, abs=1e-6)
    assert _term("loss", [0.0], [2.0], norm="bounded") == 2.0
    assert _term("loss", [1e9], [2.0]) < -1e8
    assert _term("loss", [0.0], [0.0], norm="bounded") == 0.0
    # the same slope as relative at no change: small changes keep their numbers
    assert _term("loss", [1.99], [2.0], norm="bounded") == pytest.approx(_term("loss", [1.99], [2.0]), rel=1e-2)
    # task terms: an NLL-like metric is normalised like a loss; exact match stays a difference
    tasks, base_tasks = {"wp": {"answer_loss": 1.0, "exact_match": 0.5}}, {"wp": {"answer_loss": 3.0,
                                                                                   "exact_match": 0.25}}
    assert _term("wp.answer_loss", [1.0], [1.0], tasks, base_tasks) == pytest.approx(2 / 3)
    assert _term("wp.answer_loss", [1.0], [1.0], tasks, base_tasks, "bounded") == pytest.approx(2 * 2 / 4)
    for norm in ("relative", "bounded"):
        assert _term("wp.exact_match", [1.0], [1.0], tasks, base_tasks, norm) == 0.25
    # an answer log-probability is a negated NLL (derived from answer_loss in one place):
    # -3 -> -1 scores as the NLL 3 -> 1 does
    from mixagent.data.manifest import metric_value

    assert metric_value(tasks["wp"], "answer_logprob") == -tasks["wp"]["answer_loss"]
    for norm in ("relative", "bounded"):
        assert _term("wp.answer_logprob", [1.0], [1.0], tasks, base_tasks, norm) == \
            _term("wp.answer_loss", [1.0], [1.0], tasks, base_tasks, norm)
    with pytest.raises(ValueError, match="normalisation"):
        _term("loss", [1.0], [2.0], norm="log")


def test_relative_is_the_default_and_unchanged_bit_for_bit():
    rs = RewardSpec()
    assert rs.normalisation == "relative"
    losses = np.array([3.1, 2.7, 4.05, 3.3], dtype=np.float32)
    base = np.array([3.0, 2.9, 4.5, 3.2], dtype=np.float32)
    is_target = np.array([False, False, True, True])
    s = score(losses, {}, base, {}, is_target, rs)
    # v1's expression, verbatim
    v1_src = float(np.mean((base[~is_target] - losses[~is_target]) / base[~is_target]))
    v1_tgt = float(np.mean((base[is_target] - losses[is_target]) / base[is_target]))
    assert (s.source, s.target, s.balanced) == (v1_src, v1_tgt, 0.5 * (v1_src + v1_tgt))
    b = score(losses, {}, base, {}, is_target, RewardSpec(normalisation="bounded"))
    assert b.source == pytest.approx(np.mean(2 * (base[:2] - losses[:2]) / (base[:2] + losses[:2])))
    # the key is left out of dumps at its default, so v1 specs keep their env-spec hash
    from mixagent.trajectories.identity import env_spec_hash

    raw = yaml.safe_load(MICRO.read_text())
    plain = EnvSpec.model_validate(raw)
    explicit = EnvSpec.model_validate({**raw, "reward": {**raw["reward"], "normalisation": "relative"}})
    bounded = EnvSpec.model_validate({**raw, "reward": {**raw["reward"], "normalisation": "bounded"}})
    assert "normalisation" not in plain.model_dump()["reward"]
    assert env_spec_hash(plain, "d") == env_spec_hash(explicit, "d") != env_spec_hash(bounded, "d")
    assert bounded.model_dump()["reward"]["normalisation"] == "bounded"
    assert EnvSpec.model_validate(bounded.model_dump()).reward.normalisation == "bounded"  # round trip


def test_env_scores_with_bounded_normalisation(micro_spec: Path, tmp_path: Path):
    """The option reaches the environment's scores (through the one transition definition)."""
    from mixagent.data.space import DomainSpace
    from mixagent.envs.proxy_env import ProxyCPTEnv

    raw = yaml.safe_load(micro_spec.read_text())
    raw["reward"]["normalisation"] = "bounded"
    path = tmp_path / "bounded.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = ProxyCPTEnv(path)
    env.reset(seed=3)
    _, _, _, _, info = env.step_weights(np.full(env.num_domains, 1.0 / env.num_domains))
    base, cur = env.base_losses.astype(np.float64), np.asarray(info["losses"], dtype=np.float64)
    tgt = DomainSpace.from_env(env).is_target
    sym = 2 * (base - cur) / (base + cur)
    assert info["scores"]["source"] == pytest.approx(sym[~tgt].mean(), rel=1e-6)
    assert info["scores"]["target"] == pytest.approx(sym[tgt].mean(), rel=1e-6)


def test_bad_normalisation_is_a_clear_error(tmp_path: Path):
    from mixagent.envs.spec import load_env_spec

    raw = yaml.safe_load(MICRO.read_text())
    raw["reward"]["normalisation"] = "log"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"reward\.normalisation"):
        load_env_spec(path)


# -- schedules --------------------------------------------------------------------------------------
def test_schedule_shares_and_weights_by_hand():
    from mixagent.data.space import DomainSpace
    from mixagent.evaluation.schedules import SourceSchedule, source_share

    assert [source_share("two_phase", 0.2, 0.8, t, 4) for t in range(4)] == [0.2, 0.2, 0.8, 0.8]
    assert [source_share("two_phase", 0.2, 0.8, t, 3) for t in range(3)] == [0.2, 0.8, 0.8]
    assert [source_share("ramp", 0.2, 0.8, t, 3) for t in range(3)] == pytest.approx([0.2, 0.5, 0.8])
    assert source_share("ramp", 0.2, 0.8, 0, 1) == 0.2
    space = DomainSpace(("s1", "s2", "t1", "t2"), ("p", "p", "m", "m"), ("source", "source", "target", "target"),
                        (1, 1, 1, 1))
    pol = SourceSchedule(shape="ramp", start=0.2, end=0.8, num_steps=3,
                         within={"s1": 3.0, "s2": 1.0, "t1": 0.0, "t2": 2.0})
    pol.reset(space, 0)
    obs = {"domains": np.zeros((4, 5)), "global": np.zeros(4)}
    w = [pol.act(obs) for _ in range(3)]
    assert w[0] == pytest.approx([0.15, 0.05, 0.0, 0.8])  # 0.2 split 3:1, 0.8 all on t2
    assert w[2] == pytest.approx([0.6, 0.2, 0.0, 0.2])
    assert pol.state_dict() == {"t": 3}


# -- headroom on the micro spec -------------------------------------------------------------------
SEEDS, TUNE = [1000, 1001], [7, 8]


def _hconfig(spec: Path, out: Path, **kw):
    from mixagent.evaluation.headroom import HeadroomConfig

    base = dict(env=str(spec), out=str(out), seeds=SEEDS, tune_seeds=TUNE, runs=8, verify_top=1,
                schedule_shares=[0.2, 0.8], progress=False)
    return HeadroomConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def headroom_run(micro_spec: Path, micro_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    from mixagent.evaluation.headroom import measure_headroom

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXAGENT_CACHE", str(micro_cache))
        out = tmp_path_factory.mktemp("headroom") / "micro.json"
        res = measure_headroom(_hconfig(micro_spec, out))
    return out, res


def _numbers(rep: dict) -> dict:
    """The report without what measures time or this run's cache use."""
    return {k: v for k, v in rep.items() if k not in ("created_at", "compute", "config")}


def test_headroom_json_has_every_key_and_consistent_numbers(headroom_run):
    from mixagent.evaluation.stats import summarise

    out, res = headroom_run
    rep = json.loads(out.read_text())
    assert rep == json.loads(json.dumps(res.report))
    assert set(rep) >= {"format", "spec", "spec_hash", "seeds", "uniform", "best", "dynamic", "headroom_sd",
                        "dynamic_headroom_sd", "search", "family", "compute", "config"}
    assert rep["seeds"] == {"eval": SEEDS, "tune": TUNE}
    assert len(rep["spec_hash"]) == 24 and rep["spec"]["num_domains"] == 6
    for key in ("uniform", "best", "dynamic"):
        r = rep[key]
        assert set(r) >= {"mean", "sd", "per_seed", "source", "target"}
        assert list(r["per_seed"]) == [str(s) for s in SEEDS]
        s = summarise(list(r["per_seed"].values()))
        assert (r["mean"], r["sd"]) == (pytest.approx(s.mean), pytest.approx(s.std))
    u, b, d = rep["uniform"], rep["best"], rep["dynamic"]
    assert rep["headroom_sd"] == pytest.approx((b["mean"] - u["mean"]) / u["sd"])
    assert rep["dynamic_headroom_sd"] == pytest.approx((d["mean"] - u["mean"]) / u["sd"])
    # what the best favours
    mix = b["mixture"]
    assert list(mix) == rep["spec"]["domains"] and sum(mix.values()) == pytest.approx(1.0)
    roles = dict(zip(rep["spec"]["domains"], rep["spec"]["roles"], strict=True))
    assert b["source_share"] == pytest.approx(sum(w for n, w in mix.items() if roles[n] == "source"))
    tops = [t["weight"] for t in b["top_domains"]]
    assert tops == sorted(mix.values(), reverse=True)[: len(tops)]
    assert b["found_by"] == rep["search"]["chosen"]
    # the search: 8 random runs, candidates on every tune seed, the best tune mean chosen
    assert len(rep["search"]["runs"]) == 8 and {r["seed"] for r in rep["search"]["runs"]} == set(TUNE)
    cands = rep["search"]["candidates"]
    assert max(cands, key=lambda c: c["tune_mean"])["name"] == b["found_by"]
    # the dynamic family: 2 shapes x 2 ordered share pairs x 2 within-field choices
    fam = rep["family"]["rows"]
    assert len(fam) == 8 and max(fam, key=lambda r: r["tune_mean"])["name"] == d["name"]
    sched = d["schedule"]
    assert sched["shape"] in ("two_phase", "ramp") and len(sched["source_share_per_step"]) == 3
    c = rep["compute"]
    assert c["episodes_run"] == res.episodes_run > 0 and c["episodes_total"] >= c["episodes_run"]
    md = out.with_suffix(".md").read_text()
    assert "# Headroom of micro" in md and "best static" in md and "sd (static)" in md


def test_headroom_numbers_equal_a_rerun_episode(headroom_run, micro_spec: Path):
    """Determinism: each reported number is the episode itself, re-run by hand."""
    from mixagent.envs.proxy_env import ProxyCPTEnv
    from mixagent.policies.protocol import run_episode
    from mixagent.policies.regmix import RegMix
    from mixagent.policies.static import Uniform

    _, res = headroom_run
    rep = res.report
    env = ProxyCPTEnv(micro_spec)
    uni = run_episode(Uniform(), env, SEEDS[0]).final_scores["balanced"]
    assert uni == rep["uniform"]["per_seed"][str(SEEDS[0])]
    best = RegMix(weights=rep["best"]["mixture"], source_share=rep["best"]["source_share"])
    assert run_episode(best, env, SEEDS[1]).final_scores["balanced"] == rep["best"]["per_seed"][str(SEEDS[1])]


def test_best_is_reevaluated_on_fresh_seeds_only(headroom_run, micro_spec: Path, tmp_path: Path):
    _, res = headroom_run
    rep = res.report
    for key in ("best", "dynamic"):
        assert set(rep[key]["per_seed"]) == {str(s) for s in SEEDS}
    for row in rep["search"]["candidates"] + rep["family"]["rows"]:
        assert set(row["tune_per_seed"]) == {str(s) for s in TUNE}  # chosen on tune seeds only
    assert not set(SEEDS) & set(TUNE)
    with pytest.raises(ConfigError, match="overlap"):
        from mixagent.evaluation.headroom import measure_headroom

        measure_headroom(env=str(micro_spec), out=str(tmp_path / "h.json"), seeds=[1, 2], tune_seeds=[2, 3])


def test_resume_from_the_cache_runs_nothing(headroom_run, micro_spec: Path):
    from mixagent.evaluation.headroom import measure_headroom

    out, first = headroom_run
    again = measure_headroom(_hconfig(micro_spec, out))
    assert again.episodes_run == 0 and again.episodes_cached == first.report["compute"]["episodes_total"]
    assert _numbers(again.report) == _numbers(first.report)


def test_given_candidates_run_on_tune_seeds_and_compete_with_the_search(headroom_run, micro_spec: Path,
                                                                         tmp_path: Path):
    """A named hypothesis is one more candidate: run on every tune seed, chosen only on its tune
    mean, recorded with its text; a typo in it fails before any episode runs."""
    from mixagent.envs.proxy_env import ProxyCPTEnv
    from mixagent.evaluation.headroom import measure_headroom
    from mixagent.policies.protocol import run_episode
    from mixagent.policies.regmix import RegMix

    out, _ = headroom_run
    with pytest.raises(ConfigError, match=r"candidate 'typo'.*nosuchfield"):
        measure_headroom(_hconfig(micro_spec, tmp_path / "bad.json", cache=str(out.with_suffix("")),
                                  candidates={"typo": "nosuchfield=1"}))
    assert not (tmp_path / "bad.json").exists()
    with pytest.raises(ConfigError, match="name"):
        measure_headroom(env=str(micro_spec), out=str(tmp_path / "h.json"), candidates={"a:b": "prose=1"})
    res = measure_headroom(_hconfig(micro_spec, tmp_path / "given.json", cache=str(out.with_suffix("")),
                                    candidates={"target-heavy": "prose=0.1,math=0.9"}))
    rep = res.report
    row = next(c for c in rep["search"]["candidates"] if c["name"] == "candidate target-heavy")
    assert set(row["tune_per_seed"]) == {str(s) for s in TUNE}
    assert rep["search"]["given"] == {"target-heavy": "prose=0.1,math=0.9"}
    assert max(rep["search"]["candidates"], key=lambda c: c["tune_mean"])["name"] == rep["best"]["found_by"]
    # the candidate's numbers are its episodes: prose 0.1 and math 0.9, each spread evenly
    env = ProxyCPTEnv(micro_spec)
    roles = dict(zip(rep["spec"]["domains"], rep["spec"]["roles"], strict=True))
    n_src = sum(r == "source" for r in roles.values())
    w = {d: (0.1 / n_src if r == "source" else 0.9 / (len(roles) - n_src)) for d, r in roles.items()}
    again = run_episode(RegMix(weights=w, source_share=0.1), env, TUNE[0]).final_scores["balanced"]
    assert again == pytest.approx(row["tune_per_seed"][str(TUNE[0])], abs=1e-12)
    assert "given `target-heavy`" in (tmp_path / "given.md").read_text()


@pytest.mark.slow
def test_one_and_two_ray_workers_give_identical_results(headroom_run, micro_spec: Path, tmp_path: Path):
    from mixagent.evaluation.headroom import measure_headroom

    _, first = headroom_run
    two = measure_headroom(_hconfig(micro_spec, tmp_path / "two.json", workers=2))
    assert two.episodes_run == first.episodes_run
    a, b = _numbers(first.report), _numbers(two.report)
    assert a == b


def test_bad_input_errors_say_what_to_fix(micro_spec: Path, tmp_path: Path):
    from mixagent.evaluation.headroom import measure_headroom

    with pytest.raises(ConfigError, match="not found"):
        measure_headroom(env=str(tmp_path / "nope.yaml"), out=str(tmp_path / "h.json"))
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        measure_headroom(env=str(micro_spec), out=str(tmp_path / "dir.json"))
    with pytest.raises(ConfigError, match=r"ending in \.json"):
        measure_headroom(env=str(micro_spec), out=str(tmp_path / "h"))
    with pytest.raises(ConfigError, match="runs"):
        measure_headroom(env=str(micro_spec), out=str(tmp_path / "h.json"), runs=4)
    with pytest.raises(ConfigError, match="seeds"):
        measure_headroom(env=str(micro_spec), out=str(tmp_path / "h.json"), seeds=[1000])
    with pytest.raises(ConfigError, match="two distinct"):
        measure_headroom(env=str(micro_spec), out=str(tmp_path / "h.json"), schedule_shares=[0.5, 0.5])
    with pytest.raises(ConfigError, match="wokers"):
        measure_headroom(env=str(micro_spec), out=str(tmp_path / "h.json"), wokers=2)


def test_cli_writes_json_and_summary_and_logs_each_episode(headroom_run, micro_spec: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, capsys, caplog):
    """The command (progress off a terminal: a log line per episode) reuses the fixture's episode
    cache with --cache, and a bad flag is an error message, not a traceback."""
    from conftest import run_main

    import mixagent.utils.progress as progress_mod

    out, _ = headroom_run
    monkeypatch.setattr(progress_mod, "is_terminal", lambda stream: False)
    target = tmp_path / "cli" / "h.json"
    with caplog.at_level(logging.INFO, logger="mixagent.evaluation"):
        code, stdout, _ = run_main(["env", "headroom", str(micro_spec), "--out", str(target), "--seeds", "1000-1001",
                                    "--tune-seeds", "7,8", "--runs", "8", "--schedule-shares", "0.2,0.8",
                                    "--cache", str(out.with_suffix(""))], monkeypatch, capsys)
    assert code == 0, stdout
    assert "headroom" in stdout and target.is_file() and target.with_suffix(".md").is_file()
    rep = json.loads(target.read_text())
    assert rep["seeds"]["eval"] == SEEDS and rep["compute"]["cache"] == str(out.with_suffix(""))
    run = rep["compute"]["episodes_run"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("headroom") and "balanced" in r.getMessage()]
    assert len(lines) == run  # one line per episode that ran
    code, _, err = run_main(["env", "headroom", str(micro_spec), "--out", str(tmp_path / "x.json"),
                             "--seeds", "1,2", "--tune-seeds", "2"], monkeypatch, capsys)
    assert code != 0 and "overlap" in err and "Traceback" not in err
