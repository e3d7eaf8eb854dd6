"""Where mixagent caches derived artifacts (built-in corpus, pre-trained proxy bases).

``MIXAGENT_CACHE`` overrides the default ``~/.cache/mixagent``; tests point it at a temporary
directory so they never touch a user's cache.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("MIXAGENT_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "mixagent"
    path.mkdir(parents=True, exist_ok=True)
    return path
