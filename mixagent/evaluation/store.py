"""The episode cache: one JSON file per (policy id, scenario spec hash, seed) under OUT/episodes/.

Each finished episode is written at once and atomically (temporary file + rename), so an
interrupted evaluation loses at most the episodes in flight, and a rerun with the same output
folder skips every episode already on disk. The key holds the policy's content hash and the env
spec's hash, so a changed policy or scenario never reuses stale episodes. A file that cannot be
read or does not match its key is ignored (and logged) and its episode runs again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mixagent.evaluation.worker import EPISODE_FORMAT
from mixagent.utils.io import write_json_atomic

log = logging.getLogger(__name__)

EPISODES_DIR = "episodes"


class EpisodeStore:
    def __init__(self, out: Path):
        self.root = Path(out) / EPISODES_DIR

    def path(self, policy_id: str, spec_hash: str, seed: int) -> Path:
        return self.root / spec_hash / policy_id / f"seed-{int(seed)}.json"

    def get(self, policy_id: str, spec_hash: str, seed: int) -> dict[str, Any] | None:
        p = self.path(policy_id, spec_hash, seed)
        if not p.is_file():
            return None
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            log.warning("ignoring unreadable cached episode %s (%s); it runs again", p, err)
            return None
        ok = (isinstance(rec, dict) and rec.get("format") == EPISODE_FORMAT
              and rec.get("policy_id") == policy_id and rec.get("spec_hash") == spec_hash
              and rec.get("seed") == int(seed) and isinstance(rec.get("steps"), list) and rec["steps"])
        if not ok:
            log.warning("ignoring cached episode %s: it does not match its key; it runs again", p)
            return None
        return rec

    def put(self, record: dict[str, Any]) -> Path:
        p = self.path(record["policy_id"], record["spec_hash"], record["seed"])
        write_json_atomic(p, record, indent=None)
        return p

    def clean_temporary(self) -> int:
        """Remove leftover temporary files of writes that were interrupted."""
        n = 0
        if self.root.is_dir():
            for p in self.root.rglob(".*.tmp"):
                p.unlink(missing_ok=True)
                n += 1
        return n
