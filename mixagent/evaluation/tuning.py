"""Tuning the baselines that need it, per scenario, on the tune seeds (never the eval seeds).

* ``best_fixed_ratio``: every source share of the ratio grid on every tune seed; the share with
  the highest mean final balanced score wins (the grid search a practitioner would run; the
  only ratio search in mixagent — its episodes run in the evaluation's worker pool, in-process
  with one worker).
* ``regmix``: ``regmix_runs`` random static mixtures (symmetric Dirichlet with a concentration
  drawn log-uniformly in [0.1, 10] per run, so both sparse and near-uniform mixtures occur),
  each run once on a tune seed (round robin); then :func:`mixagent.policies.regmix.fit_regmix`
  regresses final balanced score on the mixture and picks the best predicted one.

  Several budgets (``baseline:regmix?runs=N``) share one sequence of random mixtures:
  :func:`random_mixtures` is prefix-consistent (the first 16 of 64 are the 16 drawn alone, on
  the same tune seeds), so a scenario runs only its largest budget's episodes and each budget is
  fitted on its prefix (:func:`finish_regmix` on ``mixtures[:n]``).
* **Runs to match** (``runs_to_match``): RegMix is also fitted on the prefixes of
  :func:`regmix_ladder` and each fit evaluated, to find the smallest budget that matches a
  learned policy (:func:`mixagent.evaluation.analysis.runs_to_match`).

Both produce tasks first (so the runner can run them in parallel with everything else) and are
finished from the episode records; the results (every grid row, every mixture and its score,
the fit) go into report.json.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from mixagent.evaluation.policies import PolicyInstance, instance_of
from mixagent.evaluation.scenarios import Scenario


def regmix_ladder(budgets: Iterable[int]) -> list[int]:
    """The RegMix budgets of the runs-to-match ladder for a scenario whose evaluated budgets
    are ``budgets``: :data:`~mixagent.evaluation.config.REGMIX_LADDER` up to the largest
    evaluated budget, plus the evaluated budgets themselves (so no fit needs more runs than
    were made)."""
    from mixagent.evaluation.config import REGMIX_LADDER

    b = set(budgets)
    if not b:
        return []
    return sorted({n for n in REGMIX_LADDER if n <= max(b)} | b)


def grid_instances(scenario: Scenario, ratios: list[float]) -> list[PolicyInstance]:
    from mixagent.policies.static import FixedRatio

    return [instance_of(FixedRatio(source=float(r))) for r in ratios]


def random_mixtures(scenario: Scenario, runs: int, seed: int) -> np.ndarray:
    """``runs`` seeded random mixtures on the scenario's domains (see module docstring)."""
    k = scenario.num_domains
    rng = np.random.default_rng([int(seed), zlib.crc32(scenario.mixing_hash.encode())])
    out = np.empty((runs, k))
    for i in range(runs):
        conc = float(np.exp(rng.uniform(np.log(0.1), np.log(10.0))))
        w = rng.dirichlet(np.full(k, conc))
        if not np.isfinite(w).all() or w.sum() <= 0:
            w = np.full(k, 1.0 / k)
        out[i] = w / w.sum()
    return out


def mixture_instances(scenario: Scenario, mixtures: np.ndarray) -> list[PolicyInstance]:
    """Static policies applying each mixture exactly (a RegMix policy carries explicit weights)."""
    from mixagent.policies.regmix import RegMix

    space = scenario.space
    out = []
    for w in mixtures:
        share = float(w[~space.is_target].sum())
        out.append(instance_of(RegMix(weights={n: float(v) for n, v in zip(space.names, w, strict=True)},
                                      source_share=min(max(share, 0.0), 1.0))))
    return out


def finish_grid(scenario: Scenario, ratios: list[float], instances: list[PolicyInstance],
                tune_seeds: list[int], finals: dict[tuple[str, int], dict[str, float]]
                ) -> tuple[PolicyInstance, dict[str, Any]]:
    """The best ratio's instance and the grid's record, from final scores keyed (policy id, seed)."""
    rows = []
    for r, inst in zip(ratios, instances, strict=True):
        b = [finals[(inst.policy_id, s)]["balanced"] for s in tune_seeds]
        rows.append({"source": float(r), "balanced_mean": float(np.mean(b)), "per_seed": b})
    best_i = max(range(len(rows)), key=lambda i: rows[i]["balanced_mean"])
    return instances[best_i], {"seeds": list(tune_seeds), "rows": rows, "best": rows[best_i]["source"],
                               "best_policy": instances[best_i].describe}


def finish_regmix(scenario: Scenario, mixtures: np.ndarray, instances: list[PolicyInstance],
                  tune_seeds: list[int], finals: dict[tuple[str, int], dict[str, float]], *,
                  seed: int, regressor: str) -> tuple[PolicyInstance, dict[str, Any]]:
    """Fit RegMix on the random mixtures' final balanced scores; its pick's instance and record."""
    from mixagent.policies.regmix import fit_regmix

    seeds = [tune_seeds[i % len(tune_seeds)] for i in range(len(instances))]
    scores = [finals[(inst.policy_id, s)]["balanced"] for inst, s in zip(instances, seeds, strict=True)]
    pol = fit_regmix(mixtures, scores, scenario.space, regressor=regressor, seed=seed)  # type: ignore[arg-type]
    inst = instance_of(pol)
    record = {"seeds": list(tune_seeds), "runs": [
        {"mixture": [float(x) for x in w], "seed": int(s), "balanced": float(b)}
        for w, s, b in zip(mixtures, seeds, scores, strict=True)],
        "fit": pol.provenance.get("fit", {}), "chosen": pol.params.weights,
        "source_share": pol.params.source_share, "best_policy": inst.describe}
    return inst, record


def tuning_tasks(scenario: Scenario, kind: str, ratios: list[float], tune_seeds: list[int],
                 runs: int, seed: int) -> tuple[list[tuple[PolicyInstance, int]], dict[str, Any]]:
    """(instance, seed) pairs to run for tuning ``kind`` on ``scenario``, plus the state that
    :func:`finish_grid` / :func:`finish_regmix` need."""
    if kind == "best_fixed_ratio":
        inst = grid_instances(scenario, ratios)
        return [(i, s) for i in inst for s in tune_seeds], {"instances": inst}
    mixtures = random_mixtures(scenario, runs, seed)
    inst = mixture_instances(scenario, mixtures)
    return ([(i, tune_seeds[n % len(tune_seeds)]) for n, i in enumerate(inst)],
            {"instances": inst, "mixtures": mixtures})
