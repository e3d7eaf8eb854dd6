"""``EvaluateConfig``: what ``mixagent evaluate`` runs, as one typed config (YAML or CLI flags).

Seeds: ``seeds`` are the env reset seeds every policy is evaluated on (the same for all, so
comparisons are paired). ``tune_seeds`` are used only to tune the baselines that need tuning
(``baseline:best_fixed_ratio``'s grid search, ``baseline:regmix``'s random mixtures); they must
not overlap ``seeds``, or those baselines would be tuned on the evaluation's own noise. The
defaults (1000.. and 2000..) are far from the small seeds people type by hand; trajectory
collection derives its env seeds by hashing (collection seed, episode), so they coincide with
these only by chance.

RegMix budgets: ``baseline:regmix`` is tuned on ``regmix_runs`` random mixtures;
``baseline:regmix?runs=N`` on N (:func:`regmix_budget`), so one evaluation can compare several
tuning budgets (their random mixtures are prefixes of one sequence, so the runs are shared).
``runs_to_match`` adds the "runs to match" section (docs/EVALUATION.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import Field, field_validator, model_validator

from mixagent.config import StrictModel, load_yaml, validate_config
from mixagent.errors import ConfigError

T = TypeVar("T", bound=StrictModel)

#: special baseline specs tuned per scenario on ``tune_seeds``
TUNED_BASELINES = ("best_fixed_ratio", "regmix")

#: the fewest random mixtures RegMix is fitted on (``fit_regmix`` refuses fewer)
MIN_REGMIX_RUNS = 8

#: the RegMix tuning budgets of the runs-to-match ladder (capped per scenario at the largest
#: budget evaluated there; the evaluated budgets themselves are added to it)
REGMIX_LADDER = (8, 16, 24, 32, 48, 64)


def tuned_kind(spec: str) -> str | None:
    """``best_fixed_ratio`` or ``regmix`` for a spec of a baseline tuned per scenario (plain
    ``baseline:best_fixed_ratio`` / ``baseline:regmix``, or ``baseline:regmix?runs=N``), else None."""
    scheme, sep, rest = spec.strip().partition(":")
    name, _, query = rest.partition("?")
    name = name.strip()
    if not sep or scheme != "baseline" or name not in TUNED_BASELINES:
        return None
    return name if not query or regmix_budget(spec) is not None else None


def regmix_budget(spec: str) -> int | None:
    """N of a tuned ``baseline:regmix?runs=N`` spec; None for any other spec (plain
    ``baseline:regmix`` is tuned on ``regmix_runs``; ``baseline:regmix?source_share=0.3`` is a
    given mixture, not tuned). A bad ``runs`` is a :class:`ConfigError` saying what to write."""
    from urllib.parse import parse_qsl

    scheme, sep, rest = spec.strip().partition(":")
    name, _, query = rest.partition("?")
    if not sep or scheme != "baseline" or name.strip() != "regmix" or not query:
        return None
    pairs = parse_qsl(query, keep_blank_values=True)
    keys = [k.strip() for k, _ in pairs]
    if "runs" not in keys:
        return None
    hint = (f"write baseline:regmix?runs=N with N an integer >= {MIN_REGMIX_RUNS} (the random "
            "mixtures RegMix is tuned on, e.g. baseline:regmix?runs=16)")
    if keys != ["runs"]:
        raise ConfigError(f"policy {spec!r}: runs is the only parameter of a tuned RegMix; {hint}")
    value = pairs[0][1].strip()
    try:
        runs = int(value)
    except ValueError:
        raise ConfigError(f"policy {spec!r}: runs={value!r} is not an integer; {hint}") from None
    if runs < MIN_REGMIX_RUNS:
        raise ConfigError(f"policy {spec!r}: runs={runs} is too few to fit RegMix's regressor; {hint}")
    return runs


def parse_int_list(text: str | None, what: str) -> list[int] | None:
    """``"1000,1001"`` or ``"1000-1004"`` (inclusive) → non-negative ints; None stays None."""
    if text is None:
        return None
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(part)])
        except ValueError:
            raise ConfigError(f"{what}: {part!r} is not a non-negative integer or a range like "
                              "1000-1004") from None
    return out


def parse_float_list(text: str | None, what: str) -> list[float] | None:
    """``"0.2,0.3,0.5"`` → floats; None stays None."""
    if text is None:
        return None
    try:
        return [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"{what}: expected comma-separated numbers like 0.2,0.5,0.8, got {text!r}") from None


def check_seeds(v: list[int]) -> list[int]:
    """Seeds are distinct and non-negative (a repeated seed would count one episode twice)."""
    if len(set(v)) != len(v):
        raise ValueError(f"seeds must be distinct, got {v}")
    if any(s < 0 for s in v):
        raise ValueError(f"seeds must be non-negative, got {v}")
    return v


def check_shares(v: list[float]) -> list[float]:
    """Source shares lie in [0, 1]; returned sorted without repeats (a grid, not a sequence)."""
    bad = [r for r in v if not 0.0 <= r <= 1.0]
    if bad:
        raise ValueError(f"source shares must lie in [0, 1], got {bad}")
    return sorted(set(v))


def config_or_keywords(cls: type[T], config: T | None, kwargs: dict[str, Any], source: str) -> T:
    """``config`` itself, or one validated from keyword arguments (errors name ``source``): the
    two ways to call ``evaluate`` and ``measure_headroom``."""
    if config is None:
        return validate_config(cls, kwargs, source)
    if kwargs:
        raise TypeError(f"pass either a {cls.__name__} or keyword arguments, not both")
    return config


def check_disjoint(seeds: list[int], tune_seeds: list[int], tuned: str) -> None:
    """Tuning seeds must not be evaluation seeds: what is tuned would be scored on its own noise."""
    overlap = sorted(set(seeds) & set(tune_seeds))
    if overlap:
        raise ValueError(f"tune_seeds and seeds overlap on {overlap}: {tuned} would be tuned on "
                         "the evaluation's own seeds; choose disjoint seeds (e.g. --tune-seeds 2000,2001)")


class PoolConfig(StrictModel):
    """How episodes run: in this process or on Ray actors, with how many threads each. Shared by
    ``EvaluateConfig`` and ``HeadroomConfig``, which run episodes on the same worker pool."""

    workers: int = Field(default=1, ge=1, description="1: in this process, no Ray; else Ray actors")
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)
    threads_per_worker: int | None = Field(default=None, gt=0,
                                           description="torch threads per worker (default: "
                                           "$MIXAGENT_NUM_THREADS, else its CPU share)")
    address: str | None = Field(default=None, description="Ray cluster to join (else RAY_ADDRESS)")
    max_attempts: int = Field(default=3, ge=1, description="tries per episode when workers die")
    progress: bool | None = Field(default=None, description="None: a bar on a terminal, else a log "
                                  "line per episode; True: the bar; False: neither")

    @property
    def threads(self) -> int:
        """Torch threads per worker: ``threads_per_worker``, else ``$MIXAGENT_NUM_THREADS`` (the
        proxies' own knob), else the worker's CPU share (``cpus_per_worker``, at least 1) — with
        one worker too, so an in-process evaluation does not spread over every core."""
        if self.threads_per_worker:
            return self.threads_per_worker
        from mixagent.proxy.config import RuntimeSpec
        from mixagent.proxy.runtime import resolve_threads

        return resolve_threads(RuntimeSpec()) or max(1, int(self.cpus_per_worker))


class EvaluateConfig(PoolConfig):
    """An evaluation run (``mixagent evaluate``); see docs/EVALUATION.md."""

    envs: list[str] = Field(min_length=1, description="env spec YAML files (scenarios)")
    policies: list[str] = Field(min_length=1, description="policy:DIR, DIR or baseline:NAME[?k=v&...] "
                                "(plus baseline:best_fixed_ratio and baseline:regmix, tuned per scenario)")
    out: str = Field(description="report folder (reports/NAME)")
    seeds: list[int] = Field(default_factory=lambda: [1000, 1001, 1002], min_length=1,
                             description="env reset seeds of the evaluation, the same for every policy")
    tune_seeds: list[int] = Field(default_factory=lambda: [2000, 2001], min_length=1,
                                  description="seeds for tuning best_fixed_ratio and regmix; disjoint "
                                  "from seeds")
    ratio_grid: list[float] = Field(default_factory=lambda: [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
                                    min_length=1, description="source shares tried by best_fixed_ratio")
    regmix_runs: int = Field(default=24, ge=8, description="random static mixtures per scenario for "
                             "regmix (Dirichlet; each on one tune seed, round robin)")
    regmix_seed: int = Field(default=0, ge=0, description="seeds regmix's mixtures and its fit")
    regmix_regressor: str = Field(default="gbm", pattern="^(gbm|linear)$")
    runs_to_match: bool = Field(default=False, description="report, per scenario and learned policy, "
                                "how many tuning runs each tuned baseline needs to match it (costs "
                                "the RegMix ladder's evaluation episodes)")
    record_card: bool = Field(default=False, description="write results into each learned policy's "
                              "config.json provenance.evaluation and README.md card")
    plots: bool = True

    @field_validator("seeds", "tune_seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        return check_seeds(v)

    @field_validator("ratio_grid")
    @classmethod
    def _shares(cls, v: list[float]) -> list[float]:
        return check_shares(v)

    @field_validator("policies")
    @classmethod
    def _budgets(cls, v: list[str]) -> list[str]:
        for spec in v:
            regmix_budget(spec)  # a bad runs= is an error here, before anything runs
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> EvaluateConfig:
        check_disjoint(self.seeds, self.tune_seeds, "baselines")
        budgets: dict[int, str] = {}
        for spec in self.policies:
            if tuned_kind(spec) != "regmix":
                continue
            runs = self.regmix_runs_of(spec)
            if runs in budgets:
                raise ValueError(f"policy {spec!r} is RegMix tuned on {runs} runs, like {budgets[runs]!r} "
                                 "(baseline:regmix uses regmix_runs); list each budget once")
            budgets[runs] = spec
        if self.runs_to_match and not any(tuned_kind(s) for s in self.policies):
            raise ValueError("runs_to_match compares tuned baselines: add baseline:regmix[?runs=N] or "
                             "baseline:best_fixed_ratio to the policies")
        return self

    def regmix_runs_of(self, spec: str) -> int:
        """The tuning runs of a RegMix spec (``baseline:regmix`` → ``regmix_runs``)."""
        runs = regmix_budget(spec)
        return self.regmix_runs if runs is None else runs


def load_evaluate_config(path: str | Path | None, overrides: dict[str, Any]) -> EvaluateConfig:
    """A config from an optional YAML file, with ``overrides`` (CLI flags that were given, i.e.
    not None) taking precedence key by key."""
    base: dict[str, Any] = {}
    source = "evaluate"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"--config: {path} does not exist")
        try:
            base = load_yaml(path) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(base, dict):
            raise ConfigError(f"{path}: expected a mapping of EvaluateConfig keys (envs, policies, out, ...)")
        source = str(path)
    merged = {**base, **{k: v for k, v in overrides.items() if v is not None}}
    missing = [k for k in ("envs", "policies", "out") if not merged.get(k)]
    if missing:
        flags = {"envs": "--env FILE", "policies": "--policy SPEC", "out": "--out DIR"}
        raise ConfigError(f"{source}: missing {', '.join(missing)}: pass "
                          f"{' and '.join(flags[k] for k in missing)} (or set them in --config)")
    return validate_config(EvaluateConfig, merged, source)
