"""``train_policy``: every way of training a mixing policy behind one typed config.

Offline RL on trajectories (``cql``, ``bc``), RegMix's mixture regression on the same
trajectories (``regmix``) and online RL on an env spec (``ppo``, ``sac``) have different
inputs and engines (:mod:`.offline`, :mod:`mixagent.policies.regmix`, :mod:`.online`), but a
caller — ``mixagent train``, ``mixagent train-online``, ``mixagent demo --from-scratch`` — wants
the same thing from each: a trained policy whose provenance says what it was trained on. That
provenance (name, data, the scenario's reward and observation settings, compute) is assembled
here and nowhere else, so every policy records it the same way whatever trained it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from mixagent.config import StrictModel, validate_config
from mixagent.errors import ConfigError
from mixagent.policies.protocol import MixingPolicy
from mixagent.policies.records import ScenarioRecord

Algo = Literal["cql", "bc", "regmix", "ppo", "sac"]
#: algorithms that learn from collected trajectories; the others train on an env spec
FROM_TRAJECTORIES: tuple[str, ...] = ("cql", "bc", "regmix")
HISTORY_NAME = "history.json"
log = logging.getLogger(__name__)


class TrainConfig(StrictModel):
    """What to train and on what. ``hyperparameters`` holds the algorithm's own settings —
    keys of :class:`~.offline.OfflineConfig` (cql, bc), :class:`~.online.OnlineConfig` (ppo,
    sac) or :class:`~mixagent.policies.regmix.RegMixConfig` — validated once the algorithm is
    known, so one config shape serves them all and unknown keys are still errors."""

    algo: Algo = "cql"
    trajectories: list[str] = Field(default_factory=list,
                                    description="trajectory collections (cql, bc, regmix)")
    env: str | None = Field(default=None, description="env spec YAML (ppo, sac)")
    name: str | None = Field(default=None, description="name in the card (default: the output folder's)")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _inputs_match_algo(self) -> TrainConfig:
        if self.algo in FROM_TRAJECTORIES and not self.trajectories:
            raise ValueError(f"algo {self.algo} trains on trajectories: give trajectory folders "
                             "written by 'mixagent collect'")
        if self.algo not in FROM_TRAJECTORIES and not self.env:
            raise ValueError(f"algo {self.algo} trains online: give an env spec (env: envs/NAME.yaml)")
        return self


@dataclass
class TrainResult:
    """The trained policy (saved to ``out`` when one was given) and what training did."""

    policy: MixingPolicy
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    out: Path | None = None

    def summary(self) -> str:
        """One line for people: what was trained, on how much, how long, where it went."""
        d = self.details
        algo = self.policy.provenance.get("training", {}).get("algo") or self.policy.kind
        if algo == "regmix":
            what = f"{d['episodes']} episodes; source share {d['source_share']:.3f}"
        elif "timesteps" in d:
            what = f"{d['timesteps']} env steps on {d['workers']} worker(s)"
        else:
            what = (f"{d['transitions']} transitions from {d['episodes']} episodes over {d['spaces']} "
                    f"domain space(s) (K={d['max_domains']}); best {d['best']}")
        where = f"; wrote {self.out}" if self.out is not None else ""
        return f"{algo}: {what}; trained in {self.seconds:.0f} s{where}"


def train_policy(config: TrainConfig, out: str | Path | None = None, *,
                 progress: bool | None = None) -> TrainResult:
    """Train the policy ``config`` describes; with ``out``, save it there (checkpoints and
    ``history.json`` beside it). The policy's provenance records its name, data, scenario
    (reward and observation settings: a CPT run must score as training did) and compute."""
    out = Path(out) if out is not None else None
    name = config.name or (out.name if out is not None else None)
    if config.algo in FROM_TRAJECTORIES:
        res = _from_trajectories(config, out, progress)
    else:
        res = _online(config, out, progress)
    prov = res.policy.provenance
    if name:
        prov["name"] = name
    prov.setdefault("compute", {}).setdefault("training_seconds", round(res.seconds, 1))
    if out is not None:
        res.policy.save(out)
        if res.history:
            (out / HISTORY_NAME).write_text(json.dumps(res.history, indent=1) + "\n", encoding="utf-8")
        res.out = out
    return res


def _trained_with(paths: list[str]) -> ScenarioRecord | None:
    """The scenario of trajectory collections, from the env spec each one saved when it began
    (for a scenario family: its base, named after the family — the observation settings every
    scenario shares; the reward varies by scenario and each row's is in its scenario's spec)."""
    from mixagent.trajectories.storage import SPEC_FILE, read_json

    for root in map(Path, paths):
        if (root / SPEC_FILE).is_file():
            env = read_json(root / SPEC_FILE, "env spec")
            spec = env.get("spec") or {}
            if spec:
                return ScenarioRecord.from_spec(spec)
            fam = (env.get("family") or {}).get("family") or {}
            if isinstance(fam.get("base"), dict):
                return ScenarioRecord.from_spec(fam["base"], name=str(fam.get("name", "")))
    return None


def _from_trajectories(config: TrainConfig, out: Path | None, progress: bool | None) -> TrainResult:
    from mixagent.policies.training.data import read_trajectories

    rows, meta = read_trajectories(config.trajectories)
    families = meta.pop("families", [])
    if families:  # what the card needs of them (the full family is in the collections)
        meta["scenario_families"] = [
            {"name": (f["family"].get("family") or {}).get("name"), "seed": f["seed"],
             "collection_id": f["collection_id"], "scenarios": len(f["scenario_ids"]),
             "episodes": len(f["episodes"])} for f in families]
        meta["scenarios"] = len({str(r["scenario"]) for r in rows if r.get("scenario")})
    prov: dict[str, Any] = {"data": {"trajectories": list(config.trajectories), "transitions": len(rows),
                                     **meta}}
    scenario = _trained_with(config.trajectories)
    if scenario is not None:
        prov["scenario"] = scenario.model_dump(mode="json")
    if config.algo == "regmix":
        return _regmix(config, rows, prov)
    from mixagent.policies.training.data import transitions_from_rows
    from mixagent.policies.training.offline import OfflineConfig, train_offline

    hp = {**config.hyperparameters, "algo": config.algo}
    sweep = hp.pop("sweep", None)
    hp.setdefault("action_scale", meta.get("action_scale") or 3.0)
    hp.setdefault("floor", meta.get("action_floor", 0.0))
    # the agent uses every optional observation group all its data observed (alignment,
    # benchmark scores), unless the hyper-parameters say which
    features = dict(hp.get("features") or {})
    features.setdefault("observation", list(meta.get("observation_features", [])))
    hp["features"] = features
    cfg = validate_config(OfflineConfig, hp, "hyperparameters")
    if sweep is not None and cfg.selection is None:
        raise ConfigError("hyperparameters.sweep: hyper-parameters are chosen by the held-out "
                          "family score; give hyperparameters.selection too")
    data = transitions_from_rows(rows, cfg.features, cfg.action_scale, cfg.floor,
                                 space_name=meta.get("env_spec", ""))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    selector = None
    if cfg.selection is not None:
        from mixagent.policies.training.selection import make_selector

        selector = make_selector(cfg.selection, families)
    try:
        if sweep is None:
            res = train_offline(data, cfg, out, progress=progress, provenance=prov, selector=selector)
        else:
            res = _sweep(data, hp, sweep, out, progress, prov, selector)
    finally:
        if selector is not None:
            selector.close()
    return TrainResult(res.agent, res.seconds, res.history, {
        "transitions": len(data), "episodes": len(data.episodes), "spaces": len(data.spaces),
        "max_domains": int(data.mask.sum(1).max()), "best": res.best})


def _sweep(data: Any, hp: dict[str, Any], sweep: Any, out: Path | None, progress: bool | None,
           prov: dict[str, Any], selector: Any) -> Any:
    """Hyper-parameter selection: train once per ``sweep`` entry (overrides of ``hp``) and keep
    the agent with the best held-out family score (the same held-out scenarios and seeds for
    every candidate); the card records every candidate's overrides and score."""
    from mixagent.policies.training.offline import OfflineConfig, train_offline

    if not isinstance(sweep, list) or not sweep or not all(isinstance(o, dict) for o in sweep):
        raise ConfigError("hyperparameters.sweep: a non-empty list of hyper-parameter overrides "
                          "(mappings), e.g. [{cql_alpha: 0.5}, {cql_alpha: 2.0}]")
    results, summary = [], []
    for i, overrides in enumerate(sweep):
        cfg = validate_config(OfflineConfig, {**hp, **overrides}, f"hyperparameters.sweep[{i}]")
        selector.history = []
        res = train_offline(data, cfg, out / f"sweep-{i}" if out is not None else None,
                            progress=progress, provenance=json.loads(json.dumps(prov)),
                            selector=selector)
        results.append(res)
        summary.append({"candidate": i, "overrides": overrides,
                        "heldout_score": res.best["heldout_score"], "best": res.best})
        log.info("sweep candidate %d %s: held-out score %.4f", i, overrides,
                 res.best["heldout_score"])
    pick = int(max(range(len(results)), key=lambda j: results[j].best["heldout_score"]))
    res = results[pick]
    res.agent.provenance.setdefault("selection", {})["sweep"] = {"chosen": pick,
                                                                  "candidates": summary}
    res.seconds = sum(r.seconds for r in results)
    return res


def _regmix(config: TrainConfig, rows: list[dict[str, Any]], prov: dict[str, Any]) -> TrainResult:
    import numpy as np

    from mixagent.policies.regmix import RegMixConfig, fit_regmix
    from mixagent.policies.training.data import episode_mixtures

    t0 = time.perf_counter()
    cfg = validate_config(RegMixConfig, dict(config.hyperparameters), "hyperparameters")
    spaces, mixtures, scores = episode_mixtures(rows)
    if len({s.names for s in spaces}) != 1:
        raise ConfigError("regmix: the trajectories cover several domain spaces; fit one space at a time")
    pol = fit_regmix(np.stack(mixtures), scores, spaces[0], **cfg.model_dump())
    pol.provenance = {**prov, **pol.provenance, "training": {"algo": "regmix"},
                      "hyperparameters": cfg.model_dump(mode="json")}
    return TrainResult(pol, time.perf_counter() - t0, details={"episodes": len(scores), "source_share": pol.params.source_share})


def _online(config: TrainConfig, out: Path | None, progress: bool | None) -> TrainResult:
    from mixagent.envs.spec import load_env_spec
    from mixagent.policies.training.online import OnlineConfig, train_online

    assert config.env is not None  # checked by TrainConfig
    cfg = validate_config(OnlineConfig, {**config.hyperparameters, "algo": config.algo}, "hyperparameters")
    spec = load_env_spec(config.env)
    res = train_online(config.env, cfg, out, progress=progress)
    res.agent.provenance["scenario"] = ScenarioRecord(
        name=spec.name or Path(config.env).stem, reward=spec.reward,
        observation=spec.observation).model_dump(mode="json")
    return TrainResult(res.agent, res.seconds, details={"timesteps": res.timesteps, "workers": cfg.workers,
                                                         "episode_returns": res.episode_returns})
