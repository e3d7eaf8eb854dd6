"""Choosing among checkpoints (and hyper-parameter settings) by what the agent is for.

An offline agent's validation TD error says how well its critic fits the data, not how well
it mixes: on small trajectory sets the two disagree (issue 13). What a user wants is the mean
*final balanced score* on scenarios the agent never trained on, so that is the criterion here:
the held-out scenarios are drawn from a scenario family (by default the one the trajectories
were collected on) with a sampling seed and episode indices disjoint from every (seed, episode)
of the training collections, and any scenario whose id (a hash of its semantics) occurs in the
training data is skipped — so no held-out scenario is one the agent saw. Each candidate agent
runs one episode per held-out scenario and env seed; the scores go into the policy's card.

Environments are built once per held-out scenario and reused for every candidate (they share
the family's cached base), so a selection costs (scenarios × seeds) proxy episodes per
candidate and nothing else — and none for an episode already in the score cache
(:mod:`.score_cache`: the references of an earlier training on the same family).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from mixagent.config import StrictModel
from mixagent.errors import ConfigError
from mixagent.policies.format import content_id
from mixagent.policies.protocol import MixingPolicy, resolve_policy, run_episode
from mixagent.policies.training.score_cache import ScoreCache, default_root

log = logging.getLogger(__name__)

#: the first held-out scenario seed tried when none is given (then the next free one)
HELD_OUT_SEED = 7_000_001
#: give up after this many draws per wanted scenario (a tiny family may not have enough)
_MAX_DRAWS = 50


class SelectionConfig(StrictModel):
    """Checkpoint selection by the mean final balanced score on held-out family scenarios."""

    family: str | None = Field(default=None, description="scenario family YAML; default: the "
                               "family the trajectories were collected on")
    scenarios: int = Field(default=4, ge=1, description="held-out scenarios")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1,
                             description="env seeds: one episode per scenario and seed")
    scenario_seed: int | None = Field(default=None, description="sampling seed of the held-out "
                                      "scenarios; default: the first free seed from 7000001")
    every: int = Field(default=0, ge=0, description="CQL steps between selections "
                                                      "(0: at the end of each phase only)")
    patience: int = Field(default=0, ge=0, description="stop CQL after this many selections "
                                                        "without improvement (0: never)")
    cache: bool = Field(default=True, description="reuse the final scores of episodes run before "
                        "(the same scenario, policy content and seed: references, identical "
                        "candidates) from $MIXAGENT_CACHE/selection; false runs every episode")
    references: list[str] = Field(
        default_factory=lambda: ["baseline:uniform"],
        description="policies (baseline:NAME, policy:DIR) scored once on the same held-out "
                    "scenarios and seeds: they choose nothing, but a held-out score means little "
                    "without what uniform gets on the same scenarios")


class HeldOutSelector:
    """Scores agents on a fixed set of held-out family scenarios (see the module docstring)."""

    def __init__(self, cfg: SelectionConfig, family: Any, *,
                 exclude_pairs: Iterable[tuple[int, int]] = (), exclude_ids: Iterable[str] = (),
                 cache_root: Path | None = None):
        self.cfg = cfg
        self.family = family
        pairs = {(int(s), int(e)) for s, e in exclude_pairs}
        ids = set(exclude_ids)
        used_seeds = {s for s, _ in pairs}
        seed = cfg.scenario_seed
        if seed is None:
            seed = HELD_OUT_SEED
            while seed in used_seeds:
                seed += 1
        self.scenario_seed = int(seed)
        self.scenarios: list[Any] = []
        index = 0
        while len(self.scenarios) < cfg.scenarios:
            if index >= _MAX_DRAWS * cfg.scenarios:
                raise ConfigError(f"selection: found only {len(self.scenarios)} of {cfg.scenarios} "
                                  f"held-out scenarios of {family.name} not in the training data; "
                                  "ask for fewer (selection.scenarios)")
            if (self.scenario_seed, index) not in pairs:
                sc = family.scenario(self.scenario_seed, index)
                if sc.id not in ids and sc.id not in {s.id for s in self.scenarios}:
                    self.scenarios.append(sc)
            index += 1
        self._envs: dict[str, Any] = {}
        self._spec_hashes: dict[str, str] = {}
        self._cache = ScoreCache(cache_root or default_root()) if cfg.cache else None
        self.history: list[dict[str, Any]] = []
        self.seconds = 0.0
        # resolved now, so a bad reference fails before any training
        self._references = {spec: resolve_policy(spec) for spec in cfg.references}
        self.references: dict[str, dict[str, Any]] = {}

    def _env(self, scenario: Any) -> Any:
        if scenario.id not in self._envs:
            from mixagent.envs.proxy_env import ProxyCPTEnv

            self._envs[scenario.id] = ProxyCPTEnv(scenario.spec, progress=False)
        return self._envs[scenario.id]

    def _spec_hash(self, scenario: Any) -> str:
        if scenario.id not in self._spec_hashes:  # resolving is cheap: no base, no training
            from mixagent.trajectories.identity import hash_of_spec_file

            self._spec_hashes[scenario.id] = hash_of_spec_file(scenario.spec)
        return self._spec_hashes[scenario.id]

    def _episode(self, policy: MixingPolicy, pid: str | None, scenario: Any, seed: int) -> float:
        """One episode's final balanced score, from the cache when it holds it."""
        if self._cache is None or pid is None:
            return float(run_episode(policy, self._env(scenario), seed).final_scores["balanced"])
        key = (self._spec_hash(scenario), pid, seed)
        hit = self._cache.get(*key)
        if hit is not None:
            return hit["balanced"]
        finals = run_episode(policy, self._env(scenario), seed).final_scores
        self._cache.put(*key, finals)
        return float(finals["balanced"])

    def _run(self, policy: MixingPolicy) -> tuple[float, dict[str, float]]:
        t0 = time.perf_counter()
        pid = content_id(policy.config(), policy.tensors()) if self._cache is not None else None
        per = {sc.id: float(np.mean([self._episode(policy, pid, sc, int(seed))
                                     for seed in self.cfg.seeds]))
               for sc in self.scenarios}
        self.seconds += time.perf_counter() - t0
        return float(np.mean(list(per.values()))), per

    def score_references(self) -> dict[str, dict[str, Any]]:
        """Each reference policy's mean and per-scenario score (computed once, then kept)."""
        for spec, policy in self._references.items():
            if spec not in self.references:
                mean, per = self._run(policy)
                self.references[spec] = {"score": mean, "per_scenario": per}
                log.info("held-out reference %s: mean final balanced score %.4f over %d "
                         "scenario(s)", spec, mean, len(per))
        return self.references

    def score(self, agent: MixingPolicy, label: Mapping[str, Any]) -> float:
        """The mean final balanced score of ``agent`` over the held-out scenarios and seeds
        (recorded in :attr:`history` with ``label``)."""
        refs = self.score_references()
        mean, per = self._run(agent)
        self.history.append({**label, "score": mean, "per_scenario": per})
        versus = "".join(f", {mean - r['score']:+.4f} vs {spec}" for spec, r in refs.items())
        log.info("held-out selection %s: mean final balanced score %.4f over %d scenario(s)%s",
                 dict(label), mean, len(per), versus)
        return mean

    def versus(self, per_scenario: Mapping[str, float]) -> dict[str, dict[str, Any]]:
        """A candidate against each reference, paired by scenario: the mean difference and the
        scenarios won (the card's honest summary of a held-out score)."""
        out: dict[str, dict[str, Any]] = {}
        for spec, ref in self.references.items():
            diffs = [per_scenario[sid] - ref["per_scenario"][sid] for sid in per_scenario
                     if sid in ref["per_scenario"]]
            if diffs:
                out[spec] = {"mean_difference": float(np.mean(diffs)),
                             "scenarios_won": int(sum(d > 0 for d in diffs)),
                             "scenarios": len(diffs)}
        return out

    def record(self, best: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What the policy card records: the criterion, the scenarios, every candidate's score."""
        return {"criterion": "mean final balanced score on held-out family scenarios",
                "family": self.family.name, "family_origin": self.family.origin,
                "scenario_seed": self.scenario_seed, "seeds": list(self.cfg.seeds),
                "scenarios": [{"id": s.id, "description": s.spec.description}
                              for s in self.scenarios],
                "candidates": self.history, "best": dict(best or {}),
                "references": self.references, "best_versus_references": self._best_versus(best),
                "seconds": round(self.seconds, 1),
                "episodes_cached": self._cache.hits if self._cache is not None else 0}

    def _best_versus(self, best: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
        if not best:
            return {}
        for cand in reversed(self.history):  # the chosen candidate's row (phase and step match)
            if all(cand.get(k) == best.get(k) for k in ("phase", "step")):
                return self.versus(cand["per_scenario"])
        return {}

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


def make_selector(cfg: SelectionConfig, families: list[Mapping[str, Any]]) -> HeldOutSelector:
    """A selector for ``cfg``; ``families``: ``read_trajectories``'s ``meta["families"]`` (the
    training collections' families, seeds, episodes and scenario ids, all excluded)."""
    from mixagent.envs.family import ScenarioFamily, load_family

    if cfg.family is not None:
        if not Path(cfg.family).is_file():
            raise ConfigError(f"selection.family: family file not found: {cfg.family}")
        family = load_family(cfg.family)
    elif families:
        family = ScenarioFamily.from_dict(families[0]["family"])
    else:
        raise ConfigError("selection: the trajectories are not a scenario-family collection; "
                          "give selection.family (a family YAML) to draw held-out scenarios from")
    pairs = [(int(f["seed"]), int(e)) for f in families for e in f.get("episodes", [])]
    ids = [i for f in families for i in f.get("scenario_ids", [])]
    return HeldOutSelector(cfg, family, exclude_pairs=pairs, exclude_ids=ids)
