"""The CLI's names (issue 11): pipeline stages are verbs, auxiliary commands sit in noun groups,
``--config`` is always a YAML file, and every old spelling still works with a note.

Both spellings of every renamed command are run through :func:`mixagent.cli.main.main` (the
console script), with the expensive work replaced by a recorder: what is under test is that both
reach the same call, not the work itself (tests/test_cpt_cli.py and tests/test_env.py run it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from conftest import run_main  # the console script in this process

from mixagent.cli.aliases import RENAMED, Renamed
from mixagent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "envs" / "micro.yaml"


def _commands() -> dict[str, Any]:
    """Every visible command of the app by its full spelling ('model pretrain'), as click sees it."""
    from mixagent.cli.main import app

    found: dict[str, Any] = {}

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs is None:
            found[" ".join(path)] = cmd
            return
        for name, sub in subs.items():
            if not sub.hidden:
                walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def test_stages_are_verbs_and_auxiliaries_sit_in_noun_groups():
    commands = _commands()
    for verb in ("collect", "train", "train-online", "cpt", "evaluate", "demo"):
        assert verb in commands
    for spelling in ("data build", "data builtin", "data info", "env pretrain", "env run",
                     "model pretrain", "policy info", "trajectories info", "trajectories plot"):
        assert spelling in commands, sorted(commands)
    assert "pretrain" not in commands and "pretrain-model" not in commands


def test_old_spellings_are_hidden_from_help(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = run_main(["--help"], monkeypatch, capsys)
    assert code == 0
    listed = {line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()}
    assert {"env", "model", "policy", "trajectories"} <= listed
    assert not listed & set(RENAMED), listed


def test_config_only_ever_means_a_yaml_file():
    for spelling, cmd in _commands().items():
        for param in cmd.params:
            if "--config" in getattr(param, "opts", []):
                assert "YAML" in (param.help or ""), (spelling, param.help)
    sizes = [p for p in _commands()["model pretrain"].params if "--size" in p.opts]
    assert sizes and "micro" in sizes[0].help


@pytest.mark.parametrize("old", list(RENAMED))
def test_old_spelling_prints_the_new_one_and_its_help(old, monkeypatch, capsys):
    code, out, err = run_main([old, "--help"], monkeypatch, capsys)
    new = " ".join(RENAMED[old].new)
    assert code == 0, (out, err)
    assert out.startswith(f"Usage: mixagent {new} "), out
    assert err.splitlines() == [RENAMED[old].note(old)]
    assert f"use 'mixagent {new}'" in err


def test_old_spelling_usage_error_names_the_new_command(monkeypatch, capsys):
    code, _, err = run_main(["pretrain"], monkeypatch, capsys)
    assert code == 2
    assert "Usage: mixagent env pretrain" in err and "Missing argument" in err
    assert "Traceback" not in err


def test_renamed_options_are_forwarded():
    renamed = Renamed(("model", "pretrain"), {"--config": "--size"})
    assert renamed.forward(["--config", "micro", "--out", "x"]) == [
        "model", "pretrain", "--size", "micro", "--out", "x"]
    assert renamed.forward(["--config=micro"]) == ["model", "pretrain", "--size=micro"]
    assert renamed.forward(["--configs", "a"])[-2:] == ["--configs", "a"]  # only the exact name
    assert "--size, not --config" in renamed.note("pretrain-model")


@pytest.mark.parametrize("argv", [
    ["model", "pretrain", "--size", "micro"],
    ["pretrain-model", "--config", "micro"],
    ["pretrain-model", "--config=micro"],
], ids=["new", "old", "old-equals"])
def test_both_spellings_of_model_pretrain_make_the_same_call(argv, monkeypatch, capsys, tmp_path):
    import mixagent.cpt.model
    import mixagent.data.manifest

    calls: list[tuple[Any, ...]] = []

    def record(data: Any, field: str, size: str, out: Path, **kw: Any) -> dict[str, Any]:
        calls.append((data, field, size, out, kw))
        return {"parameters": 1, "tokens": kw["tokens"], "seconds": 0.0, "final_train_loss": 1.0}

    monkeypatch.setattr(mixagent.cpt.model, "pretrain_model", record)
    monkeypatch.setattr(mixagent.data.manifest, "DataDir", lambda path: path)
    code, out, err = run_main([*argv, "--data", str(tmp_path), "--field", "prose", "--out",
                               str(tmp_path / "base"), "--tokens", "64"], monkeypatch, capsys)
    assert code == 0, err
    assert "1 parameters, 64 tokens of prose" in out
    assert calls == [(tmp_path, "prose", "micro", tmp_path / "base",
                      {"tokens": 64, "seq_len": 128, "batch_size": 16, "lr": 1e-3, "seed": 0})]
    assert ("deprecated" in err) == (argv[0] == "pretrain-model")


@pytest.mark.parametrize("argv", [["env", "pretrain"], ["pretrain"]], ids=["new", "old"])
def test_both_spellings_of_env_pretrain_reach_the_env_spec(argv, monkeypatch, capsys):
    import mixagent.envs.setup

    seen: list[Path] = []

    def refuse(spec: Path) -> None:
        seen.append(spec)
        raise ConfigError("stopped here by the test")

    monkeypatch.setattr(mixagent.envs.setup, "resolve_spec", refuse)
    code, _, err = run_main([*argv, str(MICRO)], monkeypatch, capsys)
    assert code == 2 and seen == [MICRO]
    assert err.splitlines()[-1] == "error: stopped here by the test"
    assert ("deprecated" in err) == (argv == ["pretrain"])
