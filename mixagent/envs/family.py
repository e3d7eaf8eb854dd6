"""Scenario families: one YAML that spans many proxy CPT scenarios, one sampled per episode.

An agent trained on one scenario learns that scenario's quirks; trained across a *family* —
target field, random subsets and groupings of each field's domains, CPT budgets, LR schedules,
reward/benchmark weightings — it has to learn heuristics that hold across them, which is what
transfer needs. A family file is an env spec (the *base*, inline or a path) plus the dimensions
to vary; :meth:`ScenarioFamily.sample` turns ``(seed, index)`` into one :class:`EnvSpec`, purely
and deterministically, so a resumed or redistributed collection sees the same scenario per
episode. See docs/ENV.md, "Scenario families".

The source field never varies (it is the base's ``source_field``): transfer to an unseen source
field stays measurable. Nothing the base model depends on varies either (``model``,
``pretrain``, ``seed``, ``cpt.seq_len``, the data), so every scenario of a family shares one
cached base per (source field, model, pre-training settings): the base key
(:class:`mixagent.proxy.base_model.BaseRecipe`) covers none of the varied keys.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from mixagent.config import StrictModel, load_yaml, validate_config
from mixagent.envs.spec import EnvSpec, ObservationSpec, load_env_spec
from mixagent.errors import ConfigError
from mixagent.proxy.config import LRSpec, TaskSpec

#: bump when :meth:`ScenarioFamily.sample` changes what it draws (it is in the family hash, so
#: an old collection is then refused on resume instead of silently getting other scenarios)
SAMPLER_VERSION = 1
#: entropy word that separates scenario draws from the episode's own seeds (same seed, index)
_STREAM = 0x5CE7A210
#: dimension order of the per-dimension random streams (append only: each stream is independent)
_DIMENSIONS = ("target", "source_domains", "target_domains", "split", "num_steps",
               "tokens_per_step", "lr", "target_terms", "source_terms", "aggregator",
               "source_weight")
FAMILY_KEY = "family"
#: env spec keys that do not change a scenario's meaning (left out of its id)
_LABELS = ("name", "description", "runtime", "data")


class TargetChoice(StrictModel):
    """One target field a scenario may have, with what is scored on it."""

    field: str
    weight: float = Field(default=1.0, gt=0, description="relative chance of this target")
    eval_tasks: list[TaskSpec] | None = Field(
        default=None, description="replaces the base's eval.tasks (tasks are per field)")
    target_terms: list[dict[str, float]] | None = Field(
        default=None, min_length=1, description="choices of reward.target_terms")


class DomainChoices(StrictModel):
    """Random subsets and groupings of each field's domains (the data directory's own).

    For each of the two fields, a fraction drawn uniformly from ``keep`` of its domains is kept
    (at least ``min_domains``, at most all), in manifest order. With probability
    ``group_probability`` the kept domains of a field are then shuffled and cut into ``groups``
    (an integer range) non-empty groups, each one domain (``domain_space.groups``). ``split``
    lists choices of ``domain_space.split``.
    """

    keep: tuple[float, float] = (1.0, 1.0)
    min_domains: int = Field(default=1, ge=1)
    group_probability: float = Field(default=0.0, ge=0, le=1)
    groups: tuple[int, int] = (2, 2)
    split: list[int] = Field(default_factory=lambda: [1], min_length=1)

    @model_validator(mode="after")
    def _ranges(self) -> DomainChoices:
        lo, hi = self.keep
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"keep: need 0 < low <= high <= 1, got {list(self.keep)}")
        if not 1 <= self.groups[0] <= self.groups[1]:
            raise ValueError(f"groups: need 1 <= low <= high, got {list(self.groups)}")
        if any(s < 1 for s in self.split):
            raise ValueError(f"split: every choice must be >= 1, got {self.split}")
        return self


class CPTChoices(StrictModel):
    """Choices of the CPT budget and learning-rate schedule (omitted: the base's value)."""

    num_steps: list[int] | None = Field(default=None, min_length=1)
    tokens_per_step: list[int] | None = Field(default=None, min_length=1)
    lr: list[LRSpec] | None = Field(default=None, min_length=1)


class RewardChoices(StrictModel):
    """Choices of the source-side reward terms and the aggregator (target terms are per target)."""

    source_terms: list[dict[str, float]] | None = Field(default=None, min_length=1)
    aggregator: list[Literal["mean", "min", "weighted"]] | None = Field(default=None, min_length=1)
    source_weight: tuple[float, float] | None = Field(
        default=None, description="uniform range of reward.source_weight")

    @model_validator(mode="after")
    def _range(self) -> RewardChoices:
        if self.source_weight is not None and not 0 <= self.source_weight[0] <= \
                self.source_weight[1] <= 1:
            raise ValueError(f"source_weight: need 0 <= low <= high <= 1, got "
                             f"{list(self.source_weight)}")
        return self


class FamilySpec(StrictModel):
    """A scenario family; see the module docstring and docs/ENV.md."""

    name: str = Field(min_length=1)
    description: str = ""
    base: str | dict[str, Any] = Field(description="env spec path (relative to this file) or "
                                                   "an inline env spec")
    targets: list[TargetChoice] = Field(min_length=1)
    domains: DomainChoices = Field(default_factory=DomainChoices)
    cpt: CPTChoices = Field(default_factory=CPTChoices)
    reward: RewardChoices = Field(default_factory=RewardChoices)
    repeats: int = Field(default=1, ge=1, le=64, description=(
        "consecutive episodes that share one scenario (episodes r*i .. r*i+r-1 run scenario i, "
        "each with its own env and explorer seeds), so episodes can be compared within a "
        "scenario, where only the mixing and the seed differ"))
    repeat_seeds: Literal["own", "shared"] = Field(default="own", description=(
        "shared: a scenario's repeats also share the env seed (its data order), so they differ "
        "in the mixing alone -- common random numbers for comparing explorers; own: each repeat "
        "has its own env seed"))
    observation: ObservationSpec | None = Field(default=None, description=(
        "what every scenario observes, replacing the base's observation (e.g. to add the "
        "'objective' group to a family that varies the reward); omitted: the base's"))


class FamilyFile(StrictModel):
    """The file: everything under one top-level ``family:`` key (how a family file is told
    apart from an env spec)."""

    family: FamilySpec


def is_family_file(path: str | Path) -> bool:
    """Whether ``path`` is a family file (a mapping with a top-level ``family`` key)."""
    path = Path(path)
    if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
        return False
    data = load_yaml(path)
    return isinstance(data, dict) and FAMILY_KEY in data


@dataclass(frozen=True)
class Scenario:
    """One sampled scenario: its id (also ``spec.name``), env spec and the choices drawn."""

    id: str
    spec: EnvSpec
    choices: dict[str, Any]


class ScenarioFamily:
    """A :class:`FamilySpec` bound to its base spec and its data's domains per field.

    Built by :func:`load_family` (which reads the data manifest) or from plain data
    (:meth:`from_dict`, what Ray workers get); :meth:`sample` touches no file.
    """

    def __init__(self, spec: FamilySpec, base: EnvSpec, field_domains: dict[str, list[str]],
                 origin: str):
        self.spec = spec
        self.base = base
        self.field_domains = {k: list(v) for k, v in field_domains.items()}
        self.origin = origin

    @property
    def name(self) -> str:
        return self.spec.name

    # -- plain data (Ray workers) -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: the family with its base inlined, the field domains and origins."""
        spec = self.spec.model_dump(mode="json")
        spec["base"] = self.base.model_dump(mode="json")
        return {"family": spec, "field_domains": self.field_domains, "origin": self.origin,
                "base_origin": self.base.origin, "base_root": str(self.base.root)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScenarioFamily:
        spec = FamilySpec.model_validate(data["family"])
        base = EnvSpec.model_validate(spec.base).located(data["base_origin"],
                                                         Path(data["base_root"]))
        return cls(spec, base, data["field_domains"], data["origin"])

    def semantic_dump(self) -> dict[str, Any]:
        """What decides the sampled scenarios besides the base and the data (for hashes)."""
        dump = self.spec.model_dump(mode="json", exclude={"name", "description", "base"})
        if dump.get("repeats") == 1:  # left out at 1: families without it keep their hash
            del dump["repeats"]
        if dump.get("repeat_seeds") == "own":  # likewise
            del dump["repeat_seeds"]
        if dump.get("observation") is None:  # likewise
            dump.pop("observation", None)
        dump["sampler_version"] = SAMPLER_VERSION
        return dump

    # -- sampling ------------------------------------------------------------------------------
    def sample(self, seed: int, index: int) -> EnvSpec:
        """The env spec of episode ``index`` of a collection seeded ``seed`` (pure)."""
        return self.scenario(seed, index).spec

    def env_seed_index(self, index: int) -> int:
        """The episode index whose env seed episode ``index`` uses: its own, or with
        ``repeat_seeds: shared`` the first repeat of its scenario's."""
        index = int(index)
        return index - index % self.spec.repeats if self.spec.repeat_seeds == "shared" else index

    def scenario(self, seed: int, index: int) -> Scenario:
        """:meth:`sample` with the scenario's id and the choices drawn (``repeats`` consecutive
        indices draw the same scenario)."""
        draw = int(index) // self.spec.repeats
        streams = np.random.SeedSequence([int(seed), draw, _STREAM]).spawn(len(_DIMENSIONS))
        rng = {name: np.random.default_rng(s) for name, s in zip(_DIMENSIONS, streams, strict=True)}
        fam, base = self.spec, self.base
        out = self._base_dump()
        choices: dict[str, Any] = {}

        weights = np.array([t.weight for t in fam.targets], dtype=np.float64)
        target = fam.targets[int(rng["target"].choice(len(weights), p=weights / weights.sum()))]
        out["target_field"] = choices["target_field"] = target.field
        if target.eval_tasks is not None:
            out["eval"]["tasks"] = [t.model_dump(mode="json") for t in target.eval_tasks]

        groups: dict[str, list[str]] = {}
        units: list[str] = []
        for role, field in (("source", base.source_field), ("target", target.field)):
            field_units, field_groups = self._field_domains(field, rng[f"{role}_domains"])
            units += field_units
            groups.update(field_groups)
            choices[f"{role}_domains"] = {"kept": sum(len(g) for g in field_groups.values()) +
                                          sum(u not in field_groups for u in field_units),
                                          "of": len(self.field_domains[field]),
                                          "units": len(field_units)}
        split = int(rng["split"].choice(fam.domains.split))
        choices["split"] = split
        if groups or split > 1:
            out["domain_space"] = {"groups": groups, "split": split}
        else:
            out.pop("domain_space", None)
        out["domains"] = [f"{u}#{i}" for u in units for i in range(1, split + 1)] if split > 1 \
            else units

        cpt = fam.cpt
        for key in ("num_steps", "tokens_per_step"):
            options = getattr(cpt, key)
            if options is not None:
                out["cpt"][key] = int(rng[key].choice(options))
            choices[key] = out["cpt"][key]
        if cpt.lr is not None:
            out["cpt"]["lr"] = cpt.lr[int(rng["lr"].integers(len(cpt.lr)))].model_dump(mode="json")
        choices["lr"] = out["cpt"]["lr"]["schedule"]

        rw = fam.reward
        if target.target_terms is not None:
            pick = int(rng["target_terms"].integers(len(target.target_terms)))
            out["reward"]["target_terms"] = dict(target.target_terms[pick])
        if rw.source_terms is not None:
            pick = int(rng["source_terms"].integers(len(rw.source_terms)))
            out["reward"]["source_terms"] = dict(rw.source_terms[pick])
        if rw.aggregator is not None:
            out["reward"]["aggregator"] = str(rng["aggregator"].choice(rw.aggregator))
        if rw.source_weight is not None:
            lo, hi = rw.source_weight
            out["reward"]["source_weight"] = round(float(rng["source_weight"].uniform(lo, hi)), 4)
        choices["reward"] = {k: out["reward"][k] for k in ("aggregator", "source_weight",
                                                              "source_terms", "target_terms")}

        # the id names the scenario's semantics, not where its data lies or how it runs, so a
        # moved data directory or another device keeps every episode's scenario id (resume)
        digest = hashlib.sha256(json.dumps({k: v for k, v in out.items() if k not in _LABELS},
                                           sort_keys=True).encode()).hexdigest()[:8]
        sid = f"{fam.name}-{digest}"
        out["name"] = sid
        out["description"] = _describe(choices)
        origin = f"{self.origin} [scenario {sid}]"
        try:
            spec = EnvSpec.model_validate(out)
        except Exception as err:  # a combination the checks at load time could not foresee
            raise ConfigError(f"{origin}: the sampled scenario is not a valid env spec: "
                              f"{err}") from None
        return Scenario(sid, spec.located(origin, base.root), choices)

    def _field_domains(self, field: str, rng: np.random.Generator
                       ) -> tuple[list[str], dict[str, list[str]]]:
        """A random subset of ``field``'s domains, possibly grouped: (units in order, groups)."""
        dc = self.spec.domains
        names = self.field_domains[field]
        n = len(names)
        frac = float(rng.uniform(*dc.keep))
        k = min(n, max(dc.min_domains, math.ceil(frac * n - 1e-9)))
        kept = sorted(int(i) for i in rng.choice(n, size=k, replace=False))
        if k < 2 or rng.random() >= dc.group_probability:
            return [names[i] for i in kept], {}
        g = int(rng.integers(dc.groups[0], dc.groups[1] + 1))
        g = min(g, k)
        order = [kept[int(i)] for i in rng.permutation(k)]
        cuts = sorted(int(c) + 1 for c in rng.choice(k - 1, size=g - 1, replace=False))
        parts = [sorted(order[a:b]) for a, b in zip([0, *cuts], [*cuts, k], strict=True)]
        parts.sort(key=lambda p: p[0])  # a group sits where its first member was
        units: list[str] = []
        groups: dict[str, list[str]] = {}
        for j, part in enumerate(parts, start=1):
            if len(part) == 1:
                units.append(names[part[0]])
                continue
            name = f"{field}/group-{j}"
            groups[name] = [names[i] for i in part]
            units.append(name)
        return units, groups

    # -- checks against the data ---------------------------------------------------------------
    def check(self) -> None:
        """Errors that sampling would hit, raised up front naming the family key.

        Each target (with each of its ``target_terms`` and every source-term choice) and each
        budget/schedule choice is checked by building and resolving the spec it gives, so a
        typo fails at load time, not hours into a collection.
        """
        from mixagent.envs.setup import resolve_spec

        fam, base = self.spec, self.base
        src = f"{self.origin}: family"
        if base.domain_space is not None or base.domains is not None:
            raise ConfigError(f"{src}.base: domain_space and domains are chosen by the family's "
                              "'domains' dimension; remove them from the base")
        fields = set(self.field_domains)
        for i, t in enumerate(fam.targets):
            if t.field not in fields:
                raise ConfigError(f"{src}.targets[{i}].field: unknown field {t.field!r}; the data "
                                  f"directory has {', '.join(sorted(fields))}")
            if t.field == base.source_field:
                raise ConfigError(f"{src}.targets[{i}].field: {t.field!r} is the source field; "
                                  "the source field never varies in a family")
        if fam.domains.min_domains > min(len(v) for k, v in self.field_domains.items()
                                         if k == base.source_field or
                                         k in {t.field for t in fam.targets}):
            raise ConfigError(f"{src}.domains.min_domains: {fam.domains.min_domains} is more "
                              "domains than a field in play has")
        dump = self._base_dump()
        for i, t in enumerate(fam.targets):
            for j, terms in enumerate(t.target_terms or [base.reward.target_terms]):
                for k, sterms in enumerate(fam.reward.source_terms or [base.reward.source_terms]):
                    d = json.loads(json.dumps(dump))
                    d["target_field"] = t.field
                    if t.eval_tasks is not None:
                        d["eval"]["tasks"] = [x.model_dump(mode="json") for x in t.eval_tasks]
                    d["reward"]["target_terms"] = terms
                    d["reward"]["source_terms"] = sterms
                    where = f"{src}.targets[{i}]" + (f".target_terms[{j}]" if t.target_terms
                                                     else "")
                    if fam.reward.source_terms:
                        where += f" with family.reward.source_terms[{k}]"
                    self._resolve(d, where, resolve_spec)
        for key in ("num_steps", "tokens_per_step", "lr"):
            for i, value in enumerate(getattr(fam.cpt, key) or []):
                d = json.loads(json.dumps(dump))
                d["cpt"][key] = value.model_dump(mode="json") if isinstance(value, LRSpec) \
                    else value
                self._validate(d, f"{src}.cpt.{key}[{i}]")

    def _base_dump(self) -> dict[str, Any]:
        """The base spec every scenario starts from, with the family's observation if it sets one."""
        out = self.base.model_dump(mode="json")
        if self.spec.observation is not None:
            out["observation"] = self.spec.observation.model_dump(mode="json")
        return out

    def _validate(self, d: dict[str, Any], where: str) -> EnvSpec:
        return validate_config(EnvSpec, d, where).located(where, self.base.root)

    def _resolve(self, d: dict[str, Any], where: str, resolve: Any) -> None:
        resolve(self._validate(d, where))


def _describe(choices: dict[str, Any]) -> str:
    """A one-line summary of a scenario's choices (its env spec's description)."""
    s, t = choices["source_domains"], choices["target_domains"]
    r = choices["reward"]
    return (f"target {choices['target_field']}; source {s['kept']}/{s['of']} domains as "
            f"{s['units']}, target {t['kept']}/{t['of']} as {t['units']}; split "
            f"{choices['split']}; {choices['num_steps']} x {choices['tokens_per_step']} tokens; "
            f"lr {choices['lr']}; reward {r['aggregator']} source {r['source_terms']} target "
            f"{r['target_terms']}")


def load_family_base(path: str | Path) -> tuple[FamilySpec, EnvSpec]:
    """A family file's spec and its base env spec, type-checked; the data is not opened (what a
    reader that only needs the base's name or settings wants)."""
    path = Path(path)
    spec = validate_config(FamilyFile, load_yaml(path) or {}, str(path)).family
    root = path.resolve().parent
    if isinstance(spec.base, str):
        base_path = Path(spec.base).expanduser()
        if not base_path.is_absolute():
            base_path = root / base_path
        if not base_path.is_file():
            raise ConfigError(f"{path}: family.base: env spec not found: {base_path}")
        base = load_env_spec(base_path)
    else:
        base = validate_config(EnvSpec, spec.base, f"{path}: family.base").located(
            f"{path} (family.base)", root)
    return spec, base


def load_family(path: str | Path) -> ScenarioFamily:
    """Load a family file, its base spec and its data's domains per field, and check it.

    Opening the data is cheap (the manifest; the built-in corpus is built on first use).
    """
    from mixagent.envs.setup import resolve_spec

    spec, base = load_family_base(path)
    if base.domain_space is not None or base.domains is not None:
        raise ConfigError(f"{path}: family.base: domain_space and domains are chosen by the "
                          "family's 'domains' dimension; remove them from the base")
    data = resolve_spec(base).source_data  # checks the base itself against its data
    field_domains = {f.name: [d.name for d in data.domains_of_field(f.name)]
                     for f in data.manifest.fields}
    family = ScenarioFamily(spec, base, field_domains, str(path))
    family.check()
    return family
