"""Progress reporting (issue 15 #14): a bar on a terminal, log lines when output goes to a log.

The utility on fake streams (a terminal and a pipe), then the loops that use it: base
pre-training logs its loss and speed every N steps off a terminal. No timing assertions: lines
due by count are checked; time-based lines are checked with a fake clock.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from mixagent.utils import progress as progress_mod
from mixagent.utils.progress import Progress, resolve_mode


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name]


def test_mode_follows_the_stream_unless_forced():
    assert resolve_mode(None, FakeTTY()) == "bar"
    assert resolve_mode(None, io.StringIO()) == "log"  # a pipe or a file
    assert resolve_mode(True, io.StringIO()) == "bar"
    assert resolve_mode(False, FakeTTY()) == "off"
    closed = io.StringIO()
    closed.close()
    assert resolve_mode(None, closed) == "log"


def test_off_a_terminal_a_log_line_every_n_items_and_a_final_line(caplog: pytest.LogCaptureFixture):
    log = logging.getLogger("test.progress.pipe")
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="test.progress.pipe"), \
            Progress(5, "evaluating", "episode", logger=log, log_every=2, log_seconds=None,
                     stream=stream) as bar:
        for i in range(5):
            bar.set_postfix(loss=1.5 - i / 10)
            bar.update(1, note=f"item {i}")
    lines = _lines(caplog, "test.progress.pipe")
    assert len(lines) == 3, lines  # after items 2 and 4, and the final line
    assert lines[0].startswith("evaluating: 2/5 episodes (40%)") and "loss=1.4" in lines[0]
    assert lines[0].endswith("item 1")
    assert lines[1].startswith("evaluating: 4/5 episodes (80%)") and "left" in lines[1]
    assert lines[2].startswith("evaluating: done, 5/5 episodes (100%) in ")
    assert stream.getvalue() == ""  # nothing drawn on a pipe


def test_a_loop_stopped_early_says_so(caplog: pytest.LogCaptureFixture):
    log = logging.getLogger("test.progress.early")
    with caplog.at_level(logging.INFO, logger="test.progress.early"), \
            Progress(10, "CQL", "step", logger=log, log_every=100, stream=io.StringIO()) as bar:
        for _ in bar.wrap(range(3)):
            pass
    (line,) = _lines(caplog, "test.progress.early")
    assert line.startswith("CQL: done (stopped early), 3/10 steps (30%)")


def test_time_based_lines_with_a_fake_clock(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    now = [100.0]
    monkeypatch.setattr(progress_mod.time, "perf_counter", lambda: now[0])
    log = logging.getLogger("test.progress.clock")
    with caplog.at_level(logging.INFO, logger="test.progress.clock"):
        bar = Progress(None, "pre-training base", "step", logger=log, log_seconds=30.0, stream=io.StringIO())
        for _ in range(4):
            now[0] += 10.0
            bar.update(32)
        assert len(_lines(caplog, "test.progress.clock")) == 1  # at 30 s, not at 10, 20 or 40
        bar.close()
    lines = _lines(caplog, "test.progress.clock")
    assert lines[0].startswith("pre-training base: 96 steps, 30 s, 3.2 step/s")
    assert lines[1].startswith("pre-training base: done, 128 steps in 40 s")


def test_on_a_terminal_a_bar_and_no_log_lines(caplog: pytest.LogCaptureFixture):
    tty = FakeTTY()
    log = logging.getLogger("test.progress.tty")
    with caplog.at_level(logging.INFO, logger="test.progress.tty"), \
            Progress(3, "ratio grid", "episode", logger=log, log_every=1, stream=tty) as bar:
        for i in range(3):
            bar.update(1, note=f"share 0.{i}")
    out = tty.getvalue()
    assert "ratio grid" in out and "3/3" in out and "episode" in out
    assert _lines(caplog, "test.progress.tty") == []


def test_silenced_reports_nothing(caplog: pytest.LogCaptureFixture):
    tty = FakeTTY()
    log = logging.getLogger("test.progress.off")
    with caplog.at_level(logging.INFO, logger="test.progress.off"), \
            Progress(3, "x", logger=log, log_every=1, progress=False, stream=tty) as bar:
        bar.update(3)
    assert tty.getvalue() == "" and _lines(caplog, "test.progress.off") == []


def test_base_pretraining_logs_loss_and_speed_every_n_steps(micro_spec: Path, micro_cache: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch):
    """``mixagent env pretrain`` piped to a log: a line with loss and tokens/s about every tenth of
    the run, not one line and then silence."""
    from mixagent.envs.setup import resolve_spec
    from mixagent.proxy.base_model import pretrain_base

    monkeypatch.setenv("MIXAGENT_CACHE", str(micro_cache))
    monkeypatch.setattr(progress_mod, "is_terminal", lambda stream: False)  # as when piped
    resolved = resolve_spec(micro_spec)
    with caplog.at_level(logging.INFO, logger="mixagent.proxy.base_model"):
        meta = pretrain_base(resolved.base_recipe(), tmp_path, resolved.spec.runtime, progress=None)
    lines = [m for m in _lines(caplog, "mixagent.proxy.base_model") if m.startswith("pre-training base:")]
    steps = meta["steps"]
    assert len(lines) >= 2, lines  # at least one line during the run, and the final one
    assert all("loss=" in m and "tokens/s=" in m for m in lines)
    assert lines[-1].startswith(f"pre-training base: done, {steps}/{steps} steps")
