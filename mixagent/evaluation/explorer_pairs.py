"""Which explorer of a collection mixes best: paired comparisons of final scores.

A collection is training data, but its explorers are also mixing rules run on many scenarios,
and which of them mixes best is what decides whom an agent should imitate (behaviour cloning
ranks episodes within a scenario) and which explorer to collect more with. Final scores vary
with the data order as much as explorers differ (seed sd ~0.008 on the v2 family), so two
explorers are compared **paired**: on the same scenario and, with a family collected with
``repeat_seeds: shared`` and ``--explorer-order cycle``, on the same env seed — common random
numbers, where a difference is the mixing's alone. ``pair_by="scenario"`` pairs by scenario only
(each explorer's mean over its episodes there), for collections whose repeats ran on their own
seeds; the seed's share of the difference then stays in the interval.

The unit of replication is the pair unit (a scenario, or a scenario and seed); intervals are the
evaluation's Student-t intervals (:mod:`.stats`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mixagent.errors import MixagentError
from mixagent.evaluation.stats import Paired, paired, verdict

PairBy = Literal["seed", "scenario"]
ALL = "all"
"""The group of every pair unit, reported first."""


@dataclass(frozen=True)
class EpisodeFinal:
    """One episode's end: who mixed, where, on which data order, and the final scores."""

    explorer: str
    scenario: str
    env_seed: int
    balanced: float
    source: float
    target: float


@dataclass(frozen=True)
class ExplorerComparison:
    """An explorer against the baseline on the pair units of one group where both ran."""

    explorer: str
    group: str
    units: int
    mean: float           # the explorer's mean final balanced score over those units
    baseline_mean: float  # the baseline's, over the same units
    paired: Paired        # explorer − baseline, per unit

    @property
    def verdict(self) -> str:
        return verdict(self.paired)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict
        return d


def episode_finals(folder: str | Path) -> tuple[list[EpisodeFinal], dict[str, Any]]:
    """The final scores of a collection's episodes (continued path, terminal step), and the
    scenario choices its card records (``{}`` for a collection of one env spec).

    Bad shards are skipped, as ``trajectories info`` does (they are listed there)."""
    import warnings

    from mixagent.trajectories.dataset import load
    from mixagent.trajectories.storage import read_card

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = load(folder, skip_bad=True)
    cont = ts.continuations()
    frame = cont.filter(cont.table["terminateds"]).to_pandas()
    finals = [
        EpisodeFinal(str(r.explorer), str(r.scenario or ""), int(r.env_seed), float(r.balanced_score),
                     float(r.source_score), float(r.target_score))
        for r in frame.itertuples(index=False)
    ]
    scenarios = read_card(folder).get("scenarios") or {}
    return finals, {name: entry.get("choices", {}) for name, entry in scenarios.items()}


def choice_value(choices: Mapping[str, Any], key: str) -> str:
    """A scenario's value of a dotted choice key (``target_field``, ``reward.aggregator``), as
    text; ``"-"`` where the scenario has none."""
    value: Any = choices
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return "-"
        value = value[part]
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if not isinstance(value, Mapping) else ",".join(f"{k}={v}" for k, v in value.items())


def compare_explorers(finals: Sequence[EpisodeFinal], baseline: str, *, pair_by: PairBy = "seed",
                      by: str | None = None,
                      choices: Mapping[str, Mapping[str, Any]] | None = None) -> list[ExplorerComparison]:
    """Every other explorer against ``baseline``, over all pair units and, with ``by`` (a
    dotted scenario choice, see :func:`choice_value`), within each of its values.

    Raises :class:`~mixagent.errors.MixagentError` when ``baseline`` did not run, or when no
    explorer shares a pair unit with it (say how to collect paired data, or to pair by scenario).
    """
    explorers = sorted({f.explorer for f in finals})
    if baseline not in explorers:
        raise MixagentError(f"baseline {baseline!r} ran no episode here; the explorers are: "
                            f"{', '.join(explorers) or 'none'}")
    if pair_by not in ("seed", "scenario"):
        raise MixagentError(f"pair_by must be 'seed' or 'scenario', got {pair_by!r}")
    cells: dict[tuple[str, tuple[Any, ...]], list[float]] = defaultdict(list)
    for f in finals:
        unit = (f.scenario, f.env_seed) if pair_by == "seed" else (f.scenario,)
        cells[(f.explorer, unit)].append(f.balanced)
    score = {k: float(np.mean(v)) for k, v in cells.items()}
    units_of: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    for explorer, unit in score:
        units_of[explorer].add(unit)

    def group_of(unit: tuple[Any, ...]) -> str:
        return choice_value((choices or {}).get(unit[0], {}), by) if by else ALL

    rows: list[ExplorerComparison] = []
    for explorer in explorers:
        if explorer == baseline:
            continue
        common = sorted(units_of[explorer] & units_of[baseline], key=repr)
        groups: dict[str, list[tuple[Any, ...]]] = {}
        if by:
            for unit in common:
                groups.setdefault(group_of(unit), []).append(unit)
        for group, units in [(ALL, common), *sorted(groups.items())]:
            if not units:
                continue
            a = [score[(explorer, u)] for u in units]
            b = [score[(baseline, u)] for u in units]
            rows.append(ExplorerComparison(explorer, group, len(units), float(np.mean(a)),
                                           float(np.mean(b)), paired(a, b)))
    if not rows:
        hint = ("collect a family with repeats, 'repeat_seeds: shared' and --explorer-order cycle, "
                "or compare with pair_by='scenario'" if pair_by == "seed"
                else "collect a family with repeats and --explorer-order cycle")
        raise MixagentError(f"no explorer ran on the same {'scenario and env seed' if pair_by == 'seed' else 'scenario'}"
                            f" as {baseline!r}, so there is nothing to pair: {hint}")
    return rows

