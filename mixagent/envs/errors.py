"""Errors of the environment's step API (bad actions, stepping a finished episode)."""

from __future__ import annotations

from mixagent.errors import MixagentError


class InvalidActionError(MixagentError, ValueError):
    """An action (or a weight vector) that cannot be applied; the message says why."""


class ResetNeededError(MixagentError, RuntimeError):
    """``step`` was called before ``reset`` or after the episode ended."""
