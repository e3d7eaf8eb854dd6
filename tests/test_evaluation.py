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
    assert sorted(r["rank"] for r in rows) == sorted(set(r["rank"] for r in rows)) or len(rows) == 6
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
    from mixagent.policies.base import load_policy

    changed = tmp_path / "ratio2"
    pol = load_policy(learned_policies["ratio"])
    pol.params.source = 0.45
    pol.save(changed)
    cfg = _config(micro_spec, {**learned_policies, "ratio": changed}, out, plots=False)
    res = evaluate(cfg)
    assert res.episodes_run == 3 and not list((out / "episodes").glob(".*.tmp"))


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
    from mixagent.policies.base import load_policy

    cfg = json.loads((learned_policies["agent"] / "config.json").read_text())
    ev = cfg["provenance"]["evaluation"]
    assert ev["seeds"] == SEEDS and ev["report"].endswith("report.md")
    (sc,) = ev["scenarios"]
    assert sc["scenario"] == "micro" and len(sc["vs"]) == 4
    assert {v["verdict"] for v in sc["vs"]} <= {"beats", "does not beat"}
    card = (learned_policies["agent"] / "README.md").read_text()
    assert "## Evaluation" in card and "| micro |" in card and "regmix (tuned)" in card
    assert load_policy(learned_policies["agent"]).provenance["evaluation"]["format"] == "mixagent.evaluation/1"
    # the tuned ratio travels with the card, where a CPT run (the demo) finds it
    from mixagent.demo import best_fixed_ratio

    grid = report_dir[1].report["tuning"]["micro"]["best_fixed_ratio"]
    assert sc["best_fixed_ratio"] == grid["best"]
    assert best_fixed_ratio(cfg, "micro") == (grid["best"], "provenance.evaluation.scenarios[0].best_fixed_ratio")


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
