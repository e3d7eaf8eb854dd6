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
* **Runs to match** (opt-in, ``runs_to_match``): per scenario and learned policy, the smallest
  RegMix tuning budget of the ladder whose fitted mixture's balanced mean on the evaluation
  seeds reaches the policy's, and whether the tuned best fixed ratio reaches it (see
  :func:`runs_to_match`).
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


def _significant(p: Any) -> bool | None:
    """Whether a paired difference's 95% interval excludes 0 (None with one seed: no interval)."""
    if p.diff.ci_low is None:
        return None
    return bool(p.diff.ci_low > 0 or p.diff.ci_high < 0)


def _by_id(records: dict[Any, dict[str, Any]], scenario: Scenario, pid: str, seeds: Sequence[int]) -> list[float]:
    return [float(records[(scenario.key, pid, s)]["final_scores"]["balanced"]) for s in seeds]


def runs_to_match(records: dict[Any, dict[str, Any]], entries: Sequence[PolicyEntry],
                  scenarios: Sequence[Scenario], seeds: Sequence[int],
                  ladders: dict[str, list[dict[str, Any]]], *, grid_points: int, tune_seeds: Sequence[int],
                  added_episodes: int) -> dict[str, Any]:
    """How many tuning runs each tuned baseline needs to match each learned policy, per scenario.

    The reference is each learned policy; without one, each scenario's best zero-tuning
    baseline (untuned, highest balanced mean), and ``reference`` says so. "Matches" means the
    tuned policy's mean final balanced score on the evaluation seeds is >= the reference's.

    * RegMix: ``ladders[scenario]`` are RegMix fits on the first n random runs (n ascending;
      their evaluation episodes are in ``records``); runs to match = the smallest n that
      matches, None (``"> N"``) when none does. A budget of n runs costs n tuning episodes.
    * best fixed ratio: its tuning costs ``grid_points × len(tune_seeds)`` episodes; it matches
      or it does not.

    Each comparison carries the paired difference reference − tuned over the evaluation seeds
    and whether its 95% interval excludes 0 (``significant``; None with one seed).
    """
    learned = [e for e in entries if e.role == "learned"]
    untuned = [e for e in entries if e.role == "baseline" and e.tuned is None]
    bfr = next((e for e in entries if e.tuned == "best_fixed_ratio"), None)
    reference = ("learned policies" if learned else
                 "best zero-tuning baseline (no learned policy was evaluated)" if untuned else None)
    rows: list[dict[str, Any]] = []
    ladder_out: dict[str, list[dict[str, Any]]] = {}
    for sc in scenarios:
        points = []
        for pt in ladders.get(sc.key, []):
            vals = _by_id(records, sc, pt["policy_id"], seeds)
            points.append({**pt, "balanced": summarise(vals).to_dict(), "per_seed": vals})
        if points:
            ladder_out[sc.key] = points
        if learned:
            refs = [(e, per_seed(records, e, sc, seeds)) for e in learned]
        elif untuned:
            refs = [max(((e, per_seed(records, e, sc, seeds)) for e in untuned),
                        key=lambda r: float(np.mean(r[1])))]
        else:
            refs = []
        for e, ref in refs:
            ref_mean = float(np.mean(ref))
            head = {"scenario": sc.key, "policy": e.label, "role": e.role, "policy_balanced": ref_mean}
            if points:
                budgets = []
                for pt in points:
                    p = paired(ref, pt["per_seed"])
                    budgets.append({"runs": pt["runs"], "tuning_episodes": pt["tuning_episodes"],
                                    "balanced_mean": pt["balanced"]["mean"],
                                    "matches": pt["balanced"]["mean"] >= ref_mean, "diff": p.diff.to_dict(),
                                    "verdict": verdict(p), "significant": _significant(p)})
                hit = next((b for b in budgets if b["matches"]), None)
                at = hit or budgets[-1]
                max_runs = points[-1]["runs"]
                rows.append({**head, "baseline": "RegMix", "runs_to_match": hit["runs"] if hit else None,
                             "matched": hit is not None, "max_runs": max_runs,
                             "text": str(hit["runs"]) if hit else f"> {max_runs}",
                             "tuning_episodes": at["tuning_episodes"], "diff": at["diff"],
                             "significant": at["significant"], "budgets": budgets})
            if bfr is not None:
                tuned = per_seed(records, bfr, sc, seeds)
                p = paired(ref, tuned)
                g = grid_points * len(tune_seeds)
                ok = float(np.mean(tuned)) >= ref_mean
                rows.append({**head, "baseline": "best fixed ratio", "matched": ok,
                             "grid_points": grid_points, "tune_seeds": len(tune_seeds), "tuning_episodes": g,
                             "balanced_mean": float(np.mean(tuned)),
                             "text": f"{'matches' if ok else 'does not match'} with {g} runs",
                             "diff": p.diff.to_dict(), "verdict": verdict(p), "significant": _significant(p)})
    fits = sum(len(v) for v in ladders.values())
    return {"rule": "matches = the tuned baseline's mean final balanced score on the evaluation seeds is "
                    ">= the reference policy's; RegMix: the smallest n of the ladder whose fit on the first n "
                    "random runs matches ('> N' if none does); a run is one tuning episode (the best fixed "
                    "ratio's grid: shares x tune seeds); the evaluation-seed episodes are not tuning; diff is "
                    "reference - tuned, paired by seed, significant when its 95% interval excludes 0",
            "reference": reference, "rows": rows, "ladder": ladder_out,
            "cost": {"ladder_fits": fits, "evaluation_episodes_added": added_episodes,
                     "tuning_episodes_added": 0,
                     "note": "the ladder fits reuse the tuning runs of the largest RegMix budget; each fit "
                             "not already evaluated (as a budget row or another fit with the same mixture) "
                             "costs one episode per evaluation seed"}}
