"""The ``mixagent`` entry point: usage errors, user errors, bugs, and ``--help`` rendering.

These tests go through :func:`mixagent.cli.main.main` (the console script), not ``CliRunner`` on
the app: the exit codes and messages under test are decided in ``main()``.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_main  # the console script in this process

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "envs" / "micro.yaml"


# -- usage errors (defect: a traceback and exit 1) ---------------------------------------------
USAGE_ERRORS = {
    "value out of range": (["collect", str(MICRO), "--out", "unused", "--episodes", "0"],
                           "Invalid value for '--episodes'"),
    "unknown option": (["cpt", "--bogus"], "No such option: --bogus"),
    "missing option": (["cpt"], "Missing option '--model'"),
    "missing argument": (["env", "pretrain"], "Missing argument"),
    "bad value": (["env", "run", str(MICRO), "--seed", "abc"], "Invalid value for '--seed'"),
    "unknown command": (["bogus"], "No such command 'bogus'"),
}


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_usage_errors_print_usage_and_exit_2(case, monkeypatch, capsys, tmp_path):
    argv, message = USAGE_ERRORS[case]
    monkeypatch.chdir(tmp_path)  # nothing may be written, whatever happens
    code, out, err = run_main(argv, monkeypatch, capsys)
    assert code == 2, (code, out, err)
    assert err.startswith("Usage: mixagent"), err
    assert "--help' for help" in err and f"Error: {message}" in err, err
    assert "Traceback" not in err + out
    assert list(tmp_path.iterdir()) == []


def test_help_exits_0(monkeypatch, capsys):
    for argv in (["--help"], ["cpt", "--help"], ["env", "run", "--help"]):
        code, out, err = run_main(argv, monkeypatch, capsys)
        assert code == 0 and out.startswith("Usage: mixagent") and err == "", (argv, out, err)


def test_user_error_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    code, _, err = run_main(["env", "run", str(tmp_path / "missing.yaml")], monkeypatch, capsys)
    assert code == 2
    assert err.startswith("error: config file not found:") and "missing.yaml" in err
    assert "Traceback" not in err and "Usage:" not in err


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    import mixagent.envs.setup

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not a user error")

    monkeypatch.setattr(mixagent.envs.setup, "resolve_spec", broken)
    monkeypatch.setattr(sys, "argv", ["mixagent", "env", "pretrain", str(MICRO)])
    from mixagent.cli.main import main

    with pytest.raises(RuntimeError, match="a bug, not a user error"):
        main()


def test_console_entry_in_a_subprocess():
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "COLUMNS": "80"}
    script = Path(sys.executable).with_name("mixagent")  # the installed console script
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "mixagent.cli.main"]
    res = subprocess.run([*cmd, "cpt", "--bogus"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "Usage: mixagent" in res.stderr and "Error: No such option: --bogus" in res.stderr
    assert "Traceback" not in res.stderr


# -- help rendering (defect: `<bool>` after flags; sentences broken mid-line) ------------------
HELP_COMMANDS = [[], ["cpt"], ["collect"], ["evaluate"], ["data", "build"], ["env", "run"],
                 ["env", "pretrain"], ["model", "pretrain"], ["train"], ["demo"], ["trajectories"]]


def _description_paragraphs(text: str) -> list[list[str]]:
    """The command description: the paragraphs between the usage line and the first section."""
    lines = text.splitlines()
    body: list[str] = []
    for line in lines[1:]:
        if line.strip().rstrip(":") in ("Arguments", "Options", "Commands") or "─" in line:
            break
        body.append(line.rstrip())
    paragraphs: list[list[str]] = [[]]
    for line in body:
        if line.strip():
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    return [p for p in paragraphs if p]


@pytest.mark.parametrize("columns", [80, 60])
@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "mixagent")
def test_help_shows_flags_bare_and_wraps_whole_lines(command, columns, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, _ = run_main([*command, "--help"], monkeypatch, capsys)
    assert code == 0
    assert "<bool>" not in out, out
    assert "…" not in out, out  # no option help cut short
    width = columns - 2
    assert max(len(line.rstrip()) for line in out.splitlines()) <= columns, out
    for paragraph in _description_paragraphs(out):
        for line, nxt in itertools.pairwise(paragraph):
            # greedy filling: a line ends early only when the next word would not fit
            assert len(line) + 1 + len(nxt.split()[0]) > width, (line, nxt, out)


def test_flags_have_no_value_placeholder(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    _, out, _ = run_main(["cpt", "--help"], monkeypatch, capsys)
    # the option's line: the flag, then straight its help text (no "<bool>" in between)
    assert re.search(r"^ +--resume +[A-Z][a-z]", out, re.MULTILINE), out
    _, out, _ = run_main(["data", "build", "--help"], monkeypatch, capsys)
    assert re.search(r"^ +--force +[A-Z][a-z]", out, re.MULTILINE), out
