"""Held-out selection's episode cache: one final-score file per (scenario, policy, env seed).

Selection re-scores its references (uniform, the heuristics, the previous agent) on the same
held-out scenarios at every training, and those episodes were a third of a training's time
(agent v2.3: 48 of 84 selection episodes, ~10 of 29 minutes). An episode is determined by the
scenario's resolved env-spec hash (spec, data content, benchmarks), the policy's content
(:func:`~mixagent.policies.format.content_id`) and the env seed, so its final scores are kept
under ``<cache>/selection/<spec hash>/<policy id>/seed-<n>.json`` and reused by any later
training on the same family — and a candidate identical to one scored before (the same seed
and data give the same BC warm start) is not run again either.

Like the evaluation cache, the key leaves out the torch thread count: the proxy's float sums
may differ in the last bits between thread counts, far below the seed-to-seed spread.
A file that cannot be read or does not match its key is ignored with a warning and the episode
runs again; writes are atomic, so an interrupted training leaves no half file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mixagent.utils.io import write_json_atomic
from mixagent.utils.paths import cache_dir

log = logging.getLogger(__name__)

SCORE_FORMAT = "mixagent.selection-score/1"


def default_root() -> Path:
    """``$MIXAGENT_CACHE/selection`` (beside the cached corpora and bases)."""
    return cache_dir() / "selection"


class ScoreCache:
    """Final scores of held-out selection episodes, keyed (spec hash, policy id, seed)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.hits = 0

    def path(self, spec_hash: str, policy_id: str, seed: int) -> Path:
        return self.root / spec_hash / policy_id / f"seed-{int(seed)}.json"

    def get(self, spec_hash: str, policy_id: str, seed: int) -> dict[str, float] | None:
        """The cached final scores (counted in :attr:`hits`), or None."""
        p = self.path(spec_hash, policy_id, seed)
        rec: Any = None
        if p.is_file():
            try:
                rec = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                log.warning("ignoring unreadable cached selection score %s (%s); it runs again",
                            p, err)
        ok = (isinstance(rec, dict) and rec.get("format") == SCORE_FORMAT
              and rec.get("spec_hash") == spec_hash and rec.get("policy_id") == policy_id
              and rec.get("seed") == int(seed) and isinstance(rec.get("final_scores"), dict)
              and isinstance(rec["final_scores"].get("balanced"), int | float))
        if rec is not None and not ok:
            log.warning("ignoring cached selection score %s: it does not match its key; it runs "
                        "again", p)
        if not ok:
            return None
        self.hits += 1
        return {k: float(v) for k, v in rec["final_scores"].items()}

    def put(self, spec_hash: str, policy_id: str, seed: int, final_scores: dict[str, float]) -> None:
        record = {"format": SCORE_FORMAT, "spec_hash": spec_hash, "policy_id": policy_id,
                  "seed": int(seed), "final_scores": {k: float(v) for k, v in final_scores.items()}}
        write_json_atomic(self.path(spec_hash, policy_id, seed), record)
