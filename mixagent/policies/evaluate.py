"""Side-by-side evaluation of policies on one environment, and recording it in a policy's card.

Every policy runs on the same env seeds (so on the same data order); the best fixed ratio is
grid-searched on *separate* seeds, so it is not tuned on the evaluation's noise. This is the
small in-process version behind ``mixagent policy eval``; :mod:`mixagent.evaluation`
(``mixagent evaluate``) runs the full matrix (scenarios × policies × seeds, in parallel, with
intervals, win rates and plots) and records it in cards with ``--record-card``.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixagent.policies.base import MixingPolicy, resolve_policy, run_episode

log = logging.getLogger(__name__)


def summarise(name: str, finals: Sequence[dict[str, float]], seeds: Sequence[int]) -> dict[str, Any]:
    """Mean, sample std and 95% Student-t half-width (None for one seed) of the final scores over
    seeds, computed by :mod:`mixagent.evaluation.stats` like the full evaluation's report."""
    from mixagent.evaluation.stats import summarise as stats_summary

    b = stats_summary([f["balanced"] for f in finals])
    return {"policy": name, "seeds": [int(s) for s in seeds],
            "balanced_mean": b.mean, "balanced_std": b.std, "balanced_ci95": b.half_width,
            "source_mean": float(np.mean([f["source"] for f in finals])),
            "target_mean": float(np.mean([f["target"] for f in finals])),
            "balanced_per_seed": [float(f["balanced"]) for f in finals]}


def compare(env: Any, policies: Sequence[str | MixingPolicy], seeds: Sequence[int], *,
            ratio_seeds: Sequence[int] | None = None, ratios: Sequence[float] | None = None,
            grid: dict[str, Any] | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Evaluate policies, plus the best fixed ratio: grid-searched here on ``ratio_seeds``, or
    taken from ``grid`` (a :func:`~mixagent.policies.static.grid_search_ratio` result)."""
    from mixagent.policies.static import FixedRatio, grid_search_ratio
    from mixagent.utils.progress import Progress

    t0 = time.perf_counter()
    pols = [resolve_policy(p) for p in policies]
    if grid is None and ratio_seeds:
        grid = grid_search_ratio(env, ratios, ratio_seeds, progress=progress)
    if grid is not None:
        overlap = set(grid.get("seeds", [])) & set(seeds)
        if overlap:
            log.warning("ratio grid seeds %s overlap the evaluation seeds", sorted(overlap))
        best = FixedRatio(source=grid["best"])
        best.provenance = {"name": f"best fixed ratio (source={grid['best']:g})"}
        pols.append(best)
    rows = []
    with Progress(len(pols) * len(seeds), "evaluating", "episode", progress=progress, logger=log,
                  log_every=1) as bar:
        for p in pols:
            name = p.provenance.get("name") or p.describe()
            finals = []
            for s in seeds:
                finals.append(run_episode(p, env, int(s)).final_scores)
                bar.update(1, note=f"{name} seed {int(s)}: balanced {finals[-1]['balanced']:+.5f}")
            rows.append(summarise(str(name), finals, seeds))
    return {"env": getattr(env, "unwrapped", env).env_spec.name, "seeds": [int(s) for s in seeds],
            "ratio_grid": grid, "rows": rows, "seconds": round(time.perf_counter() - t0, 1),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip()}


def record_in_card(path: str | Path, report: dict[str, Any], description: str | None = None) -> None:
    """Store ``report`` as the policy's ``provenance.evaluation`` and re-render its card."""
    from mixagent.policies.base import load_policy

    path = Path(path)
    pol = load_policy(path)
    desc = description or (
        f"Final balanced score on `{report['env']}` over env seeds {report['seeds']} (the same for "
        "every policy; sample std over seeds). The best fixed ratio was grid-searched on seeds "
        f"{(report.get('ratio_grid') or {}).get('seeds')} (not the evaluation seeds). Produced by "
        "mixagent.policies.evaluate.compare.")
    pol.provenance["evaluation"] = {**report, "description": desc}
    pol.save(path)
