"""``mixagent demo`` at a tiny size: three CPT runs through the real Trainer, the outputs, the
best-fixed-ratio lookup and its labelled fallback, the reward and observation read from the
agent's config, and ``--from-scratch`` end to end."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from typer.testing import CliRunner

from mixagent.cli.main import app
from mixagent.demo import (
    DEFAULT_RATIO,
    PLOT_NAME,
    SUMMARY_NAME,
    DemoConfig,
    _cpt_tasks,
    _family_base,
    _ratio,
    _reward_for,
    _scenario,
    run_demo,
)
from mixagent.errors import ConfigError
from mixagent.policies.records import ScenarioRecord, evaluation_record

REPO = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY: dict[str, Any] = {
    "progress": False,
    "base": {"size": "micro", "tokens": 4096, "seq_len": 32, "batch_size": 8},
    "cpt": {"max_steps": 6, "reweight_every": 3, "batch_size": 4, "seq_len": 32, "eval_sequences": 2,
            "task_examples": 4},
}


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A private cache: the demo's base models (and the tiny corpus) never touch the user's."""
    old = os.environ.get("MIXAGENT_CACHE")
    os.environ["MIXAGENT_CACHE"] = str(tmp_path_factory.mktemp("demo-cache"))
    yield
    if old is None:
        os.environ.pop("MIXAGENT_CACHE", None)
    else:
        os.environ["MIXAGENT_CACHE"] = old


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from mixagent.envs.spec import load_env_spec
    from mixagent.policies import MixingAgent

    torch.manual_seed(0)
    agent = MixingAgent(network={"hidden": 16})
    with torch.no_grad():  # a fresh head outputs uniform weights; perturb it so the agent differs
        for p in agent.network.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    spec = load_env_spec(REPO / "envs" / "micro.yaml")  # "trained" on micro: its reward and observation
    agent.provenance = {"scenario": ScenarioRecord(name=spec.name, reward=spec.reward,
                                                   observation=spec.observation).model_dump(mode="json")}
    out = tmp_path_factory.mktemp("agent") / "untrained-agent"
    agent.save(out)
    return out


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_cli_help() -> None:
    res = CliRunner().invoke(app, ["demo", "--help"])
    assert res.exit_code == 0, res.output
    for opt in ("--from-scratch", "--out", "--workers", "--seed", "--threads", "--config", "--policy"):
        assert opt in res.output


def test_three_runs_summary_plots_and_labelled_ratio_fallback(synthetic_datadir: Path, agent_dir: Path,
                                                               tmp_path: Path) -> None:
    cfg = DemoConfig(**TINY, data=str(synthetic_datadir), policy=str(agent_dir), out=str(tmp_path / "out"))
    res = run_demo(cfg)
    assert [r["run"] for r in res.rows] == ["agent", "uniform", "best-ratio"]
    summary = json.loads((tmp_path / "out" / SUMMARY_NAME).read_text())
    assert summary["scenario"] == "micro"  # from the agent's provenance.scenario, not a spec file
    assert [r["run"] for r in summary["rows"]] == ["agent", "uniform", "best-ratio"]
    for row in summary["rows"]:
        for key in ("balanced", "source", "target", "source_loss", "target_loss", "final_source_share"):
            assert isinstance(row[key], float), key
        assert Path(row["summary"]).is_file()
        assert not (Path(row["dir"]) / "final-model").exists()
    assert sum(r["best"] for r in summary["rows"]) == 1
    best = max(summary["rows"], key=lambda r: r["balanced"])
    assert summary["best"] == best["run"] and best["best"]
    # the agent card records no ratio grid: the default is used and labelled as not tuned
    ratio = summary["best_fixed_ratio"]
    assert ratio["tuned"] is False and ratio["source"] == DEFAULT_RATIO
    assert "NOT tuned" in ratio["label"] and "NOT tuned" in summary["rows"][2]["policy"]
    assert summary["rows"][2]["final_source_share"] == pytest.approx(DEFAULT_RATIO)
    assert _is_png(tmp_path / "out" / PLOT_NAME)
    assert len(res.run_plots) == 3 and all(_is_png(p) for p in res.run_plots)
    assert summary["base_model"]["reused"] is False

    # again through the CLI (a --config YAML plus an override), into the same folder: replaced,
    # and the base model comes from the cache
    import yaml

    conf = tmp_path / "demo.yaml"
    conf.write_text(yaml.safe_dump({**cfg.model_dump(mode="json"), "out": "ignored-by-the-override"}))
    cli = CliRunner().invoke(app, ["demo", "--config", str(conf), "--out", str(tmp_path / "out")])
    assert cli.exit_code == 0, cli.output
    flat = "".join(cli.output.split())  # rich wraps lines at the terminal width
    assert "NOTtuned" in flat and PLOT_NAME in flat and "★" in flat
    summary2 = json.loads((tmp_path / "out" / SUMMARY_NAME).read_text())
    assert summary2["base_model"]["reused"] is True
    assert summary2["base_model"]["path"] == summary["base_model"]["path"]
    assert [r["balanced"] for r in summary2["rows"]] == pytest.approx([r["balanced"] for r in summary["rows"]])


def _interval() -> dict[str, Any]:
    return {"n": 1, "mean": 0.1, "std": 0.0, "half_width": None, "ci_low": None, "ci_high": None}


def _evaluated(*scenarios: tuple[str, float | None]) -> dict[str, Any]:
    """A policy config whose mixagent evaluate record covers ``(scenario, best ratio)`` pairs."""
    return {"provenance": {"evaluation": {
        "format": "mixagent.evaluation/1", "report": "r/report.md", "created_at": "now", "seeds": [1],
        "tune_seeds": [2], "scenarios": [
            {"scenario": name, "spec_hash": "h", "best_fixed_ratio": share, "balanced": _interval(),
             "source": _interval(), "target": _interval(), "rank": 1, "of": 2} for name, share in scenarios]}}}


def test_best_fixed_ratio_from_the_evaluation_record(tmp_path: Path) -> None:
    cfg = DemoConfig(**TINY)
    assert _ratio(cfg, tmp_path, {"provenance": {}}, "prose-to-math")["tuned"] is False
    card = _evaluated(("prose-to-code", 0.2), ("prose-to-math", 0.6))
    found = _ratio(cfg, tmp_path, card, "prose-to-math")
    assert found["tuned"] is True and found["source"] == pytest.approx(0.6)
    assert found["where"].endswith("provenance.evaluation.scenarios[1].best_fixed_ratio")
    untuned = _ratio(cfg, tmp_path, _evaluated(("prose-to-math", None)), "prose-to-math")
    assert untuned["tuned"] is False and untuned["source"] == DEFAULT_RATIO and "NOT tuned" in untuned["label"]
    assert _ratio(cfg, tmp_path, card, "micro")["tuned"] is False
    forced = _ratio(DemoConfig(**TINY, best_ratio=0.3), tmp_path, card, "prose-to-math")
    assert forced["source"] == 0.3 and forced["tuned"] is False
    # one record format: the old 'mixagent policy eval' record is refused with what to do
    old = {"provenance": {"evaluation": {"env": "prose-to-math", "ratio_grid": {"best": 0.3}, "rows": []}}}
    with pytest.raises(ConfigError, match="mixagent evaluate --record-card"):
        evaluation_record(old)


def test_a_family_agent_takes_the_ratio_tuned_on_its_familys_base(tmp_path: Path) -> None:
    """A family agent's scenario is its collection (never evaluated by that name); the ratio grid
    of its family's base scenario is the tuned one for the demo's run, and is labelled so."""
    micro = [ln for ln in (REPO / "envs" / "micro.yaml").read_text().splitlines() if not ln.startswith("name:")]
    (tmp_path / "base.yaml").write_text("\n".join(["name: prose-to-math", *micro]))
    (tmp_path / "fam.yaml").write_text("family:\n  name: fam\n  base: base.yaml\n  targets: [{field: math}]\n")
    card = _evaluated(("prose-to-code", 0.2), ("prose-to-math", 0.6))
    card["provenance"]["selection"] = {"family_origin": str(tmp_path / "fam.yaml")}
    found = _ratio(DemoConfig(**TINY), tmp_path, card, "fam-paired")
    assert found["tuned"] is True and found["source"] == pytest.approx(0.6)
    assert "prose-to-math, the agent's family's base" in found["label"]
    # the collection's own name wins where it was evaluated; a missing family file falls back
    assert _ratio(DemoConfig(**TINY), tmp_path, card, "prose-to-code")["source"] == pytest.approx(0.2)
    card["provenance"]["selection"]["family_origin"] = str(tmp_path / "gone.yaml")
    missing = _ratio(DemoConfig(**TINY), tmp_path, card, "fam-paired")
    assert missing["tuned"] is False and "'fam-paired'" in missing["where"]
    # an unnamed base is named by its file, as evaluate names it
    (tmp_path / "base.yaml").write_text("\n".join(micro))
    card["provenance"]["selection"]["family_origin"] = str(tmp_path / "fam.yaml")
    assert _family_base(card) == "base"


def test_the_runs_score_every_benchmark_the_reward_names(tmp_path: Path) -> None:
    """The reward's benchmark terms are scored whether the data directory holds them as legacy
    task sets or as benchmarks; a term whose benchmark is missing is dropped, never silently
    replaced: until 2026-12-07 the demo looked at task sets only, so v2.1's source term
    (prose_cloze, a benchmark) fell back to the domain loss."""
    from types import SimpleNamespace

    from mixagent.envs.spec import RewardSpec

    reward = RewardSpec(source_terms={"prose_cloze.answer_logprob": 1.0},
                        target_terms={"math_exact_match.answer_logprob": 1.0})
    data = SimpleNamespace(benchmarks=[SimpleNamespace(name="math_exact_match"),
                                       SimpleNamespace(name="prose_cloze")])
    cfg = DemoConfig(**TINY)
    tasks = _cpt_tasks(cfg, data, reward)
    assert {t["name"] for t in tasks} == {"math_exact_match", "prose_cloze"}
    assert _reward_for(reward, tasks) == reward
    only_math = _cpt_tasks(cfg, SimpleNamespace(benchmarks=[SimpleNamespace(name="math_exact_match")]), reward)
    assert _reward_for(reward, only_math).source_terms == {"loss": 1.0}


def test_the_shipped_agents_record_their_scenario_and_evaluation() -> None:
    """The demo's defaults come from the shipped cards: reward/observation of prose-to-math (the
    spec they were trained on) and a tuned best fixed ratio for it."""
    from mixagent.envs.spec import load_env_spec
    from mixagent.policies.format import read_config

    spec = load_env_spec(REPO / "envs" / "prose-to-math.yaml")
    for name in ("prose-to-math-agent-v1", "prose-to-math-bc-v1"):
        config = read_config(REPO / "policies" / name)
        rec = _scenario(DemoConfig(**TINY), config)
        assert (rec.name, rec.reward, rec.observation) == ("prose-to-math", spec.reward, spec.observation)
        record = evaluation_record(config)
        assert record is not None and record.best_fixed_ratio("prose-to-math") is not None
    # the demo's default agent: trained on the benchmark-scored family, so the CPT runs are scored
    # by its base's benchmarks and observe the benchmark scores and alignment features
    from mixagent.demo import SHIPPED_POLICY

    v2 = load_env_spec(REPO / "envs" / "prose-to-math-v2.yaml")
    rec = _scenario(DemoConfig(**TINY), read_config(REPO / SHIPPED_POLICY))
    assert (rec.name, rec.reward, rec.observation) == ("family-v2-paired", v2.reward, v2.observation)
    assert set(rec.observation.features) == {"alignment", "benchmark_scores"}
    assert _family_base(read_config(REPO / SHIPPED_POLICY)) == "prose-to-math-v2"
    # a scenario given in the config replaces the recorded one
    micro = _scenario(DemoConfig(**TINY, scenario=str(REPO / "envs" / "micro.yaml")), config)
    assert micro.name == "micro" and micro.reward.scale == load_env_spec(REPO / "envs" / "micro.yaml").reward.scale


def test_missing_policy_says_what_to_do(tmp_path: Path) -> None:
    cfg = DemoConfig(**TINY, policy=str(tmp_path / "nope"), out=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"--policy DIR.*--from-scratch"):
        run_demo(cfg)


def test_refuses_a_foreign_out_folder(synthetic_datadir: Path, agent_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    cfg = DemoConfig(**TINY, data=str(synthetic_datadir), policy=str(agent_dir), out=str(tmp_path / "mine"))
    with pytest.raises(ConfigError, match="not a demo's output"):
        run_demo(cfg)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_from_scratch_end_to_end(tmp_path: Path) -> None:
    """collect (in-process) -> BC + CQL -> evaluate + ratio grid on the proxy -> 3 CPT runs."""
    cfg = DemoConfig(**TINY, corpus="tiny", from_scratch=True, workers=1, out=str(tmp_path / "out"),
                     scratch={"env": str(REPO / "envs" / "micro.yaml"), "episodes": 4, "bc_steps": 10,
                              "cql_steps": 10, "batch_size": 16, "eval_seeds": [100], "ratio_seeds": [200],
                              "ratios": [0.2, 0.8]})
    res = run_demo(cfg)
    pol = tmp_path / "out" / "from-scratch" / "policy"
    assert (pol / "config.json").is_file() and (pol / "model.safetensors").is_file()
    assert res.scratch is not None and res.scratch["collect"]["episodes"] == 4
    assert {"demo-from-scratch", "uniform"} <= set(res.scratch["evaluation"])  # + the best fixed ratio
    # the fresh agent's card now holds the proxy's ratio grid, so the fixed-ratio run is tuned
    assert res.ratio["tuned"] is True and res.ratio["source"] in (0.2, 0.8)
    assert [r["run"] for r in res.rows] == ["agent", "uniform", "best-ratio"]
    assert res.rows[0]["policy"] == "agent trained from scratch"
    assert _is_png(res.plot_path)
