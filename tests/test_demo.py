"""``mixagent demo`` at a tiny size: three CPT runs through the real Trainer, the outputs, the
best-fixed-ratio lookup and its labelled fallback, and ``--from-scratch`` end to end."""

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
    best_fixed_ratio,
    run_demo,
)
from mixagent.errors import ConfigError

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

    from mixagent.policies import MixingAgent

    torch.manual_seed(0)
    agent = MixingAgent(network={"hidden": 16})
    with torch.no_grad():  # a fresh head outputs uniform weights; perturb it so the agent differs
        for p in agent.network.parameters():
            p.add_(torch.randn_like(p) * 0.3)
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
    cfg = DemoConfig(**TINY, data=str(synthetic_datadir), policy=str(agent_dir), out=str(tmp_path / "out"),
                     scenario=str(REPO / "envs" / "micro.yaml"))
    res = run_demo(cfg)
    assert [r["run"] for r in res.rows] == ["agent", "uniform", "best-ratio"]
    summary = json.loads((tmp_path / "out" / SUMMARY_NAME).read_text())
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


def test_best_fixed_ratio_lookup() -> None:
    assert best_fixed_ratio({"provenance": {}}, "prose-to-math") is None
    compare_report = {"provenance": {"evaluation": {"env": "prose-to-math", "ratio_grid": {"best": 0.3}}}}
    assert best_fixed_ratio(compare_report, "prose-to-math")[0] == pytest.approx(0.3)
    assert best_fixed_ratio(compare_report, "prose-to-code") is None
    card = {"provenance": {"evaluation": {"scenarios": [  # mixagent evaluate's card, one entry per scenario
        {"scenario": "prose-to-code", "best_fixed_ratio": 0.2}, {"scenario": "prose-to-math", "best_fixed_ratio": 0.6}]}}}
    assert best_fixed_ratio(card, "prose-to-math") == (pytest.approx(0.6), "provenance.evaluation.scenarios[1].best_fixed_ratio")
    assert best_fixed_ratio(card, "micro") is None
    untuned = {"provenance": {"evaluation": {"scenarios": [{"scenario": "prose-to-math", "best_fixed_ratio": None}]}}}
    assert best_fixed_ratio(untuned, "prose-to-math") is None


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
