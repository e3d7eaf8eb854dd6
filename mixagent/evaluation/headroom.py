"""Headroom: how far a search beats uniform on a scenario, in seed standard deviations.

A scenario teaches a mixing policy something only if some mixture is reliably better than the
obvious default. ``mixagent env headroom SPEC --out FILE.json`` measures that before any agent
meets the scenario (docs/ENV.md, "Headroom"):

1. **uniform** on the evaluation ``seeds`` (≥ 5 by default): the reference and its seed spread;
2. **a static search** on the ``tune_seeds`` — ``runs`` random per-domain mixtures (the same
   generator as ``baseline:regmix``, :func:`mixagent.evaluation.tuning.random_mixtures`), each on
   one tune seed, then RegMix regressions (:func:`mixagent.policies.regmix.fit_regmix`) propose
   mixtures; those proposals and the ``verify_top`` best random runs are run on *every* tune
   seed and the best mean wins (a regression pick can be worse than what it was fitted on, and
   one seed's best run is partly luck);
3. **the best mixture** re-evaluated on the evaluation seeds — fresh seeds, never the ones it was
   chosen on, so the number is not inflated by selection;
4. **a dynamic family** — two-phase and ramp source-share schedules over ``schedule_shares``, with
   within-field weights uniform or those of the best static mixture
   (:mod:`mixagent.evaluation.schedules`) — chosen on the tune seeds, the best re-evaluated on
   the evaluation seeds.

``headroom_sd = (best mean − uniform mean) / uniform sd`` on the evaluation seeds; the same for
the dynamic schedule. Every episode goes through the evaluation's :class:`EpisodeRunner` (the
Ray pool with ``workers > 1``, the episode cache), so a run is parallel and resumable, and an
episode here is the same episode ``mixagent evaluate`` would run (same cache key).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from mixagent.errors import ConfigError
from mixagent.evaluation.config import PoolConfig, check_disjoint, check_seeds, check_shares, config_or_keywords
from mixagent.evaluation.policies import PolicyInstance, instance_of
from mixagent.evaluation.runner import EpisodeRunner, EpisodeTask
from mixagent.utils.raypool import compile_applied

log = logging.getLogger(__name__)

HEADROOM_FORMAT = "mixagent.headroom/1"
#: the quality bar of DESIGN.md: a shipped scenario needs this much headroom
HEADROOM_BAR_SD = 5.0


class HeadroomConfig(PoolConfig):
    """A headroom measurement (``mixagent env headroom``); see docs/ENV.md, "Headroom"."""

    env: str = Field(description="the env spec YAML file (one scenario)")
    out: str = Field(description="the JSON file to write (a Markdown summary goes beside it)")
    seeds: list[int] = Field(default_factory=lambda: list(range(1000, 1005)), min_length=2,
                             description="evaluation seeds: uniform, and the re-evaluation of the "
                             "best static mixture and best schedule (at least 2 for a seed sd)")
    tune_seeds: list[int] = Field(default_factory=lambda: [2000, 2001], min_length=1,
                                  description="seeds of the search; disjoint from seeds")
    runs: int = Field(default=32, ge=8, description="random static mixtures of the search (each on "
                      "one tune seed, round robin)")
    search_seed: int = Field(default=0, ge=0, description="seeds the random mixtures and the fits")
    regressors: list[Literal["gbm", "linear"]] = Field(
        default_factory=lambda: ["gbm", "linear"], min_length=1,
        description="RegMix regressors whose picks are candidates")
    verify_top: int = Field(default=3, ge=0, description="best random runs also run on every tune "
                            "seed as candidates")
    schedule_shares: list[float] = Field(default_factory=lambda: [0.2, 0.5, 0.8], min_length=2,
                                         description="source shares the schedules move between")
    schedule_shapes: list[Literal["two_phase", "ramp"]] = Field(
        default_factory=lambda: ["two_phase", "ramp"], min_length=1)
    cache: str | None = Field(default=None, description="episode cache folder (episodes/ inside it); "
                              "default: OUT without its suffix. An evaluate report folder works too")
    top_domains: int = Field(default=5, ge=1, description="domains listed as what the best favours")
    candidates: dict[str, str] = Field(
        default_factory=dict, description="named hypotheses run beside the search's picks, "
        "NAME -> mixture in `env run --weights` syntax (e.g. 'prose=0.7,math/algebra-problems=0.3'); "
        "chosen only if their tune-seed mean is best, like every candidate")

    @field_validator("seeds", "tune_seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        return check_seeds(v)

    @field_validator("candidates")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for name, text in v.items():
            if not name.strip() or ":" in name:
                raise ValueError(f"a candidate's name must be non-empty and without ':', got {name!r}")
            if not text.strip():
                raise ValueError(f"candidate {name!r} has no mixture; write it as in `env run --weights`")
        return v

    @field_validator("schedule_shares")
    @classmethod
    def _shares(cls, v: list[float]) -> list[float]:
        if len(set(v)) < 2:
            raise ValueError(f"a schedule moves between two shares; give at least two distinct, got {v}")
        return check_shares(v)

    @field_validator("out")
    @classmethod
    def _json(cls, v: str) -> str:
        if not v.endswith(".json"):
            raise ValueError(f"name the JSON file to write, ending in .json (e.g. reports/headroom/NAME.json), "
                             f"got {v!r}")
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> HeadroomConfig:
        check_disjoint(self.seeds, self.tune_seeds, "the best mixture and schedule")
        return self

    @property
    def out_path(self) -> Path:
        return Path(self.out)

    @property
    def summary_path(self) -> Path:
        return self.out_path.with_suffix(".md")

    @property
    def cache_root(self) -> Path:
        return Path(self.cache) if self.cache else self.out_path.with_suffix("")


@dataclass
class HeadroomResult:
    """What :func:`measure_headroom` wrote, and its numbers."""

    out: Path
    summary: Path
    report: dict[str, Any]
    episodes_run: int
    episodes_cached: int


@dataclass
class _Candidate:
    name: str
    instance: PolicyInstance
    detail: dict[str, Any]


def measure_headroom(config: HeadroomConfig | None = None, **kwargs: Any) -> HeadroomResult:
    """Measure a scenario's headroom (``measure_headroom(HeadroomConfig(...))`` or keywords)."""
    return _Headroom(config_or_keywords(HeadroomConfig, config, kwargs, "headroom")).run()


class _Headroom:
    def __init__(self, config: HeadroomConfig):
        from mixagent.evaluation.scenarios import load_scenarios

        self.config = config
        out = config.out_path
        if out.is_dir():
            raise ConfigError(f"--out {out} is a folder; name the JSON file to write, e.g. "
                              f"{out / 'headroom.json'}")
        if config.cache_root.exists() and not config.cache_root.is_dir():
            raise ConfigError(f"episode cache {config.cache_root} is a file; pass --cache DIR")
        (self.scenario,) = load_scenarios([config.env])
        space = self.scenario.space
        if space.is_target.all() or not space.is_target.any():
            raise ConfigError(f"{config.env}: headroom needs source and target domains; the scenario "
                              f"has roles {sorted(set(space.roles))} only")
        self.num_steps = int(self.scenario.spec_payload["spec"]["cpt"]["num_steps"])
        self.given = self._given(config.candidates)  # parsed now: a typo fails before any episode
        self.labels: dict[str, str] = {}
        self.runner: EpisodeRunner | None = None

    # -- helpers -----------------------------------------------------------------------------------
    def _given(self, candidates: dict[str, str]) -> dict[str, np.ndarray]:
        from mixagent.envs.weights import parse_weights

        space = self.scenario.space
        field_of = dict(zip(space.names, space.fields, strict=True))
        return {name: parse_weights(text, space.names, field_of.__getitem__,
                                    where=f"headroom candidate {name!r} on {self.config.env}")
                for name, text in candidates.items()}

    def _named(self, name: str, inst: PolicyInstance) -> PolicyInstance:
        self.labels.setdefault(inst.policy_id, name)
        return inst

    def _label(self, task: EpisodeTask) -> str:
        return self.labels.get(task.instance.policy_id, task.instance.describe)

    def _tasks(self, insts: list[PolicyInstance], seeds: list[int]) -> list[EpisodeTask]:
        return [EpisodeTask(self.scenario, i, s) for i in insts for s in seeds]

    def _balanced(self, inst: PolicyInstance, seeds: list[int], field: str = "balanced") -> list[float]:
        assert self.runner is not None
        return [float(self.runner.records[(self.scenario.key, inst.policy_id, s)]["final_scores"][field])
                for s in seeds]

    def _static(self, name: str, w: np.ndarray) -> PolicyInstance:
        from mixagent.evaluation.tuning import mixture_instances

        return self._named(name, mixture_instances(self.scenario, np.asarray(w)[None, :])[0])

    def _schedules(self, within: dict[str, float], within_label: str) -> list[PolicyInstance]:
        from mixagent.evaluation.schedules import SourceSchedule

        cfg = self.config
        out = []
        for shape in cfg.schedule_shapes:
            for a in cfg.schedule_shares:
                for b in cfg.schedule_shares:
                    if a == b:
                        continue
                    pol = SourceSchedule(shape=shape, start=a, end=b, num_steps=self.num_steps,
                                         within=within, within_label=within_label)
                    out.append(self._named(pol.describe(), instance_of(pol)))
        return out

    def _choose(self, insts: list[PolicyInstance], seeds: list[int]) -> tuple[int, list[dict[str, Any]]]:
        """The index of the best mean balanced score on ``seeds`` (first on ties), and every row."""
        rows = []
        for inst in insts:
            b = self._balanced(inst, seeds)
            rows.append({"name": self.labels.get(inst.policy_id, inst.describe), "policy_id": inst.policy_id,
                         "tune_mean": float(np.mean(b)), "tune_per_seed": dict(zip(map(str, seeds), b,
                                                                                    strict=True))})
        best = max(range(len(rows)), key=lambda i: (rows[i]["tune_mean"], -i))
        return best, rows

    # -- the measurement -----------------------------------------------------------------------------
    def run(self) -> HeadroomResult:
        from mixagent.evaluation import tuning
        from mixagent.policies.regmix import fit_regmix
        from mixagent.policies.static import Uniform

        cfg = self.config
        sc = self.scenario
        space = sc.space
        seeds, tune = list(cfg.seeds), list(cfg.tune_seeds)
        t0 = time.perf_counter()
        cfg.cache_root.mkdir(parents=True, exist_ok=True)
        self.runner = runner = EpisodeRunner(cfg, [sc], cfg.cache_root)
        runner.store.clean_temporary()
        log.info("headroom of %s (%d domains, %d steps): uniform on %d seeds, %d random mixtures on "
                 "%d tune seeds, %d schedules", sc.name, space.num_domains, self.num_steps, len(seeds),
                 cfg.runs, len(tune), 2 * len(cfg.schedule_shapes) * len(cfg.schedule_shares)
                 * (len(cfg.schedule_shares) - 1))
        try:
            uniform = self._named("uniform", instance_of(Uniform()))
            mixtures = tuning.random_mixtures(sc, cfg.runs, cfg.search_seed)
            runs = [self._static(f"random run {i}", w) for i, w in enumerate(mixtures)]
            run_seeds = [tune[i % len(tune)] for i in range(len(runs))]
            sched_uniform = self._schedules({}, "uniform")

            def collect(tasks: list[EpisodeTask], desc: str) -> None:
                runner.collect(tasks, desc, self._label)

            # phase 1: everything that does not depend on a search result
            collect(self._tasks([uniform], seeds)
                    + [EpisodeTask(sc, i, s) for i, s in zip(runs, run_seeds, strict=True)]
                    + self._tasks(sched_uniform, tune), "headroom: uniform, random mixtures, schedules")
            scores = [self._balanced(i, [s])[0] for i, s in zip(runs, run_seeds, strict=True)]
            # phase 2: the regressions' picks and the best observed runs, on every tune seed
            cands: list[_Candidate] = []
            fits: dict[str, Any] = {}
            for reg in cfg.regressors:
                pol = fit_regmix(mixtures, scores, space, regressor=reg, seed=cfg.search_seed)
                w = np.array([pol.params.weights[n] for n in space.names])
                cands.append(_Candidate(f"regmix-{reg}", self._static(f"regmix-{reg}", w),
                                        {"mixture": w}))
                fits[reg] = pol.provenance.get("fit", {})
            for i in np.argsort(-np.asarray(scores), kind="stable")[: cfg.verify_top]:
                cands.append(_Candidate(f"random run {int(i)}", runs[int(i)], {"mixture": mixtures[int(i)]}))
            for name, w in self.given.items():
                cands.append(_Candidate(f"candidate {name}", self._static(f"candidate {name}", w),
                                        {"mixture": w}))
            unique: dict[str, _Candidate] = {}
            for c in cands:  # a pick may equal a random run: run it once, under its first name
                unique.setdefault(c.instance.policy_id, c)
            cands = list(unique.values())
            collect(self._tasks([c.instance for c in cands], tune), "headroom: search candidates")
            bi, cand_rows = self._choose([c.instance for c in cands], tune)
            best = cands[bi]
            best_w = np.asarray(best.detail["mixture"], dtype=np.float64)
            # phase 3: the best on fresh seeds; schedules keeping the best's within-field weights
            sched_best = self._schedules({n: float(v) for n, v in zip(space.names, best_w, strict=True)},
                                         "best static")
            collect(self._tasks([best.instance], seeds) + self._tasks(sched_best, tune),
                    "headroom: best mixture, schedules")
            family = sched_uniform + sched_best
            di, family_rows = self._choose(family, tune)
            dyn = family[di]
            # phase 4: the best schedule on fresh seeds
            collect(self._tasks([dyn], seeds), "headroom: best schedule")
            cpu = runner.executor.cpu_seconds()
            workers_info = runner.executor.workers_info
            retries = runner.executor.retries
        finally:
            runner.close()
        wall = time.perf_counter() - t0
        report = self._report(uniform, best, best_w, cand_rows, runs, mixtures, run_seeds, scores, fits,
                              dyn, family_rows, wall, cpu, workers_info, retries)
        from mixagent.utils.io import write_json_atomic

        write_json_atomic(cfg.out_path, report)
        cfg.summary_path.write_text(render_summary(report), encoding="utf-8")
        log.info("headroom of %s: %s sd (static), %s sd (dynamic); written to %s", sc.name,
                 _fmt(report["headroom_sd"]), _fmt(report["dynamic_headroom_sd"]), cfg.out_path)
        return HeadroomResult(cfg.out_path, cfg.summary_path, report, runner.ran, runner.cached)

    # -- the report ----------------------------------------------------------------------------------
    def _result(self, inst: PolicyInstance, seeds: list[int]) -> dict[str, Any]:
        from mixagent.evaluation.stats import summarise

        b = self._balanced(inst, seeds)
        s = summarise(b)
        out: dict[str, Any] = {"mean": s.mean, "sd": s.std, "ci95": s.half_width,
                               "per_seed": dict(zip(map(str, seeds), b, strict=True))}
        for f in ("source", "target"):
            v = self._balanced(inst, seeds, f)
            out[f] = {"mean": float(np.mean(v)), "per_seed": dict(zip(map(str, seeds), v, strict=True))}
        out["policy_id"] = inst.policy_id
        return out

    def _favours(self, w: np.ndarray) -> dict[str, Any]:
        space = self.scenario.space
        k = space.num_domains
        tgt = space.is_target
        order = np.argsort(-w, kind="stable")[: self.config.top_domains]
        return {"mixture": {n: float(v) for n, v in zip(space.names, w, strict=True)},
                "source_share": float(w[~tgt].sum()), "target_share": float(w[tgt].sum()),
                "uniform_source_share": float((~tgt).sum() / k),
                "top_domains": [{"domain": space.names[i], "field": space.fields[i],
                                 "role": space.roles[i], "weight": float(w[i]),
                                 "times_uniform": float(w[i] * k)} for i in order]}

    def _report(self, uniform: PolicyInstance, best: _Candidate, best_w: np.ndarray,
                cand_rows: list[dict[str, Any]], runs: list[PolicyInstance], mixtures: np.ndarray,
                run_seeds: list[int], scores: list[float], fits: dict[str, Any], dyn: PolicyInstance,
                family_rows: list[dict[str, Any]], wall: float, cpu: float | None,
                workers_info: list[dict[str, Any]], retries: int) -> dict[str, Any]:
        from mixagent.evaluation.schedules import SourceSchedule
        from mixagent.evaluation.stats import paired

        cfg = self.config
        sc = self.scenario
        seeds, tune = list(cfg.seeds), list(cfg.tune_seeds)
        uni = self._result(uniform, seeds)
        bst = {**self._result(best.instance, seeds), "found_by": best.name, **self._favours(best_w),
               "tune_mean": next(r["tune_mean"] for r in cand_rows if r["policy_id"] == best.instance.policy_id)}
        sched = SourceSchedule.from_config(dyn.config, {})
        assert isinstance(sched, SourceSchedule)
        p = sched.params
        dy = {**self._result(dyn, seeds), "name": self.labels.get(dyn.policy_id, dyn.describe),
              "schedule": {"shape": p.shape, "start": p.start, "end": p.end, "num_steps": p.num_steps,
                           "within": p.within_label, "source_share_per_step": sched.shares(),
                           "within_weights": p.within or None},
              "tune_mean": next(r["tune_mean"] for r in family_rows if r["policy_id"] == dyn.policy_id)}
        used = {(sc.key, i.policy_id, s) for i in (uniform, best.instance, dyn) for s in seeds}
        used |= {(sc.key, i.policy_id, s) for i, s in zip(runs, run_seeds, strict=True)}
        used |= {(sc.key, r["policy_id"], s) for r in cand_rows + family_rows for s in tune}
        assert self.runner is not None
        recs = [self.runner.records[k] for k in used]
        return {
            "format": HEADROOM_FORMAT,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "spec": {**{k: v for k, v in sc.to_dict().items() if k != "space"},
                     "domains": list(sc.space.names), "roles": list(sc.space.roles),
                     "num_steps": self.num_steps},
            "spec_hash": sc.spec_hash,
            "config": cfg.model_dump(mode="json"),
            "seeds": {"eval": seeds, "tune": tune},
            "score": "final balanced score of an episode (the env's reward aggregate; 0 = the base)",
            "uniform": uni,
            "best": bst,
            "dynamic": dy,
            "headroom_sd": _headroom(bst["mean"], uni),
            "dynamic_headroom_sd": _headroom(dy["mean"], uni),
            "bar_sd": HEADROOM_BAR_SD,
            "paired_vs_uniform": {"best": paired(list(bst["per_seed"].values()),
                                                 list(uni["per_seed"].values())).to_dict(),
                                  "dynamic": paired(list(dy["per_seed"].values()),
                                                    list(uni["per_seed"].values())).to_dict()},
            "search": {"method": "random Dirichlet mixtures + RegMix regressions (+ given candidates); "
                                 "candidates run on every tune seed, best tune mean chosen",
                       "given": dict(cfg.candidates),
                       "runs": [{"mixture": [float(x) for x in w], "seed": int(s), "balanced": float(b)}
                                for w, s, b in zip(mixtures, run_seeds, scores, strict=True)],
                       "best_run": float(max(scores)), "fits": fits, "candidates": cand_rows,
                       "chosen": best.name},
            "family": {"shapes": list(cfg.schedule_shapes), "shares": list(cfg.schedule_shares),
                       "within": ["uniform", "best static"], "rows": family_rows,
                       "chosen": dy["name"]},
            "compute": {"wall_seconds": round(wall, 3),
                        "episode_seconds": round(sum(float(r.get("wall_seconds", 0.0)) for r in recs), 3),
                        "worker_cpu_seconds": None if cpu is None else round(cpu, 3),
                        "episodes_total": len(recs), "episodes_run": self.runner.ran,
                        "episodes_cached": self.runner.cached, "retries": retries,
                        "workers": cfg.workers, "threads_per_worker": cfg.threads,
                        "compile_applied": compile_applied(workers_info),
                        "worker_info": workers_info, "cache": str(cfg.cache_root)},
        }


def _headroom(mean: float, uniform: dict[str, Any]) -> float | None:
    """(mean − uniform mean) / uniform sd; None when uniform's sd is 0 (no spread to measure by)."""
    sd = float(uniform["sd"])
    return None if sd <= 0 else (mean - float(uniform["mean"])) / sd


def _fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:+.{digits}f}"


def _given_note(report: dict[str, Any]) -> str:
    given = report["search"].get("given") or {}
    if not given:
        return ""
    return " (" + "; ".join(f"given `{n}`: {t}" for n, t in given.items()) + ")"


def render_summary(report: dict[str, Any]) -> str:
    """A short Markdown summary of a headroom report (the JSON has every number)."""
    u, b, d = report["uniform"], report["best"], report["dynamic"]
    spec = report["spec"]
    n = len(report["seeds"]["eval"])
    h, hd, bar = report["headroom_sd"], report["dynamic_headroom_sd"], report["bar_sd"]
    verdict = "meets" if h is not None and h >= bar else "does not meet"  # the bar is on static
    lines = [
        f"# Headroom of {spec['name']}",
        "",
        f"Spec `{spec['path']}` (hash `{report['spec_hash']}`), {spec['num_domains']} domains "
        f"({spec['num_source']} source, {spec['num_target']} target), {spec['num_steps']} steps. "
        f"Scores: final balanced score (0 = the base). Evaluation seeds {report['seeds']['eval']}; "
        f"search on tune seeds {report['seeds']['tune']}.",
        "",
        f"**headroom {_fmt(h)} sd (static), {_fmt(hd)} sd (dynamic)** — the static headroom "
        f"{verdict} the bar of {bar:g} sd.",
        "",
        f"| | mean (n={n}) | sd | headroom (sd) | source | target |",
        "|---|---|---|---|---|---|",
        f"| uniform | {u['mean']:+.5f} | {u['sd']:.5f} | 0 | {u['source']['mean']:+.5f} | "
        f"{u['target']['mean']:+.5f} |",
        f"| best static ({b['found_by']}) | {b['mean']:+.5f} | {b['sd']:.5f} | {_fmt(h)} | "
        f"{b['source']['mean']:+.5f} | {b['target']['mean']:+.5f} |",
        f"| best schedule: {d['name']} | {d['mean']:+.5f} | {d['sd']:.5f} | {_fmt(hd)} | "
        f"{d['source']['mean']:+.5f} | {d['target']['mean']:+.5f} |",
        "",
        f"The best static mixture puts {b['source_share']:.3f} on the source field (uniform: "
        f"{b['uniform_source_share']:.3f}); its top domains: "
        + ", ".join(f"{t['domain']} {t['weight']:.3f} ({t['times_uniform']:.1f}x uniform)"
                    for t in b["top_domains"]) + ".",
        "",
        f"Search: {len(report['search']['runs'])} random mixtures (best single run "
        f"{report['search']['best_run']:+.5f}), {len(report['search']['candidates'])} candidates "
        f"re-run on every tune seed{_given_note(report)}; {len(report['family']['rows'])} schedules.",
        "",
        f"Compute: {report['compute']['episodes_total']} episodes ({report['compute']['episodes_run']} "
        f"run, {report['compute']['episodes_cached']} from the cache), "
        f"{report['compute']['episode_seconds']:.0f} episode-seconds, "
        f"{report['compute']['wall_seconds']:.0f} s wall with {report['compute']['workers']} workers.",
        "",
    ]
    return "\n".join(lines)
