"""Evaluation harness: statistics on constructed inputs, config errors, and a full evaluation on the
micro spec (report sections, plots, tuning, resume, 1 vs 2 Ray workers, card recording, CLI).

Heavy things happen once per module: the micro corpus and base are built into a module cache
(``MIXAGENT_CACHE``), and one evaluation report is produced and shared by several tests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from mixagent.errors import ConfigError
from mixagent.evaluation import EvaluateConfig, evaluate
from mixagent.evaluation.stats import paired, pooled_win_rate, ranks, summarise, t_quantile, verdict
from mixagent.evaluation.worker import TIMING_FIELDS

SEEDS = [1000, 1001, 1002]

pytestmark = pytest.mark.usefixtures("micro_cache_env")


# -- statistics -------------------------------------------------------------------------------------
def test_confidence_interval_matches_student_t():
    from scipy import stats

    x = [0.10, 0.13, 0.16]
    s = summarise(x)
    # hand-computed: mean 0.13, sample std 0.03, t_{0.975,2} = 4.302652729911275
    assert s.n == 3 and s.mean == pytest.approx(0.13) and s.std == pytest.approx(0.03)
    assert s.half_width == pytest.approx(4.302652729911275 * 0.03 / math.sqrt(3), rel=1e-9)
    lo, hi = stats.t.interval(0.95, df=2, loc=np.mean(x), scale=stats.sem(x))
    assert (s.ci_low, s.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert t_quantile(9) == pytest.approx(2.2621571627409915)
    one = summarise([0.5])  # one seed: no interval, said so
    assert one.half_width is None and one.ci_low is None and "no CI" in one.format()
    assert summarise([2.0, 2.0]).half_width == 0.0


def test_win_rates_with_ties_and_paired_difference():
    a = [0.3, 0.2, 0.5, 0.1]
    b = [0.1, 0.2, 0.6, 0.1]  # win, tie, loss, tie
    p = paired(a, b)
    assert (p.wins, p.ties, p.losses, p.n) == (1, 2, 1, 4)
    assert p.win_rate == pytest.approx((1 + 0.5 * 2) / 4)
    d = np.array(a) - np.array(b)
    assert p.diff.mean == pytest.approx(d.mean())
    assert p.diff.half_width == pytest.approx(t_quantile(3) * d.std(ddof=1) / 2)
    q = paired([1.0, 1.0], [0.0, 0.5])
    assert q.win_rate == 1.0
    # pooled over comparisons: each seed weighs the same (3 of 6 seeds won)
    assert pooled_win_rate([p, q]) == pytest.approx((1 + 1 + 2) / 6)
    assert pooled_win_rate([]) is None
    assert ranks([0.2, 0.5, 0.5, 0.1]) == [3, 1, 1, 4]
    assert verdict(paired([0.3, 0.31, 0.32], [0.1, 0.1, 0.1])) == "beats"
    assert verdict(paired([0.3, 0.0, 0.32], [0.1, 0.1, 0.1])) == "does not beat"  # CI includes 0
    assert verdict(paired([0.1], [0.2])) == "does not beat"
    with pytest.raises(ValueError):
        paired([1.0], [1.0, 2.0])


# -- config ---------------------------------------------------------------------------------------------
def test_config_errors_say_what_to_fix(tmp_path: Path):
    from mixagent.evaluation import load_evaluate_config
    from mixagent.evaluation.policies import parse_policy

    with pytest.raises(ConfigError, match="overlap"):
        evaluate(envs=["e.yaml"], policies=["baseline:uniform"], out="o", seeds=[1, 2], tune_seeds=[2])
    with pytest.raises(ConfigError, match="unknown baseline 'nope'"):
        parse_policy("baseline:nope")
    with pytest.raises(ConfigError, match="no policy directory"):
        parse_policy(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="baseline:uniform"):
        parse_policy("uniform")  # a bare baseline name is not a directory: say how to write it
    with pytest.raises(ConfigError, match="missing out"):
        load_evaluate_config(None, {"envs": ["e.yaml"], "policies": ["baseline:uniform"]})
    cfg_file = tmp_path / "eval.yaml"
    cfg_file.write_text(yaml.safe_dump({"envs": ["a.yaml"], "policies": ["baseline:uniform"], "out": "x",
                                        "workers": 2}))
    cfg = load_evaluate_config(cfg_file, {"workers": 1, "seeds": None})  # flags override the file
    assert cfg.workers == 1 and cfg.seeds == SEEDS and cfg.tune_seeds == [2000, 2001]
    cfg_file.write_text(yaml.safe_dump({"envs": ["a.yaml"], "policies": ["x"], "out": "x", "wokers": 2}))
    with pytest.raises(ConfigError, match="wokers"):
        load_evaluate_config(cfg_file, {})
    with pytest.raises(ConfigError, match="not found"):
        evaluate(envs=[str(tmp_path / "nope.yaml")], policies=["baseline:uniform"], out=str(tmp_path / "r"))


# -- on the micro spec ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def learned_policies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two policy directories: a small random-init agent (tensors) "trained on" another scenario,
    and a saved fixed ratio recorded as trained on micro (learned: it is loaded from a directory)."""
    import torch

    from mixagent.policies.agent import MixingAgent
    from mixagent.policies.static import FixedRatio

    root = tmp_path_factory.mktemp("policies")
    torch.manual_seed(0)
    agent = MixingAgent(network={"hidden": 8, "layers": 1}, floor=0.01)
    agent.provenance = {"name": "tiny-agent", "data": {"env_spec": "prose-to-code"}}
    agent.save(root / "agent")
    fixed = FixedRatio(source=0.35)
    fixed.provenance = {"name": "micro-ratio", "data": {"env_spec": "micro"}}
    fixed.save(root / "ratio")
    return {"agent": root / "agent", "ratio": root / "ratio"}


def _config(micro_spec: Path, pols: dict[str, Path], out: Path, **kw) -> EvaluateConfig:
    return EvaluateConfig(envs=[str(micro_spec)], out=str(out), seeds=SEEDS, tune_seeds=[7, 8],
                          policies=["baseline:uniform", "baseline:target_only", "baseline:best_fixed_ratio",
                                    "baseline:regmix", str(pols["agent"]), f"policy:{pols['ratio']}"],
                          ratio_grid=[0.2, 0.5, 0.8], regmix_runs=8, progress=False, **kw)


@pytest.fixture(scope="module")
def report_dir(micro_spec: Path, learned_policies: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
               micro_cache: Path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXAGENT_CACHE", str(micro_cache))
        out = tmp_path_factory.mktemp("reports") / "micro"
        res = evaluate(_config(micro_spec, learned_policies, out, record_card=True))
    return out, res


def _strip(rec: dict) -> dict:
    rec = {k: v for k, v in rec.items() if k not in TIMING_FIELDS}
    rec["steps"] = [{k: v for k, v in s.items() if k not in TIMING_FIELDS} for s in rec["steps"]]
    return rec


def test_report_has_every_section_and_plot(report_dir):
    out, res = report_dir
    rep = json.loads((out / "report.json").read_text())
    assert set(rep) >= {"format", "setup", "policies", "tuning", "results", "win_rates", "transfer",
                        "episodes", "plots"}
    # 6 policies x 3 seeds evaluated; tuning: 3 ratios x 2 seeds + 8 regmix mixtures
    assert len(rep["episodes"]) == 6 * 3
    assert res.episodes_run == 6 * 3 + 3 * 2 + 8 and res.episodes_cached == 0
    ep = rep["episodes"][0]
    assert len(ep["steps"]) == 3 and len(ep["steps"][0]["weights"]) == 6
    assert set(ep["steps"][0]["scores"]) >= {"balanced", "source", "target"}
    rows = rep["results"]["micro"]
    assert [r["policy"] for r in rows] == ["uniform", "target_only", "best fixed ratio", "regmix (tuned)",
                                           "tiny-agent", "micro-ratio"]
    means = [r["balanced"]["mean"] for r in rows]  # rank 1 = best balanced mean; ties share a rank
    assert [r["rank"] for r in rows] == [1 + sum(o > m for o in means) for m in means]
    for r in rows:  # the table's numbers are the per-seed finals' statistics
        s = summarise(r["per_seed"]["balanced"])
        assert r["balanced"]["mean"] == pytest.approx(s.mean)
        assert r["balanced"]["half_width"] == pytest.approx(s.half_width)
    # tuning recorded; tuned on the tune seeds only
    grid = rep["tuning"]["micro"]["best_fixed_ratio"]
    assert grid["seeds"] == [7, 8] and [g["source"] for g in grid["rows"]] == [0.2, 0.5, 0.8]
    assert grid["best"] == max(grid["rows"], key=lambda g: g["balanced_mean"])["source"]
    assert len(rep["tuning"]["micro"]["regmix"]["runs"]) == 8
    best = next(r for r in rows if r["policy"] == "best fixed ratio")
    assert best["describe"] == f"fixed_ratio(source={grid['best']:g})"
    # win rates: 2 learned x 4 baselines, per scenario and overall
    wr = rep["win_rates"]
    assert len(wr["per_scenario"]) == 8 and len(wr["overall"]) == 8
    for w in wr["per_scenario"]:
        a = next(r for r in rows if r["policy"] == w["learned"])["per_seed"]["balanced"]
        b = next(r for r in rows if r["policy"] == w["baseline"])["per_seed"]["balanced"]
        assert w["win_rate"] == pytest.approx(paired(a, b).win_rate)
    # transfer: trained-on read from provenance; statements for every learned policy
    tr = rep["transfer"]
    cells = {r["policy"]: r["cells"]["micro"] for r in tr["rows"]}
    assert cells["micro-ratio"]["in_distribution"] and not cells["tiny-agent"]["in_distribution"]
    assert len(tr["statements"]) == 2
    assert all(("does not beat" in s) or (" beats " in s) for s in tr["statements"])
    md = (out / "report.md").read_text()
    for section in ("## Setup", "## Results per scenario", "## Tuned baselines", "## Win rates",
                    "## Transfer", "## Plots", "best baseline"):
        assert section in md
    pngs = [*rep["plots"]["scenarios"]["micro"].values(), rep["plots"]["transfer"]]
    assert len(pngs) == 5
    for p in pngs:
        data = (out / p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"]({p})" in md


def test_resume_reuses_episodes_and_policy_changes_invalidate(report_dir, micro_spec: Path,
                                                              learned_policies: dict[str, Path], tmp_path: Path):
    import shutil

    src, first = report_dir
    out = tmp_path / "copy"
    shutil.copytree(src, out)  # the shared report stays as it is for the other tests
    again = evaluate(_config(micro_spec, learned_policies, out, plots=False))
    assert again.episodes_run == 0 and again.episodes_cached == first.episodes_run
    assert again.report["results"] == first.report["results"]
    # an interrupted write leaves only a temporary file: cleaned up, never read
    (out / "episodes" / ".x.json.1.tmp").write_text("{")
    # a changed policy gets a new id, so its episodes run again
    from mixagent.policies.protocol import load_policy

    changed = tmp_path / "ratio2"
    pol = load_policy(learned_policies["ratio"])
    pol.params.source = 0.45
    pol.save(changed)
    cfg = _config(micro_spec, {**learned_policies, "ratio": changed}, out, plots=False)
    res = evaluate(cfg)
    assert res.episodes_run == 3 and not list((out / "episodes").glob(".*.tmp"))


def test_a_scenario_observing_the_objective_reuses_the_episodes_of_policies_blind_to_it(
        report_dir, micro_spec: Path, learned_policies: dict[str, Path], tmp_path: Path):
    """The ``objective`` group changes only the observation, and no baseline (nor an agent
    without it in its features) reads it: on a copy of the scenario that observes it, their
    episodes are the cached ones, stored under the new hash; an agent that reads it runs."""
    import shutil

    import yaml

    from mixagent.policies.agent import MixingAgent

    src, first = report_dir
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    d = yaml.safe_load(micro_spec.read_text(encoding="utf-8"))
    d["name"] = "micro-objective"
    d.setdefault("observation", {})["features"] = ["objective"]
    variant = micro_spec.with_name("micro-objective-eval.yaml")
    variant.write_text(yaml.safe_dump(d), encoding="utf-8")
    reader = MixingAgent(network={"hidden": 8, "layers": 1}, floor=0.01,
                         features={"observation": ["objective"]})
    reader.save(tmp_path / "reader")
    cfg = _config(micro_spec, learned_policies, out, plots=False)
    cfg = cfg.model_copy(update={"envs": [str(variant)],
                                 "policies": [*cfg.policies, f"policy:{tmp_path / 'reader'}"]})
    res = evaluate(cfg)
    assert res.episodes_run == len(SEEDS)  # the reader's episodes only
    after = {r["spec"]: r["per_seed"] for r in res.report["results"]["micro-objective"]}
    before = {r["spec"]: r["per_seed"] for r in first.report["results"]["micro"]}
    assert set(after) - set(before) == {f"policy:{tmp_path / 'reader'}"}
    for spec, per_seed in before.items():
        assert after[spec] == per_seed, spec  # tuned baselines included: the same tuning runs
    reused = [json.loads(f.read_text()) for f in (out / "episodes").rglob("seed-*.json")
              if json.loads(f.read_text()).get("reused_from_spec_hash")]
    assert reused and {r["scenario"] for r in reused} == {"micro-objective"}


def test_one_and_two_ray_workers_give_identical_episodes(report_dir, micro_spec: Path,
                                                        learned_policies: dict[str, Path], tmp_path: Path):
    _, first = report_dir
    res = evaluate(_config(micro_spec, learned_policies, tmp_path / "two", workers=2, plots=False))
    assert res.episodes_run == first.episodes_run and res.report["setup"]["compute"]["workers"]
    one = [_strip(e) for e in first.report["episodes"]]
    two = [_strip(e) for e in res.report["episodes"]]
    assert one == two
    assert res.report["win_rates"] == first.report["win_rates"]


def test_record_card_writes_provenance_and_renders_it(report_dir, learned_policies: dict[str, Path]):
    from mixagent.policies.protocol import load_policy

    cfg = json.loads((learned_policies["agent"] / "config.json").read_text())
    ev = cfg["provenance"]["evaluation"]
    assert ev["seeds"] == SEEDS and ev["report"].endswith("report.md")
    (sc,) = ev["scenarios"]
    assert sc["scenario"] == "micro" and len(sc["vs"]) == 4
    assert {v["verdict"] for v in sc["vs"]} <= {"beats", "does not beat"}
    card = (learned_policies["agent"] / "README.md").read_text()
    assert "## Evaluation" in card and "| micro |" in card and "regmix (tuned)" in card
    assert load_policy(learned_policies["agent"]).provenance["evaluation"]["format"] == "mixagent.evaluation/1"
    # the tuned ratio travels with the card, where a CPT run (the demo) finds it through the one reader
    from mixagent.policies.records import evaluation_record

    grid = report_dir[1].report["tuning"]["micro"]["best_fixed_ratio"]
    assert sc["best_fixed_ratio"] == grid["best"]
    record = evaluation_record(cfg)
    assert record is not None and record.model_dump(mode="json") == ev  # written = read
    assert record.best_fixed_ratio("micro") == (grid["best"], "provenance.evaluation.scenarios[0].best_fixed_ratio")


def test_mistyped_policy_path_in_evaluate_says_it_does_not_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 learned_policies: dict[str, Path]):
    """Issue 15 #8, in the evaluation's own spec parser: the same messages as resolve_policy."""
    from mixagent.evaluation.policies import parse_policy

    monkeypatch.chdir(learned_policies["ratio"].parent)
    for spec in ("ratoi", "./ratoi", "policy:ratoi", str(tmp_path / "agnet")):
        with pytest.raises(ConfigError, match="does not exist") as err:
            parse_policy(spec)
        assert "unknown baseline" not in str(err.value)
    with pytest.raises(ConfigError, match="write policy:ratio"):
        parse_policy("baseline:ratio")
    with pytest.raises(ConfigError, match="did you mean baseline:best_fixed_ratio"):
        parse_policy("baseline:best_fixed_ration")


@pytest.fixture(scope="module")
def plain_run(micro_spec: Path, learned_policies: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
              micro_cache: Path):
    """One in-process evaluation with nothing tuned, progress left to auto-detect (off a terminal),
    on a copy of the micro spec that asks for 2 threads, while the caller runs 2 threads.

    Returns the result, the log messages of the evaluation, and the caller's thread count after."""
    import logging

    import torch

    import mixagent.utils.progress as progress_mod

    spec = yaml.safe_load(micro_spec.read_text())
    spec["runtime"] = {"device": "cpu", "num_threads": 2}
    folder = tmp_path_factory.mktemp("spec2")
    (folder / "micro.yaml").write_text(yaml.safe_dump(spec))
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler, logger = Keep(level=logging.INFO), logging.getLogger("mixagent.evaluation")
    before_threads, before_level = torch.get_num_threads(), logger.level
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXAGENT_CACHE", str(micro_cache))
        mp.delenv("MIXAGENT_NUM_THREADS", raising=False)
        mp.setattr(progress_mod, "is_terminal", lambda stream: False)  # as when piped to a log
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        torch.set_num_threads(2)
        try:
            res = evaluate(envs=[str(folder / "micro.yaml")], out=str(tmp_path_factory.mktemp("plain") / "r"),
                           policies=["baseline:uniform", "baseline:target_only", str(learned_policies["agent"]),
                                     f"policy:{learned_policies['ratio']}"],
                           seeds=[1000, 1001], workers=1, plots=False)
            after = torch.get_num_threads()
            leaked = "MIXAGENT_NUM_THREADS" in __import__("os").environ
        finally:
            torch.set_num_threads(before_threads)
            logger.removeHandler(handler)
            logger.setLevel(before_level)
    return res, messages, after, leaked


def test_evaluate_logs_a_line_per_episode_off_a_terminal(plain_run):
    """Issue 15 #14: piped to a log, ``mixagent evaluate`` says something per finished episode
    (policy, scenario, seed, score), not nothing for minutes."""
    res, messages, _, _ = plain_run
    lines = [m for m in messages if m.startswith("evaluating:") and "balanced" in m]
    assert len(lines) == 4 * 2 == res.episodes_run
    for label in ("uniform", "target_only", "tiny-agent", "micro-ratio"):
        for seed in (1000, 1001):
            assert any(f"{label} on micro seed {seed}: balanced" in m for m in lines), (label, seed)
    assert any("evaluating: done, 8/8 episodes" in m for m in messages)


def test_report_states_field_shares_and_what_uniform_means(plain_run):
    """Issue 15 #17: each policy's source:target share is in report.json and report.md, and the
    report says that uniform is uniform over domains (its source share follows the counts)."""
    res, _, _, _ = plain_run
    rep = json.loads(res.report_json.read_text())
    sc = rep["setup"]["scenarios"][0]
    rows = {r["policy"]: r for r in rep["results"]["micro"]}
    uni = rows["uniform"]["field_shares"]
    assert uni["source"] == pytest.approx(sc["num_source"] / sc["num_domains"])
    assert uni["source"] + uni["target"] == pytest.approx(1.0) and len(uni["source_per_seed"]) == 2
    assert rows["target_only"]["field_shares"]["source"] == pytest.approx(0.0)
    assert rows["micro-ratio"]["field_shares"]["source"] == pytest.approx(0.35)
    assert "uniform over domains" in rep["notes"]["uniform"]
    md = res.report_md.read_text()
    assert "| share (source : target) |" in md and f"| {uni['source']:.2f} : {uni['target']:.2f} |" in md
    assert f"source share {sc['num_source']}/{sc['num_domains']}" in md and "uniform over **domains**" in md


def test_report_md_pairs_each_learned_policy_with_every_baseline(plain_run):
    """Issue 15 #19: no tuning seeds listed when nothing was tuned; every learned policy's paired
    difference ± CI and win rate against every baseline (not just the best), per scenario."""
    res, _, _, _ = plain_run
    md = res.report_md.read_text()
    assert "tuning seeds" not in md.lower()
    per = res.report["win_rates"]["per_scenario"]
    assert len(per) == 2 * 2
    for w in per:
        d = w["diff"]
        row = (f"| {w['learned']} | {w['baseline']} | {d['mean']:+.5f} ± {d['half_width']:.5f} | "
               f"{100 * w['win_rate']:.0f}% ({w['wins']}W {w['ties']}T {w['losses']}L) | {w['verdict']} |")
        assert row in md, row


def test_threads_recorded_where_episodes_run(plain_run):
    """Issue 15 #20: with one in-process worker the proxies run on the documented share (1 thread
    for cpus_per_worker 1, over the spec's 2 and the caller's 2), the report records the count
    the episodes ran with, and the caller's process keeps its own thread count."""
    res, _, after, leaked = plain_run
    comp = res.report["setup"]["compute"]
    assert comp["workers"][0]["threads"] == 1 and comp["threads_applied"] == [1]
    assert comp["threads_per_worker"] == 1
    assert comp["workers"][0]["compile"] == "off" and comp["compile_applied"] == ["off"]
    assert after == 2 and not leaked
    assert "1 × 1 torch thread(s) each" in res.report_md.read_text()


def test_cli_with_config_file_and_flag_overrides(micro_spec: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from mixagent.cli.main import app

    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({"envs": [str(micro_spec)], "policies": ["baseline:uniform", "baseline:tokens"],
                                   "seeds": [5, 6], "workers": 1}))
    runner = CliRunner()
    r = runner.invoke(app, ["evaluate", "--config", str(cfg), "--out", str(tmp_path / "rep"), "--seeds", "1000",
                            "--no-plots", "--no-progress"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["setup"]["seeds"] == [1000]  # the flag overrides the file
    assert "n=1, no CI" in (tmp_path / "rep" / "report.md").read_text()
    r = runner.invoke(app, ["evaluate", "--env", str(micro_spec), "--policy", "baseline:bogus", "--out",
                            str(tmp_path / "bad")])
    assert isinstance(r.exception, ConfigError) and "unknown baseline" in str(r.exception)
