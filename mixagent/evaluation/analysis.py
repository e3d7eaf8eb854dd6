"""From episode records to the numbers of the report: per-scenario tables, win rates, transfer.

Everything here is a function of the episode records and the policy entries (no I/O), so the
same records always give the same report numbers. The statistics live in
:mod:`mixagent.evaluation.stats`.

* **Table** per scenario: final balanced / source / target score per policy (mean over seeds with
  95% t interval), rank by balanced mean, and the field shares the policy set (mean over steps
  and seeds of each field's total weight).
* **Win rates**: every learned policy against every baseline, paired by seed, per scenario and
  pooled over scenarios (each seed of each scenario weighs the same).
* **Transfer**: for every learned policy and scenario, its balanced mean minus the scenario's
  best baseline (highest balanced mean), with the paired difference's interval, whether the
  scenario is one it was trained on, and a plain verdict line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mixagent.evaluation.policies import PolicyEntry
from mixagent.evaluation.scenarios import Scenario
from mixagent.evaluation.stats import paired, pooled_win_rate, ranks, summarise, verdict

METRICS = ("balanced", "source", "target")


def per_seed(records: dict[tuple[str, int], dict[str, Any]], entry: PolicyEntry, scenario: Scenario,
             seeds: Sequence[int], metric: str = "balanced") -> list[float]:
    pid = entry.instance_for(scenario.key).policy_id
    return [float(records[(scenario.key, pid, s)]["final_scores"][metric]) for s in seeds]


def field_shares(records: dict[tuple[str, Any, int], dict[str, Any]], entry: PolicyEntry,
                 scenario: Scenario, seeds: Sequence[int]) -> dict[str, Any]:
    """Each field's total weight, averaged over the steps of each episode, then over seeds.

    Why: the same policy name means different mixtures on different domain spaces — ``uniform``
    is uniform over *domains*, so its source share is (source domains) / (all domains), 0.6
    with 6 source and 4 target clusters — and a reader comparing policies needs the share each
    one actually trained on.
    """
    pid = entry.instance_for(scenario.key).policy_id
    src = ~scenario.space.is_target
    per: list[float] = []
    for s in seeds:
        w = np.asarray([st["weights"] for st in records[(scenario.key, pid, s)]["steps"]], dtype=np.float64)
        per.append(float(w[:, src].sum(axis=1).mean()) if w.size else float("nan"))
    source = float(np.mean(per))
    return {"source": source, "target": 1.0 - source, "source_per_seed": per}


def scenario_table(records: dict[tuple[str, Any, int], dict[str, Any]], entries: Sequence[PolicyEntry],
                   scenario: Scenario, seeds: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for e in entries:
        inst = e.instance_for(scenario.key)
        vals = {m: per_seed(records, e, scenario, seeds, m) for m in METRICS}
        rows.append({"policy": e.label, "role": e.role, "spec": e.spec, "policy_id": inst.policy_id,
                     "describe": inst.describe,
                     **{m: summarise(vals[m]).to_dict() for m in METRICS},
                     "per_seed": {m: vals[m] for m in METRICS},
                     "field_shares": field_shares(records, e, scenario, seeds)})
    for row, r in zip(rows, ranks([row["balanced"]["mean"] for row in rows]), strict=True):
        row["rank"] = r
    return rows


def win_rates(records: dict[Any, dict[str, Any]], entries: Sequence[PolicyEntry],
              scenarios: Sequence[Scenario], seeds: Sequence[int]) -> dict[str, Any]:
    learned = [e for e in entries if e.role == "learned"]
    baselines = [e for e in entries if e.role == "baseline"]
    per_scenario, overall, overall_all = [], [], []
    for le in learned:
        all_cmp = []
        for be in baselines:
            cmps = []
            for sc in scenarios:
                p = paired(per_seed(records, le, sc, seeds), per_seed(records, be, sc, seeds))
                cmps.append(p)
                per_scenario.append({"learned": le.label, "baseline": be.label, "scenario": sc.key,
                                     **p.to_dict(), "verdict": verdict(p)})
            all_cmp += cmps
            overall.append({"learned": le.label, "baseline": be.label,
                            "n": sum(c.n for c in cmps), "win_rate": pooled_win_rate(cmps)})
        overall_all.append({"learned": le.label, "n": sum(c.n for c in all_cmp),
                            "win_rate": pooled_win_rate(all_cmp)})
    return {"rule": "per seed: learned > baseline = 1, tie = 0.5, loss = 0; paired by env seed",
            "per_scenario": per_scenario, "overall": overall, "overall_vs_all_baselines": overall_all}


def _in_distribution(e: PolicyEntry, sc: Scenario) -> bool:
    return sc.spec_hash in e.trained_on_hashes or sc.name in e.trained_on


def transfer(records: dict[Any, dict[str, Any]], entries: Sequence[PolicyEntry],
             scenarios: Sequence[Scenario], seeds: Sequence[int],
             tables: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    learned = [e for e in entries if e.role == "learned"]
    baselines = {e.label: e for e in entries if e.role == "baseline"}
    best: dict[str, str | None] = {}
    for sc in scenarios:
        rows = [r for r in tables[sc.key] if r["role"] == "baseline"]
        best[sc.key] = max(rows, key=lambda r: r["balanced"]["mean"])["policy"] if rows else None
    out_rows, statements = [], []
    for le in learned:
        cells = {}
        for sc in scenarios:
            b = best[sc.key]
            ind = _in_distribution(le, sc)
            if b is None:
                cells[sc.key] = {"value": None, "best_baseline": None, "in_distribution": ind}
                continue
            p = paired(per_seed(records, le, sc, seeds), per_seed(records, baselines[b], sc, seeds))
            v = verdict(p)
            cells[sc.key] = {"value": p.diff.mean, "best_baseline": b, "diff": p.diff.to_dict(),
                             "win_rate": p.win_rate, "verdict": v, "in_distribution": ind}
            ci = (f"± {p.diff.half_width:.5f}, 95% CI" if p.diff.half_width is not None
                  else "one seed, no interval")
            where = "trained on it" if ind else "not trained on it"
            statements.append(f"{le.label} {v} best baseline {b} on scenario {sc.key} "
                              f"({where}): diff {p.diff.mean:+.5f} ({ci}, n={p.n}), win rate {p.win_rate:.2f}")
        out_rows.append({"policy": le.label, "trained_on": le.trained_on or ["unknown"], "cells": cells})
    return {"value": "mean final balanced score of the learned policy minus that of the scenario's best "
                     "baseline (highest mean); the interval is of the per-seed paired difference",
            "scenarios": [sc.key for sc in scenarios], "best_baseline": best, "rows": out_rows,
            "statements": statements}


def curves(records: dict[Any, dict[str, Any]], entry: PolicyEntry, scenario: Scenario,
           seeds: Sequence[int]) -> dict[str, Any]:
    """Seed-averaged weights (T, K) and per-seed source/target/balanced curves (S, T)."""
    pid = entry.instance_for(scenario.key).policy_id
    eps = [records[(scenario.key, pid, s)] for s in seeds]
    w = np.stack([np.asarray([st["weights"] for st in ep["steps"]], dtype=np.float64) for ep in eps])
    out: dict[str, Any] = {"steps": [int(st["step"]) for st in eps[0]["steps"]], "weights": w.mean(axis=0)}
    for m in METRICS:
        out[m] = np.asarray([[float(st["scores"][m]) for st in ep["steps"]] for ep in eps])
    return out
