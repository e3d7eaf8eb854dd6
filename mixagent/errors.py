"""The exceptions mixagent raises for bad input.

Every error a user can cause is one of these, with a message that names the offending thing
(a file, a config key, a domain) and says what to do about it. The CLI prints them without a
traceback; library users can catch :class:`MixagentError`.
"""

from __future__ import annotations


class MixagentError(Exception):
    """Base class: a problem with the user's input or environment, not a bug in mixagent."""


class ConfigError(MixagentError, ValueError):
    """A config file or argument is invalid; the message names the key."""


class DataError(MixagentError, ValueError):
    """A corpus, data directory or shard is missing, empty, corrupt or inconsistent."""
