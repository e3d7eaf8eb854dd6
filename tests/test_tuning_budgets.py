"""RegMix at several tuning budgets in one evaluation (``baseline:regmix?runs=N``) and the
"runs to match" section (``runs_to_match``): bad budgets, the runs-to-match arithmetic on
constructed records, and two evaluations on the micro spec sharing one report folder (the
second adds budgets, a plain ``baseline:regmix`` and a "learned" copy of a RegMix fit).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mixagent.errors import ConfigError
from mixagent.evaluation import EvaluateConfig, evaluate

SEEDS = [1000, 1001]
TUNE = [7, 8]

pytestmark = pytest.mark.usefixtures("micro_cache_env")


# -- parsing -------------------------------------------------------------------------------------------
def test_bad_runs_values_error_clearly():
    from mixagent.evaluation.config import regmix_budget
    from mixagent.evaluation.policies import parse_policies, parse_policy

    for spec, msg in (("baseline:regmix?runs=4", "too few"), ("baseline:regmix?runs=abc", "not an integer"),
                      ("baseline:regmix?runs=16.5", "not an integer"), ("baseline:regmix?runs=", "not an integer"),
                      ("baseline:regmix?runs=16&source_share=0.3", "only parameter"),
                      ("baseline:regmix?runs=8&runs=16", "only parameter")):
        with pytest.raises(ConfigError, match=msg) as err:
            parse_policy(spec)
        assert "baseline:regmix?runs=N" in str(err.value) and ">= 8" in str(err.value)
        with pytest.raises(ConfigError, match=msg):  # and in the config, before anything runs
            evaluate(envs=["e.yaml"], policies=[spec], out="o")
    assert regmix_budget(" baseline:regmix?runs=16 ") == 16
    assert regmix_budget("baseline:regmix") is None and regmix_budget("baseline:uniform") is None
    given = parse_policy("baseline:regmix?source_share=0.3")  # a given mixture stays an untuned baseline
    assert given.tuned is None and given.instance is not None
    e16, e64, plain = parse_policies(["baseline:regmix?runs=16", "baseline:regmix?runs=64", "baseline:regmix"])
    assert (e16.label, e16.tuned, e16.runs, e16.tuning_key) == ("regmix-16 (tuned)", "regmix", 16, "regmix-16")
    assert e64.label == "regmix-64 (tuned)"
    # plain baseline:regmix is what it was: same label, kind, tuning key and policies[] entry
    assert (plain.label, plain.tuned, plain.runs, plain.tuning_key) == ("regmix (tuned)", "regmix", None, "regmix")
    assert plain.to_dict() == {"label": "regmix (tuned)", "spec": "baseline:regmix", "role": "baseline",
                               "tuned": "regmix", "path": None}
    with pytest.raises(ConfigError, match="list it once"):
        parse_policies(["baseline:regmix?runs=16", "baseline:regmix?runs=16"])
    with pytest.raises(ConfigError, match="list each budget once"):  # plain regmix is regmix_runs' budget
        evaluate(envs=["e.yaml"], policies=["baseline:regmix", "baseline:regmix?runs=16"], out="o",
                 regmix_runs=16)
    with pytest.raises(ConfigError, match="runs_to_match compares tuned baselines"):
        evaluate(envs=["e.yaml"], policies=["baseline:uniform"], out="o", runs_to_match=True)


def test_regmix_ladder_is_capped_at_the_largest_budget():
    from mixagent.evaluation.tuning import regmix_ladder

    assert regmix_ladder([16, 64]) == [8, 16, 24, 32, 48, 64]
    assert regmix_ladder([24]) == [8, 16, 24]
    assert regmix_ladder([12, 40]) == [8, 12, 16, 24, 32, 40]  # evaluated budgets join the ladder
    assert regmix_ladder([100]) == [8, 16, 24, 32, 48, 64, 100]
    assert regmix_ladder([]) == []


# -- runs to match on constructed records ----------------------------------------------------------
def _entry(label: str, role: str, pid: str, tuned: str | None = None):
    from mixagent.evaluation.policies import PolicyEntry, PolicyInstance

    inst = PolicyInstance(pid, {}, None, label)
    if tuned:
        return PolicyEntry(label, label, role, tuned=tuned, tuned_instances={"s": inst})  # type: ignore[arg-type]
    return PolicyEntry(label, label, role, instance=inst)  # type: ignore[arg-type]


def _records(scores: dict[str, list[float]]) -> dict:
    return {("s", pid, seed): {"final_scores": {"balanced": v}}
            for pid, vals in scores.items() for seed, v in zip(SEEDS, vals, strict=True)}


def test_runs_to_match_by_hand():
    from mixagent.evaluation.analysis import runs_to_match
    from mixagent.evaluation.report import _runs_to_match_md

    sc = SimpleNamespace(key="s")
    ladder = [{"runs": 8, "tuning_episodes": 8, "policy_id": "r8", "describe": "r8", "source_share": 0.5,
               "predicted_best": 0.0, "evaluated_as": "regmix-8 (tuned)"},
              {"runs": 16, "tuning_episodes": 16, "policy_id": "r16", "describe": "r16", "source_share": 0.4,
               "predicted_best": 0.0, "evaluated_as": None}]
    scores = {"a": [0.50, 0.60], "b": [0.90, 0.90], "u": [0.30, 0.30], "t": [0.35, 0.40],
              "r8": [0.40, 0.50], "r16": [0.56, 0.58], "g": [0.70, 0.60]}
    entries = [_entry("uniform", "baseline", "u"), _entry("target_only", "baseline", "t"),
               _entry("best fixed ratio", "baseline", "g", tuned="best_fixed_ratio"),
               _entry("regmix-8 (tuned)", "baseline", "r8", tuned="regmix"),
               _entry("agent-a", "learned", "a"), _entry("agent-b", "learned", "b")]
    out = runs_to_match(_records(scores), entries, [sc], SEEDS, {"s": ladder}, grid_points=3,  # type: ignore[list-item]
                        tune_seeds=TUNE, added_episodes=2)
    assert out["reference"] == "learned policies"
    rows = {(r["policy"], r["baseline"]): r for r in out["rows"]}
    a = rows[("agent-a", "RegMix")]  # mean 0.55: the 8-run fit (0.45) does not match, the 16-run one (0.57) does
    assert (a["runs_to_match"], a["text"], a["tuning_episodes"], a["matched"]) == (16, "16", 16, True)
    assert [b["matches"] for b in a["budgets"]] == [False, True]
    assert a["diff"]["mean"] == pytest.approx(0.55 - 0.57)
    assert a["significant"] is False  # differences -0.06 and +0.02: the interval holds 0
    b = rows[("agent-b", "RegMix")]  # 0.90: no fit reaches it
    assert (b["runs_to_match"], b["text"], b["matched"], b["tuning_episodes"]) == (None, "> 16", False, 16)
    g = rows[("agent-a", "best fixed ratio")]  # 0.65 >= 0.55, tuned on 3 shares x 2 seeds
    assert (g["matched"], g["text"], g["tuning_episodes"]) == (True, "matches with 6 runs", 6)
    assert rows[("agent-b", "best fixed ratio")]["text"] == "does not match with 6 runs"
    assert out["ladder"]["s"][1]["balanced"]["mean"] == pytest.approx(0.57)
    assert out["cost"] == {**out["cost"], "ladder_fits": 2, "evaluation_episodes_added": 2, "tuning_episodes_added": 0}
    md = "\n".join(_runs_to_match_md(out))
    assert "## Runs to match" in md and "| s | agent-b (+0.90000) | RegMix | > 16 | 16 |" in md
    assert "matches with 6 runs" in md and "ladder only" in md

    # no learned policy: each scenario's best zero-tuning baseline (target_only, 0.375) is the reference
    out = runs_to_match(_records(scores), entries[:4], [sc], SEEDS, {"s": ladder}, grid_points=3,  # type: ignore[list-item]
                        tune_seeds=TUNE, added_episodes=0)
    assert out["reference"].startswith("best zero-tuning baseline")
    assert {(r["policy"], r["baseline"], r["text"]) for r in out["rows"]} == {
        ("target_only", "RegMix", "8"), ("target_only", "best fixed ratio", "matches with 6 runs")}
    assert "No learned policy was evaluated" in "\n".join(_runs_to_match_md(out))


# -- on the micro spec ---------------------------------------------------------------------------------
def _config(micro_spec: Path, out: Path, policies: list[str], **kw) -> EvaluateConfig:
    return EvaluateConfig(envs=[str(micro_spec)], out=str(out), seeds=SEEDS, tune_seeds=TUNE,
                          policies=policies, ratio_grid=[0.3, 0.7], plots=False, progress=False, **kw)


def _tuning_ids(micro_spec: Path, runs: int) -> list[str]:
    from mixagent.evaluation import tuning
    from mixagent.evaluation.scenarios import load_scenarios

    sc = load_scenarios([str(micro_spec)])[0]
    return [i.policy_id for i, _ in tuning.tuning_tasks(sc, "regmix", [], TUNE, runs, 0)[0]]


@pytest.fixture(scope="module")
def budget_runs(micro_spec: Path, micro_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """Evaluation 1: uniform and RegMix on 8 runs. Then a "learned" policy saved from RegMix-8's
    fit (the same mixture, so the same policy id and episodes). Evaluation 2, same folder: adds
    RegMix on 16 runs, plain baseline:regmix with regmix_runs=12, the best fixed ratio, the
    learned copy and runs to match."""
    from mixagent.policies.regmix import RegMix

    root = tmp_path_factory.mktemp("budgets")
    out = root / "report"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXAGENT_CACHE", str(micro_cache))
        first = evaluate(_config(micro_spec, out, ["baseline:uniform", "baseline:regmix?runs=8"]))
        fit = first.report["tuning"]["micro"]["regmix-8"]
        copy = RegMix(weights=fit["chosen"], source_share=fit["source_share"])
        copy.provenance = {"name": "regmix8-copy", "data": {"env_spec": "micro"}}
        copy.save(root / "copy")
        second = evaluate(_config(micro_spec, out, ["baseline:uniform", "baseline:regmix?runs=8",
                                                    "baseline:regmix?runs=16", "baseline:regmix",
                                                    "baseline:best_fixed_ratio", f"policy:{root / 'copy'}"],
                                  regmix_runs=12, runs_to_match=True))
    return out, first, second


def test_budgets_share_tuning_episodes(budget_runs, micro_spec: Path):
    out, first, second = budget_runs
    ids16 = _tuning_ids(micro_spec, 16)
    assert _tuning_ids(micro_spec, 8) == ids16[:8]  # the 8 runs are the first 8 of the 16
    rep1, rep2 = first.report, second.report
    # evaluation 1: 8 tuning episodes + (uniform, regmix-8) x 2 seeds
    assert first.episodes_run == 8 + 2 * 2
    assert len(rep1["tuning"]["micro"]["regmix-8"]["runs"]) == 8
    # evaluation 2: only runs 9..16 are new tuning episodes (plain regmix's 12 are a prefix too),
    # plus the grid (2 shares x 2 tune seeds) and the new evaluation episodes
    store = out / "episodes" / rep2["setup"]["scenarios"][0]["spec_hash"]
    assert all((store / pid / f"seed-{TUNE[n % 2]}.json").is_file() for n, pid in enumerate(ids16))
    old_eval = {(e["policy_id"], e["seed"]) for e in rep1["episodes"]}
    new_eval = {(e["policy_id"], e["seed"]) for e in rep2["episodes"]} - old_eval
    ladder_only = {(p["policy_id"], s) for p in rep2["runs_to_match"]["ladder"]["micro"] for s in SEEDS}
    ladder_only -= old_eval | {(e["policy_id"], e["seed"]) for e in rep2["episodes"]}
    assert second.episodes_run == 8 + 2 * 2 + len(new_eval) + len(ladder_only)
    tun = rep2["tuning"]["micro"]
    assert list(tun) == ["best_fixed_ratio", "regmix", "regmix-8", "regmix-16"]
    assert [len(tun[k]["runs"]) for k in ("regmix", "regmix-8", "regmix-16")] == [12, 8, 16]
    assert tun["regmix-16"]["runs"][:8] == tun["regmix-8"]["runs"] == rep1["tuning"]["micro"]["regmix-8"]["runs"]
    rows = [r["policy"] for r in rep2["results"]["micro"]]
    assert rows == ["uniform", "regmix-8 (tuned)", "regmix-16 (tuned)", "regmix (tuned)", "best fixed ratio",
                    "regmix8-copy"]
    pols = {p["label"]: p for p in rep2["policies"]}
    assert pols["regmix-16 (tuned)"]["runs"] == 16 and "runs" not in pols["regmix (tuned)"]
    md = (out / "report.md").read_text()
    assert "- micro, RegMix-16: fitted on 16 random static mixtures" in md
    assert "- micro, RegMix: fitted on 12 random static mixtures" in md


def test_plain_regmix_is_the_old_code_path(budget_runs, micro_spec: Path):
    """baseline:regmix (regmix_runs=12) next to other budgets gives the policy the code before
    budgets gave: tuning_tasks on regmix_runs mixtures, finish_regmix on all of them."""
    from mixagent.evaluation import tuning
    from mixagent.evaluation.scenarios import load_scenarios

    out, _, second = budget_runs
    sc = load_scenarios([str(micro_spec)])[0]
    pairs, st = tuning.tuning_tasks(sc, "regmix", [], TUNE, 12, 0)
    finals = {}
    for inst, seed in pairs:
        rec = json.loads((out / "episodes" / sc.spec_hash / inst.policy_id / f"seed-{seed}.json").read_text())
        finals[(inst.policy_id, seed)] = rec["final_scores"]
    inst, rec = tuning.finish_regmix(sc, st["mixtures"], st["instances"], TUNE, finals, seed=0, regressor="gbm")
    pol = {p["label"]: p for p in second.report["policies"]}["regmix (tuned)"]
    assert pol["per_scenario"]["micro"]["policy_id"] == inst.policy_id
    assert second.report["tuning"]["micro"]["regmix"] == json.loads(json.dumps(rec))


def test_runs_to_match_section(budget_runs):
    out, _, second = budget_runs
    rtm = json.loads((out / "report.json").read_text())["runs_to_match"]
    assert rtm["reference"] == "learned policies"
    # ladder: 8, 16 of the standard ladder, plus the evaluated budget 12, capped at 16
    ladder = rtm["ladder"]["micro"]
    assert [p["runs"] for p in ladder] == [8, 12, 16]
    assert [p["evaluated_as"] for p in ladder] == ["regmix-8 (tuned)", "regmix (tuned)", "regmix-16 (tuned)"]
    table = {r["policy"]: r for r in second.report["results"]["micro"]}
    for p in ladder:  # each fit was scored on the evaluation seeds, like its row
        assert p["balanced"]["mean"] == table[p["evaluated_as"]]["balanced"]["mean"]
    # every ladder budget is an evaluated one here: runs to match added no episodes
    assert rtm["cost"]["ladder_fits"] == 3 and rtm["cost"]["evaluation_episodes_added"] == 0
    rows = {r["baseline"]: r for r in rtm["rows"]}
    assert set(rows) == {"RegMix", "best fixed ratio"} and {r["policy"] for r in rtm["rows"]} == {"regmix8-copy"}
    # the learned policy is RegMix-8's own mixture: the same policy id, the same scores, so RegMix
    # matches it with 8 runs, at a paired difference of exactly 0
    assert table["regmix8-copy"]["policy_id"] == table["regmix-8 (tuned)"]["policy_id"]
    rg = rows["RegMix"]
    assert (rg["runs_to_match"], rg["text"], rg["tuning_episodes"], rg["matched"]) == (8, "8", 8, True)
    assert rg["diff"]["mean"] == 0.0 and rg["significant"] is False
    g = rows["best fixed ratio"]
    assert g["tuning_episodes"] == 2 * 2
    assert g["matched"] == (table["best fixed ratio"]["balanced"]["mean"] >= table["regmix8-copy"]["balanced"]["mean"])
    md = (out / "report.md").read_text()
    assert "## Runs to match" in md and "| micro | regmix8-copy (" in md and "| RegMix | 8 | 8 |" in md
    assert "with 4 runs" in md


def test_cli_runs_to_match_flag_and_config_key(micro_spec: Path, tmp_path: Path):
    import yaml
    from typer.testing import CliRunner

    from mixagent.cli.main import app
    from mixagent.evaluation import load_evaluate_config

    runner = CliRunner()
    r = runner.invoke(app, ["evaluate", "--env", str(micro_spec), "--policy", "baseline:regmix?runs=4",
                            "--out", str(tmp_path / "r"), "--runs-to-match"])
    assert isinstance(r.exception, ConfigError) and "runs=4 is too few" in str(r.exception)
    r = runner.invoke(app, ["evaluate", "--env", str(micro_spec), "--policy", "baseline:uniform",
                            "--out", str(tmp_path / "r"), "--runs-to-match"])
    assert isinstance(r.exception, ConfigError) and "runs_to_match compares tuned" in str(r.exception)
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({"envs": ["a.yaml"], "out": "x", "runs_to_match": True,
                                   "policies": ["baseline:regmix?runs=16", "baseline:regmix?runs=64"]}))
    c = load_evaluate_config(cfg, {})
    assert c.runs_to_match and [c.regmix_runs_of(p) for p in c.policies] == [16, 64]
    assert not load_evaluate_config(cfg, {"runs_to_match": False}).runs_to_match  # the flag overrides


def test_runs_to_match_ladder_only_fits_and_no_learned_policy(budget_runs, micro_spec: Path, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture):
    """RegMix on 16 runs alone: the ladder's 8-run fit is no row, so it costs its evaluation
    episodes (logged before they run; here the copied folder's cache holds them: its fit is
    RegMix-8's). Without a learned policy the best zero-tuning baseline (uniform) is the reference."""
    import logging
    import shutil

    src, _, second = budget_runs
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    with caplog.at_level(logging.INFO, logger="mixagent.evaluation.runner"):
        res = evaluate(_config(micro_spec, out, ["baseline:uniform", "baseline:regmix?runs=16"], runs_to_match=True))
    assert res.episodes_run == 0
    assert any("runs to match" in m and "adds 2 episodes" in m for m in caplog.messages)
    rtm = res.report["runs_to_match"]
    assert rtm["cost"]["evaluation_episodes_added"] == 2 and rtm["cost"]["ladder_fits"] == 2
    eight, sixteen = rtm["ladder"]["micro"]
    table2 = {r["policy"]: r for r in second.report["results"]["micro"]}
    assert eight["evaluated_as"] is None and eight["policy_id"] == table2["regmix-8 (tuned)"]["policy_id"]
    assert sixteen["evaluated_as"] == "regmix-16 (tuned)"
    assert rtm["reference"].startswith("best zero-tuning baseline")
    assert {r["policy"] for r in rtm["rows"]} == {"uniform"} and [r["baseline"] for r in rtm["rows"]] == ["RegMix"]
    row = rtm["rows"][0]
    uni = table2["uniform"]["balanced"]["mean"]
    hit = next((p["runs"] for p in (eight, sixteen) if p["balanced"]["mean"] >= uni), None)
    assert row["runs_to_match"] == hit and row["text"] == (str(hit) if hit else "> 16")
    assert "No learned policy was evaluated" in (out / "report.md").read_text()
