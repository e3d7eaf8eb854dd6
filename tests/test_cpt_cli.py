"""``mixagent model pretrain`` + ``mixagent cpt`` end to end on the synthetic data directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from typer.testing import CliRunner

from mixagent.cli.main import app
from mixagent.errors import ConfigError


def test_pretrain_model_then_cpt(synthetic_datadir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    model = tmp_path / "base"
    res = runner.invoke(app, ["model", "pretrain", "--data", str(synthetic_datadir), "--field", "prose",
                              "--size", "micro", "--out", str(model), "--tokens", "4096",
                              "--seq-len", "32", "--batch-size", "8"])
    assert res.exit_code == 0, res.output
    assert (model / "model.safetensors").is_file() and (model / "tokenizer.json").is_file()
    out = tmp_path / "run"
    args = ["cpt", "--model", str(model), "--data", str(synthetic_datadir), "--policy",
            "baseline:odm", "--out", str(out), "--max-steps", "4", "--reweight-every", "2",
            "--seq-len", "32", "--batch-size", "2", "--eval-sequences", "2", "--logging-steps", "1",
            "--fields", "prose,math", "--trainer-arg", "disable_tqdm=true"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "balanced" in res.output
    summary = json.loads((out / "mixagent_cpt_summary.json").read_text())
    assert summary["domains"] == ["prose/a", "prose/b", "math/y"]
    assert len(summary["decisions"]) == 2
    assert (out / "mixture_weights.png").stat().st_size > 0

    bare = tmp_path / "bare"
    shutil.copytree(model, bare)
    (bare / "tokenizer.json").unlink()
    res = runner.invoke(app, [*args[:2], str(bare), *args[3:]])
    assert isinstance(res.exception, ConfigError) and "no tokenizer" in str(res.exception)
